/**
 * Host mounts the runtime service owns: pinned namespace files (bind mounts of
 * /proc/self/ns/* made by the C executor in a short-lived child that unshared only
 * NEWNET|NEWIPC|NEWUTS, so the binds land in the host mount namespace), the pod's /dev/shm
 * tmpfs and the container rootfs snapshots. Every mount and unmount is a plan run by the
 * process's plan server (a long-lived `corral-exec --serve`), not a mount(8) process.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InternalError } from '../../errors.ts';
import { hostPlans } from '../../oci/runtime/plan-server.ts';
import { CLONE, MS, type Op } from '../../oci/plan/ops.ts';
import { parseMountOptions } from '../../oci/spec/mount-options.ts';
import type { Mount as SnapshotMount } from '../../image/snapshot/snapshotter.ts';
import { snapshotMountOps } from '../../image/snapshot/mount.ts';

const MNT_DETACH = 2;

export type PinnedNs = 'net' | 'ipc' | 'uts';

const FLAGS: Record<PinnedNs, number> = { net: CLONE.NEWNET, ipc: CLONE.NEWIPC, uts: CLONE.NEWUTS };

/** Mount points (field 5 of mountinfo), with the kernel's octal escapes decoded. */
export function mountPoints(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => (l.split(' ')[4] ?? '').replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8))));
}

export function isMountPoint(path: string): boolean {
  return mountPoints().includes(path);
}

const umountOp = (path: string, flags = 0): Op => ({ op: 'umount', path, flags, missingOk: true, origin: `unmount ${path}` });

/** Unmount every mount stacked at `path` (lazy as a last resort); no-op when nothing is mounted. */
export async function unmountAll(path: string): Promise<void> {
  for (let i = 0; i < 16 && isMountPoint(path); i++) {
    try {
      await hostPlans().run({ ops: [umountOp(path)] });
    } catch (e) {
      if (!isMountPoint(path)) continue;
      try {
        await hostPlans().run({ ops: [umountOp(path, MNT_DETACH)] });
      } catch {
        if (isMountPoint(path)) throw new InternalError(`unmount ${path}: ${(e as Error).message}`);
      }
    }
  }
}

/**
 * Unmount several paths with one plan (what is not mounted is skipped), then `unmountAll` on any
 * that is still mounted (stacked mounts, busy ones: lazy).
 */
export async function unmountMany(paths: string[]): Promise<void> {
  const mounted = new Set(mountPoints());
  const todo = [...new Set(paths)].filter((p) => mounted.has(p));
  if (todo.length === 0) return;
  await hostPlans().run({ ops: todo.map((p) => umountOp(p)) }).catch(() => { /* what is left is retried one by one */ });
  const still = new Set(mountPoints());
  for (const p of todo) if (still.has(p)) await unmountAll(p);
}

export interface PinRequest {
  dir: string;
  kinds: PinnedNs[];
  hostname?: string;
  /** Written inside the new namespaces (net.* needs net, kernel.shm* etc. need ipc). */
  sysctls: Record<string, string>;
  /**
   * A tmpfs (the pod's /dev/shm) mounted by the same executor run, in the host mount
   * namespace like the pins. `target` is created (mode 1777); flags are MS_* bits.
   */
  tmpfs?: { target: string; flags: number; data: string };
}

/**
 * Create the namespaces and bind them to <dir>/<kind>. On failure nothing stays mounted
 * and the files are removed. Returns the paths by kind.
 */
export async function pinNamespaces(req: PinRequest): Promise<Partial<Record<PinnedNs, string>>> {
  if (req.kinds.length === 0) return {};
  mkdirSync(req.dir, { recursive: true, mode: 0o711 });
  const paths: Partial<Record<PinnedNs, string>> = {};
  for (const k of req.kinds) {
    paths[k] = join(req.dir, k);
    writeFileSync(paths[k]!, '', { mode: 0o444 });
  }
  const flags = req.kinds.reduce((f, k) => f | FLAGS[k], 0);
  const ops: Op[] = [{ op: 'clone', flags, parentMode: 'wait', origin: 'pod namespaces' }];
  if (req.hostname && req.kinds.includes('uts')) ops.push({ op: 'sethostname', name: req.hostname, origin: 'hostname' });
  for (const [key, value] of Object.entries(req.sysctls)) {
    ops.push({ op: 'writeFile', path: `/proc/sys/${key.replaceAll('.', '/')}`, data: value, origin: `sysctls["${key}"]` });
  }
  for (const k of req.kinds) {
    ops.push({ op: 'mount', source: `/proc/self/ns/${k}`, target: paths[k]!, fstype: '', flags: MS.BIND, data: '', extra: 0, origin: `pin ${k} namespace` });
  }
  if (req.tmpfs) {
    mkdirSync(req.tmpfs.target, { recursive: true, mode: 0o1777 });
    ops.push({ op: 'mount', source: 'shm', target: req.tmpfs.target, fstype: 'tmpfs', flags: req.tmpfs.flags, data: req.tmpfs.data, extra: 0, origin: `tmpfs on ${req.tmpfs.target}` });
  }
  try {
    await hostPlans().run({ ops });
  } catch (e) {
    if (req.tmpfs) await unmountAll(req.tmpfs.target).catch(() => {});
    await unpinNamespaces(req.dir);
    throw new InternalError(`pinning the pod namespaces: ${(e as Error).message}`);
  }
  return paths;
}

/** Unmount and remove <dir>/{net,ipc,uts} and the dir. */
export async function unpinNamespaces(dir: string, alsoUnmount: string[] = []): Promise<void> {
  // One umount run for all of them (and `alsoUnmount`, e.g. the pod's shm), then the per-path check.
  await unmountMany([...(['net', 'ipc', 'uts'] as PinnedNs[]).map((k) => join(dir, k)), ...alsoUnmount]);
  for (const k of ['net', 'ipc', 'uts'] as PinnedNs[]) {
    const p = join(dir, k);
    await unmountAll(p);
    rmSync(p, { force: true });
  }
  rmSync(dir, { recursive: true, force: true });
}

export async function mountTmpfs(target: string, options: string): Promise<void> {
  mkdirSync(target, { recursive: true, mode: 0o1777 });
  const o = parseMountOptions(options.split(',').filter(Boolean));
  await hostPlans().run({ ops: [{ op: 'mount', source: 'shm', target, fstype: 'tmpfs', flags: o.flags, data: o.data, extra: 0, origin: `tmpfs on ${target}` }] });
}

/** Mount a snapshot's descriptions at `target` (created): one plan, run by the plan server. */
export async function mountSnapshot(mounts: SnapshotMount[], target: string): Promise<void> {
  mkdirSync(target, { recursive: true, mode: 0o755 });
  try {
    await hostPlans().run({ ops: snapshotMountOps(mounts, target) });
  } catch (e) {
    await unmountAll(target).catch(() => {});
    throw e;
  }
}

export function ensureDir(p: string, mode = 0o711): void {
  if (!existsSync(p)) mkdirSync(p, { recursive: true, mode });
}
