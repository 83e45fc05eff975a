import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, lstatSync, readFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { digestOf } from '../digest.ts';
import { writeTar } from './tar.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { unpackLayerFile, unpackLayerFileHere, DiffIdMismatchError, UnpackPool } from './layer.ts';
import { UnsafeLayerError } from './apply.ts';

const base = mkdtempSync(join(tmpdir(), 'corral-layer-test-'));
test.after(() => rmSync(base, { recursive: true, force: true }));

let n = 0;
function blob(tar: Buffer): string {
  const p = join(base, `blob-${++n}`);
  writeFileSync(p, gzipSync(tar));
  return p;
}
function dir(): string {
  const d = join(base, `root-${++n}`);
  mkdirSync(d);
  return d;
}

const good = writeTar([
  { name: 'd', type: 'dir', mode: 0o750, mtime: 1000 },
  { name: 'd/f', data: Buffer.alloc(300_000, 7), mode: 0o4755, uid: 12, gid: 34, mtime: 2000 },
  { name: 'd/l', type: 'symlink', linkname: 'f', mtime: 3000 },
  { name: 'd/h', type: 'hardlink', linkname: 'd/f' },
  { name: 'd/f2', data: 'again', mtime: 4000 },
  { name: 'd/f2', data: 'replaced', mtime: 5000 },
]);

test('worker and in-thread unpack produce the same tree and result', async () => {
  const p = blob(good);
  const want = digestOf(good);
  const [a, b] = [dir(), dir()];
  const ra = await unpackLayerFile(p, a, { mode: 'overlay', expectDiffId: want });
  const rb = await unpackLayerFileHere(p, b, { mode: 'overlay', expectDiffId: want });
  assert.deepEqual(ra, rb);
  assert.equal(ra.diffId, want);
  for (const r of [a, b]) {
    const f = lstatSync(join(r, 'd/f'));
    assert.equal(f.mode & 0o7777, 0o4755);
    assert.equal([f.uid, f.gid].join(), '12,34');
    assert.equal(f.mtimeMs, 2000_000);
    assert.equal(f.nlink, 2);
    assert.equal(f.size, 300_000);
    assert.equal(lstatSync(join(r, 'd')).mode & 0o7777, 0o750);
    assert.equal(lstatSync(join(r, 'd')).mtimeMs, 1000_000);
    assert.ok(lstatSync(join(r, 'd/l')).isSymbolicLink());
    assert.equal(readFileSync(join(r, 'd/f2'), 'utf8'), 'replaced');
  }
});

test('errors from the unpack worker keep their class, code and message', async () => {
  await assert.rejects(unpackLayerFile(blob(good), dir(), { mode: 'overlay', expectDiffId: 'sha256:' + '0'.repeat(64), layer: 'L1' }), (e: Error) => {
    assert.ok(e instanceof DiffIdMismatchError);
    assert.equal((e as DiffIdMismatchError).code, 'INVALID_ARGUMENT');
    assert.match(e.message, /layer L1: uncompressed digest .* does not match/);
    return true;
  });
  await assert.rejects(unpackLayerFile(blob(writeTar([{ name: '../x', data: 'x' }])), dir(), { mode: 'direct' }), (e: Error) => {
    assert.ok(e instanceof UnsafeLayerError);
    assert.match(e.message, /escape the layer root/);
    return true;
  });
  await assert.rejects(unpackLayerFile(join(base, 'missing'), dir(), { mode: 'direct' }), { code: 'NOT_FOUND' });
});

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; !cond(); await sleep(10)) if (Date.now() > end) assert.fail(`timed out waiting until ${what}`);
}

test('idle unpack workers are terminated after the idle timeout; later work starts new ones', async () => {
  const pool = new UnpackPool({ max: 2, idleTimeoutMs: 150 });
  try {
    const p = blob(good);
    const want = digestOf(good);
    pool.prewarm(2);
    assert.equal(pool.workers, 2);
    await until('the prewarmed workers are gone', () => pool.workers === 0);
    const rs = await Promise.all([dir(), dir(), dir()].map((root) => pool.run({ blobPath: p, root, opts: { mode: 'overlay', expectDiffId: want } })));
    assert.deepEqual(rs.map((r) => r.diffId), [want, want, want]);
    assert.ok(pool.workers >= 1 && pool.workers <= 2, `${pool.workers} workers`);
    await until('the workers of the first batch are gone', () => pool.workers === 0);
    const root = dir();
    const r = await pool.run({ blobPath: p, root, opts: { mode: 'overlay', expectDiffId: want } });
    assert.equal(r.diffId, want);
    assert.equal(readFileSync(join(root, 'd/f2'), 'utf8'), 'replaced');
    assert.equal(pool.workers, 1, 'one job needed one new worker');
    await until('the last worker is gone', () => pool.workers === 0);
  } finally {
    await pool.close();
  }
});

test('idleTimeoutMs: 0 keeps idle workers until close()', async () => {
  const pool = new UnpackPool({ max: 1, idleTimeoutMs: 0 });
  pool.prewarm(1);
  await sleep(300);
  assert.equal(pool.workers, 1);
  await pool.close();
  assert.equal(pool.workers, 0);
  await assert.rejects(pool.run({ blobPath: blob(good), root: dir(), opts: { mode: 'direct' } }), { code: 'UNAVAILABLE' });
});
