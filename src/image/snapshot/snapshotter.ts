/**
 * Snapshotters (containerd's model): prepare/view/commit/remove return mount descriptions
 * and never mount anything themselves. Snapshot metadata lives in the shared SQLite store;
 * each snapshot owns <root>/<id>/ (fs/ and, for overlay, work/).
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError } from '../../errors.ts';
import type { MetadataDB, SnapshotKind, SnapshotRecord } from '../metadata/db.ts';
import type { ApplyMode } from '../unpack/apply.ts';

export interface Mount {
  /** "overlay" or "bind". */
  type: string;
  source: string;
  options: string[];
  /**
   * When set, lowerdir paths in `options` are relative to this directory: the mounter must
   * run mount(2) with this working directory (done when absolute paths would exceed the
   * kernel's one-page limit on mount options).
   */
  cwd?: string;
}

export interface SnapshotInfo {
  key: string;
  parent: string | null;
  kind: SnapshotKind;
  createdAt: number;
  labels: Record<string, string>;
}

export interface Usage {
  size: number;
  inodes: number;
}

export abstract class Snapshotter {
  abstract readonly name: string;
  /** How a layer is applied to this snapshotter's writable directory. */
  abstract readonly applyMode: ApplyMode;
  /** Whether layers can be unpacked before their parent is (overlay: each layer is its own dir). */
  abstract readonly parallelUnpack: boolean;
  readonly root: string;
  readonly db: MetadataDB;
  constructor(root: string, db: MetadataDB) {
    this.root = root;
    this.db = db;
  }

  async init(): Promise<void> {
    await fsp.mkdir(this.root, { recursive: true });
  }

  dir(id: number): string {
    return join(this.root, String(id));
  }
  fsDir(id: number): string {
    return join(this.root, String(id), 'fs');
  }

  protected get(key: string): SnapshotRecord {
    const s = this.db.getSnapshot(key);
    if (!s) throw new NotFoundError(`snapshot "${key}" does not exist`);
    return s;
  }

  protected committedParent(parent: string | undefined): SnapshotRecord | undefined {
    if (parent === undefined || parent === '') return undefined;
    const p = this.get(parent);
    if (p.kind !== 'committed') throw new FailedPreconditionError(`snapshot "${parent}" is ${p.kind}; only committed snapshots can be parents`);
    return p;
  }

  /** The committed chain from `key` down to the base layer. */
  chain(key: string): SnapshotRecord[] {
    const out: SnapshotRecord[] = [];
    let cur: string | null = key;
    while (cur !== null) {
      const s = this.get(cur);
      out.push(s);
      cur = s.parent;
    }
    return out;
  }

  stat(key: string): SnapshotInfo {
    const { id: _id, ...info } = this.get(key);
    void _id;
    return info;
  }

  list(): SnapshotInfo[] {
    return this.db.listSnapshots().map(({ id: _id, ...i }) => i);
  }

  /** A writable snapshot on top of `parent` (a container's rootfs, or a layer being unpacked). */
  async prepare(key: string, parent?: string, labels: Record<string, string> = {}): Promise<Mount[]> {
    return this.#create('active', key, parent, labels);
  }

  /** A read-only snapshot of `parent`. */
  async view(key: string, parent?: string, labels: Record<string, string> = {}): Promise<Mount[]> {
    return this.#create('view', key, parent, labels);
  }

  async #create(kind: 'active' | 'view', key: string, parent: string | undefined, labels: Record<string, string>): Promise<Mount[]> {
    if (!key) throw new InvalidArgumentError('snapshot key must not be empty');
    const p = this.committedParent(parent);
    if (this.db.getSnapshot(key)) throw new AlreadyExistsError(`snapshot "${key}" already exists`);
    const rec = this.db.insertSnapshot(key, p?.key ?? null, kind, labels);
    try {
      await this.createDirs(rec, p);
    } catch (e) {
      this.db.deleteSnapshot(key);
      await fsp.rm(this.dir(rec.id), { recursive: true, force: true });
      throw e;
    }
    return this.mounts(key);
  }

  /** The mounts for an active or view snapshot. */
  abstract mounts(key: string): Mount[];
  protected abstract createDirs(rec: SnapshotRecord, parent: SnapshotRecord | undefined): Promise<void>;

  /** The directory a layer is applied to for an active snapshot. */
  abstract applyDir(key: string): string;

  /**
   * Commit an active snapshot under `name`. `parent` re-parents a snapshot prepared without
   * one (overlay unpacks layers in parallel and links them into a chain in order).
   */
  async commit(name: string, key: string, opts: { labels?: Record<string, string>; parent?: string } = {}): Promise<void> {
    const s = this.get(key);
    if (s.kind !== 'active') throw new FailedPreconditionError(`snapshot "${key}" is ${s.kind}; only active snapshots can be committed`);
    if (this.db.getSnapshot(name)) throw new AlreadyExistsError(`snapshot "${name}" already exists`);
    let parent = s.parent;
    if (opts.parent !== undefined) {
      if (s.parent !== null && s.parent !== opts.parent) throw new InvalidArgumentError(`snapshot "${key}" already has parent "${s.parent}"`);
      if (!this.parallelUnpack && s.parent === null) throw new InvalidArgumentError(`${this.name} snapshots cannot be re-parented`);
      parent = this.committedParent(opts.parent)?.key ?? null;
    }
    const labels = { ...s.labels, ...(opts.labels ?? {}) };
    for (const k of Object.keys(labels)) if (labels[k] === '') delete labels[k];
    await this.beforeCommit(s);
    this.db.commitSnapshot(key, name, parent, labels);
  }
  protected async beforeCommit(_s: SnapshotRecord): Promise<void> {}

  /** Remove a snapshot that has no children. */
  async remove(key: string): Promise<void> {
    const s = this.get(key);
    const kids = this.db.snapshotChildren(key);
    if (kids.length) throw new FailedPreconditionError(`snapshot "${key}" has ${kids.length} child snapshot(s) (e.g. "${kids[0]!.key}"); remove them first`);
    this.db.deleteSnapshot(key);
    await fsp.rm(this.dir(s.id), { recursive: true, force: true });
  }

  /** Bytes (allocated blocks) and inodes of what the snapshot itself holds. */
  async usage(key: string): Promise<Usage> {
    const s = this.get(key);
    return diskUsage(this.fsDir(s.id));
  }

  /** Remove directories without a snapshot record (crash leftovers). Returns what was removed. */
  async reconcile(): Promise<string[]> {
    const ids = new Set(this.db.listSnapshots().map((s) => String(s.id)));
    const removed: string[] = [];
    for (const d of await fsp.readdir(this.root).catch(() => [] as string[])) {
      if (!ids.has(d)) {
        await fsp.rm(join(this.root, d), { recursive: true, force: true });
        removed.push(d);
      }
    }
    return removed;
  }
}

/** du-like walk: allocated bytes and distinct inodes under a directory. */
export async function diskUsage(dir: string): Promise<Usage> {
  const seen = new Set<string>();
  let size = 0;
  const walk = async (p: string) => {
    const st = await fsp.lstat(p, { bigint: true });
    const id = `${st.dev}:${st.ino}`;
    if (seen.has(id)) return;
    seen.add(id);
    size += Number(st.blocks) * 512;
    if (st.isDirectory()) for (const n of await fsp.readdir(p)) await walk(join(p, n));
  };
  await walk(dir).catch((e) => {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  });
  return { size, inodes: seen.size };
}
