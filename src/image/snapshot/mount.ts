/**
 * Carrying out snapshot mount descriptions: as executor plan ops (what a daemon runs), or with
 * mount(8) (for tests and simple callers).
 */
import { spawnSync } from 'node:child_process';
import { fromErrno } from '../../errors.ts';
import { MS, type Op } from '../../oci/plan/ops.ts';
import { parseMountOptions } from '../../oci/spec/mount-options.ts';
import type { Mount } from './snapshotter.ts';

/** The plan ops that mount `mounts` at `target` in order (a bind with "ro" is remounted read-only). */
export function snapshotMountOps(mounts: Mount[], target: string): Op[] {
  const ops: Op[] = [];
  for (const m of mounts) {
    const o = parseMountOptions(m.options);
    const origin = `mount ${m.type} snapshot on ${target}`;
    if (m.cwd) ops.push({ op: 'chdir', path: m.cwd, origin: `${origin} (relative layer paths)` });
    if (m.type === 'bind' || o.bind) {
      ops.push({ op: 'mount', source: m.source, target, fstype: '', flags: MS.BIND | (o.recursive ? MS.REC : 0), data: '', extra: 0, origin });
      if (o.flags & MS.RDONLY) ops.push({ op: 'mount', source: '', target, fstype: '', flags: MS.REMOUNT | MS.BIND | o.flags, data: '', extra: 0, origin: `${origin} (read-only)` });
    } else {
      ops.push({ op: 'mount', source: m.source, target, fstype: m.type, flags: o.flags, data: o.data, extra: 0, origin });
    }
  }
  return ops;
}

export function mountAll(mounts: Mount[], target: string): void {
  for (const m of mounts) {
    const args = m.type === 'bind' ? ['--bind', '-o', m.options.filter((o) => o !== 'rbind').join(','), m.source, target] : ['-t', m.type, m.source, '-o', m.options.join(','), target];
    const r = spawnSync('mount', args, { cwd: m.cwd, encoding: 'utf8' });
    if (r.status !== 0) throw fromErrno('EINVAL', `mount ${m.type} on ${target}`, r.stderr.trim());
    if (m.type === 'bind' && m.options.includes('ro')) {
      const r2 = spawnSync('mount', ['-o', 'remount,bind,ro', target], { encoding: 'utf8' });
      if (r2.status !== 0) throw fromErrno('EINVAL', `remount ${target} read-only`, r2.stderr.trim());
    }
  }
}

export function unmount(target: string): void {
  const r = spawnSync('umount', [target], { encoding: 'utf8' });
  if (r.status !== 0) throw fromErrno('EBUSY', `umount ${target}`, r.stderr.trim());
}
