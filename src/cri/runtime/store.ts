/**
 * Persistent sandbox and container records: one JSON file per object under
 * <root_dir>/runtime/{sandboxes,containers}/<id>.json, written atomically (temp file +
 * rename). A record is written *before* the first side effect of a create with
 * phase "creating" and lists every resource as it is acquired, so a daemon that dies
 * part-way can roll the half-created object back on its next start.
 *
 * Durability: the rename alone survives any crash of the daemon. A power loss or kernel crash
 * also ends every pod and container, and what they held in memory, mounts, cgroups and
 * namespaces with them; what survives a reboot is on disk: CNI allocations and snapshots. So a
 * save is synced to disk (`durable`) right before those are acquired, and the others are not
 * (a sync costs about a millisecond of the daemon's thread on ext4, several times per RPC).
 *
 * This is also the query surface for the streaming backend and the CLI:
 * `store.container(id)` gives the OCI runtime id, runtime binary and root, bundle, log
 * path, conmon attach socket; `store.sandbox(id)` gives the netns path.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { InvalidArgumentError, NotFoundError } from '../../errors.ts';
import type { ContainerConfig, PodSandboxConfig } from '../types.gen.ts';
import type { Mount as SnapshotMount } from '../../image/snapshot/snapshotter.ts';

export type SandboxPhase = 'creating' | 'ready' | 'notready';

export interface SandboxRecord {
  id: string;
  phase: SandboxPhase;
  /** ns since the epoch, as a decimal string. */
  createdAt: string;
  config: PodSandboxConfig;
  runtimeHandler: string;
  hostNetwork: boolean;
  hostIpc: boolean;
  hostPid: boolean;
  /** Shared PID namespace (NamespaceMode POD): an infra container holds it. */
  sharedPid: boolean;
  hostname: string;
  /** <state_dir>/sandboxes/<id>: resolv.conf, hosts, hostname, shm/. */
  dir: string;
  /** Pinned namespace files, present once pinned. */
  netnsPath?: string;
  ipcnsPath?: string;
  utsnsPath?: string;
  /** The pod's /dev/shm tmpfs mount point (mounted when set and not hostIPC). */
  shmPath?: string;
  shmMounted?: boolean;
  /** Namespaces actually pinned (bind mounts to undo). */
  pinned: string[];
  /** CNI ADD started (so DEL is owed). */
  cniStarted?: boolean;
  cniDone?: boolean;
  ips: string[];
  cgroupParent: string;
  /** We created the pod cgroup (and remove it with the pod). */
  cgroupCreated?: boolean;
  /** The infra container's id when sharedPid. */
  infraId?: string;
}

export type ContainerPhase = 'creating' | 'created' | 'running' | 'exited';

export interface ContainerRecord {
  id: string;
  sandboxId: string;
  phase: ContainerPhase;
  /** Infra (pause) containers are not listed through the CRI. */
  infra?: boolean;
  name: string;
  attempt: number;
  config: ContainerConfig | null;
  imageRef: string;
  imageName: string;
  /** OCI runtime id (= the CRI id). */
  ociId: string;
  runtimeHandler: string;
  runtimePath: string;
  runtimeRoot: string;
  /** Bundle dir with config.json; the rootfs is mounted at <bundle>/rootfs. */
  bundle: string;
  rootfs: string;
  /** Snapshot key of the writable layer (undefined for infra containers). */
  snapshotKey?: string;
  snapshotMounts?: SnapshotMount[];
  rootfsMounted?: boolean;
  /** What the kubelet sees: <log_directory>/<log_path>, or "" if none given. */
  logPath: string;
  /** Where conmon writes (logPath, or a file in the bundle when none was given). */
  conmonLogPath: string;
  /** conmon's attach socket and control fifo. */
  attachSocket: string;
  ctlFifo: string;
  pidFile: string;
  conmonPidFile: string;
  exitFile: string;
  cgroupsPath: string;
  /** conmon ran and `create` succeeded. */
  ociCreated?: boolean;
  pid?: number;
  conmonPid?: number;
  stopSignal: string;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  exitCode?: number;
  reason?: string;
  message?: string;
  tty: boolean;
  stdin: boolean;
  stdinOnce: boolean;
  /** Resources as last applied (for ContainerStatus.resources). */
  resources?: ContainerConfig['linux'] extends infer L ? (L extends { resources: infer R } ? R : never) : never;
  warnings?: string[];
}

export function newId(): string {
  return randomBytes(32).toString('hex');
}

export function nowNs(): string {
  return (BigInt(Date.now()) * 1_000_000n).toString();
}

function atomicWrite(path: string, data: string, durable: boolean): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, data);
    if (durable) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

export class RuntimeStore {
  readonly dir: string;
  private readonly sandboxes = new Map<string, SandboxRecord>();
  private readonly containers = new Map<string, ContainerRecord>();

  constructor(dir: string) {
    this.dir = dir;
    mkdirSync(join(dir, 'sandboxes'), { recursive: true, mode: 0o700 });
    mkdirSync(join(dir, 'containers'), { recursive: true, mode: 0o700 });
    for (const kind of ['sandboxes', 'containers'] as const) {
      for (const f of readdirSync(join(dir, kind))) {
        if (f.includes('.tmp-')) {
          rmSync(join(dir, kind, f), { force: true });
          continue;
        }
        if (!f.endsWith('.json')) continue;
        try {
          const rec = JSON.parse(readFileSync(join(dir, kind, f), 'utf8'));
          if (kind === 'sandboxes') this.sandboxes.set(rec.id, rec);
          else this.containers.set(rec.id, rec);
        } catch {
          // A torn file cannot exist (atomic rename); an unreadable one is skipped and reported by recovery.
        }
      }
    }
  }

  /** `durable`: synced to disk before returning (see the top of this file for when). */
  saveSandbox(s: SandboxRecord, durable = false): void {
    atomicWrite(join(this.dir, 'sandboxes', `${s.id}.json`), JSON.stringify(s), durable);
    this.sandboxes.set(s.id, s);
  }
  saveContainer(c: ContainerRecord, durable = false): void {
    atomicWrite(join(this.dir, 'containers', `${c.id}.json`), JSON.stringify(c), durable);
    this.containers.set(c.id, c);
  }
  deleteSandbox(id: string): void {
    rmSync(join(this.dir, 'sandboxes', `${id}.json`), { force: true });
    this.sandboxes.delete(id);
  }
  deleteContainer(id: string): void {
    rmSync(join(this.dir, 'containers', `${id}.json`), { force: true });
    this.containers.delete(id);
  }

  allSandboxes(): SandboxRecord[] {
    return [...this.sandboxes.values()];
  }
  allContainers(): ContainerRecord[] {
    return [...this.containers.values()];
  }
  containersOf(sandboxId: string): ContainerRecord[] {
    return this.allContainers().filter((c) => c.sandboxId === sandboxId);
  }

  /** Full id or a unique prefix (as crictl allows). */
  findSandbox(idOrPrefix: string): SandboxRecord | undefined {
    return this.resolve(this.sandboxes, idOrPrefix, 'pod sandbox');
  }
  findContainer(idOrPrefix: string): ContainerRecord | undefined {
    const c = this.resolve(this.containers, idOrPrefix, 'container');
    return c?.infra ? undefined : c;
  }

  /** For other subsystems (streaming backend, CLI): throws NotFound. */
  sandbox(idOrPrefix: string): SandboxRecord {
    if (!idOrPrefix) throw new InvalidArgumentError('pod_sandbox_id is empty');
    const s = this.findSandbox(idOrPrefix);
    if (!s || s.phase === 'creating') throw new NotFoundError(`pod sandbox ${JSON.stringify(idOrPrefix)} does not exist`);
    return s;
  }
  container(idOrPrefix: string): ContainerRecord {
    if (!idOrPrefix) throw new InvalidArgumentError('container_id is empty');
    const c = this.findContainer(idOrPrefix);
    if (!c || c.phase === 'creating') throw new NotFoundError(`container ${JSON.stringify(idOrPrefix)} does not exist`);
    return c;
  }
  /** Any record including infra containers (internal). */
  rawContainer(id: string): ContainerRecord | undefined {
    return this.containers.get(id);
  }

  private resolve<T>(map: Map<string, T>, key: string, what: string): T | undefined {
    const exact = map.get(key);
    if (exact) return exact;
    if (key.length < 3) return undefined;
    const hits = [...map.keys()].filter((k) => k.startsWith(key));
    if (hits.length > 1) throw new InvalidArgumentError(`${what} id prefix ${JSON.stringify(key)} is ambiguous (${hits.length} matches); give more characters`);
    return hits.length ? map.get(hits[0]!) : undefined;
  }
}
