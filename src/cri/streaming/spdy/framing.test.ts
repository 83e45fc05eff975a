import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FrameReader, decodeHeaderBlock, encode, encodeHeaderBlock, FLAG_FIN, type Frame } from './framing.ts';

test('header blocks: lower-cased names, NUL-joined values, exact byte layout', () => {
  const b = encodeHeaderBlock({ StreamType: ['data'], port: ['80', '81'] });
  assert.deepEqual(
    b,
    Buffer.concat([
      Buffer.from([0, 0, 0, 2]),
      Buffer.from([0, 0, 0, 10]), Buffer.from('streamtype'), Buffer.from([0, 0, 0, 4]), Buffer.from('data'),
      Buffer.from([0, 0, 0, 4]), Buffer.from('port'), Buffer.from([0, 0, 0, 5]), Buffer.from('80\u000081'),
    ]),
  );
  assert.deepEqual(decodeHeaderBlock(b), { streamtype: ['data'], port: ['80', '81'] });
  assert.throws(() => decodeHeaderBlock(Buffer.from([0, 0, 0, 1, 0, 0, 0, 9])), /malformed header block/);
});

test('every frame type survives encode → FrameReader, even fed one byte at a time', () => {
  const wire = Buffer.concat([
    encode.synStream(1, 0, 3, FLAG_FIN, Buffer.from('hdr')),
    encode.synReply(1, 0, Buffer.from('rep')),
    encode.headers(3, FLAG_FIN, Buffer.from('h')),
    encode.data(1, Buffer.from('payload'), true),
    encode.rstStream(5, 5),
    encode.settings([{ flags: 0, id: 7, value: 65536 }]),
    encode.ping(2),
    encode.goAway(9, 0),
    encode.windowUpdate(0, 32768),
  ]);
  const r = new FrameReader();
  const frames: Frame[] = [];
  for (const byte of wire) frames.push(...r.push(Buffer.from([byte])));
  assert.deepEqual(frames, [
    { kind: 'syn_stream', streamId: 1, associatedId: 0, priority: 3, flags: FLAG_FIN, headerBlock: Buffer.from('hdr') },
    { kind: 'syn_reply', streamId: 1, flags: 0, headerBlock: Buffer.from('rep') },
    { kind: 'headers', streamId: 3, flags: FLAG_FIN, headerBlock: Buffer.from('h') },
    { kind: 'data', streamId: 1, flags: FLAG_FIN, data: Buffer.from('payload') },
    { kind: 'rst_stream', streamId: 5, status: 5 },
    { kind: 'settings', flags: 0, entries: [{ flags: 0, id: 7, value: 65536 }] },
    { kind: 'ping', id: 2 },
    { kind: 'goaway', lastStreamId: 9, status: 0 },
    { kind: 'window_update', streamId: 0, delta: 32768 },
  ]);
});

test('control frames carry version 3 and the control bit; data frames do not', () => {
  const c = encode.ping(1);
  assert.equal(c.readUInt16BE(0), 0x8003);
  assert.equal(c.readUInt16BE(2), 6);
  assert.equal(c.readUInt32BE(4), 4);
  const d = encode.data(0x7fffffff, Buffer.alloc(3), false);
  assert.equal(d.readUInt32BE(0), 0x7fffffff);
  assert.equal(d.readUInt32BE(4), 3);
});

test('frames over the limit and malformed control frames are errors', () => {
  assert.throws(() => new FrameReader(10).push(encode.data(1, Buffer.alloc(11), false)), /exceeds/);
  const badPing = Buffer.from([0x80, 3, 0, 6, 0, 0, 0, 2, 0, 0]);
  assert.throws(() => new FrameReader().push(badPing), /malformed PING/);
  const otherVersion = Buffer.from([0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]);
  assert.deepEqual(new FrameReader().push(otherVersion), [{ kind: 'unknown', type: 6, version: 2 }]);
});
