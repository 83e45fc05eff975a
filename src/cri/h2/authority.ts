/**
 * Makes Go gRPC clients of the Kubernetes 1.26 era work against Node's HTTP/2 server over a
 * unix socket. Those clients (kubelet, crictl) send the socket *path* as :authority, which
 * nghttp2 rejects with a stream PROTOCOL_ERROR before gRPC sees the call. We sit between the
 * client socket and the gRPC server, decode every request header block (HPACK), replace an
 * :authority that is not a valid authority with "localhost", and re-encode it statelessly.
 * All other frames, and everything the server sends, pass through untouched.
 */
import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { HpackDecoder, encodeStateless } from './hpack.ts';

const PREFACE_LEN = 24; // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
const TYPE_HEADERS = 0x1;
const TYPE_CONTINUATION = 0x9;
const FLAG_END_STREAM = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;
const MAX_OUT_FRAME = 16384; // the protocol minimum for SETTINGS_MAX_FRAME_SIZE
const VALID_AUTHORITY = /^[A-Za-z0-9\-._~!$&'()*+,;=:%@[\]]*$/;

export function fixAuthority(value: string): string {
  return VALID_AUTHORITY.test(value) ? value : 'localhost';
}

function frameHeader(len: number, type: number, flags: number, stream: number): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(len, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream & 0x7fffffff, 5);
  return h;
}

/**
 * A Duplex to hand to the HTTP/2 server in place of `socket`: reads are the client's bytes
 * with header blocks rewritten; writes go straight to the client.
 */
export class AuthorityFixingStream extends Duplex {
  private readonly socket: Socket;
  private readonly decoder = new HpackDecoder();
  private buf: Buffer = Buffer.alloc(0);
  private prefaceLeft = PREFACE_LEN;
  private pending: { stream: number; flags: number; priority: Buffer | null; fragments: Buffer[] } | null = null;

  constructor(socket: Socket) {
    super({ allowHalfOpen: false });
    this.socket = socket;
    socket.on('data', (c: Buffer) => {
      try {
        const out = this.transform(c);
        if (out.length && !this.push(out)) socket.pause();
      } catch (err) {
        this.destroy(err as Error);
      }
    });
    socket.on('end', () => this.push(null));
    socket.on('close', () => this.destroy());
    socket.on('error', (e) => this.destroy(e));
  }

  // net.Socket look-alikes the HTTP/2 layer may call
  setTimeout(ms: number, cb?: () => void): this {
    this.socket.setTimeout(ms, cb);
    return this;
  }
  setNoDelay(v?: boolean): this {
    this.socket.setNoDelay(v);
    return this;
  }
  setKeepAlive(enable?: boolean, delay?: number): this {
    this.socket.setKeepAlive(enable, delay);
    return this;
  }
  get remoteAddress(): string | undefined {
    return this.socket.remoteAddress;
  }
  get remotePort(): number | undefined {
    return this.socket.remotePort;
  }

  override _read(): void {
    this.socket.resume();
  }
  override _write(chunk: Buffer, _e: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.socket.destroyed) return cb();
    if (this.socket.write(chunk)) cb();
    else this.socket.once('drain', () => cb());
  }
  override _final(cb: (err?: Error | null) => void): void {
    this.socket.end(() => cb());
  }
  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.socket.destroy();
    cb(err);
  }

  private transform(chunk: Buffer): Buffer {
    const out: Buffer[] = [];
    let data = chunk;
    if (this.prefaceLeft > 0) {
      const n = Math.min(this.prefaceLeft, data.length);
      out.push(data.subarray(0, n));
      this.prefaceLeft -= n;
      data = data.subarray(n);
    }
    this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : data;
    while (this.buf.length >= 9) {
      const len = this.buf.readUIntBE(0, 3);
      if (this.buf.length < 9 + len) break;
      const type = this.buf[3]!;
      const flags = this.buf[4]!;
      const stream = this.buf.readUInt32BE(5) & 0x7fffffff;
      const frame = this.buf.subarray(0, 9 + len);
      const payload = frame.subarray(9);
      this.buf = this.buf.subarray(9 + len);
      if (type === TYPE_HEADERS) {
        let p = 0;
        let pad = 0;
        if (flags & FLAG_PADDED) {
          pad = payload[0] ?? 0;
          p = 1;
        }
        let priority: Buffer | null = null;
        if (flags & FLAG_PRIORITY) {
          priority = Buffer.from(payload.subarray(p, p + 5));
          p += 5;
        }
        if (p + pad > payload.length) throw new Error('http2: bad padding in HEADERS');
        this.pending = { stream, flags, priority, fragments: [Buffer.from(payload.subarray(p, payload.length - pad))] };
        if (flags & FLAG_END_HEADERS) out.push(this.flushHeaders());
      } else if (type === TYPE_CONTINUATION && this.pending && this.pending.stream === stream) {
        this.pending.fragments.push(Buffer.from(payload));
        if (flags & FLAG_END_HEADERS) out.push(this.flushHeaders());
      } else {
        out.push(Buffer.from(frame));
      }
    }
    if (this.buf.length) this.buf = Buffer.from(this.buf);
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }

  private flushHeaders(): Buffer {
    const p = this.pending!;
    this.pending = null;
    const fields = this.decoder.decode(Buffer.concat(p.fragments));
    for (const f of fields) if (f.name === ':authority') f.value = fixAuthority(f.value);
    let block = encodeStateless(fields);
    const parts: Buffer[] = [];
    const firstRoom = MAX_OUT_FRAME - (p.priority ? 5 : 0);
    const first = block.subarray(0, firstRoom);
    block = block.subarray(first.length);
    const baseFlags = (p.flags & (FLAG_END_STREAM | FLAG_PRIORITY)) | (block.length === 0 ? FLAG_END_HEADERS : 0);
    const firstPayload = p.priority ? Buffer.concat([p.priority, first]) : first;
    parts.push(frameHeader(firstPayload.length, TYPE_HEADERS, baseFlags, p.stream), firstPayload);
    while (block.length) {
      const piece = block.subarray(0, MAX_OUT_FRAME);
      block = block.subarray(piece.length);
      parts.push(frameHeader(piece.length, TYPE_CONTINUATION, block.length === 0 ? FLAG_END_HEADERS : 0, p.stream), piece);
    }
    return Buffer.concat(parts);
  }
}
