// corrald assembled in this process: events streaming, plugged-in handlers, error mapping.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { Daemon } from '../../src/cri/daemon.ts';
import { defaultConfig } from '../../src/cri/config.ts';
import { silentLogger } from '../../src/cri/log.ts';
import { AlreadyExistsError, FailedPreconditionError, NotFoundError } from '../../src/errors.ts';
import { CriServer, toStatus } from '../../src/cri/server.ts';
import { CriMetrics } from '../../src/cri/metrics.ts';
import { call, criClients, tempDir, type Client } from './harness.ts';

const tmp = tempDir('corrald-inproc-');
let daemon: Daemon;
let clients: ReturnType<typeof criClients>;

before(async () => {
  const config = defaultConfig();
  config.socket = join(tmp.dir, 'c.sock');
  config.metrics.address = '';
  daemon = await new Daemon({
    config,
    log: silentLogger,
    runtime: {
      // a lead-style plug-in: typed request, partial response
      ContainerStatus: (req) => {
        if (req.container_id === 'gone') throw new NotFoundError(`container ${req.container_id} not found`);
        if (req.container_id === 'dup') throw new AlreadyExistsError('already there');
        if (req.container_id === 'busy') throw new FailedPreconditionError('container is busy');
        if (req.container_id === 'bug') throw new TypeError('undefined is not a function');
        return { status: { id: req.container_id, state: 'CONTAINER_RUNNING', created_at: '1700000000000000000' } };
      },
    },
  }).start();
  clients = criClients(config.socket);
});

after(async () => {
  clients.close();
  await daemon.stop();
  assert.equal(existsSync(join(tmp.dir, 'c.sock')), false);
  tmp.cleanup();
});

test('plugged-in handlers answer, with int64 as strings and enums as names', async () => {
  const r = await call<{ status: { id: string; state: string; created_at: string } }>(clients.runtime, 'ContainerStatus', { container_id: 'c1' });
  assert.equal(r.status.id, 'c1');
  assert.equal(r.status.state, 'CONTAINER_RUNNING');
  assert.equal(r.status.created_at, '1700000000000000000');
});

test('CorralError codes map to gRPC status codes at the server boundary', async () => {
  const cases: [string, grpc.status][] = [
    ['gone', grpc.status.NOT_FOUND],
    ['dup', grpc.status.ALREADY_EXISTS],
    ['busy', grpc.status.FAILED_PRECONDITION],
    ['bug', grpc.status.INTERNAL],
  ];
  for (const [id, code] of cases) {
    await assert.rejects(call(clients.runtime, 'ContainerStatus', { container_id: id }), (e: grpc.ServiceError) => e.code === code);
  }
  assert.deepEqual(toStatus(new NotFoundError('x'), 'w'), { code: 5, details: 'x' });
  assert.match(toStatus(new Error('boom'), 'RuntimeService.X').details, /RuntimeService\.X: internal error: boom/);
});

test('GetContainerEvents streams what is published, and unsubscribes on cancel', async () => {
  const stream = (clients.runtime as Client).GetContainerEvents!.call(clients.runtime, {}) as grpc.ClientReadableStream<{ container_id: string; container_event_type: string; created_at: string }>;
  const got: { container_id: string; container_event_type: string; created_at: string }[] = [];
  const done = new Promise<grpc.ServiceError>((resolve) => {
    stream.on('data', (e) => {
      got.push(e);
      if (got.length === 2) stream.cancel();
    });
    stream.on('error', resolve);
  });
  // wait until the server side has subscribed
  while (daemon.events.subscriberCount === 0) await new Promise((r) => setImmediate(r));
  daemon.events.publish({ container_id: 'a', container_event_type: 'CONTAINER_CREATED_EVENT' });
  daemon.events.publish({ container_id: 'a', container_event_type: 'CONTAINER_STARTED_EVENT', created_at: '5' });
  const err = await done;
  assert.equal(err.code, grpc.status.CANCELLED);
  assert.deepEqual(got.map((e) => `${e.container_id} ${e.container_event_type}`), ['a CONTAINER_CREATED_EVENT', 'a CONTAINER_STARTED_EVENT']);
  assert.equal(got[1]!.created_at, '5');
  while (daemon.events.subscriberCount !== 0) await new Promise((r) => setImmediate(r));
});

test('a bare server answers UNIMPLEMENTED for streaming RPCs too, and for unknown paths', async () => {
  const bare = new CriServer({ socketPath: join(tmp.dir, 'bare.sock'), log: silentLogger, metrics: new CriMetrics() });
  await bare.start();
  const c = criClients(join(tmp.dir, 'bare.sock'));
  try {
    const stream = (c.runtime as Client).GetContainerEvents!.call(c.runtime, {}) as grpc.ClientReadableStream<unknown>;
    const e = await new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
    assert.equal(e.code, grpc.status.UNIMPLEMENTED);
    assert.equal(e.details, 'RuntimeService.GetContainerEvents is not implemented by corrald yet');
  } finally {
    c.close();
    await bare.stop();
  }
  const client = clients.runtime as grpc.Client;
  const err = await new Promise<grpc.ServiceError>((resolve) => {
    client.makeUnaryRequest('/runtime.v1.RuntimeService/NoSuchMethod', (x: Buffer) => x, (x: Buffer) => x, Buffer.alloc(0), (e) => resolve(e!));
  });
  assert.equal(err.code, grpc.status.UNIMPLEMENTED);
});

test('handlers cannot be plugged in after start', () => {
  assert.throws(() => daemon.cri.use({ runtime: {} }), { code: 'FAILED_PRECONDITION' });
});
