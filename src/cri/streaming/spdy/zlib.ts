/**
 * SPDY header compression: one zlib stream per direction for the life of a connection, preset
 * with the SPDY/3 dictionary, each header block ending on a sync flush (RFC 1950/1951).
 *
 * Node's zlib has no synchronous API that keeps a stream open across calls, and frame
 * handling has to stay synchronous and ordered, so:
 *  - HeaderDeflater compresses each block with a stateless raw deflate whose preset dictionary
 *    is the last 32 KiB the peer's inflater has seen (dictionary + every earlier block). Back
 *    references therefore mean the same thing to the peer's single long-lived inflater.
 *  - HeaderInflater is a small inflater of our own that keeps its 32 KiB window between calls.
 */
import zlib from 'node:zlib';
import { InvalidArgumentError } from '../../../errors.ts';

const WINDOW = 32768;

export function adler32(buf: Uint8Array): number {
  let a = 1;
  let b = 0;
  for (let i = 0; i < buf.length; ) {
    const end = Math.min(buf.length, i + 3800);
    for (; i < end; i++) {
      a += buf[i]!;
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return ((b << 16) | a) >>> 0;
}

function keepWindow(prev: Buffer, next: Buffer): Buffer {
  if (prev.length + next.length <= WINDOW) return Buffer.concat([prev, next]);
  const all = Buffer.concat([prev, next]);
  return Buffer.from(all.subarray(all.length - WINDOW));
}

export class HeaderDeflater {
  private history: Buffer;
  private started = false;
  private readonly dictionary: Buffer;
  constructor(dictionary: Buffer) {
    this.dictionary = dictionary;
    this.history = Buffer.from(dictionary.subarray(Math.max(0, dictionary.length - WINDOW)));
  }

  compress(block: Buffer): Buffer {
    const body = zlib.deflateRawSync(block, {
      dictionary: this.history,
      finishFlush: zlib.constants.Z_SYNC_FLUSH,
      level: 6,
    });
    this.history = keepWindow(this.history, block);
    if (this.started) return body;
    this.started = true;
    // CMF 0x78: deflate, 32 KiB window. FLG 0x20: preset dictionary; 0x7820 % 31 == 0.
    const head = Buffer.alloc(6);
    head[0] = 0x78;
    head[1] = 0x20;
    head.writeUInt32BE(adler32(this.dictionary), 2);
    return Buffer.concat([head, body]);
  }
}

// ---- inflate -------------------------------------------------------------------------

interface Huffman {
  count: Uint16Array; // codes of each length 0..15
  symbol: Uint16Array; // symbols ordered by code
}

function buildHuffman(lengths: ArrayLike<number>, n: number): Huffman {
  const count = new Uint16Array(16);
  const symbol = new Uint16Array(n);
  for (let i = 0; i < n; i++) count[lengths[i]!]!++;
  count[0] = 0;
  const offs = new Uint16Array(16);
  for (let len = 1; len < 15; len++) offs[len + 1] = offs[len]! + count[len]!;
  for (let i = 0; i < n; i++) if (lengths[i]) symbol[offs[lengths[i]!]!++] = i;
  return { count, symbol };
}

const LEN_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LEN_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DIST_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577];
const DIST_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
const CL_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

const FIXED_LIT = (() => {
  const l = new Uint8Array(288);
  l.fill(8, 0, 144);
  l.fill(9, 144, 256);
  l.fill(7, 256, 280);
  l.fill(8, 280, 288);
  return buildHuffman(l, 288);
})();
const FIXED_DIST = buildHuffman(new Uint8Array(30).fill(5), 30);

class Truncated extends Error {}

export class HeaderInflater {
  private history: Buffer = Buffer.alloc(0);
  private headerRead = false;
  private finished = false;
  private readonly dictionary: Buffer;
  private readonly maxOutput: number;
  // per-call state
  private input: Buffer = Buffer.alloc(0);
  private pos = 0;
  private bitBuf = 0;
  private bitCnt = 0;
  private out: Buffer = Buffer.alloc(0);
  private outLen = 0;

  constructor(dictionary: Buffer, maxOutput = 1 << 20) {
    this.dictionary = dictionary;
    this.maxOutput = maxOutput;
  }

  /** Inflate one header block. It must end on a block boundary (a sync flush), as SPDY requires. */
  inflate(chunk: Buffer): Buffer {
    if (this.finished) throw new InvalidArgumentError('spdy: header block after the end of the zlib stream');
    this.input = chunk;
    this.pos = 0;
    this.bitBuf = 0;
    this.bitCnt = 0;
    try {
      if (!this.headerRead) this.readZlibHeader();
      const start = this.history.length;
      this.out = Buffer.allocUnsafe(start + Math.max(1024, chunk.length * 4));
      this.history.copy(this.out, 0);
      this.outLen = start;
      while (this.pos < this.input.length || this.bitCnt > 0) {
        const last = this.bits(1);
        const type = this.bits(2);
        if (type === 0) this.stored();
        else if (type === 1) this.codes(FIXED_LIT, FIXED_DIST);
        else if (type === 2) this.dynamic();
        else throw new InvalidArgumentError('spdy: invalid deflate block type in header block');
        if (last) {
          this.finished = true;
          break;
        }
      }
      const produced = Buffer.from(this.out.subarray(start, this.outLen));
      const all = this.out.subarray(0, this.outLen);
      this.history = Buffer.from(all.subarray(Math.max(0, all.length - WINDOW)));
      return produced;
    } catch (err) {
      if (err instanceof Truncated) {
        throw new InvalidArgumentError('spdy: header block does not end on a zlib flush boundary');
      }
      throw err;
    } finally {
      this.out = Buffer.alloc(0);
      this.input = Buffer.alloc(0);
    }
  }

  private readZlibHeader(): void {
    if (this.input.length < 2) throw new Truncated();
    const cmf = this.input[0]!;
    const flg = this.input[1]!;
    if ((cmf & 0x0f) !== 8 || ((cmf << 8) | flg) % 31 !== 0) {
      throw new InvalidArgumentError('spdy: header block is not a zlib stream');
    }
    this.pos = 2;
    if (flg & 0x20) {
      if (this.input.length < 6) throw new Truncated();
      const id = this.input.readUInt32BE(2);
      if (id !== adler32(this.dictionary)) {
        throw new InvalidArgumentError('spdy: peer compressed headers with an unknown zlib dictionary');
      }
      this.pos = 6;
      this.history = Buffer.from(this.dictionary.subarray(Math.max(0, this.dictionary.length - WINDOW)));
    }
    this.headerRead = true;
  }

  private bits(n: number): number {
    while (this.bitCnt < n) {
      if (this.pos >= this.input.length) throw new Truncated();
      this.bitBuf |= this.input[this.pos++]! << this.bitCnt;
      this.bitCnt += 8;
    }
    const v = this.bitBuf & ((1 << n) - 1);
    this.bitBuf >>>= n;
    this.bitCnt -= n;
    return v;
  }

  private emit(byte: number): void {
    if (this.outLen === this.out.length) {
      if (this.outLen - this.history.length >= this.maxOutput) {
        throw new InvalidArgumentError('spdy: header block inflates past the size limit');
      }
      const bigger = Buffer.allocUnsafe(this.out.length * 2);
      this.out.copy(bigger, 0, 0, this.outLen);
      this.out = bigger;
    }
    this.out[this.outLen++] = byte;
  }

  private stored(): void {
    this.bitBuf = 0;
    this.bitCnt = 0;
    if (this.pos + 4 > this.input.length) throw new Truncated();
    const len = this.input.readUInt16LE(this.pos);
    const nlen = this.input.readUInt16LE(this.pos + 2);
    if ((len ^ 0xffff) !== nlen) throw new InvalidArgumentError('spdy: corrupt stored block in header block');
    this.pos += 4;
    if (this.pos + len > this.input.length) throw new Truncated();
    for (let i = 0; i < len; i++) this.emit(this.input[this.pos + i]!);
    this.pos += len;
  }

  private decode(h: Huffman): number {
    let code = 0;
    let first = 0;
    let index = 0;
    for (let len = 1; len < 16; len++) {
      code |= this.bits(1);
      const count = h.count[len]!;
      if (code - count < first) return h.symbol[index + (code - first)]!;
      index += count;
      first += count;
      first <<= 1;
      code <<= 1;
    }
    throw new InvalidArgumentError('spdy: invalid Huffman code in header block');
  }

  private codes(lit: Huffman, dist: Huffman): void {
    for (;;) {
      const sym = this.decode(lit);
      if (sym < 256) {
        this.emit(sym);
      } else if (sym === 256) {
        return;
      } else {
        const li = sym - 257;
        if (li >= 29) throw new InvalidArgumentError('spdy: invalid length code in header block');
        const len = LEN_BASE[li]! + this.bits(LEN_EXTRA[li]!);
        const di = this.decode(dist);
        if (di >= 30) throw new InvalidArgumentError('spdy: invalid distance code in header block');
        const d = DIST_BASE[di]! + this.bits(DIST_EXTRA[di]!);
        if (d > this.outLen) throw new InvalidArgumentError('spdy: header block refers before the start of the stream');
        for (let i = 0; i < len; i++) this.emit(this.out[this.outLen - d]!);
      }
    }
  }

  private dynamic(): void {
    const nlen = this.bits(5) + 257;
    const ndist = this.bits(5) + 1;
    const ncode = this.bits(4) + 4;
    if (nlen > 286 || ndist > 30) throw new InvalidArgumentError('spdy: bad dynamic block counts in header block');
    const cl = new Uint8Array(19);
    for (let i = 0; i < ncode; i++) cl[CL_ORDER[i]!] = this.bits(3);
    const clh = buildHuffman(cl, 19);
    const lengths = new Uint8Array(nlen + ndist);
    for (let i = 0; i < nlen + ndist; ) {
      const sym = this.decode(clh);
      if (sym < 16) {
        lengths[i++] = sym;
        continue;
      }
      let rep: number;
      let val = 0;
      if (sym === 16) {
        if (i === 0) throw new InvalidArgumentError('spdy: repeat with no previous length in header block');
        val = lengths[i - 1]!;
        rep = 3 + this.bits(2);
      } else if (sym === 17) rep = 3 + this.bits(3);
      else rep = 11 + this.bits(7);
      if (i + rep > nlen + ndist) throw new InvalidArgumentError('spdy: too many code lengths in header block');
      while (rep--) lengths[i++] = val;
    }
    if (lengths[256] === 0) throw new InvalidArgumentError('spdy: no end-of-block code in header block');
    this.codes(buildHuffman(lengths.subarray(0, nlen), nlen), buildHuffman(lengths.subarray(nlen), ndist));
  }
}
