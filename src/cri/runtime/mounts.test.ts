import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMountPoint, unmountMany } from './mounts.ts';
import { run } from './proc.ts';

test('unmountMany: one call unmounts every mounted path (stacked too) and skips the rest', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'corral-unmount-many-'));
  const [a, b, c] = ['a', 'b', 'c'].map((n) => join(dir, n));
  for (const p of [a!, b!, c!]) mkdirSync(p);
  try {
    for (const p of [a!, b!, b!]) assert.equal((await run('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'corral-test', p])).code, 0);
    assert.ok(isMountPoint(a!) && isMountPoint(b!) && !isMountPoint(c!));
    await unmountMany([a!, b!, c!, a!]);
    assert.ok(!isMountPoint(a!), 'a unmounted');
    assert.ok(!isMountPoint(b!), 'both mounts stacked on b unmounted');
    await unmountMany([a!, c!]); // nothing mounted: no-op
  } finally {
    for (const p of [a!, b!, b!]) if (isMountPoint(p)) await run('umount', ['-l', p]);
    rmSync(dir, { recursive: true, force: true });
  }
  assert.ok(!isMountPoint(a!) && !isMountPoint(b!), 'no mount leaked');
});
