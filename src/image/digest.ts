/** Content digests (`sha256:<64 hex>`, `sha512:<128 hex>`) and streaming verification. */
import { createHash, type Hash } from 'node:crypto';
import { InvalidArgumentError } from '../errors.ts';

export type DigestAlgorithm = 'sha256' | 'sha512';
const hexLen: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };

export interface ParsedDigest {
  readonly algorithm: DigestAlgorithm;
  readonly hex: string;
  readonly digest: string;
}

export function parseDigest(d: string): ParsedDigest {
  const m = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/.exec(d);
  if (!m) throw new InvalidArgumentError(`invalid digest "${d}": expected <algorithm>:<hex>`);
  const algorithm = m[1] as DigestAlgorithm;
  if (!(algorithm in hexLen)) throw new InvalidArgumentError(`unsupported digest algorithm "${m[1]}" in "${d}" (sha256 and sha512 are supported)`);
  const hex = m[2]!;
  if (hex.length !== hexLen[algorithm] || !/^[0-9a-f]+$/.test(hex)) {
    throw new InvalidArgumentError(`invalid digest "${d}": ${algorithm} needs ${hexLen[algorithm]} lowercase hex characters`);
  }
  return { algorithm, hex, digest: `${algorithm}:${hex}` };
}

export function isDigest(d: string): boolean {
  try {
    parseDigest(d);
    return true;
  } catch {
    return false;
  }
}

export function digestOf(data: Uint8Array | string, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`;
}

/** A running digest. */
export class Digester {
  readonly algorithm: DigestAlgorithm;
  #hash: Hash;
  size = 0;
  constructor(algorithm: DigestAlgorithm = 'sha256') {
    this.algorithm = algorithm;
    this.#hash = createHash(algorithm);
  }
  update(chunk: Uint8Array): void {
    this.#hash.update(chunk);
    this.size += chunk.length;
  }
  digest(): string {
    return `${this.algorithm}:${this.#hash.digest('hex')}`;
  }
}
