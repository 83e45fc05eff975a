import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { SpdySession, type SpdyStream } from './session.ts';
import { readAll } from '../client.ts';
import { RstStatus } from './framing.ts';

async function pair(): Promise<{ client: SpdySession; server: SpdySession; streams: SpdyStream[]; close(): Promise<void> }> {
  const streams: SpdyStream[] = [];
  let server!: SpdySession;
  let onConn!: () => void;
  const got = new Promise<void>((resolve) => (onConn = resolve));
  const listener = net.createServer((sock) => {
    server = new SpdySession(sock, { role: 'server', onStream: (s) => streams.push(s) });
    onConn();
  });
  await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
  const sock = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
  const client = new SpdySession(sock, { role: 'client' });
  await got;
  return {
    client,
    server,
    streams,
    close: async () => {
      client.destroy();
      server.destroy();
      await new Promise<void>((r) => listener.close(() => r()));
    },
  };
}

test('streams carry headers and data both ways, with FIN on each side', async () => {
  const p = await pair();
  try {
    const s = await p.client.openStream({ streamtype: ['stdout'], port: ['80'] });
    assert.equal(s.id, 1);
    const srv = p.streams[0]!;
    assert.equal(srv.header('StreamType'), 'stdout');
    assert.equal(srv.header('port'), '80');
    const fromClient = readAll(srv);
    const fromServer = readAll(s);
    s.end(Buffer.alloc(100_000, 'c'));
    srv.end('server says hi');
    assert.equal((await fromClient).length, 100_000);
    assert.equal((await fromServer).toString(), 'server says hi');
    const s2 = await p.client.openStream({ streamtype: ['x'] });
    assert.equal(s2.id, 3);
  } finally {
    await p.close();
  }
});

test('ping round-trips; a reset reaches the other side; GOAWAY refuses new streams', async () => {
  const p = await pair();
  try {
    await p.client.ping();
    const s = await p.client.openStream({ streamtype: ['a'] });
    const reset = new Promise<number>((r) => p.streams[0]!.once('reset', r));
    s.reset(RstStatus.CANCEL);
    assert.equal(await reset, RstStatus.CANCEL);
    const closed = new Promise<void>((r) => p.client.once('close', r));
    p.server.close();
    await closed;
    await assert.rejects(p.client.openStream({ streamtype: ['b'] }), /closing|closed/);
  } finally {
    await p.close();
  }
});

test('a stream id going backwards is reset with PROTOCOL_ERROR', async () => {
  const p = await pair();
  try {
    await p.client.openStream({ streamtype: ['a'] });
    await p.client.openStream({ streamtype: ['b'] });
    // forge: make the client reuse id 1
    (p.client as unknown as { nextId: number }).nextId = 1;
    await assert.rejects(p.client.openStream({ streamtype: ['c'] }), /reset stream 1 \(status 1\)/);
  } finally {
    await p.close();
  }
});
