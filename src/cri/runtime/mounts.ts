/**
 * Host mounts the runtime service owns: pinned namespace files (bind mounts of
 * /proc/self/ns/* made by the C executor in a short-lived child that unshared only
 * NEWNET|NEWIPC|NEWUTS, so the binds land in the host mount namespace), the pod's /dev/shm
 * tmpfs and the container rootfs snapshots.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InternalError, fromErrno } from '../../errors.ts';
import { startExecutor } from '../../oci/runtime/executor.ts';
import { CLONE, MS, type Op } from '../../oci/plan/ops.ts';
import type { Mount as SnapshotMount } from '../../image/snapshot/snapshotter.ts';
import { run } from './proc.ts';

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

/** Unmount every mount stacked at `path` (lazy as a last resort); no-op when nothing is mounted. */
export async function unmountAll(path: string): Promise<void> {
  for (let i = 0; i < 16 && isMountPoint(path); i++) {
    const r = await run('umount', [path]);
    if (r.code !== 0 && isMountPoint(path)) {
      const l = await run('umount', ['-l', path]);
      if (l.code !== 0 && isMountPoint(path)) throw new InternalError(`unmount ${path}: ${r.stderr.toString().trim()}`);
    }
  }
}

/**
 * Unmount several paths with one `umount` run (what is not mounted is skipped), then
 * `unmountAll` on any that is still mounted (stacked mounts, busy ones: lazy).
 */
export async function unmountMany(paths: string[]): Promise<void> {
  const mounted = new Set(mountPoints());
  const todo = [...new Set(paths)].filter((p) => mounted.has(p));
  if (todo.length === 0) return;
  await run('umount', todo);
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
  const ex = startExecutor({ plan: { ops }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  ex.launcher.stderr?.on('data', (d) => (stderr += String(d)));
  try {
    await ex.waitExec();
    const exit = await ex.launcherExit();
    if (exit.code !== 0) throw new InternalError(`pinning the pod namespaces: the executor exited with ${exit.code ?? exit.signal}${stderr ? `: ${stderr.trim()}` : ''}`);
  } catch (e) {
    await ex.launcherExit().catch(() => {});
    if (req.tmpfs) await unmountAll(req.tmpfs.target).catch(() => {});
    await unpinNamespaces(req.dir);
    throw e;
  } finally {
    ex.close();
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
  const r = await run('mount', ['-t', 'tmpfs', '-o', options, 'shm', target]);
  if (r.code !== 0) throw new InternalError(`mount tmpfs on ${target}: ${r.stderr.toString().trim()}`);
}

/**
 * Mount a snapshot's descriptions at `target` (created), with mount(8) like
 * src/image/snapshot/mount.ts mountAll, but without blocking the event loop meanwhile.
 */
export async function mountSnapshot(mounts: SnapshotMount[], target: string): Promise<void> {
  mkdirSync(target, { recursive: true, mode: 0o755 });
  for (const m of mounts) {
    const args = m.type === 'bind' ? ['--bind', '-o', m.options.filter((o) => o !== 'rbind').join(','), m.source, target] : ['-t', m.type, m.source, '-o', m.options.join(','), target];
    const r = await run('mount', args, { cwd: m.cwd });
    if (r.code !== 0) throw fromErrno('EINVAL', `mount ${m.type} on ${target}`, r.stderr.toString().trim());
    if (m.type === 'bind' && m.options.includes('ro')) {
      const r2 = await run('mount', ['-o', 'remount,bind,ro', target]);
      if (r2.code !== 0) throw fromErrno('EINVAL', `remount ${target} read-only`, r2.stderr.toString().trim());
    }
  }
}

export function ensureDir(p: string, mode = 0o711): void {
  if (!existsSync(p)) mkdirSync(p, { recursive: true, mode });
}
