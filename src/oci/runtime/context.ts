/** What every verb needs: where state lives, how to log, which executor and cgroup driver to use. */
import { readFileSync } from 'node:fs';
import { FailedPreconditionError } from '../../errors.ts';
import { createCgroupManager } from '../cgroups/index.ts';
import type { CgroupManager } from '../cgroups/index.ts';
import type { State } from '../spec/types.ts';
import { OCI_VERSION } from '../spec/types.ts';
import { isAlive, StateStore } from './state-store.ts';
import type { ContainerRecord } from './state-store.ts';
import type { Status } from '../spec/types.ts';
import { startExecutor } from './executor.ts';
import type { ExecutorSpawner } from './executor.ts';

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

export interface RuntimeOptions {
  root?: string;
  executorPath?: string;
  logger?: Logger;
  systemdCgroup?: boolean;
  /** How create/exec start the executor (default: `startExecutor`, a child of this process, using `executorPath`). */
  spawnExecutor?: ExecutorSpawner;
}

export class RuntimeContext {
  readonly store: StateStore;
  readonly logger: Logger;
  readonly executorPath?: string;
  readonly systemdCgroup: boolean;
  readonly spawnExecutor: ExecutorSpawner;
  constructor(opts: RuntimeOptions = {}) {
    this.store = new StateStore(opts.root);
    this.logger = opts.logger ?? silentLogger;
    this.executorPath = opts.executorPath;
    this.systemdCgroup = opts.systemdCgroup ?? false;
    const path = opts.executorPath;
    this.spawnExecutor = opts.spawnExecutor ?? ((o) => startExecutor({ ...o, executorPath: o.executorPath ?? path }));
  }

  cgroup(record: Pick<ContainerRecord, 'cgroupsPath' | 'cgroupRelativeTo'>): CgroupManager {
    return createCgroupManager({ cgroupsPath: record.cgroupsPath, relativeTo: record.cgroupRelativeTo, systemd: this.systemdCgroup });
  }

  /** The live status, derived from the record and the kernel. */
  status(record: ContainerRecord): Status {
    if (record.phase === 'creating') {
      if (record.creatorPid > 0 && isPidAlive(record.creatorPid) && record.creatorPid !== process.pid) return 'creating';
      if (record.pid === 0 || !isAlive(record)) return 'stopped';
      return 'creating';
    }
    if (!isAlive(record)) return 'stopped';
    if (record.phase === 'created') return 'created';
    try {
      if (this.cgroup(record).state() === 'paused') return 'paused';
    } catch {
      /* no cgroup: cannot be paused */
    }
    return 'running';
  }

  state(record: ContainerRecord): State & { rootfs: string; created: string; owner: string } {
    const status = this.status(record);
    return {
      ociVersion: OCI_VERSION,
      id: record.id,
      pid: status === 'stopped' ? 0 : record.pid,
      status,
      bundle: record.bundle,
      rootfs: record.rootfs,
      created: record.created,
      owner: record.owner,
      ...(record.spec.annotations ? { annotations: record.spec.annotations } : {}),
    };
  }

  /** The spec's view of the state (for hooks): no extra fields. */
  hookState(record: ContainerRecord, status: Status): State {
    return {
      ociVersion: OCI_VERSION, id: record.id, status, ...(record.pid ? { pid: record.pid } : {}), bundle: record.bundle,
      ...(record.spec.annotations ? { annotations: record.spec.annotations } : {}),
    };
  }

  requireStatus(record: ContainerRecord, allowed: Status[], verb: string): Status {
    const status = this.status(record);
    if (!allowed.includes(status)) {
      throw new FailedPreconditionError(`cannot ${verb} container "${record.id}": it is ${status} (must be ${allowed.join(' or ')})`);
    }
    return status;
  }
}

export function isPidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const st = s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
    return st !== 'Z' && st !== 'X';
  } catch {
    return false;
  }
}
