/**
 * Decompress a layer blob, verify its DiffID while streaming, and apply it to a directory.
 *
 * Layers are applied on a small pool of worker threads (one per CPU by default): the apply
 * loop does its file system calls synchronously there, so layers unpack on all cores and no
 * file operation costs a thread pool round trip. CORRAL_UNPACK_WORKERS=0 applies on the
 * calling thread instead. A worker left without work for a while (10 s by default) is
 * terminated; the next layer starts a new one.
 */
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { pipeline } from 'node:stream/promises';
import { Worker } from 'node:worker_threads';
import { createGunzip, createZstdDecompress } from 'node:zlib';
import type { Transform } from 'node:stream';
import * as errors from '../../errors.ts';
import { InvalidArgumentError, fromNodeError } from '../../errors.ts';
import { BUNDLED, buildPath } from '../../layout.ts';
import { Digester, parseDigest } from '../digest.ts';
import type { Compression } from '../media.ts';
import { readTar, TarFormatError } from './tar.ts';
import { applyLayer, UnsafeLayerError, type ApplyMode, type ApplyResult } from './apply.ts';

/** Decompressed chunk size: big chunks mean few stream round trips per megabyte. */
const CHUNK = 256 * 1024;

export class DiffIdMismatchError extends InvalidArgumentError {}

/** Detect compression from the first bytes (media types lie: docker's ".tar" may be gzip). */
export async function sniffCompression(path: string): Promise<Compression> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(4);
    const { bytesRead } = await fh.read(b, 0, 4, 0);
    if (bytesRead >= 2 && b[0] === 0x1f && b[1] === 0x8b) return 'gzip';
    if (bytesRead >= 4 && b.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
    return 'none';
  } finally {
    await fh.close();
  }
}

export async function* decompress(src: AsyncIterable<Buffer> & NodeJS.ReadableStream, compression: Compression): AsyncGenerator<Buffer> {
  if (compression === 'none') {
    for await (const c of src) yield c as Buffer;
    return;
  }
  const z: Transform = compression === 'gzip' ? createGunzip({ chunkSize: CHUNK }) : createZstdDecompress({ chunkSize: CHUNK });
  const done = pipeline(src, z);
  done.catch(() => {});
  try {
    for await (const c of z) yield c as Buffer;
    await done;
  } catch (e) {
    throw new InvalidArgumentError(`layer is not valid ${compression} data (${(e as Error).message}); the blob may be truncated or corrupt`, { cause: e });
  } finally {
    (src as unknown as { destroy?: () => void }).destroy?.();
  }
}

export interface UnpackResult extends ApplyResult {
  diffId: string;
  /** Uncompressed size. */
  size: number;
}

export interface UnpackOptions {
  mode: ApplyMode;
  expectDiffId?: string;
  layer?: string;
}

export interface UnpackJob {
  blobPath: string;
  root: string;
  opts: UnpackOptions;
}

/**
 * Unpack the blob at `blobPath` into `root`. When `expectDiffId` is given the uncompressed
 * digest must match, else DiffIdMismatchError (the caller removes the partial snapshot).
 * Runs on an unpack worker thread (see the top of this file).
 */
export async function unpackLayerFile(blobPath: string, root: string, opts: UnpackOptions): Promise<UnpackResult> {
  const n = workerCount();
  if (n === 0) return unpackLayerFileHere(blobPath, root, opts);
  return (pool ??= new UnpackPool({ max: n })).run({ blobPath, root, opts: { ...opts } });
}

/**
 * Start up to `layers` unpack workers ahead of use (a worker takes tens of milliseconds to
 * boot); a pull calls this while it still fetches the config. Idle workers never keep the
 * process alive, and are terminated when unused for the pool's idle timeout.
 */
export function prewarmUnpackWorkers(layers: number): void {
  const n = workerCount();
  if (n === 0 || layers <= 0) return;
  (pool ??= new UnpackPool({ max: n })).prewarm(Math.min(n, layers));
}

/** unpackLayerFile on the calling thread. */
export async function unpackLayerFileHere(blobPath: string, root: string, opts: UnpackOptions): Promise<UnpackResult> {
  const algorithm = opts.expectDiffId ? parseDigest(opts.expectDiffId).algorithm : 'sha256';
  const dg = new Digester(algorithm);
  let compression: Compression;
  try {
    compression = await sniffCompression(blobPath);
  } catch (e) {
    throw fromNodeError(e, `open layer blob ${blobPath}`);
  }
  const stream = decompress(createReadStream(blobPath, { highWaterMark: 1 << 20 }), compression);
  const hashed = (async function* () {
    for await (const c of stream) {
      dg.update(c);
      yield c;
    }
  })();
  const res = await applyLayer(root, readTar(hashed), { mode: opts.mode, layer: opts.layer });
  // consume anything after the tar end marker so the digest covers the whole stream
  for await (const _ of hashed) void _;
  const diffId = dg.digest();
  if (opts.expectDiffId && diffId !== opts.expectDiffId) {
    throw new DiffIdMismatchError(`layer ${opts.layer ?? blobPath}: uncompressed digest ${diffId} does not match the image config's diff_id ${opts.expectDiffId}`);
  }
  return { ...res, diffId, size: dg.size };
}

// ---------------------------------------------------------------------------------------------
// Worker pool

function workerCount(): number {
  const env = process.env.CORRAL_UNPACK_WORKERS;
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (Number.isInteger(n) && n >= 0) return Math.min(n, 64);
  }
  return Math.max(1, availableParallelism());
}

type SerializedError = { name: string; message: string; code?: string; errno?: string; stack?: string };

const byName: Record<string, new (m: string) => Error> = {
  DiffIdMismatchError, UnsafeLayerError, TarFormatError,
};
const byCode: Record<string, new (m: string) => Error> = {
  INVALID_ARGUMENT: errors.InvalidArgumentError, NOT_FOUND: errors.NotFoundError, ALREADY_EXISTS: errors.AlreadyExistsError,
  FAILED_PRECONDITION: errors.FailedPreconditionError, PERMISSION_DENIED: errors.PermissionDeniedError,
  UNAVAILABLE: errors.UnavailableError, RESOURCE_EXHAUSTED: errors.ResourceExhaustedError,
  DEADLINE_EXCEEDED: errors.DeadlineExceededError, UNIMPLEMENTED: errors.UnimplementedError, INTERNAL: errors.InternalError,
};

/** The worker's error as an instance of the same class on this thread. */
function revive(s: SerializedError): Error {
  const C = byName[s.name] ?? (s.code ? byCode[s.code] : undefined);
  const e = C ? new C(s.message) : new errors.InternalError(`unpack: ${s.message}`);
  if (s.errno) (e as errors.CorralError).errno = s.errno;
  if (s.stack) e.stack = s.stack;
  return e;
}

interface Pending {
  job: UnpackJob;
  resolve: (r: UnpackResult) => void;
  reject: (e: Error) => void;
}

/** The worker's entry: worker.ts beside this file, or its bundle when this code runs bundled (build/). */
const WORKER_ENTRY: URL | string = BUNDLED ? buildPath('unpack-worker.mjs') : new URL('./worker.ts', import.meta.url);

export interface UnpackPoolOptions {
  /** At most this many workers. */
  max: number;
  /**
   * Terminate a worker after this many milliseconds without work (default 10 s): each worker
   * costs ~10-20 MB of memory, and a daemon pulls rarely. 0 keeps idle workers forever.
   */
  idleTimeoutMs?: number;
}

export const DEFAULT_UNPACK_IDLE_TIMEOUT_MS = 10_000;

export class UnpackPool {
  readonly #max: number;
  readonly #idleTimeoutMs: number;
  #idle: Worker[] = [];
  #idleTimers = new Map<Worker, NodeJS.Timeout>();
  #busy = new Map<Worker, Pending>();
  #live = new Set<Worker>();
  #queue: Pending[] = [];
  #seq = 0;
  #closed = false;
  constructor(options: UnpackPoolOptions) {
    this.#max = options.max;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_UNPACK_IDLE_TIMEOUT_MS;
  }

  /** Worker threads that have not exited yet (idle, busy, or being terminated). */
  get workers(): number {
    return this.#live.size;
  }

  run(job: UnpackJob): Promise<UnpackResult> {
    if (this.#closed) return Promise.reject(new errors.UnavailableError('unpack pool closed'));
    return new Promise<UnpackResult>((resolve, reject) => {
      this.#queue.push({ job, resolve, reject });
      this.#pump();
    });
  }

  prewarm(n: number): void {
    while (this.#idle.length + this.#busy.size < Math.min(n, this.#max)) this.#makeIdle(this.#spawn());
  }

  /** Terminate every worker now (tests; idle workers go by themselves after the idle timeout). */
  async close(): Promise<void> {
    this.#closed = true;
    for (const p of this.#queue.splice(0)) p.reject(new errors.UnavailableError('unpack pool closed'));
    const all = [...this.#idle, ...this.#busy.keys()];
    for (const w of this.#idle) this.#retire(w);
    await Promise.all(all.map((w) => w.terminate()));
  }

  #pump(): void {
    while (this.#queue.length && !this.#closed) {
      let w = this.#idle.pop();
      if (w) {
        clearTimeout(this.#idleTimers.get(w));
        this.#idleTimers.delete(w);
      } else {
        if (this.#busy.size >= this.#max) return;
        w = this.#spawn();
      }
      const p = this.#queue.shift()!;
      this.#busy.set(w, p);
      w.ref();
      w.postMessage({ ...p.job, id: ++this.#seq });
    }
  }

  /** Park a worker: it never keeps the process alive, and goes after the idle timeout. */
  #makeIdle(w: Worker): void {
    w.unref();
    this.#idle.push(w);
    if (this.#idleTimeoutMs > 0) {
      const t = setTimeout(() => {
        this.#retire(w);
        void w.terminate();
      }, this.#idleTimeoutMs);
      t.unref();
      this.#idleTimers.set(w, t);
    }
  }

  /** Forget an idle worker about to be terminated (its exit is then no failure). */
  #retire(w: Worker): void {
    clearTimeout(this.#idleTimers.get(w));
    this.#idleTimers.delete(w);
    this.#idle = this.#idle.filter((x) => x !== w);
  }

  #spawn(): Worker {
    const w = new Worker(WORKER_ENTRY);
    this.#live.add(w);
    w.on('message', (m: { result?: UnpackResult; error?: SerializedError }) => {
      const p = this.#busy.get(w);
      this.#busy.delete(w);
      this.#makeIdle(w);
      if (p) {
        if (m.error) p.reject(revive(m.error));
        else p.resolve(m.result!);
      }
      this.#pump();
    });
    const gone = (why: string) => {
      const p = this.#busy.get(w);
      this.#busy.delete(w);
      this.#retire(w);
      p?.reject(new errors.InternalError(`unpack worker ${why}${p.job.opts.layer ? ` while unpacking layer ${p.job.opts.layer}` : ''}`));
      this.#pump();
    };
    w.on('error', (e) => gone(`failed: ${e.message}`));
    w.on('exit', (code) => {
      this.#live.delete(w);
      gone(`exited with code ${code}`);
    });
    return w;
  }
}

let pool: UnpackPool | undefined;
