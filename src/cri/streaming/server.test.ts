// The streaming server with a local-process backend, driven by our own SPDY client and by
// Node's built-in WebSocket client.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import http from 'node:http';
import { StreamingServer } from './server.ts';
import { spdyConnect, spdyExec, readAll } from './client.ts';
import { silentLogger } from '../log.ts';
import { LocalProcessBackend } from '../../../test/cri/fake-backend.ts';
import type { ExecRequest } from '../types.gen.ts';

const SH = '/bin/busybox';
let server: StreamingServer;
let backend: LocalProcessBackend;
let echo: net.Server;
let echoPort: number;
let closedPort: number;

function execReq(cmd: string[], o: Partial<ExecRequest> = {}): ExecRequest {
  return { container_id: 'c1', cmd, tty: false, stdin: false, stdout: true, stderr: true, ...o };
}

before(async () => {
  backend = new LocalProcessBackend();
  server = await StreamingServer.start({ address: '127.0.0.1', port: 0, backend, log: silentLogger, streamCreationTimeoutMs: 5000 });
  echo = net.createServer((s) => {
    s.on('data', (d) => s.write(Buffer.concat([Buffer.from('echo:'), d])));
    s.on('end', () => s.end());
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  echoPort = (echo.address() as net.AddressInfo).port;
  // a port with nothing listening: bind, note, close
  const tmp = net.createServer();
  await new Promise<void>((r) => tmp.listen(0, '127.0.0.1', r));
  closedPort = (tmp.address() as net.AddressInfo).port;
  await new Promise<void>((r) => tmp.close(() => r()));
});

after(async () => {
  await server.stop();
  await new Promise<void>((r) => echo.close(() => r()));
});

describe('URL handout (GetExec/GetAttach/GetPortForward)', () => {
  test('rejects invalid requests with INVALID_ARGUMENT', () => {
    assert.throws(() => server.getExec(execReq([])), { code: 'INVALID_ARGUMENT', message: /cmd/ });
    assert.throws(() => server.getExec(execReq(['true'], { tty: true, stderr: true })), { code: 'INVALID_ARGUMENT', message: /tty and stderr/ });
    assert.throws(() => server.getExec(execReq(['true'], { stdout: false, stderr: false })), { code: 'INVALID_ARGUMENT', message: /one of stdin/ });
    assert.throws(() => server.getExec(execReq(['true'], { container_id: '' })), { code: 'INVALID_ARGUMENT' });
    assert.throws(() => server.getPortForward({ pod_sandbox_id: 'p', port: [70000] }), { code: 'INVALID_ARGUMENT', message: /out of range/ });
  });

  test('URLs point at this server with distinct tokens', () => {
    const a = server.getExec(execReq(['true'])).url;
    const b = server.getExec(execReq(['true'])).url;
    assert.match(a, new RegExp(`^${server.url}/exec/[A-Za-z0-9_-]{22}$`));
    assert.notEqual(a, b);
    assert.match(server.getAttach({ container_id: 'c', stdin: false, tty: false, stdout: true, stderr: false }).url, /\/attach\//);
    assert.match(server.getPortForward({ pod_sandbox_id: 'p', port: [] }).url, /\/portforward\//);
  });

  test('a token works once; unknown tokens and plain requests are refused', async () => {
    const url = server.getExec(execReq([SH, 'echo', 'once'])).url;
    const first = await spdyExec(url);
    assert.equal(first.stdout.toString(), 'once\n');
    await assert.rejects(spdyExec(url), { message: /HTTP 404.*unknown or expired/ });
    await assert.rejects(spdyExec(`${server.url}/exec/AAAAAAAAAAAAAAAAAAAAAA`), { message: /HTTP 404/ });
    const plain = await new Promise<{ status: number; body: string }>((resolve) => {
      http.get(server.getExec(execReq(['true'])).url, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
    });
    assert.equal(plain.status, 400);
    assert.match(plain.body, /upgrade/);
  });

  test('a token for exec cannot be used on the port-forward route', async () => {
    const url = server.getExec(execReq(['true'])).url.replace('/exec/', '/portforward/');
    await assert.rejects(spdyConnect(url, ['portforward.k8s.io']), { message: /HTTP 404.*token is for exec/ });
  });
});

describe('exec over SPDY/3.1', () => {
  test('stdout, stderr and a zero exit give a v4 Success status', async () => {
    const r = await spdyExec(server.getExec(execReq([SH, 'sh', '-c', 'echo out; echo err >&2'])).url);
    assert.equal(r.protocol, 'v4.channel.k8s.io');
    assert.equal(r.stdout.toString(), 'out\n');
    assert.equal(r.stderr.toString(), 'err\n');
    assert.deepEqual(JSON.parse(r.error), { metadata: {}, status: 'Success' });
  });

  test('a non-zero exit is reported as NonZeroExitCode with the code as cause', async () => {
    const r = await spdyExec(server.getExec(execReq([SH, 'sh', '-c', 'exit 7'])).url);
    const st = JSON.parse(r.error);
    assert.equal(st.status, 'Failure');
    assert.equal(st.reason, 'NonZeroExitCode');
    assert.deepEqual(st.details.causes, [{ reason: 'ExitCode', message: '7' }]);
  });

  test('stdin reaches the process and its end closes the process input', async () => {
    const data = Buffer.alloc(200_000, 'x'); // several DATA frames and window updates
    const r = await spdyExec(server.getExec(execReq([SH, 'wc', '-c'], { stdin: true })).url, { stdin: data });
    assert.equal(r.stdout.toString().trim(), '200000');
  });

  test('backend failures become a Failure status with the message (v4) or plain text (v2)', async () => {
    const v4 = await spdyExec(server.getExec(execReq(['true'], { container_id: 'missing' })).url);
    const st = JSON.parse(v4.error);
    assert.equal(st.status, 'Failure');
    assert.equal(st.reason, 'NotFound');
    assert.match(st.message, /container missing not found/);
    const v2 = await spdyExec(server.getExec(execReq(['true'], { container_id: 'missing' })).url, { protocols: ['v2.channel.k8s.io'] });
    assert.equal(v2.protocol, 'v2.channel.k8s.io');
    assert.match(v2.error, /^container missing not found$/);
  });

  test('tty sessions merge stderr, get a terminal and pass resize events on', async () => {
    const before = backend.resizes.length;
    const r = await spdyExec(server.getExec(execReq([SH, 'sh', '-c', 'tty; echo e >&2'], { tty: true, stderr: false })).url, {
      tty: true,
      resize: [{ width: 120, height: 40 }],
    });
    assert.match(r.stdout.toString(), /\/dev\/pts\/\d+/);
    assert.match(r.stdout.toString(), /e\r?\n/);
    assert.deepEqual(JSON.parse(r.error).status, 'Success');
    assert.deepEqual(backend.resizes.slice(before), [{ width: 120, height: 40 }]);
  });

  test('an unsupported protocol list is refused with 403 and the accepted versions', async () => {
    const url = server.getExec(execReq(['true'])).url;
    const res = await new Promise<http.IncomingMessage>((resolve) => {
      const req = http.request(url, { method: 'POST', headers: { Connection: 'Upgrade', Upgrade: 'SPDY/3.1', 'X-Stream-Protocol-Version': 'channel.k8s.io' } });
      req.on('response', resolve);
      req.end();
    });
    assert.equal(res.statusCode, 403);
    assert.match(String(res.headers['x-accepted-stream-protocol-versions']), /v4\.channel\.k8s\.io/);
    res.resume();
  });

  test('attach runs the backend attach with stdin', async () => {
    const url = server.getAttach({ container_id: 'c9', stdin: true, tty: false, stdout: true, stderr: true }).url;
    const r = await spdyExec(url, { stdin: 'hi\n' });
    assert.equal(r.stdout.toString(), 'attached\nhi\n');
    assert.equal(JSON.parse(r.error).status, 'Success');
    assert.ok(backend.calls.some((c) => c.kind === 'attach' && c.id === 'c9'));
  });
});

// ---- WebSocket -----------------------------------------------------------------------

interface WsRun {
  protocol: string;
  channels: Map<number, Buffer>;
  messages: Buffer[];
  closeCode: number;
}

function wsRun(url: string, protocols: string[], onOpen: (ws: WebSocket) => void): Promise<WsRun> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace(/^http/, 'ws'), protocols);
    ws.binaryType = 'arraybuffer';
    const channels = new Map<number, Buffer>();
    const messages: Buffer[] = [];
    ws.onopen = () => onOpen(ws);
    ws.onmessage = (ev) => {
      const b = Buffer.from(ev.data as ArrayBuffer);
      messages.push(b);
      channels.set(b[0]!, Buffer.concat([channels.get(b[0]!) ?? Buffer.alloc(0), b.subarray(1)]));
    };
    ws.onerror = () => reject(new Error('websocket error'));
    ws.onclose = (ev) => resolve({ protocol: ws.protocol, channels, messages, closeCode: ev.code });
  });
}

const chan = (n: number, data: string | Buffer) => Buffer.concat([Buffer.from([n]), Buffer.from(data)]);

describe('exec over WebSocket', () => {
  test('v4: stdout on 1, stderr on 2, Status on 3, then a normal close', async () => {
    const url = server.getExec(execReq([SH, 'sh', '-c', 'echo out; echo err >&2; exit 2'])).url;
    const r = await wsRun(url, ['v4.channel.k8s.io'], () => {});
    assert.equal(r.protocol, 'v4.channel.k8s.io');
    assert.equal(r.channels.get(1)?.toString(), 'out\n');
    assert.equal(r.channels.get(2)?.toString(), 'err\n');
    const st = JSON.parse(r.channels.get(3)!.toString());
    assert.equal(st.reason, 'NonZeroExitCode');
    assert.equal(st.details.causes[0].message, '2');
    assert.equal(r.closeCode, 1000);
  });

  test('v5 is preferred; its close signal (255) ends stdin', async () => {
    const url = server.getExec(execReq([SH, 'sh', '-c', 'cat; echo end'], { stdin: true })).url;
    const r = await wsRun(url, ['v4.channel.k8s.io', 'v5.channel.k8s.io'], (ws) => {
      ws.send(chan(0, 'abc\n'));
      ws.send(Buffer.from([255, 0]));
    });
    assert.equal(r.protocol, 'v5.channel.k8s.io');
    assert.equal(r.channels.get(1)?.toString(), 'abc\nend\n');
    assert.equal(JSON.parse(r.channels.get(3)!.toString()).status, 'Success');
    // the server also signals the end of stdout and stderr on v5
    assert.ok(r.messages.some((m) => m[0] === 255 && m[1] === 1));
  });

  test('resize messages on channel 4 reach the backend', async () => {
    const before = backend.resizes.length;
    const url = server.getExec(execReq([SH, 'sh', '-c', 'read x; echo got $x'], { stdin: true, tty: true, stderr: false })).url;
    const r = await wsRun(url, ['v5.channel.k8s.io'], (ws) => {
      ws.send(chan(4, JSON.stringify({ Width: 90, Height: 33 })));
      ws.send(chan(0, 'ok\n'));
    });
    assert.match(r.channels.get(1)!.toString(), /got ok/);
    assert.deepEqual(backend.resizes.slice(before), [{ width: 90, height: 33 }]);
  });

  test('a client offering no known subprotocol is refused', async () => {
    const url = server.getExec(execReq(['true'])).url;
    await assert.rejects(wsRun(url, ['base64.channel.k8s.io'], () => {}), /websocket error/);
  });
});

describe('port forwarding', () => {
  test('SPDY: data and error streams paired by requestID, two connections on one session', async () => {
    const { session, protocol } = await spdyConnect(server.getPortForward({ pod_sandbox_id: 'pod1', port: [] }).url, ['portforward.k8s.io']);
    assert.equal(protocol, 'portforward.k8s.io');
    try {
      for (const id of ['0', '1']) {
        const h = { port: [String(echoPort)], requestid: [id] };
        const error = await session.openStream({ streamtype: ['error'], ...h });
        error.end();
        const errText = readAll(error);
        const data = await session.openStream({ streamtype: ['data'], ...h });
        const got = readAll(data);
        data.end(`hello ${id}`);
        assert.equal((await got).toString(), `echo:hello ${id}`);
        assert.equal((await errText).toString(), '');
      }
    } finally {
      session.close();
    }
  });

  test('SPDY: a port nobody listens on yields a message on the error stream', async () => {
    const { session } = await spdyConnect(server.getPortForward({ pod_sandbox_id: 'pod1', port: [] }).url, ['portforward.k8s.io']);
    try {
      const h = { port: [String(closedPort)], requestid: ['7'] };
      const error = await session.openStream({ streamtype: ['error'], ...h });
      error.end();
      const data = await session.openStream({ streamtype: ['data'], ...h });
      data.end();
      const msg = (await readAll(error)).toString();
      assert.match(msg, new RegExp(`error forwarding port ${closedPort} to pod sandbox pod1: nothing listens`));
    } finally {
      session.close();
    }
  });

  test('SPDY: ports outside the requested list are refused', async () => {
    const { session } = await spdyConnect(server.getPortForward({ pod_sandbox_id: 'pod1', port: [1] }).url, ['portforward.k8s.io']);
    try {
      const h = { port: [String(echoPort)], requestid: ['1'] };
      const error = await session.openStream({ streamtype: ['error'], ...h });
      await session.openStream({ streamtype: ['data'], ...h });
      assert.match((await readAll(error)).toString(), /was not requested/);
    } finally {
      session.close();
    }
  });

  test('WebSocket: port prefix on channels 0 and 1, then data both ways', async () => {
    const url = `${server.getPortForward({ pod_sandbox_id: 'pod2', port: [] }).url}?port=${echoPort}`;
    let sent = false;
    const r = await new Promise<WsRun>((resolve, reject) => {
      const ws = new WebSocket(url.replace(/^http/, 'ws'), ['v4.channel.k8s.io']);
      ws.binaryType = 'arraybuffer';
      const channels = new Map<number, Buffer>();
      const messages: Buffer[] = [];
      ws.onmessage = (ev) => {
        const b = Buffer.from(ev.data as ArrayBuffer);
        messages.push(b);
        channels.set(b[0]!, Buffer.concat([channels.get(b[0]!) ?? Buffer.alloc(0), b.subarray(1)]));
        if (!sent && messages.length === 2) {
          sent = true;
          ws.send(chan(0, 'over ws'));
        }
        if ((channels.get(0)?.length ?? 0) >= 2 + 'echo:over ws'.length) ws.close(1000);
      };
      ws.onerror = () => reject(new Error('websocket error'));
      ws.onclose = (ev) => resolve({ protocol: ws.protocol, channels, messages, closeCode: ev.code });
    });
    const portLE = Buffer.alloc(2);
    portLE.writeUInt16LE(echoPort);
    assert.deepEqual(r.messages[0], Buffer.concat([Buffer.from([0]), portLE]));
    assert.deepEqual(r.messages[1], Buffer.concat([Buffer.from([1]), portLE]));
    assert.equal(r.channels.get(0)!.subarray(2).toString(), 'echo:over ws');
  });

  test('WebSocket: a failing port reports on its error channel', async () => {
    const url = `${server.getPortForward({ pod_sandbox_id: 'pod3', port: [] }).url}?port=${closedPort}`;
    const r = await wsRun(url, ['v4.channel.k8s.io'], () => {});
    assert.match(r.channels.get(1)!.subarray(2).toString(), /error forwarding port/);
  });
});
