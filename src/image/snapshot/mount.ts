/** Carry out snapshot mount descriptions with mount(8) (for tests and simple callers). */
import { spawnSync } from 'node:child_process';
import { fromErrno } from '../../errors.ts';
import type { Mount } from './snapshotter.ts';

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
