import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { acceptWebSocket, type WebSocketConnection } from './websocket.ts';

let server: http.Server;
let port: number;
const conns: WebSocketConnection[] = [];
const upgraded = new Set<import('node:stream').Duplex>();

before(async () => {
  server = http.createServer();
  server.on('upgrade', (req, socket, head) => {
    upgraded.add(socket);
    try {
      const ws = acceptWebSocket(req, socket, head, ['proto.b', 'proto.a'], 1024);
      conns.push(ws);
      ws.on('message', (m: Buffer, binary: boolean) => (binary ? ws.send(Buffer.concat([Buffer.from('bin:'), m])) : ws.sendText(`text:${m}`)));
    } catch (e) {
      socket.end(`HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n`);
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as net.AddressInfo).port;
});
after(async () => {
  server.closeAllConnections();
  for (const s of upgraded) s.destroy();
  await new Promise<void>((r) => server.close(() => r()));
});

test('handshake picks our preferred subprotocol; text and binary echo; close handshake', async () => {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`, ['proto.a', 'proto.b']);
  ws.binaryType = 'arraybuffer';
  const got: string[] = [];
  await new Promise<void>((resolve) => {
    ws.onopen = () => {
      ws.send('hello');
      ws.send(new Uint8Array([1, 2, 3]));
      ws.send(Buffer.alloc(300, 'x')); // 16-bit length
    };
    ws.onmessage = (e) => {
      got.push(typeof e.data === 'string' ? e.data : Buffer.from(e.data as ArrayBuffer).toString('latin1'));
      if (got.length === 3) ws.close(1000, 'bye');
    };
    ws.onclose = (e) => {
      assert.equal(e.code, 1000);
      resolve();
    };
  });
  assert.equal(ws.protocol, 'proto.b');
  assert.deepEqual(got, ['text:hello', 'bin:\x01\x02\x03', 'bin:' + 'x'.repeat(300)]);
});

function rawClient(): Promise<{ sock: net.Socket; read: () => Promise<Buffer> }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const key = randomBytes(16).toString('base64');
    let buf = Buffer.alloc(0);
    let waiter: (() => void) | null = null;
    sock.on('data', (c) => {
      buf = Buffer.concat([buf, c]);
      waiter?.();
    });
    sock.write(`GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: proto.a\r\n\r\n`);
    const next = () =>
      new Promise<Buffer>((res) => {
        const check = () => {
          if (buf.length > 0) {
            const b = buf;
            buf = Buffer.alloc(0);
            waiter = null;
            res(b);
          } else waiter = check;
        };
        check();
      });
    next().then((head) => {
      const text = head.toString('latin1');
      const accept = createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
      if (!text.includes(`Sec-WebSocket-Accept: ${accept}`) || !text.includes('Sec-WebSocket-Protocol: proto.a')) reject(new Error(text));
      resolve({ sock, read: next });
    }, reject);
  });
}

function masked(opcode: number, payload: Buffer, fin = true): Buffer {
  const mask = randomBytes(4);
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i & 3]!));
  return Buffer.concat([Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | payload.length]), mask, body]);
}

test('fragmented messages are reassembled and pings answered with pongs', async () => {
  const { sock, read } = await rawClient();
  sock.write(Buffer.concat([masked(0x2, Buffer.from('ab'), false), masked(0x9, Buffer.from('p')), masked(0x0, Buffer.from('cd'))]));
  let data = await read();
  while (data.length < 3 + 2 + 8) data = Buffer.concat([data, await read()]);
  assert.deepEqual(data.subarray(0, 3), Buffer.from([0x8a, 1, 0x70])); // pong "p"
  assert.deepEqual(data.subarray(3), Buffer.concat([Buffer.from([0x82, 8]), Buffer.from('bin:abcd')]));
  sock.destroy();
});

test('unmasked client frames and oversize messages close the connection with the right code', async () => {
  const a = await rawClient();
  a.sock.write(Buffer.from([0x82, 1, 0x41]));
  const c1 = await a.read();
  assert.equal(c1[0], 0x88);
  assert.equal(c1.readUInt16BE(2), 1002);
  a.sock.destroy();
  const b = await rawClient();
  const big = Buffer.alloc(2000);
  const mask = Buffer.alloc(4);
  b.sock.write(Buffer.concat([Buffer.from([0x82, 0x80 | 126, 2000 >> 8, 2000 & 255]), mask, big]));
  const c2 = await b.read();
  assert.equal(c2[0], 0x88);
  assert.equal(c2.readUInt16BE(2), 1009);
  b.sock.destroy();
});

test('requests without a valid key or a shared subprotocol are refused', async () => {
  const status = (headers: Record<string, string>) =>
    new Promise<number>((resolve) => {
      const req = http.request({ port, host: '127.0.0.1', headers: { Connection: 'Upgrade', Upgrade: 'websocket', ...headers } });
      req.on('response', (res) => resolve(res.statusCode!));
      req.on('upgrade', (_res, socket) => {
        socket.destroy();
        resolve(101);
      });
      req.end();
    });
  const key = randomBytes(16).toString('base64');
  assert.equal(await status({ 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Protocol': 'proto.a' }), 400);
  assert.equal(await status({ 'Sec-WebSocket-Key': key, 'Sec-WebSocket-Version': '8', 'Sec-WebSocket-Protocol': 'proto.a' }), 400);
  assert.equal(await status({ 'Sec-WebSocket-Key': key, 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Protocol': 'other' }), 400);
  assert.equal(await status({ 'Sec-WebSocket-Key': key, 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Protocol': 'other, proto.a' }), 101);
});
