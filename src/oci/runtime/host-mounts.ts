/**
 * A container without its own mount namespace mounts into the host's tree (under its rootfs),
 * as runc does; these helpers find and remove those mounts so `delete` and a failed `create`
 * leave nothing behind.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fromNodeError } from '../../errors.ts';
import type { Spec } from '../spec/types.ts';

export function sharesHostMountNs(spec: Spec): boolean {
  return !(spec.linux?.namespaces ?? []).some((n) => n.type === 'mount');
}

/** Mount points strictly below `dir`, deepest first. */
export function mountsUnder(dir: string, mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')): string[] {
  const prefix = dir.replace(/\/+$/, '') + '/';
  return mountinfo
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' ')[4].replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
}

export function unmountUnder(dir: string): void {
  const points = [...new Set(mountsUnder(dir))];
  if (points.length === 0) return;
  try {
    execFileSync('umount', ['--lazy', ...points], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    throw fromNodeError(e, `unmount the container's mounts under ${dir}`);
  }
}

/** The mount point that contains `path` (the longest mount point that is a prefix of it). */
export function mountPointOf(path: string, mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')): string {
  let best = '/';
  for (const line of mountinfo.split('\n')) {
    if (!line) continue;
    const p = line.split(' ')[4].replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if ((path === p || path.startsWith(p === '/' ? '/' : p + '/')) && p.length > best.length) best = p;
  }
  return best;
}
