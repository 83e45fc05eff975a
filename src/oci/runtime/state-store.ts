/**
 * Per-container state under the runtime root (default /run/corral-oci/<id>/):
 *   state.json  — the record below, replaced atomically
 *   exec.fifo   — exists from create until start; the init blocks on it
 * The live status is derived from the record plus the kernel (is the pid alive and
 * the same process, is the fifo still there, is the cgroup frozen).
 */
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { AlreadyExistsError, InvalidArgumentError, NotFoundError, fromNodeError } from '../../errors.ts';
import type { Spec, Status } from '../spec/types.ts';

export const DEFAULT_ROOT = '/run/corral-oci';

export interface ContainerRecord {
  id: string;
  bundle: string;
  rootfs: string;
  /** Host pid of the container's init (0 while creating). */
  pid: number;
  /** Field 22 of /proc/<pid>/stat, to tell our init from a recycled pid. */
  pidStartTime: string;
  /** "creating" until create finished; "created" after; "running" after start. Live status is derived. */
  phase: 'creating' | 'created' | 'running';
  /** Pid of the `create` process while creating (lets `state`/`delete` see a create that was killed). */
  creatorPid: number;
  created: string;
  owner: string;
  cgroupsPath: string;
  /** For a relative cgroupsPath: /proc/<caller>/cgroup at create, what it is relative to (every later verb uses it). */
  cgroupRelativeTo?: string;
  /** Whether the init had poststart/poststop hooks run. */
  started: boolean;
  spec: Spec;
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,1023}$/;

export function validateId(id: string | undefined): string {
  if (!id) throw new InvalidArgumentError('a container id is required');
  if (!ID_RE.test(id)) {
    throw new InvalidArgumentError(`invalid container id "${id}": use letters, digits, and "_.+-", starting with a letter or digit`);
  }
  return id;
}

export class StateStore {
  readonly root: string;
  constructor(root: string = DEFAULT_ROOT) {
    this.root = root;
  }

  dir(id: string): string {
    return join(this.root, validateId(id));
  }

  fifo(id: string): string {
    return join(this.dir(id), 'exec.fifo');
  }

  /** Reserve the id: fails with AlreadyExistsError if a container of that id exists. */
  reserve(record: ContainerRecord): void {
    mkdirSync(this.root, { recursive: true, mode: 0o711 });
    try {
      mkdirSync(this.dir(record.id), { mode: 0o711 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new AlreadyExistsError(`container "${record.id}" already exists`);
      throw fromNodeError(e, `create state directory for "${record.id}"`);
    }
    this.save(record);
  }

  save(record: ContainerRecord): void {
    const dir = this.dir(record.id);
    const tmp = join(dir, `.state.json.${process.pid}`);
    // Atomic against a crash of any process (rename), not synced to disk: the state describes
    // live processes and means nothing after a reboot (runc does the same; the root is a tmpfs).
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify(record));
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, join(dir, 'state.json'));
  }

  load(id: string): ContainerRecord {
    const file = join(this.dir(id), 'state.json');
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        // A state dir without a record is a create that died before its first write.
        if (existsSync(this.dir(id))) return this.orphanRecord(id);
        throw new NotFoundError(`container "${id}" does not exist`);
      }
      throw fromNodeError(e, `read state of "${id}"`);
    }
    return JSON.parse(text) as ContainerRecord;
  }

  private orphanRecord(id: string): ContainerRecord {
    return {
      id, bundle: '', rootfs: '', pid: 0, pidStartTime: '', phase: 'creating', creatorPid: 0, created: new Date(0).toISOString(),
      owner: 'root', cgroupsPath: '', started: false, spec: { ociVersion: '1.2.0' },
    };
  }

  exists(id: string): boolean {
    return existsSync(this.dir(id));
  }

  remove(id: string): void {
    rmSync(this.dir(id), { recursive: true, force: true });
  }

  ids(): string[] {
    try {
      return readdirSync(this.root, { withFileTypes: true }).filter((d) => d.isDirectory() && ID_RE.test(d.name)).map((d) => d.name).sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw fromNodeError(e, `list ${this.root}`);
    }
  }
}

/** Field 22 (starttime) of /proc/<pid>/stat, or undefined if the process is gone. */
export function processStartTime(pid: number): string | undefined {
  if (!(pid > 0)) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const after = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // after[0] is field 3 (state); starttime is field 22.
    if (after[0] === 'Z' || after[0] === 'X') return undefined;
    return after[19];
  } catch {
    return undefined;
  }
}

export function isAlive(record: Pick<ContainerRecord, 'pid' | 'pidStartTime'>): boolean {
  const st = processStartTime(record.pid);
  return st !== undefined && st === record.pidStartTime;
}

export type { Status };
