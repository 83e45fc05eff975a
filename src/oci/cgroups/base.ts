/** Shared parts of the v1 and v2 managers: path resolution, freeze wait, kill and destroy loops. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DeadlineExceededError, FailedPreconditionError } from '../../errors.ts';
import { cgroupDirOnMount, ownCgroup, parseProcCgroup, type CgroupMount, type CgroupMounts, type OwnCgroup } from './detect.ts';
import { procsRecursive, removeCgroupTree, signalPid, sleep } from './fsutil.ts';
import type { CgroupManager } from './manager.ts';
import type { CgroupMode, CgroupState, CgroupStats, LinuxResources, SetResult } from './types.ts';

export interface ManagerInit {
  cgroupsPath: string;
  mounts: CgroupMounts;
  procfs: string;
  /** /proc/<pid>/cgroup text of the process relative cgroupsPaths are relative to (default: this one). */
  relativeTo?: string;
  warn: (message: string) => void;
  timeoutMs: number;
}

/**
 * The directory of `cgroupsPath` on one hierarchy. `ownPath` is this process's
 * cgroup in that hierarchy (needed only for relative paths).
 */
export function resolveCgroupDir(mount: CgroupMount, cgroupsPath: string, ownPath: () => string | undefined): string {
  if (cgroupsPath.startsWith('/')) return path.join(mount.mountPoint, cgroupsPath);
  const own = ownPath() ?? '/';
  return path.join(cgroupDirOnMount(mount, own), cgroupsPath);
}

export function lazyOwnCgroup(procfs: string, relativeTo?: string): () => OwnCgroup {
  let cached: OwnCgroup | undefined;
  return () => (cached ??= relativeTo !== undefined ? parseProcCgroup(relativeTo) : ownCgroup(procfs));
}

export abstract class BaseManager implements CgroupManager {
  abstract readonly mode: CgroupMode;
  readonly path: string;
  protected readonly warnFn: (message: string) => void;
  protected readonly timeoutMs: number;

  constructor(init: ManagerInit) {
    this.path = init.cgroupsPath;
    this.warnFn = init.warn;
    this.timeoutMs = init.timeoutMs;
  }

  abstract dirs(): string[];
  abstract create(): void;
  abstract apply(pid: number): Promise<void>;
  abstract set(resources: LinuxResources): SetResult;
  abstract thaw(): void;
  abstract state(): CgroupState;
  abstract stats(): CgroupStats;
  abstract cgroupProcsPaths(): string[];
  abstract oomKillCount(): number;
  abstract killAll(signal: NodeJS.Signals | number): void;
  /** Ask the kernel to freeze (one write). */
  protected abstract requestFreeze(): void;
  /** The directory whose tree lists the processes. */
  protected abstract procsDir(): string;

  exists(): boolean {
    return this.dirs().some((d) => fs.existsSync(d));
  }

  pids(): number[] {
    return procsRecursive(this.procsDir());
  }

  async freeze(): Promise<void> {
    if (!this.exists()) throw new FailedPreconditionError(`freeze cgroup ${this.path}: it does not exist`);
    const deadline = Date.now() + this.timeoutMs;
    this.requestFreeze();
    let delay = 1;
    for (let i = 1; ; i++) {
      const s = this.state();
      if (s === 'paused') return;
      if (s === 'absent') throw new FailedPreconditionError(`freeze cgroup ${this.path}: it was removed`);
      if (Date.now() > deadline) {
        this.thaw();
        throw new DeadlineExceededError(
          `freeze cgroup ${this.path}: not frozen after ${this.timeoutMs} ms (a task may be in an uninterruptible sleep); thawed it again`,
        );
      }
      // v1 freezer can stall in FREEZING: re-request now and then, as runc does.
      if (i % 25 === 0) this.requestFreeze();
      await sleep(delay);
      delay = Math.min(delay * 2, 20);
    }
  }

  async destroy(): Promise<void> {
    if (!this.exists()) return;
    const st = this.state();
    if (st === 'paused' || st === 'freezing') this.thaw();
    const deadline = Date.now() + this.timeoutMs;
    let delay = 1;
    for (let i = 0; ; i++) {
      const left = this.pids();
      if (left.length === 0) break;
      if (i % 10 === 0) this.killAll('SIGKILL');
      if (Date.now() > deadline) {
        throw new DeadlineExceededError(
          `destroy cgroup ${this.path}: processes ${left.join(' ')} still present ${this.timeoutMs} ms after SIGKILL`,
        );
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 20);
    }
    for (const d of this.dirs()) removeCgroupTree(d);
  }

  protected warn(message: string, warnings: string[]): void {
    warnings.push(message);
    this.warnFn(message);
  }

  /** Signal every listed PID (no freezing). */
  protected signalEach(signal: NodeJS.Signals | number): void {
    for (const pid of this.pids()) signalPid(pid, signal);
  }
}
