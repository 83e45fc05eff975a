/**
 * Host mounts the runtime service owns: pinned namespace files (bind mounts of
 * /proc/self/ns/* made by the C executor in a short-lived child that unshared only
 * NEWNET|NEWIPC|NEWUTS, so the binds land in the host mount namespace), the pod's /dev/shm
 * tmpfs and the container rootfs snapshots.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InternalError } from '../../errors.ts';
import { startExecutor } from '../../oci/runtime/executor.ts';
import { CLONE, MS, type Op } from '../../oci/plan/ops.ts';
import { mountAll } from '../../image/snapshot/mount.ts';
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

export interface PinRequest {
  dir: string;
  kinds: PinnedNs[];
  hostname?: string;
  /** Written inside the new namespaces (net.* needs net, kernel.shm* etc. need ipc). */
  sysctls: Record<string, string>;
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
  const ex = startExecutor({ plan: { ops }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  ex.launcher.stderr?.on('data', (d) => (stderr += String(d)));
  try {
    await ex.waitExec();
    const exit = await ex.launcherExit();
    if (exit.code !== 0) throw new InternalError(`pinning the pod namespaces: the executor exited with ${exit.code ?? exit.signal}${stderr ? `: ${stderr.trim()}` : ''}`);
  } catch (e) {
    await ex.launcherExit().catch(() => {});
    await unpinNamespaces(req.dir);
    throw e;
  } finally {
    ex.close();
  }
  return paths;
}

/** Unmount and remove <dir>/{net,ipc,uts} and the dir. */
export async function unpinNamespaces(dir: string): Promise<void> {
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

/** Mount a snapshot's descriptions at `target` (created). */
export function mountSnapshot(mounts: SnapshotMount[], target: string): void {
  mkdirSync(target, { recursive: true, mode: 0o755 });
  mountAll(mounts, target);
}

export function ensureDir(p: string, mode = 0o711): void {
  if (!existsSync(p)) mkdirSync(p, { recursive: true, mode });
}
