// The :authority fixer between a client that sends a socket path as authority and Node's
// HTTP/2 server (which rejects such requests with PROTOCOL_ERROR).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuthorityFixingStream, fixAuthority } from './authority.ts';

test('fixAuthority keeps valid authorities and replaces paths', () => {
  assert.equal(fixAuthority('localhost'), 'localhost');
  assert.equal(fixAuthority('127.0.0.1:8080'), '127.0.0.1:8080');
  assert.equal(fixAuthority('[::1]:80'), '[::1]:80');
  assert.equal(fixAuthority('/run/corral/corral.sock'), 'localhost');
});

async function request(socketPath: string, authority: string, big = false): Promise<{ status?: number; rst?: number; seen?: string; body?: string }> {
  const c = http2.connect('http://localhost', { createConnection: () => net.connect(socketPath) });
  try {
    return await new Promise((resolve) => {
      const headers: http2.OutgoingHttpHeaders = { ':path': '/x', ':method': 'POST', ':authority': authority };
      if (big) headers['x-big'] = 'y'.repeat(40_000); // forces CONTINUATION frames
      const r = c.request(headers);
      let status: number | undefined;
      let body = '';
      r.on('response', (h) => (status = h[':status'] as number));
      r.on('data', (d) => (body += d));
      r.on('error', () => {});
      r.on('close', () => resolve({ status, rst: r.rstCode, body }));
      r.end('payload');
    });
  } finally {
    c.close();
  }
}

test('requests with a path as :authority reach the server once the fixer is in between', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'corral-h2-'));
  const direct = join(dir, 'direct.sock');
  const fixed = join(dir, 'fixed.sock');
  const h2 = http2.createServer({ maxHeaderListPairs: 2000, maxSessionMemory: 100 });
  h2.on('stream', (s, h) => {
    let body = '';
    s.on('data', (d) => (body += d));
    s.on('end', () => {
      s.respond({ ':status': 200 });
      s.end(`${h[':authority']}|${body}|${String(h['x-big'] ?? '').length}`);
    });
  });
  await new Promise<void>((r) => h2.listen(direct, r));
  const front = net.createServer((sock) => h2.emit('connection', new AuthorityFixingStream(sock)));
  await new Promise<void>((r) => front.listen(fixed, r));
  try {
    const bad = await request(direct, '/some/path.sock');
    assert.equal(bad.rst, http2.constants.NGHTTP2_PROTOCOL_ERROR, 'Node rejects it without the fixer');
    const ok = await request(fixed, '/some/path.sock');
    assert.equal(ok.status, 200);
    assert.equal(ok.body, 'localhost|payload|0');
    const keep = await request(fixed, 'example.test:1234');
    assert.equal(keep.body, 'example.test:1234|payload|0');
    const big = await request(fixed, '/p', true);
    assert.equal(big.body, 'localhost|payload|40000');
  } finally {
    front.close();
    h2.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
