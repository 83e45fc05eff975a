/**
 * The image store's metadata in embedded SQLite (node:sqlite, WAL): images (name → target
 * descriptor), content records with labels (garbage-collection references), snapshots, and
 * leases. Every multi-row change runs in one transaction, so a SIGKILL at any point leaves
 * either the old or the new state.
 */
import { DatabaseSync } from 'node:sqlite';
import { InternalError } from '../../errors.ts';

export interface ImageRecord {
  name: string;
  digest: string;
  mediaType: string;
  size: number;
  createdAt: number;
  updatedAt: number;
  labels: Record<string, string>;
}

export interface ContentRecord {
  digest: string;
  size: number;
  mediaType: string;
  createdAt: number;
  labels: Record<string, string>;
}

export type SnapshotKind = 'active' | 'view' | 'committed';

export interface SnapshotRecord {
  id: number;
  key: string;
  parent: string | null;
  kind: SnapshotKind;
  createdAt: number;
  labels: Record<string, string>;
}

/** Labels whose values name content/snapshots that garbage collection keeps alive. */
export const GC_REF_CONTENT = 'containerd.io/gc.ref.content.';
export const GC_REF_SNAPSHOT = 'containerd.io/gc.ref.snapshot.';
export const LABEL_UNCOMPRESSED = 'containerd.io/uncompressed';
/** On a snapshot while a layer is being unpacked into it; such snapshots are removed on start. */
export const LABEL_UNPACKING = 'corral.io/unpacking';
/** On a lease: when it expires (RFC 3339); gc drops expired leases first (containerd's label). */
export const LABEL_LEASE_EXPIRE = 'containerd.io/gc.expire';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
  name TEXT PRIMARY KEY, digest TEXT NOT NULL, media_type TEXT NOT NULL, size INTEGER NOT NULL,
  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, labels TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS images_digest ON images(digest);
CREATE TABLE IF NOT EXISTS content (
  digest TEXT PRIMARY KEY, size INTEGER NOT NULL, media_type TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL, labels TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS snapshots (
  id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, parent TEXT REFERENCES snapshots(key),
  kind TEXT NOT NULL CHECK (kind IN ('active','view','committed')), created_at INTEGER NOT NULL,
  labels TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
CREATE TABLE IF NOT EXISTS leases (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, labels TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS lease_resources (
  lease_id TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE, type TEXT NOT NULL, ref TEXT NOT NULL,
  PRIMARY KEY (lease_id, type, ref));
`;

type Row = Record<string, unknown>;
const labelsOf = (s: unknown): Record<string, string> => JSON.parse(String(s ?? '{}'));

export class MetadataDB {
  readonly db: DatabaseSync;
  #depth = 0;
  constructor(path: string) {
    this.db = new DatabaseSync(path);
    // busy_timeout first: another process may be mid-transaction while we switch to WAL.
    this.db.exec('PRAGMA busy_timeout=5000; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;');
    this.db.exec(SCHEMA);
    this.db.prepare(`INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', '1')`).run();
  }

  close(): void {
    this.db.close();
  }

  /** Run fn in one transaction (nested calls join the outer one). */
  tx<T>(fn: () => T): T {
    if (this.#depth > 0) {
      this.#depth++;
      try {
        return fn();
      } finally {
        this.#depth--;
      }
    }
    this.db.exec('BEGIN IMMEDIATE');
    this.#depth = 1;
    try {
      const r = fn();
      if (r instanceof Promise) throw new InternalError('MetadataDB.tx callback must be synchronous');
      this.db.exec('COMMIT');
      return r;
    } catch (e) {
      this.db.exec('ROLLBACK');
      throw e;
    } finally {
      this.#depth = 0;
    }
  }

  // images
  putImage(r: Omit<ImageRecord, 'createdAt' | 'updatedAt'> & { createdAt?: number }): void {
    const now = Date.now();
    this.db
      .prepare(
        `INSERT INTO images(name, digest, media_type, size, created_at, updated_at, labels) VALUES (?,?,?,?,?,?,?)
         ON CONFLICT(name) DO UPDATE SET digest=excluded.digest, media_type=excluded.media_type, size=excluded.size,
         updated_at=excluded.updated_at, labels=excluded.labels`,
      )
      .run(r.name, r.digest, r.mediaType, r.size, r.createdAt ?? now, now, JSON.stringify(r.labels ?? {}));
  }
  #image(row: Row | undefined): ImageRecord | undefined {
    if (!row) return undefined;
    return {
      name: String(row.name), digest: String(row.digest), mediaType: String(row.media_type), size: Number(row.size),
      createdAt: Number(row.created_at), updatedAt: Number(row.updated_at), labels: labelsOf(row.labels),
    };
  }
  getImage(name: string): ImageRecord | undefined {
    return this.#image(this.db.prepare('SELECT * FROM images WHERE name = ?').get(name) as Row | undefined);
  }
  listImages(): ImageRecord[] {
    return (this.db.prepare('SELECT * FROM images ORDER BY name').all() as Row[]).map((r) => this.#image(r)!);
  }
  deleteImage(name: string): boolean {
    return Number(this.db.prepare('DELETE FROM images WHERE name = ?').run(name).changes) > 0;
  }

  // content
  putContent(r: Omit<ContentRecord, 'createdAt'>): void {
    this.db
      .prepare(
        `INSERT INTO content(digest, size, media_type, created_at, labels) VALUES (?,?,?,?,?)
         ON CONFLICT(digest) DO UPDATE SET size=excluded.size, media_type=CASE WHEN excluded.media_type != '' THEN excluded.media_type ELSE content.media_type END,
         labels=json_patch(content.labels, excluded.labels)`,
      )
      .run(r.digest, r.size, r.mediaType, Date.now(), JSON.stringify(r.labels ?? {}));
  }
  #content(row: Row | undefined): ContentRecord | undefined {
    if (!row) return undefined;
    return { digest: String(row.digest), size: Number(row.size), mediaType: String(row.media_type), createdAt: Number(row.created_at), labels: labelsOf(row.labels) };
  }
  getContent(digest: string): ContentRecord | undefined {
    return this.#content(this.db.prepare('SELECT * FROM content WHERE digest = ?').get(digest) as Row | undefined);
  }
  listContent(): ContentRecord[] {
    return (this.db.prepare('SELECT * FROM content').all() as Row[]).map((r) => this.#content(r)!);
  }
  deleteContent(digest: string): void {
    this.db.prepare('DELETE FROM content WHERE digest = ?').run(digest);
  }

  // snapshots
  #snap(row: Row | undefined): SnapshotRecord | undefined {
    if (!row) return undefined;
    return {
      id: Number(row.id), key: String(row.key), parent: row.parent === null ? null : String(row.parent),
      kind: String(row.kind) as SnapshotKind, createdAt: Number(row.created_at), labels: labelsOf(row.labels),
    };
  }
  insertSnapshot(key: string, parent: string | null, kind: SnapshotKind, labels: Record<string, string> = {}): SnapshotRecord {
    const r = this.db
      .prepare('INSERT INTO snapshots(key, parent, kind, created_at, labels) VALUES (?,?,?,?,?) RETURNING *')
      .get(key, parent, kind, Date.now(), JSON.stringify(labels)) as Row;
    return this.#snap(r)!;
  }
  getSnapshot(key: string): SnapshotRecord | undefined {
    return this.#snap(this.db.prepare('SELECT * FROM snapshots WHERE key = ?').get(key) as Row | undefined);
  }
  listSnapshots(): SnapshotRecord[] {
    return (this.db.prepare('SELECT * FROM snapshots ORDER BY id').all() as Row[]).map((r) => this.#snap(r)!);
  }
  snapshotChildren(key: string): SnapshotRecord[] {
    return (this.db.prepare('SELECT * FROM snapshots WHERE parent = ?').all(key) as Row[]).map((r) => this.#snap(r)!);
  }
  commitSnapshot(key: string, name: string, parent: string | null, labels: Record<string, string>): void {
    this.db.prepare(`UPDATE snapshots SET key = ?, kind = 'committed', parent = ?, labels = ? WHERE key = ?`).run(name, parent, JSON.stringify(labels), key);
  }
  deleteSnapshot(key: string): void {
    this.db.prepare('DELETE FROM snapshots WHERE key = ?').run(key);
  }

  // leases
  createLease(id: string, labels: Record<string, string> = {}): void {
    this.db.prepare('INSERT INTO leases(id, created_at, labels) VALUES (?,?,?)').run(id, Date.now(), JSON.stringify(labels));
  }
  addLeaseResource(id: string, type: 'content' | 'snapshot' | 'image', ref: string): void {
    this.db.prepare('INSERT OR IGNORE INTO lease_resources(lease_id, type, ref) VALUES (?,?,?)').run(id, type, ref);
  }
  deleteLease(id: string): void {
    this.db.prepare('DELETE FROM leases WHERE id = ?').run(id);
  }
  listLeases(): Array<{ id: string; createdAt: number; labels: Record<string, string> }> {
    return (this.db.prepare('SELECT * FROM leases').all() as Row[]).map((r) => ({ id: String(r.id), createdAt: Number(r.created_at), labels: labelsOf(r.labels) }));
  }
  leaseResources(): Array<{ leaseId: string; type: string; ref: string }> {
    return (this.db.prepare('SELECT * FROM lease_resources').all() as Row[]).map((r) => ({ leaseId: String(r.lease_id), type: String(r.type), ref: String(r.ref) }));
  }
}
