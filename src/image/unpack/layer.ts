/** Decompress a layer blob, verify its DiffID while streaming, and apply it to a directory. */
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createZstdDecompress } from 'node:zlib';
import type { Transform } from 'node:stream';
import { InvalidArgumentError, fromNodeError } from '../../errors.ts';
import { Digester, parseDigest } from '../digest.ts';
import type { Compression } from '../media.ts';
import { readTar } from './tar.ts';
import { applyLayer, type ApplyMode, type ApplyResult } from './apply.ts';

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
  const z: Transform = compression === 'gzip' ? createGunzip() : createZstdDecompress();
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

/**
 * Unpack the blob at `blobPath` into `root`. When `expectDiffId` is given the uncompressed
 * digest must match, else DiffIdMismatchError (the caller removes the partial snapshot).
 */
export async function unpackLayerFile(blobPath: string, root: string, opts: { mode: ApplyMode; expectDiffId?: string; layer?: string }): Promise<UnpackResult> {
  const algorithm = opts.expectDiffId ? parseDigest(opts.expectDiffId).algorithm : 'sha256';
  const dg = new Digester(algorithm);
  let compression: Compression;
  try {
    compression = await sniffCompression(blobPath);
  } catch (e) {
    throw fromNodeError(e, `open layer blob ${blobPath}`);
  }
  const stream = decompress(createReadStream(blobPath), compression);
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
