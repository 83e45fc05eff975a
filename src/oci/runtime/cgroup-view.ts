/** What a container's /sys/fs/cgroup shows: one entry per host hierarchy, each rooted at the container's cgroup. */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import type { CgroupManager } from '../cgroups/index.ts';
import type { CgroupMountSource } from '../plan/compile.ts';

const CGROUP_ROOT = '/sys/fs/cgroup';

export function cgroupMountSources(cg: CgroupManager, mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')): CgroupMountSource[] {
  const mounts = mountinfo.split('\n').filter(Boolean).map((line) => {
    const [pre, post] = line.split(' - ');
    const f = pre.split(' ');
    const [fstype, , superOpts] = post.split(' ');
    return { point: f[4].replace(/\\040/g, ' '), fstype, superOpts };
  }).filter((m) => m.fstype === 'cgroup' || m.fstype === 'cgroup2');
  const out: CgroupMountSource[] = [];
  for (const dir of cg.dirs()) {
    const m = mounts.filter((x) => dir === x.point || dir.startsWith(x.point + '/')).sort((a, b) => b.point.length - a.point.length)[0];
    if (!m) continue;
    const name = relative(CGROUP_ROOT, m.point);
    if (name.startsWith('..')) continue;
    out.push({ name, hostPath: dir, options: m.superOpts.split(',').filter((o) => o !== 'rw' && o !== 'ro').join(',') });
  }
  return out;
}
