/**
 * SPDY/3.1 frame layout (draft-mbelshe-httpbis-spdy-00 and the 3.1 flow-control update).
 *
 *   control frame:  1 | version:15 | type:16 | flags:8 | length:24 | payload
 *   data frame:     0 | stream-id:31         | flags:8 | length:24 | payload
 *
 * Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are a count and length-prefixed name/value
 * strings, all 32-bit big-endian, compressed by the connection's zlib stream (zlib.ts).
 * Several values of one header are joined with NUL.
 */
import { InvalidArgumentError } from '../../../errors.ts';

export const SPDY_VERSION = 3;

export const FrameType = {
  SYN_STREAM: 1,
  SYN_REPLY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PING: 6,
  GOAWAY: 7,
  HEADERS: 8,
  WINDOW_UPDATE: 9,
} as const;

export const FLAG_FIN = 0x01;
export const FLAG_UNIDIRECTIONAL = 0x02;

/** RST_STREAM status codes. */
export const RstStatus = {
  PROTOCOL_ERROR: 1,
  INVALID_STREAM: 2,
  REFUSED_STREAM: 3,
  UNSUPPORTED_VERSION: 4,
  CANCEL: 5,
  INTERNAL_ERROR: 6,
  FLOW_CONTROL_ERROR: 7,
  STREAM_IN_USE: 8,
  STREAM_ALREADY_CLOSED: 9,
  FRAME_TOO_LARGE: 11,
} as const;

/** GOAWAY status codes. */
export const GoAwayStatus = { OK: 0, PROTOCOL_ERROR: 1, INTERNAL_ERROR: 2 } as const;

export const SETTINGS_INITIAL_WINDOW_SIZE = 7;
export const DEFAULT_WINDOW = 65536;
export const MAX_FRAME_PAYLOAD = 0xffffff;

/** Lower-cased header name → values. */
export type SpdyHeaders = Record<string, string[]>;

export type Frame =
  | { kind: 'data'; streamId: number; flags: number; data: Buffer }
  | { kind: 'syn_stream'; streamId: number; associatedId: number; priority: number; flags: number; headerBlock: Buffer }
  | { kind: 'syn_reply'; streamId: number; flags: number; headerBlock: Buffer }
  | { kind: 'headers'; streamId: number; flags: number; headerBlock: Buffer }
  | { kind: 'rst_stream'; streamId: number; status: number }
  | { kind: 'settings'; flags: number; entries: { flags: number; id: number; value: number }[] }
  | { kind: 'ping'; id: number }
  | { kind: 'goaway'; lastStreamId: number; status: number }
  | { kind: 'window_update'; streamId: number; delta: number }
  | { kind: 'unknown'; type: number; version: number };

export function encodeHeaderBlock(headers: SpdyHeaders): Buffer {
  const entries = Object.entries(headers).filter(([, v]) => v.length > 0);
  const parts: Buffer[] = [u32(entries.length)];
  for (const [name, values] of entries) {
    const n = Buffer.from(name.toLowerCase(), 'utf8');
    const v = Buffer.from(values.join('\0'), 'utf8');
    parts.push(u32(n.length), n, u32(v.length), v);
  }
  return Buffer.concat(parts);
}

export function decodeHeaderBlock(block: Buffer): SpdyHeaders {
  const bad = () => new InvalidArgumentError('spdy: malformed header block');
  if (block.length < 4) throw bad();
  const count = block.readUInt32BE(0);
  let p = 4;
  const out: SpdyHeaders = {};
  for (let i = 0; i < count; i++) {
    if (p + 4 > block.length) throw bad();
    const nl = block.readUInt32BE(p);
    p += 4;
    if (nl === 0 || p + nl + 4 > block.length) throw bad();
    const name = block.toString('utf8', p, p + nl).toLowerCase();
    p += nl;
    const vl = block.readUInt32BE(p);
    p += 4;
    if (p + vl > block.length) throw bad();
    const value = block.toString('utf8', p, p + vl);
    p += vl;
    (out[name] ??= []).push(...value.split('\0'));
  }
  return out;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

function control(type: number, flags: number, payload: Buffer): Buffer {
  if (payload.length > MAX_FRAME_PAYLOAD) throw new InvalidArgumentError('spdy: frame payload too large');
  const h = Buffer.alloc(8);
  h.writeUInt16BE(0x8000 | SPDY_VERSION, 0);
  h.writeUInt16BE(type, 2);
  h.writeUInt32BE(((flags & 0xff) << 24) | payload.length, 4);
  return Buffer.concat([h, payload]);
}

export const encode = {
  data(streamId: number, data: Buffer, fin: boolean): Buffer {
    if (data.length > MAX_FRAME_PAYLOAD) throw new InvalidArgumentError('spdy: data frame too large');
    const h = Buffer.alloc(8);
    h.writeUInt32BE(streamId & 0x7fffffff, 0);
    h.writeUInt32BE(((fin ? FLAG_FIN : 0) << 24) | data.length, 4);
    return Buffer.concat([h, data]);
  },
  synStream(streamId: number, associatedId: number, priority: number, flags: number, compressedHeaders: Buffer): Buffer {
    const p = Buffer.alloc(10);
    p.writeUInt32BE(streamId & 0x7fffffff, 0);
    p.writeUInt32BE(associatedId & 0x7fffffff, 4);
    p[8] = (priority & 0x7) << 5;
    p[9] = 0; // slot
    return control(FrameType.SYN_STREAM, flags, Buffer.concat([p, compressedHeaders]));
  },
  synReply(streamId: number, flags: number, compressedHeaders: Buffer): Buffer {
    return control(FrameType.SYN_REPLY, flags, Buffer.concat([u32(streamId & 0x7fffffff), compressedHeaders]));
  },
  headers(streamId: number, flags: number, compressedHeaders: Buffer): Buffer {
    return control(FrameType.HEADERS, flags, Buffer.concat([u32(streamId & 0x7fffffff), compressedHeaders]));
  },
  rstStream(streamId: number, status: number): Buffer {
    return control(FrameType.RST_STREAM, 0, Buffer.concat([u32(streamId & 0x7fffffff), u32(status)]));
  },
  settings(entries: { flags: number; id: number; value: number }[]): Buffer {
    const parts = [u32(entries.length)];
    for (const e of entries) parts.push(u32(((e.flags & 0xff) << 24) | (e.id & 0xffffff)), u32(e.value));
    return control(FrameType.SETTINGS, 0, Buffer.concat(parts));
  },
  ping(id: number): Buffer {
    return control(FrameType.PING, 0, u32(id));
  },
  goAway(lastStreamId: number, status: number): Buffer {
    return control(FrameType.GOAWAY, 0, Buffer.concat([u32(lastStreamId & 0x7fffffff), u32(status)]));
  },
  windowUpdate(streamId: number, delta: number): Buffer {
    return control(FrameType.WINDOW_UPDATE, 0, Buffer.concat([u32(streamId & 0x7fffffff), u32(delta & 0x7fffffff)]));
  },
};

/**
 * Incremental frame reader: push socket bytes, take whole frames. Frames over `maxPayload`
 * are refused (the connection is then unusable, since we cannot resynchronise).
 */
export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);
  private readonly maxPayload: number;
  constructor(maxPayload = MAX_FRAME_PAYLOAD) {
    this.maxPayload = maxPayload;
  }

  push(chunk: Buffer): Frame[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const frames: Frame[] = [];
    while (this.buf.length >= 8) {
      const len = this.buf.readUInt32BE(4) & 0xffffff;
      if (len > this.maxPayload) throw new InvalidArgumentError(`spdy: frame of ${len} bytes exceeds the ${this.maxPayload}-byte limit`);
      if (this.buf.length < 8 + len) break;
      const frame = this.buf.subarray(0, 8 + len);
      this.buf = this.buf.subarray(8 + len);
      frames.push(parseFrame(frame));
    }
    if (this.buf.length === 0) this.buf = Buffer.alloc(0);
    return frames;
  }
}

function parseFrame(f: Buffer): Frame {
  const flags = f[4]!;
  const payload = f.subarray(8);
  const bad = (what: string) => new InvalidArgumentError(`spdy: malformed ${what} frame`);
  if ((f[0]! & 0x80) === 0) {
    return { kind: 'data', streamId: f.readUInt32BE(0) & 0x7fffffff, flags, data: Buffer.from(payload) };
  }
  const version = f.readUInt16BE(0) & 0x7fff;
  const type = f.readUInt16BE(2);
  if (version !== SPDY_VERSION) return { kind: 'unknown', type, version };
  switch (type) {
    case FrameType.SYN_STREAM:
      if (payload.length < 10) throw bad('SYN_STREAM');
      return {
        kind: 'syn_stream',
        streamId: payload.readUInt32BE(0) & 0x7fffffff,
        associatedId: payload.readUInt32BE(4) & 0x7fffffff,
        priority: payload[8]! >> 5,
        flags,
        headerBlock: Buffer.from(payload.subarray(10)),
      };
    case FrameType.SYN_REPLY:
    case FrameType.HEADERS:
      if (payload.length < 4) throw bad(type === FrameType.SYN_REPLY ? 'SYN_REPLY' : 'HEADERS');
      return {
        kind: type === FrameType.SYN_REPLY ? 'syn_reply' : 'headers',
        streamId: payload.readUInt32BE(0) & 0x7fffffff,
        flags,
        headerBlock: Buffer.from(payload.subarray(4)),
      };
    case FrameType.RST_STREAM:
      if (payload.length !== 8) throw bad('RST_STREAM');
      return { kind: 'rst_stream', streamId: payload.readUInt32BE(0) & 0x7fffffff, status: payload.readUInt32BE(4) };
    case FrameType.SETTINGS: {
      if (payload.length < 4) throw bad('SETTINGS');
      const n = payload.readUInt32BE(0);
      if (payload.length !== 4 + 8 * n) throw bad('SETTINGS');
      const entries = [];
      for (let i = 0; i < n; i++) {
        const w = payload.readUInt32BE(4 + 8 * i);
        entries.push({ flags: w >>> 24, id: w & 0xffffff, value: payload.readUInt32BE(8 + 8 * i) });
      }
      return { kind: 'settings', flags, entries };
    }
    case FrameType.PING:
      if (payload.length !== 4) throw bad('PING');
      return { kind: 'ping', id: payload.readUInt32BE(0) };
    case FrameType.GOAWAY:
      if (payload.length < 4) throw bad('GOAWAY');
      return {
        kind: 'goaway',
        lastStreamId: payload.readUInt32BE(0) & 0x7fffffff,
        status: payload.length >= 8 ? payload.readUInt32BE(4) : 0,
      };
    case FrameType.WINDOW_UPDATE:
      if (payload.length !== 8) throw bad('WINDOW_UPDATE');
      return { kind: 'window_update', streamId: payload.readUInt32BE(0) & 0x7fffffff, delta: payload.readUInt32BE(4) & 0x7fffffff };
    default:
      return { kind: 'unknown', type, version };
  }
}
