/**
 * Finding the cgroup hierarchies: which mode the host runs (v1, hybrid, v2),
 * where each controller is mounted, and which cgroup this process is in.
 *
 * Every function takes the procfs / cgroupfs root as a parameter so tests can
 * point it at fixtures.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FailedPreconditionError, fromNodeError } from '../../errors.ts';
import type { CgroupMode } from './types.ts';

export const DEFAULT_CGROUP_ROOT = '/sys/fs/cgroup';
export const DEFAULT_PROCFS = '/proc';

/** statfs(2) f_type values (linux/magic.h). */
export const CGROUP_SUPER_MAGIC = 0x27e0eb;
export const CGROUP2_SUPER_MAGIC = 0x63677270;
export const TMPFS_MAGIC = 0x01021994;

/** The controllers a v1 container cgroup is created in (runc's list), plus name=systemd. */
export const V1_CONTROLLERS = [
  'cpuset', 'cpu', 'cpuacct', 'memory', 'devices', 'freezer', 'blkio', 'pids',
  'hugetlb', 'net_cls', 'net_prio', 'perf_event', 'rdma', 'misc', 'name=systemd',
] as const;

export interface MountInfoEntry {
  mountId: number;
  parentId: number;
  majorMinor: string;
  /** Root of the mount within its file system (field 4). */
  root: string;
  mountPoint: string;
  mountOptions: string;
  fsType: string;
  source: string;
  superOptions: string;
}

function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parse /proc/<pid>/mountinfo (proc(5)). Malformed lines are skipped. */
export function parseMountInfo(text: string): MountInfoEntry[] {
  const out: MountInfoEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const a = line.slice(0, sep).split(' ');
    const b = line.slice(sep + 3).split(' ');
    if (a.length < 6 || b.length < 2) continue;
    out.push({
      mountId: Number(a[0]),
      parentId: Number(a[1]),
      majorMinor: a[2],
      root: unescapeOctal(a[3]),
      mountPoint: unescapeOctal(a[4]),
      mountOptions: a[5],
      fsType: b[0],
      source: unescapeOctal(b[1] ?? ''),
      superOptions: b[2] ?? '',
    });
  }
  return out;
}

/** A mounted cgroup hierarchy. For v2, `controllers` is empty. */
export interface CgroupMount {
  version: 1 | 2;
  mountPoint: string;
  /** Root of the mount inside the hierarchy ("/" unless a subtree is bind-mounted). */
  root: string;
  /** v1: controllers of this hierarchy ("cpu", "cpuacct", "name=systemd"). */
  controllers: string[];
}

export interface CgroupMounts {
  /** v1 controller name (or "name=systemd") → its hierarchy. Co-mounted controllers share one entry. */
  v1: Map<string, CgroupMount>;
  v2?: CgroupMount;
}

function v1ControllersFromOptions(superOptions: string): string[] {
  const known = new Set<string>(V1_CONTROLLERS);
  const out: string[] = [];
  for (const o of superOptions.split(',')) {
    if (o.startsWith('name=')) out.push(o);
    else if (known.has(o)) out.push(o);
  }
  return out;
}

/** Cgroup mounts from mountinfo text. The first mount of a hierarchy wins (later ones are usually bind mounts into containers). */
export function cgroupMountsFromMountInfo(text: string, under?: string): CgroupMounts {
  const res: CgroupMounts = { v1: new Map() };
  for (const m of parseMountInfo(text)) {
    if (under !== undefined && !isUnder(m.mountPoint, under)) continue;
    if (m.fsType === 'cgroup2') {
      res.v2 ??= { version: 2, mountPoint: m.mountPoint, root: m.root, controllers: [] };
    } else if (m.fsType === 'cgroup') {
      const ctrls = v1ControllersFromOptions(m.superOptions);
      if (ctrls.length === 0) continue;
      const mount: CgroupMount = { version: 1, mountPoint: m.mountPoint, root: m.root, controllers: ctrls };
      for (const c of ctrls) if (!res.v1.has(c)) res.v1.set(c, mount);
    }
  }
  return res;
}

function isUnder(p: string, dir: string): boolean {
  const rel = path.relative(dir, p);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** Mode implied by a set of mounts. */
export function modeFromMounts(m: CgroupMounts): CgroupMode {
  const hasV1 = [...m.v1.keys()].some((c) => !c.startsWith('name='));
  if (hasV1) return m.v2 ? 'hybrid' : 'v1';
  if (m.v2) return 'v2';
  throw new FailedPreconditionError(
    'no cgroup file system is mounted (no cgroup or cgroup2 entry in mountinfo); mount cgroup2 on /sys/fs/cgroup',
  );
}

function readText(p: string, what: string): string {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch (err) {
    throw fromNodeError(err, what);
  }
}

/** Detect the mode from `<procfs>/self/mountinfo`. */
export function detectCgroupMode(procfs: string = DEFAULT_PROCFS): CgroupMode {
  return modeFromMounts(findCgroupMounts({ procfs }));
}

/**
 * Detect the mode the way systemd does: statfs(root). cgroup2 → v2; tmpfs with a
 * cgroup2 `unified` subdirectory → hybrid; tmpfs otherwise → v1. Returns undefined
 * when `root` is not a cgroup mount layout (e.g. a fake cgroupfs in a temp dir).
 */
export function detectCgroupModeByStatfs(root: string = DEFAULT_CGROUP_ROOT): CgroupMode | undefined {
  let type: number;
  try {
    type = Number(fs.statfsSync(root).type);
  } catch {
    return undefined;
  }
  if (type === CGROUP2_SUPER_MAGIC) return 'v2';
  if (type !== TMPFS_MAGIC) return undefined;
  try {
    if (Number(fs.statfsSync(path.join(root, 'unified')).type) === CGROUP2_SUPER_MAGIC) return 'hybrid';
  } catch {
    /* no unified */
  }
  return 'v1';
}

/** True when `p` is on a real cgroup file system (v1 or v2). */
export function isCgroupFs(p: string): boolean {
  try {
    const t = Number(fs.statfsSync(p).type);
    return t === CGROUP_SUPER_MAGIC || t === CGROUP2_SUPER_MAGIC;
  } catch {
    return false;
  }
}

/**
 * Derive mounts from a directory layout (a fake cgroupfs for tests, or a layout
 * without mountinfo): `<root>/cgroup.controllers` → pure v2 at root; otherwise each
 * subdirectory is a v1 hierarchy named by its controllers ("cpu,cpuacct"; "systemd"
 * means name=systemd), and `<root>/unified` with cgroup.controllers is the v2 mount.
 */
export function cgroupMountsFromLayout(root: string): CgroupMounts {
  const res: CgroupMounts = { v1: new Map() };
  if (fs.existsSync(path.join(root, 'cgroup.controllers'))) {
    res.v2 = { version: 2, mountPoint: root, root: '/', controllers: [] };
    return res;
  }
  let names: string[] = [];
  try {
    names = fs.readdirSync(root).sort();
  } catch (err) {
    throw fromNodeError(err, `read cgroup root ${root}`);
  }
  for (const name of names) {
    const dir = path.join(root, name);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(dir);
    } catch {
      continue;
    }
    if (!st.isDirectory()) continue; // symlinks like cpu -> cpu,cpuacct point at a real dir listed too
    if (name === 'unified') {
      if (fs.existsSync(path.join(dir, 'cgroup.controllers'))) res.v2 = { version: 2, mountPoint: dir, root: '/', controllers: [] };
      continue;
    }
    const ctrls = name === 'systemd' ? ['name=systemd'] : v1ControllersFromOptions(name);
    if (ctrls.length === 0) continue;
    const mount: CgroupMount = { version: 1, mountPoint: dir, root: '/', controllers: ctrls };
    for (const c of ctrls) if (!res.v1.has(c)) res.v1.set(c, mount);
  }
  return res;
}

/**
 * The host's cgroup mounts. With the default root, every cgroup mount in
 * `<procfs>/self/mountinfo` counts; with another root, only mounts under it, and if
 * there are none the directory layout of `root` is used (fake cgroupfs).
 */
export function findCgroupMounts(opts: { root?: string; procfs?: string } = {}): CgroupMounts {
  const procfs = opts.procfs ?? DEFAULT_PROCFS;
  const root = opts.root ?? DEFAULT_CGROUP_ROOT;
  const custom = opts.root !== undefined && path.resolve(opts.root) !== DEFAULT_CGROUP_ROOT;
  // The host's hierarchies hardly ever change, but mountinfo grows with every container (a daemon
  // would parse it for each cgroup it touches): the default view is reused for a few seconds.
  const host = !custom && procfs === DEFAULT_PROCFS;
  if (host && hostMounts && Date.now() - hostMounts.at < HOST_MOUNTS_TTL_MS) return hostMounts.mounts;
  const found = readCgroupMounts(procfs, root, custom);
  if (host) hostMounts = { at: Date.now(), mounts: found };
  return found;
}

const HOST_MOUNTS_TTL_MS = 5_000;
let hostMounts: { at: number; mounts: CgroupMounts } | undefined;

function readCgroupMounts(procfs: string, root: string, custom: boolean): CgroupMounts {
  let text: string | undefined;
  try {
    text = fs.readFileSync(path.join(procfs, 'self', 'mountinfo'), 'utf8');
  } catch (err) {
    if (!custom) throw fromNodeError(err, `read ${path.join(procfs, 'self', 'mountinfo')}`);
  }
  if (text !== undefined) {
    const m = cgroupMountsFromMountInfo(text, custom ? root : undefined);
    if (m.v1.size > 0 || m.v2) return m;
  }
  if (custom) return cgroupMountsFromLayout(root);
  throw new FailedPreconditionError(
    `no cgroup file system is mounted (no cgroup entry in ${path.join(procfs, 'self', 'mountinfo')}); mount cgroup2 on /sys/fs/cgroup`,
  );
}

/** One process's cgroup membership (/proc/<pid>/cgroup). */
export interface OwnCgroup {
  /** v1 controller (or "name=systemd") → path inside that hierarchy. */
  v1: Map<string, string>;
  /** The "0::" line: path in the unified hierarchy. */
  v2?: string;
}

export function parseProcCgroup(text: string): OwnCgroup {
  const res: OwnCgroup = { v1: new Map() };
  for (const line of text.split('\n')) {
    if (!line) continue;
    const i = line.indexOf(':');
    const j = line.indexOf(':', i + 1);
    if (i < 0 || j < 0) continue;
    const ctrls = line.slice(i + 1, j);
    const p = line.slice(j + 1);
    if (line.slice(0, i) === '0' && ctrls === '') res.v2 = p;
    else for (const c of ctrls.split(',')) if (c) res.v1.set(c, p);
  }
  return res;
}

/** The cgroup(s) of `pid` (default: this process). */
export function ownCgroup(procfs: string = DEFAULT_PROCFS, pid: number | 'self' = 'self'): OwnCgroup {
  const p = path.join(procfs, String(pid), 'cgroup');
  return parseProcCgroup(readText(p, `read ${p}`));
}

/**
 * Directory of a cgroup path (as listed in /proc/self/cgroup) on a mount, taking the
 * mount's root into account. A path outside the mount's root (another cgroup
 * namespace) maps to the mount point.
 */
export function cgroupDirOnMount(mount: CgroupMount, cgroupPath: string): string {
  const rel = path.posix.relative(mount.root, cgroupPath);
  if (rel.startsWith('..') || path.posix.isAbsolute(rel)) return mount.mountPoint;
  return path.join(mount.mountPoint, rel);
}
