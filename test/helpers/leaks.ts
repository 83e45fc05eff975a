/**
 * Leak checks for suites that create host resources: call `snapshot()` before the
 * suite and `assertNoLeaks(before)` after. Only resources matching the suite's own
 * markers are considered, so other work on the machine never fails a test.
 */
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';

export interface HostSnapshot {
  mounts: string[];
  cgroups: string[];
  netns: string[];
}

function mountPoints(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(Boolean).map((l) => l.split(' ')[4]);
}

/** cgroup directories whose name contains `marker`, in every hierarchy (two levels deep). */
export function cgroupDirs(marker: string): string[] {
  const out: string[] = [];
  const root = '/sys/fs/cgroup';
  const walk = (dir: string, depth: number) => {
    let entries;
    try { entries = readdirSync(dir, { withFileTypes: true }); } catch { return; }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const p = `${dir}/${e.name}`;
      if (e.name.includes(marker)) out.push(p);
      if (depth > 0) walk(p, depth - 1);
    }
  };
  walk(root, 2);
  return out.sort();
}

export function snapshot(marker: string): HostSnapshot {
  let netns: string[] = [];
  try {
    netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(marker));
  } catch { /* no ip */ }
  return { mounts: mountPoints().filter((m) => m.includes(marker)), cgroups: cgroupDirs(marker), netns };
}

export function assertNoLeaks(marker: string, extraDirs: string[] = []): void {
  const now = snapshot(marker);
  assert.deepEqual(now.mounts, [], `leaked mounts: ${now.mounts.join(', ')}`);
  assert.deepEqual(now.cgroups, [], `leaked cgroups: ${now.cgroups.join(', ')}`);
  assert.deepEqual(now.netns, [], `leaked netns: ${now.netns.join(', ')}`);
  for (const d of extraDirs) {
    const left = existsSync(d) ? readdirSync(d) : [];
    assert.deepEqual(left, [], `leaked entries in ${d}: ${left.join(', ')}`);
  }
}

/** Mount points (in this mount namespace) that start with `prefix`. */
export function mountsUnder(prefix: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(prefix));
}
