/**
 * The corral-oci server is started by whichever caller comes first (conmon, a containerd shim, a
 * shell) and would otherwise live on in that caller's cgroup, keeping it from being removed and
 * being killed with it. It moves itself into a cgroup of its own, and out again (then removes it)
 * when it exits.
 */
import { rmdirSync, writeFileSync } from 'node:fs';
import { createCgroupManager } from '../oci/cgroups/index.ts';
import type { CgroupManager } from '../oci/cgroups/index.ts';

export async function enterOwnCgroup(name: string, log: (m: string) => void): Promise<() => void> {
  let cg: CgroupManager;
  try {
    cg = createCgroupManager({ cgroupsPath: `/${name}`, warn: () => {} });
    cg.create();
    await cg.apply(process.pid);
  } catch (e) {
    log(`staying in the caller's cgroup: ${(e as Error).message}`);
    return () => {};
  }
  return () => {
    try {
      // Back to each hierarchy's root, so the now empty cgroup can go.
      for (const dir of cg.dirs()) writeFileSync(`${dir.slice(0, dir.length - name.length - 1)}/cgroup.procs`, String(process.pid));
      // A child the server ran (ps, umount, a hook) may still be on its way out: retry briefly.
      let left = cg.dirs();
      for (let i = 0; i < 50 && left.length > 0; i++) {
        left = left.filter((dir) => {
          try { rmdirSync(dir); return false; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EBUSY'; }
        });
        if (left.length > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
      }
      if (left.length > 0) log(`could not remove ${left.join(', ')} (still in use)`);
    } catch (e) {
      log(`leaving the server cgroup: ${(e as Error).message}`);
    }
  };
}
