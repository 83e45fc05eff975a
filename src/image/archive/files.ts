/**
 * The files of an image archive, whatever it came in: a tar stream (docker save, OCI layout
 * tar; optionally gzip/zstd-compressed) or an OCI layout directory. Small metadata documents
 * (manifest.json, index.json, oci-layout, repositories) are kept in memory; everything else is
 * written into the content store as it streams past, so a layer is copied exactly once.
 * Files named blobs/<alg>/<hex> are verified against their name while they are written.
 */
import { createReadStream, promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, posix } from 'node:path';
import { Readable } from 'node:stream';
import { InvalidArgumentError, NotFoundError, fromNodeError } from '../../errors.ts';
import type { ContentStore } from '../content/store.ts';
import { parseDigest } from '../digest.ts';
import type { MetadataDB } from '../metadata/db.ts';
import { decompress } from '../unpack/layer.ts';
import { readTar } from '../unpack/tar.ts';
import type { Compression } from '../media.ts';

export const META_FILES = new Set(['manifest.json', 'index.json', 'oci-layout', 'repositories']);
const META_LIMIT = 4 << 20;

export interface BlobRef {
  digest: string;
  size: number;
}

export interface ArchiveFiles {
  readonly kind: 'tar' | 'dir';
  /** A small metadata document at the archive's top (undefined when absent). */
  meta(name: string): Buffer | undefined;
  /** Make sure the file `name` is in the content store and return its digest and size. */
  blob(name: string, what: string): Promise<BlobRef>;
  /** Blobs this import wrote that nothing recorded: removed by the caller at the end. */
  written(): string[];
}

/** tar paths: "./a//b" → "a/b" */
export function cleanName(name: string): string {
  const n = posix.normalize(name.replace(/^\/+/, '')).replace(/^(\.\/)+/, '').replace(/\/+$/, '');
  return n === '.' ? '' : n;
}

/** The digest a layout path names (blobs/sha256/<hex>), if it names one. */
function digestFromPath(name: string): string | undefined {
  const m = /^blobs\/([a-z0-9]+)\/([a-f0-9]+)$/.exec(name);
  if (!m) return undefined;
  try {
    return parseDigest(`${m[1]}:${m[2]}`).digest;
  } catch {
    return undefined;
  }
}

async function sniff(head: Buffer): Promise<Compression> {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  return 'none';
}

/** Peek at the first bytes of a stream, then replay them. */
async function peek(src: AsyncIterable<Buffer>): Promise<{ head: Buffer; stream: AsyncIterable<Buffer> & NodeJS.ReadableStream }> {
  const it = src[Symbol.asyncIterator]();
  const first: Buffer[] = [];
  let n = 0;
  let done = false;
  while (n < 4) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    first.push(r.value);
    n += r.value.length;
  }
  const head = Buffer.concat(first);
  async function* replay(): AsyncGenerator<Buffer> {
    if (head.length) yield head;
    if (done) return;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  }
  return { head, stream: Readable.from(replay()) as AsyncIterable<Buffer> & NodeJS.ReadableStream };
}

async function ingest(content: ContentStore, chunks: AsyncIterable<Buffer>, expected: string | undefined, name: string): Promise<BlobRef> {
  const key = `import-${randomBytes(8).toString('hex')}`;
  return content.withLock(key, async () => {
    const w = await content.writer(key, expected ? { digest: expected } : undefined);
    try {
      await w.truncate();
      for await (const c of chunks) await w.write(c);
      const size = w.offset;
      const digest = await w.commit();
      return { digest, size };
    } catch (e) {
      await w.close();
      await content.abort(key);
      if (e instanceof InvalidArgumentError && expected) throw new InvalidArgumentError(`archive file ${name} does not hold the content its name says (${expected}): ${e.message}`, { cause: e });
      throw fromNodeError(e, `import ${name} into the content store`);
    }
  });
}

/** Read a whole tar archive (possibly compressed) into the content store. */
export async function readTarArchive(src: AsyncIterable<Buffer>, content: ContentStore, db: MetadataDB): Promise<ArchiveFiles> {
  const { head, stream } = await peek(src);
  const comp = await sniff(head);
  const meta = new Map<string, Buffer>();
  const files = new Map<string, BlobRef>();
  const links = new Map<string, string>();
  const written = new Set<string>();
  try {
    for await (const e of readTar(decompress(stream, comp))) {
      const name = cleanName(e.name);
      if (e.type === 'symlink' || e.type === 'hardlink') {
        const target = e.type === 'symlink' ? cleanName(posix.join(posix.dirname(name), e.linkname)) : cleanName(e.linkname);
        links.set(name, target);
        continue;
      }
      if (e.type !== 'file') continue;
      if (META_FILES.has(name)) {
        if (e.size > META_LIMIT) throw new InvalidArgumentError(`archive file ${name} is ${e.size} bytes; over the ${META_LIMIT}-byte limit for metadata`);
        const parts: Buffer[] = [];
        for await (const c of e.body) parts.push(c);
        meta.set(name, Buffer.concat(parts));
        continue;
      }
      const expected = digestFromPath(name);
      if (expected && (await content.has(expected))) {
        for await (const _ of e.body) void _; // already in the store
        files.set(name, { digest: expected, size: (await content.info(expected))!.size });
        continue;
      }
      const ref = await ingest(content, e.body, expected, name);
      if (!db.getContent(ref.digest)) written.add(ref.digest);
      files.set(name, ref);
    }
  } catch (e) {
    // a bad archive leaves nothing behind: drop what this import wrote so far
    for (const d of written) if (!db.getContent(d)) await content.delete(d);
    throw e;
  }
  const resolve = (name: string): string => {
    let n = cleanName(name);
    for (let i = 0; i < 16 && links.has(n); i++) n = links.get(n)!;
    return n;
  };
  return {
    kind: 'tar',
    meta: (name) => meta.get(name),
    async blob(name, what) {
      const f = files.get(resolve(name));
      if (!f) throw new NotFoundError(`the archive has no file ${name} (${what})`);
      return f;
    },
    written: () => [...written],
  };
}

/** An OCI image layout directory. Blobs are copied into the store on demand (and verified). */
export async function readLayoutDir(dir: string, content: ContentStore, db: MetadataDB): Promise<ArchiveFiles> {
  const meta = new Map<string, Buffer>();
  for (const n of META_FILES) {
    try {
      const st = await fsp.stat(join(dir, n));
      if (st.size > META_LIMIT) throw new InvalidArgumentError(`${join(dir, n)} is ${st.size} bytes; over the ${META_LIMIT}-byte limit for metadata`);
      meta.set(n, await fsp.readFile(join(dir, n)));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fromNodeError(e, `read ${join(dir, n)}`);
    }
  }
  const done = new Map<string, BlobRef>();
  const written = new Set<string>();
  return {
    kind: 'dir',
    meta: (name) => meta.get(name),
    async blob(name, what) {
      const n = cleanName(name);
      if (n.startsWith('..')) throw new InvalidArgumentError(`archive path ${name} leaves the layout directory`);
      const have = done.get(n);
      if (have) return have;
      const expected = digestFromPath(n);
      if (expected && (await content.has(expected))) {
        const ref = { digest: expected, size: (await content.info(expected))!.size };
        done.set(n, ref);
        return ref;
      }
      const p = join(dir, n);
      try {
        await fsp.access(p);
      } catch {
        throw new NotFoundError(`the layout ${dir} has no file ${n} (${what})`);
      }
      const ref = await ingest(content, createReadStream(p) as AsyncIterable<Buffer>, expected, n);
      if (!db.getContent(ref.digest)) written.add(ref.digest);
      done.set(n, ref);
      return ref;
    },
    written: () => [...written],
  };
}
