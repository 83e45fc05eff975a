/**
 * The one cgroup interface of Corral, with a cgroup v1 (per-controller
 * hierarchies, also used in hybrid mode) and a cgroup v2 (unified) implementation.
 *
 * cgroupsPath semantics follow runc's cgroupfs driver:
 *   - "/a/b"  (absolute): relative to the root of every hierarchy (mount point + path);
 *   - "a/b"   (relative): relative to the cgroup the runtime itself is in
 *                         (/proc/self/cgroup, per hierarchy on v1);
 *   - ""      (empty): the caller supplies a default. runc uses the container id as
 *                      a relative path (Path = "", Name = id → "<id>" under the
 *                      runtime's own cgroup); {@link defaultCgroupsPath} does the same.
 *   - "slice:prefix:name" is systemd-driver syntax and is refused (UnimplementedError),
 *     as is `systemd: true`: only the cgroupfs driver is implemented.
 */
import { InvalidArgumentError, UnimplementedError } from '../../errors.ts';
import {
  DEFAULT_CGROUP_ROOT, DEFAULT_PROCFS, detectCgroupModeByStatfs, findCgroupMounts, modeFromMounts,
  type CgroupMounts,
} from './detect.ts';
import type { CgroupMode, CgroupState, CgroupStats, LinuxResources, SetResult } from './types.ts';
import { V1Manager } from './v1.ts';
import { V2Manager } from './v2.ts';

export interface CgroupManager {
  readonly mode: CgroupMode;
  /** The cgroupsPath this manager was created with (normalized). */
  readonly path: string;
  /** Create the cgroup directories (idempotent); on v1 also fills cpuset.cpus/mems. */
  create(): void;
  /**
   * Move a process (all its threads) into the cgroup; creates the cgroup if needed. Async: the
   * write may wait for a kernel grace period, off the calling thread.
   */
  apply(pid: number): Promise<void>;
  /** Apply resources. On v2, device rules come back as a BPF program for the executor to attach. */
  set(resources: LinuxResources): SetResult;
  /** Freeze and wait until the kernel reports the cgroup frozen. */
  freeze(): Promise<void>;
  thaw(): void;
  state(): CgroupState;
  /** Every PID in the cgroup and its descendants. */
  pids(): number[];
  /** Signal every process (SIGKILL via cgroup.kill on v2 when available). */
  killAll(signal: NodeJS.Signals | number): void;
  /** Kill what is left (thawing first), wait until empty, rmdir deepest-first. Idempotent. */
  destroy(): Promise<void>;
  stats(): CgroupStats;
  exists(): boolean;
  /** cgroup.procs files a new process must write its PID to (one per hierarchy on v1). */
  cgroupProcsPaths(): string[];
  /** Number of processes killed by the OOM killer in this cgroup so far. */
  oomKillCount(): number;
  /** The cgroup directories (one per v1 hierarchy, one on v2). */
  dirs(): string[];
}

export interface CgroupManagerOptions {
  cgroupsPath: string;
  /** Default: detected from mountinfo (or the layout of `root`). */
  mode?: CgroupMode;
  /** cgroupfs root; default /sys/fs/cgroup. Another root may be a fake cgroupfs directory. */
  root?: string;
  /** procfs; default /proc (own cgroup for relative paths, mountinfo). */
  procfs?: string;
  /**
   * /proc/<pid>/cgroup text of the process a relative cgroupsPath is relative to: runc's rule is "the
   * runtime's own cgroup", i.e. the caller's (a long-lived server passes its client's). Default: this process.
   */
  relativeTo?: string;
  /** The systemd cgroup driver; not implemented. */
  systemd?: boolean;
  /** Receives warnings about skipped settings (default: process.emitWarning). */
  warn?: (message: string) => void;
  /** freeze()/destroy() give up after this long (default 10 s). */
  timeoutMs?: number;
  /**
   * v2: also write memory.oom.group=1 when a memory limit is set, so an OOM kill takes
   * the whole container down rather than one process (what kubelet does). Default
   * false, like runc; `unified["memory.oom.group"]` always wins.
   */
  oomGroup?: boolean;
}

/** runc's default when linux.cgroupsPath is empty: the container id, relative to the runtime's cgroup. */
export function defaultCgroupsPath(id: string): string {
  if (!id || id.includes('/') || id === '.' || id === '..') {
    throw new InvalidArgumentError(`container id ${JSON.stringify(id)} cannot be used as a cgroup name`);
  }
  return id;
}

const systemdSyntax = /^[^/:]*:[^/:]*:[^/:]+$/;

/** Validate and clean a cgroupsPath: no "..", no systemd "slice:prefix:name". */
export function normalizeCgroupsPath(p: string): string {
  if (systemdSyntax.test(p)) {
    throw new UnimplementedError(
      `cgroupsPath ${JSON.stringify(p)} is systemd-driver syntax (slice:prefix:name); the systemd cgroup driver is not supported, use the cgroupfs driver with a path such as "/corral/<id>"`,
    );
  }
  if (p === '') throw new InvalidArgumentError('cgroupsPath is empty; use defaultCgroupsPath(id)');
  if (p.includes('\0')) throw new InvalidArgumentError(`cgroupsPath ${JSON.stringify(p)} contains a NUL byte`);
  const abs = p.startsWith('/');
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.includes('..')) throw new InvalidArgumentError(`cgroupsPath ${JSON.stringify(p)} must not contain ".."`);
  if (parts.length === 0) {
    throw new InvalidArgumentError(`cgroupsPath ${JSON.stringify(p)} names the root cgroup (or the runtime's own); give a container cgroup such as "/corral/<id>"`);
  }
  return (abs ? '/' : '') + parts.join('/');
}

export function createCgroupManager(opts: CgroupManagerOptions): CgroupManager {
  if (opts.systemd) {
    throw new UnimplementedError(
      'the systemd cgroup driver (--systemd-cgroup) is not supported; run without it to use the cgroupfs driver',
    );
  }
  const cgroupsPath = normalizeCgroupsPath(opts.cgroupsPath);
  const procfs = opts.procfs ?? DEFAULT_PROCFS;
  const mounts: CgroupMounts = findCgroupMounts({ root: opts.root, procfs });
  let mode = opts.mode;
  if (!mode) {
    mode = modeFromMounts(mounts);
    const byStatfs = detectCgroupModeByStatfs(opts.root ?? DEFAULT_CGROUP_ROOT);
    // mountinfo is authoritative; statfs only settles an ambiguous layout.
    if (byStatfs === 'v2' && !mounts.v1.size) mode = 'v2';
  }
  const common = {
    cgroupsPath,
    mounts,
    procfs,
    relativeTo: opts.relativeTo,
    warn: opts.warn ?? ((m: string) => process.emitWarning(m, { code: 'CORRAL_CGROUPS' })),
    timeoutMs: opts.timeoutMs ?? 10_000,
  };
  if (mode === 'v2') return new V2Manager({ ...common, oomGroup: opts.oomGroup });
  return new V1Manager({ ...common, mode });
}
