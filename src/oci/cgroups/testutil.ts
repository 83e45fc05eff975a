/** Helpers shared by the cgroups tests (not part of the library API). */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { findCgroupMounts } from './detect.ts';

export function testParentName(): string {
  return `corral-test-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Poll until cond() is true; fails (never passes silently) after `tries` rounds. */
export async function waitFor(cond: () => boolean, what: string, tries = 1000): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`gave up waiting for ${what}`);
}

/**
 * A busybox shell that waits for a line on stdin, then starts two `sleep 100`
 * children (so they are forked after the shell was moved into a cgroup).
 */
export function spawnSleeper(children = 2): { child: ChildProcess; go: () => void; exited: Promise<NodeJS.Signals | number | null> } {
  const script = `read x; ${Array.from({ length: children }, () => '/bin/busybox sleep 100 &').join(' ')} wait`;
  const child = spawn('/bin/busybox', ['sh', '-c', script], { stdio: ['pipe', 'ignore', 'ignore'] });
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.on('exit', (code, sig) => resolve(sig ?? code)));
  return { child, go: () => child.stdin!.write('go\n'), exited };
}

/** Entries named like our test parents left in any cgroup hierarchy root. */
export function leakedTestCgroups(): string[] {
  const m = findCgroupMounts();
  const roots = new Set<string>([...m.v1.values()].map((x) => x.mountPoint));
  if (m.v2) roots.add(m.v2.mountPoint);
  const out: string[] = [];
  for (const r of roots) {
    for (const e of fs.readdirSync(r)) if (e.startsWith(`corral-test-${process.pid}-`)) out.push(`${r}/${e}`);
  }
  return out;
}

export function killQuietly(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}
