// SIGKILL of `corral pull` at different points (during download, around unpack and commit): every
// later open of the store reconciles it, the image is either absent or complete, a new pull
// finishes it, and no ingest, half-unpacked snapshot or orphan blob is left.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RegistryClient } from '../../src/image/registry/client.ts';
import { closeIdleConnections } from '../../src/image/registry/transport.ts';
import { buildImage, busyboxEntries, pushImage } from '../helpers/image-builder.ts';
import { freePort, startRegistry, pidAlive, type TestRegistry } from '../helpers/registry.ts';
import { waitFor } from '../helpers/wait.ts';

const CORRAL = join(import.meta.dirname, '../../bin/corral');
const dir = mkdtempSync(join(tmpdir(), 'corral-crash-test-'));
let reg: TestRegistry;
let proxy: Server;
let proxyHost = '';
/** Bytes the proxy has relayed from the registry to the client, since the last reset. */
let relayed = 0;
const sockets = new Set<Socket>();

// Two layers of incompressible data (so the download takes a while through the throttled proxy)
// plus busybox, so unpack has real work.
const img = buildImage([
  { entries: busyboxEntries() },
  { entries: [{ name: 'data/a.bin', data: randomBytes(6 << 20) }] },
  { entries: Array.from({ length: 400 }, (_, i) => ({ name: `many/f${i}`, data: randomBytes(2048) })) },
]);
const total = [...img.blobs.values()].reduce((n, b) => n + b.length, 0);

/** Run bin/corral without blocking this process: the throttling proxy lives in it. */
function corral(root: string, args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(CORRAL, ['--root', root, '--insecure-registry', proxyHost, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120000);
    child.on('close', (status) => { clearTimeout(timer); resolve({ status, stdout, stderr }); });
  });
}

before(async () => {
  reg = await startRegistry();
  await pushImage(new RegistryClient({ hosts: { insecure: [reg.host] } }), `${reg.host}/big:1`, img);
  closeIdleConnections();
  // A throttling TCP proxy: ~4 MB/s from the registry to the client.
  const port = await freePort();
  proxy = createServer((client) => {
    sockets.add(client);
    const upstream = connect(reg.port, '127.0.0.1');
    sockets.add(upstream);
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      relayed += chunk.length;
      if (!client.write(chunk)) upstream.pause();
      upstream.pause();
      setTimeout(() => upstream.resume(), Math.ceil(chunk.length / 4096));
    });
    client.on('drain', () => upstream.resume());
    upstream.on('end', () => client.end());
    const close = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  });
  await new Promise<void>((r) => proxy.listen(port, '127.0.0.1', r));
  proxyHost = `127.0.0.1:${port}`;
});

after(async () => {
  for (const s of sockets) s.destroy();
  await new Promise((r) => proxy.close(r));
  await reg.stop();
  assert.equal(pidAlive(reg.pid), false);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(dir));
  assert.deepEqual(mounts, [], 'no mounts left');
  rmSync(dir, { recursive: true, force: true });
});

/** Start a pull and SIGKILL it once `when()` holds; resolves with how far it got. */
async function killedPull(root: string, when: () => boolean): Promise<void> {
  relayed = 0;
  const child = spawn(CORRAL, ['--root', root, '--insecure-registry', proxyHost, 'pull', `${proxyHost}/big:1`], { stdio: 'ignore' });
  const exited = new Promise((r) => child.once('exit', r));
  await waitFor(() => when() || child.exitCode !== null, 60000, 'kill point reached');
  child.kill('SIGKILL');
  await exited;
}

async function assertConsistent(root: string, what: string): Promise<boolean> {
  // Any command opens the store, which reconciles it with the disk.
  const list = await corral(root, ['images', '--format', 'json']);
  assert.equal(list.status, 0, `${what}: images after the kill: ${list.stderr}`);
  // One JSON object per line, one per image.
  const images = list.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  const present = images.some((i) => JSON.stringify(i).includes('/big'));
  if (present) {
    const insp = await corral(root, ['inspect', `${proxyHost}/big:1`]);
    assert.equal(insp.status, 0, `${what}: a listed image is complete: ${insp.stderr}`);
  }
  return present;
}

test('a pull killed at any point leaves a store that reconciles and completes on the next pull', async () => {
  const points: Array<[string, () => boolean]> = [
    ['early download', () => relayed > total * 0.1],
    ['mid download', () => relayed > total * 0.5],
    ['late download', () => relayed > total * 0.95],
  ];
  const root = join(dir, 'store');
  for (const [what, when] of points) {
    await killedPull(root, when);
    await assertConsistent(root, what);
  }
  // Kill points after the download: just after the last byte, and a little later (unpack, commit).
  for (const delay of [20, 150, 400]) {
    const r2 = join(dir, `store-${delay}`);
    let doneAt = 0;
    await killedPull(r2, () => {
      if (relayed < total) return false;
      doneAt ||= Date.now();
      return Date.now() - doneAt >= delay;
    });
    await assertConsistent(r2, `after download + ${delay} ms`);
    const again = await corral(r2, ['pull', `${proxyHost}/big:1`]);
    assert.equal(again.status, 0, again.stderr);
    rmSync(r2, { recursive: true, force: true });
  }
  const r = await corral(root, ['pull', `${proxyHost}/big:1`]);
  assert.equal(r.status, 0, `the pull completes after the kills: ${r.stderr}`);
  assert.ok(await assertConsistent(root, 'final'), 'the image is there');
  // Nothing half-done is left: no ingests, and a prune of unused content removes nothing the image needs.
  const ingest = join(root, 'ingest');
  assert.deepEqual(existsSync(ingest) ? readdirSync(ingest) : [], [], 'no ingest leftovers');
  assert.equal((await corral(root, ['image', 'prune'])).status, 0);
  assert.equal((await corral(root, ['inspect', `${proxyHost}/big:1`])).status, 0);
});
