/**
 * Content-addressed blob store: <root>/blobs/<alg>/<hex>. Blobs appear only complete and
 * verified: data is written to <root>/ingest/<key>/data, fsynced, checked against the
 * expected digest and size, then renamed into place. An interrupted ingest keeps its
 * partial data so the next attempt can resume from its offset (HTTP Range).
 * Labels and references live in the metadata database, not here.
 */
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp, type ReadStream } from 'node:fs';
import { join } from 'node:path';
import { InvalidArgumentError, NotFoundError, fromNodeError } from '../../errors.ts';
import { Digester, parseDigest, type DigestAlgorithm } from '../digest.ts';

export class DigestMismatchError extends InvalidArgumentError {}

export interface IngestStatus {
  key: string;
  offset: number;
  expected?: string;
  total?: number;
  startedAt: number;
}

function ingestKey(ref: string): string {
  return createHash('sha256').update(ref).digest('hex').slice(0, 32);
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export class ContentStore {
  readonly root: string;
  /** In-process locks so two writers never share one ingest. */
  #locks = new Map<string, Promise<void>>();
  constructor(root: string) {
    this.root = root;
  }

  async init(): Promise<void> {
    for (const d of ['blobs/sha256', 'blobs/sha512', 'ingest']) await fsp.mkdir(join(this.root, d), { recursive: true });
  }

  blobPath(digest: string): string {
    const d = parseDigest(digest);
    return join(this.root, 'blobs', d.algorithm, d.hex);
  }

  async info(digest: string): Promise<{ digest: string; size: number } | null> {
    try {
      const st = await fsp.stat(this.blobPath(digest));
      return { digest, size: st.size };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw fromNodeError(e, `stat blob ${digest}`);
    }
  }

  async has(digest: string): Promise<boolean> {
    return (await this.info(digest)) !== null;
  }

  async read(digest: string): Promise<Buffer> {
    try {
      return await fsp.readFile(this.blobPath(digest));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`content ${digest} not found in the content store`);
      throw fromNodeError(e, `read blob ${digest}`);
    }
  }

  readStream(digest: string, start = 0): ReadStream {
    return createReadStream(this.blobPath(digest), { start });
  }

  /** Every blob on disk. */
  async list(): Promise<Array<{ digest: string; size: number }>> {
    const out: Array<{ digest: string; size: number }> = [];
    for (const alg of ['sha256', 'sha512'] as DigestAlgorithm[]) {
      const dir = join(this.root, 'blobs', alg);
      for (const hex of await fsp.readdir(dir).catch(() => [] as string[])) {
        const d = `${alg}:${hex}`;
        try {
          parseDigest(d);
        } catch {
          await fsp.rm(join(dir, hex), { force: true, recursive: true }); // not ours: a leftover
          continue;
        }
        const st = await fsp.stat(join(dir, hex));
        out.push({ digest: d, size: st.size });
      }
    }
    return out;
  }

  async delete(digest: string): Promise<void> {
    await fsp.rm(this.blobPath(digest), { force: true });
  }

  /** Serialize work on one key (a digest or ingest ref) inside this process. */
  async withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    while (this.#locks.has(key)) await this.#locks.get(key)!.catch(() => {});
    let release!: () => void;
    const p = new Promise<void>((r) => (release = r));
    this.#locks.set(key, p);
    try {
      return await fn();
    } finally {
      this.#locks.delete(key);
      release();
    }
  }

  /** Open (or resume) an ingest. The caller must hold withLock(ref). */
  async writer(ref: string, expected?: { digest: string; size?: number }): Promise<ContentWriter> {
    if (expected) parseDigest(expected.digest);
    const dir = join(this.root, 'ingest', ingestKey(ref));
    await fsp.mkdir(dir, { recursive: true });
    const metaPath = join(dir, 'meta.json');
    const dataPath = join(dir, 'data');
    let meta: { ref: string; expected?: string; total?: number; startedAt: number } | undefined;
    try {
      meta = JSON.parse(await fsp.readFile(metaPath, 'utf8'));
    } catch {
      meta = undefined;
    }
    if (!meta || meta.expected !== expected?.digest) {
      await fsp.rm(dataPath, { force: true });
      meta = { ref, expected: expected?.digest, total: expected?.size, startedAt: Date.now() };
      await fsp.writeFile(metaPath, JSON.stringify(meta));
    }
    const fh = await fsp.open(dataPath, 'a+');
    const alg = expected ? parseDigest(expected.digest).algorithm : 'sha256';
    const dg = new Digester(alg);
    // re-hash what an earlier attempt left behind (hash state is not persistable)
    const st = await fh.stat();
    if (st.size > 0) {
      for await (const c of createReadStream(dataPath, { end: st.size - 1 })) dg.update(c as Buffer);
    }
    return new ContentWriter(this, dir, fh, dg, expected);
  }

  /** Ingest a whole buffer (manifests, configs). Returns the digest. */
  async writeBlob(data: Buffer, expected?: { digest: string; size?: number }): Promise<string> {
    const digest = expected?.digest ?? `sha256:${createHash('sha256').update(data).digest('hex')}`;
    if (await this.has(digest)) return digest;
    return this.withLock(`ingest-${digest}`, async () => {
      const w = await this.writer(`buffer-${digest}-${process.pid}-${Math.random()}`, { digest, size: data.length });
      await w.truncate();
      await w.write(data);
      return w.commit();
    });
  }

  async ingests(): Promise<IngestStatus[]> {
    const out: IngestStatus[] = [];
    const base = join(this.root, 'ingest');
    for (const key of await fsp.readdir(base).catch(() => [] as string[])) {
      try {
        const meta = JSON.parse(await fsp.readFile(join(base, key, 'meta.json'), 'utf8'));
        const st = await fsp.stat(join(base, key, 'data')).catch(() => null);
        out.push({ key, offset: st?.size ?? 0, expected: meta.expected, total: meta.total, startedAt: meta.startedAt });
      } catch {
        out.push({ key, offset: 0, startedAt: 0 });
      }
    }
    return out;
  }

  async abortIngest(key: string): Promise<void> {
    await fsp.rm(join(this.root, 'ingest', key), { recursive: true, force: true });
  }

  async abort(ref: string): Promise<void> {
    await this.abortIngest(ingestKey(ref));
  }
}

export class ContentWriter {
  readonly #store: ContentStore;
  readonly #dir: string;
  readonly #fh: fsp.FileHandle;
  #dg: Digester;
  readonly expected?: { digest: string; size?: number };
  #closed = false;
  constructor(store: ContentStore, dir: string, fh: fsp.FileHandle, dg: Digester, expected?: { digest: string; size?: number }) {
    this.#store = store;
    this.#dir = dir;
    this.#fh = fh;
    this.#dg = dg;
    this.expected = expected;
  }
  /** Bytes already in the ingest (resume offset). */
  get offset(): number {
    return this.#dg.size;
  }
  /** Start over (the server ignored a Range request). */
  async truncate(): Promise<void> {
    await this.#fh.truncate(0);
    this.#dg = new Digester(this.#dg.algorithm);
  }
  async write(chunk: Uint8Array): Promise<void> {
    if (this.expected?.size !== undefined && this.#dg.size + chunk.length > this.expected.size) {
      throw new DigestMismatchError(`content ${this.expected.digest}: more data than the expected ${this.expected.size} bytes`);
    }
    this.#dg.update(chunk);
    let off = 0;
    while (off < chunk.length) {
      const { bytesWritten } = await this.#fh.write(chunk, off, chunk.length - off);
      off += bytesWritten;
    }
  }
  /** Verify, fsync and move into the store. A mismatch discards the ingest. */
  async commit(): Promise<string> {
    const digest = this.#dg.digest();
    const size = this.#dg.size;
    const exp = this.expected;
    const bad = exp && (digest !== exp.digest ? `has digest ${digest}` : exp.size !== undefined && size !== exp.size ? `has ${size} bytes, expected ${exp.size}` : '');
    if (bad) {
      await this.close();
      await fsp.rm(this.#dir, { recursive: true, force: true });
      throw new DigestMismatchError(`content ${exp!.digest}: downloaded data ${bad}; refusing it`);
    }
    await this.#fh.sync();
    await this.close();
    const target = this.#store.blobPath(digest);
    try {
      await fsp.rename(join(this.#dir, 'data'), target);
    } catch (e) {
      throw fromNodeError(e, `commit blob ${digest}`);
    }
    await fsyncDir(join(target, '..'));
    await fsp.rm(this.#dir, { recursive: true, force: true });
    return digest;
  }
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#fh.close();
  }
}

