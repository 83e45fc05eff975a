import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { createHash } from 'node:crypto';
import { HeaderDeflater, HeaderInflater, adler32 } from './zlib.ts';
import { SPDY3_DICTIONARY } from './dictionary.ts';

const D = SPDY3_DICTIONARY;

test('the SPDY/3 dictionary has the published size and checksums', () => {
  assert.equal(D.length, 1423);
  assert.equal(adler32(D), 0xe3c6a7c2);
  assert.equal(createHash('sha256').update(D).digest('hex'), '51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02');
});

test('adler32 matches zlib for a large input', () => {
  const buf = Buffer.alloc(100_000, 0xff);
  // zlib's own adler32 is the trailer of a zlib stream
  const z = zlib.deflateSync(buf);
  assert.equal(adler32(buf), z.readUInt32BE(z.length - 4));
});

const blocks = [
  Buffer.from('\0\0\0\x01\0\0\0\x0astreamtype\0\0\0\x05error'),
  Buffer.from('\0\0\0\x01\0\0\0\x0astreamtype\0\0\0\x06stdout'),
  Buffer.alloc(40_000, 'content-type: text/plain; '), // longer than the window
  Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 7919 + (i >> 3)) & 255)),
];

test('our deflater produces one continuous zlib stream that zlib inflates with the dictionary', () => {
  const d = new HeaderDeflater(D);
  const parts = blocks.map((b) => d.compress(b));
  const out = zlib.inflateSync(Buffer.concat(parts), { dictionary: D, finishFlush: zlib.constants.Z_SYNC_FLUSH });
  assert.deepEqual(out, Buffer.concat(blocks));
  // a block repeated within the 32 KiB window compresses to a few bytes: it refers back into the history
  assert.ok(d.compress(blocks[3]!).length < blocks[3]!.length / 20);
});

async function zlibStreamBlocks(input: Buffer[]): Promise<Buffer[]> {
  const z = zlib.createDeflate({ dictionary: D });
  const out: Buffer[] = [];
  for (const b of input) {
    out.push(
      await new Promise<Buffer>((resolve) => {
        const acc: Buffer[] = [];
        const on = (c: Buffer) => acc.push(c);
        z.on('data', on);
        z.write(b);
        z.flush(zlib.constants.Z_SYNC_FLUSH, () =>
          setImmediate(() => {
            z.off('data', on);
            resolve(Buffer.concat(acc));
          }),
        );
      }),
    );
  }
  z.close();
  return out;
}

test('our inflater decodes a peer zlib stream block by block (fixed, dynamic and stored blocks)', async () => {
  const parts = await zlibStreamBlocks(blocks);
  const inf = new HeaderInflater(D);
  parts.forEach((p, i) => assert.deepEqual(inf.inflate(p), blocks[i]));
  // stored blocks: zlib level 0
  const z0 = zlib.deflateSync(Buffer.from('plain stored data'), { level: 0, dictionary: D, finishFlush: zlib.constants.Z_SYNC_FLUSH });
  assert.equal(new HeaderInflater(D).inflate(z0).toString(), 'plain stored data');
});

test('our deflater and inflater agree', () => {
  const d = new HeaderDeflater(D);
  const i = new HeaderInflater(D);
  for (const b of [...blocks, ...blocks]) assert.deepEqual(i.inflate(d.compress(b)), b);
});

test('a wrong dictionary, a non-zlib header and a truncated block are refused', () => {
  const other = zlib.deflateSync(Buffer.from('x'), { dictionary: Buffer.from('other'), finishFlush: zlib.constants.Z_SYNC_FLUSH });
  assert.throws(() => new HeaderInflater(D).inflate(other), /unknown zlib dictionary/);
  assert.throws(() => new HeaderInflater(D).inflate(Buffer.from([1, 2, 3, 4])), /not a zlib stream/);
  const good = new HeaderDeflater(D).compress(Buffer.alloc(300, 'abcdefgh'));
  assert.throws(() => new HeaderInflater(D).inflate(good.subarray(0, good.length - 3)), /flush boundary/);
});

test('inflating past the size limit fails instead of exhausting memory', () => {
  const bomb = zlib.deflateSync(Buffer.alloc(4 << 20), { dictionary: D, finishFlush: zlib.constants.Z_SYNC_FLUSH });
  assert.throws(() => new HeaderInflater(D, 1 << 20).inflate(bomb), /size limit/);
});
