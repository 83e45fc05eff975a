/**
 * A SPDY/3.1 session over one byte stream (an upgraded HTTP connection). Either end can use
 * it: the streaming server accepts streams the client opens (odd ids); tests and tools open
 * streams as a client. Each SPDY stream is a Node Duplex: writes become DATA frames, end()
 * sends FIN, the peer's FIN ends the readable side.
 *
 * Flow control: we credit the peer's windows as data arrives (WINDOW_UPDATE per stream and,
 * as 3.1 adds, for the session). We do not hold our own sends to the peer's window: the
 * Kubernetes SPDY peers (moby/spdystream) never send WINDOW_UPDATE and would stall.
 */
import { Duplex } from 'node:stream';
import { EventEmitter } from 'node:events';
import {
  DEFAULT_WINDOW,
  FLAG_FIN,
  FLAG_UNIDIRECTIONAL,
  FrameReader,
  GoAwayStatus,
  RstStatus,
  decodeHeaderBlock,
  encode,
  encodeHeaderBlock,
  type Frame,
  type SpdyHeaders,
} from './framing.ts';
import { HeaderDeflater, HeaderInflater } from './zlib.ts';
import { SPDY3_DICTIONARY } from './dictionary.ts';
import { CorralError, UnavailableError } from '../../../errors.ts';

const DATA_CHUNK = 32 * 1024;

export class SpdyStream extends Duplex {
  readonly id: number;
  readonly headers: SpdyHeaders;
  /** RST_STREAM status the peer reset us with, if it did. */
  resetStatus: number | undefined;
  replyHeaders: SpdyHeaders | undefined;
  private readonly session: SpdySession;
  private receivedSinceCredit = 0;
  remoteEnded = false;
  localEnded = false;

  constructor(session: SpdySession, id: number, headers: SpdyHeaders) {
    super({ allowHalfOpen: true });
    this.session = session;
    this.id = id;
    this.headers = headers;
    // A write racing a peer reset must not crash the daemon; such failures surface as 'close'.
    this.on('error', () => {});
  }

  /** First value of a header (names are lower-case on the wire). */
  header(name: string): string | undefined {
    return this.headers[name.toLowerCase()]?.[0];
  }

  override _read(): void {}

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.session.sendData(this, chunk, false, cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.localEnded = true;
    this.session.sendData(this, Buffer.alloc(0), true, cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.session.forget(this, !(this.localEnded && this.remoteEnded) && this.resetStatus === undefined);
    cb(err);
  }

  /** Abort the stream: RST_STREAM to the peer, no more data either way. */
  reset(status: number = RstStatus.CANCEL): void {
    if (this.destroyed) return;
    this.session.sendReset(this.id, status);
    this.resetStatus = status;
    this.destroy();
  }

  /** @internal */
  deliver(data: Buffer, fin: boolean): void {
    if (data.length > 0) {
      this.push(data);
      this.receivedSinceCredit += data.length;
      if (this.receivedSinceCredit >= DEFAULT_WINDOW / 2 && !fin) {
        this.session.credit(this.id, this.receivedSinceCredit);
        this.receivedSinceCredit = 0;
      }
    }
    if (fin) this.remoteFinish();
  }

  /** @internal */
  remoteFinish(): void {
    if (this.remoteEnded) return;
    this.remoteEnded = true;
    this.push(null);
  }
}

export interface SpdySessionOptions {
  role: 'server' | 'client';
  /** Server role: called for each stream the peer opens (after the SYN_REPLY went out). */
  onStream?: (stream: SpdyStream) => void;
}

/**
 * Events: 'stream' (SpdyStream, server role), 'goaway', 'close', 'protocolError' (CorralError).
 */
export class SpdySession extends EventEmitter {
  private readonly socket: Duplex;
  private readonly role: 'server' | 'client';
  private readonly reader = new FrameReader();
  private readonly deflater = new HeaderDeflater(SPDY3_DICTIONARY);
  private readonly inflater = new HeaderInflater(SPDY3_DICTIONARY);
  private readonly streams = new Map<number, SpdyStream>();
  private readonly pendingReplies = new Map<number, { resolve: (s: SpdyStream) => void; reject: (e: Error) => void }>();
  private nextId: number;
  private lastRemoteId = 0;
  private nextPingId: number;
  private readonly pings = new Map<number, () => void>();
  private sessionReceived = 0;
  private goingAway = false;
  private closed = false;

  constructor(socket: Duplex, options: SpdySessionOptions) {
    super();
    this.socket = socket;
    this.role = options.role;
    this.nextId = this.role === 'client' ? 1 : 2;
    this.nextPingId = this.role === 'client' ? 1 : 2;
    if (options.onStream) this.on('stream', options.onStream);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.teardown());
    socket.on('close', () => this.teardown());
    socket.on('error', () => this.teardown());
  }

  get isClosed(): boolean {
    return this.closed;
  }

  get activeStreams(): number {
    return this.streams.size;
  }

  /** Open a stream (client side or server push); resolves once the peer's SYN_REPLY arrives. */
  openStream(headers: SpdyHeaders, options: { fin?: boolean } = {}): Promise<SpdyStream> {
    if (this.closed || this.goingAway) return Promise.reject(new UnavailableError('spdy: session is closing; open a new connection'));
    const id = this.nextId;
    this.nextId += 2;
    const stream = new SpdyStream(this, id, headers);
    this.streams.set(id, stream);
    if (options.fin) stream.localEnded = true;
    const block = this.deflater.compress(encodeHeaderBlock(headers));
    const promise = new Promise<SpdyStream>((resolve, reject) => this.pendingReplies.set(id, { resolve, reject }));
    this.socket.write(encode.synStream(id, 0, 0, options.fin ? FLAG_FIN : 0, block));
    if (options.fin) stream.end();
    return promise;
  }

  /** Round-trip a PING; resolves when the peer echoes it. */
  ping(): Promise<void> {
    const id = this.nextPingId;
    this.nextPingId += 2;
    return new Promise((resolve) => {
      this.pings.set(id, resolve);
      this.socket.write(encode.ping(id));
    });
  }

  /** Graceful end: GOAWAY, then close the connection. */
  close(): void {
    if (this.closed) return;
    if (!this.goingAway) {
      this.goingAway = true;
      this.socket.write(encode.goAway(this.lastRemoteId, GoAwayStatus.OK));
    }
    this.closed = true;
    this.socket.end();
    const t = setTimeout(() => this.socket.destroy(), 5000);
    t.unref();
    this.socket.once('close', () => clearTimeout(t));
    this.teardown();
  }

  destroy(): void {
    this.socket.destroy();
    this.teardown();
  }

  // ---- used by SpdyStream ------------------------------------------------------------

  /** @internal */
  sendData(stream: SpdyStream, data: Buffer, fin: boolean, cb: (err?: Error | null) => void): void {
    if (this.socket.destroyed || this.socket.writableEnded) {
      cb(new UnavailableError('spdy: connection closed'));
      return;
    }
    let ok = true;
    if (data.length === 0) {
      ok = this.socket.write(encode.data(stream.id, data, fin));
    } else {
      for (let off = 0; off < data.length; off += DATA_CHUNK) {
        const part = data.subarray(off, Math.min(data.length, off + DATA_CHUNK));
        const last = off + DATA_CHUNK >= data.length;
        ok = this.socket.write(encode.data(stream.id, part, fin && last));
      }
    }
    if (fin) this.maybeRetire(stream);
    if (ok) cb();
    else this.socket.once('drain', () => cb());
  }

  /** @internal */
  sendReset(id: number, status: number): void {
    if (!this.socket.destroyed && !this.socket.writableEnded) this.socket.write(encode.rstStream(id, status));
  }

  /** @internal */
  credit(id: number, bytes: number): void {
    if (!this.socket.destroyed && !this.socket.writableEnded) this.socket.write(encode.windowUpdate(id, bytes));
  }

  /** @internal */
  forget(stream: SpdyStream, abrupt: boolean): void {
    if (this.streams.get(stream.id) !== stream) return;
    this.streams.delete(stream.id);
    if (abrupt && !this.closed) this.sendReset(stream.id, RstStatus.CANCEL);
    this.pendingReplies.get(stream.id)?.reject(new UnavailableError(`spdy: stream ${stream.id} closed before the peer replied`));
    this.pendingReplies.delete(stream.id);
    if (this.goingAway && this.streams.size === 0) this.close();
  }

  private maybeRetire(stream: SpdyStream): void {
    if (stream.localEnded && stream.remoteEnded) this.streams.delete(stream.id);
  }

  // ---- incoming ----------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    if (this.closed && this.socket.destroyed) return;
    let frames: Frame[];
    try {
      frames = this.reader.push(chunk);
      for (const f of frames) this.handle(f);
    } catch (err) {
      this.protocolError(err);
    }
  }

  private protocolError(err: unknown): void {
    const e = err instanceof CorralError ? err : new UnavailableError(`spdy: ${String(err)}`);
    this.emit('protocolError', e);
    if (!this.socket.destroyed && !this.socket.writableEnded) {
      this.socket.write(encode.goAway(this.lastRemoteId, GoAwayStatus.PROTOCOL_ERROR));
    }
    this.goingAway = true;
    this.destroy();
  }

  private handle(f: Frame): void {
    switch (f.kind) {
      case 'syn_stream': {
        // always inflate, even for refused streams, to keep the zlib stream in step
        const headers = decodeHeaderBlock(this.inflater.inflate(f.headerBlock));
        const peerParity = this.role === 'server' ? 1 : 0;
        if (f.streamId === 0 || f.streamId % 2 !== peerParity || f.streamId <= this.lastRemoteId) {
          this.sendReset(f.streamId, RstStatus.PROTOCOL_ERROR);
          return;
        }
        this.lastRemoteId = f.streamId;
        if (this.goingAway || this.closed) {
          this.sendReset(f.streamId, RstStatus.REFUSED_STREAM);
          return;
        }
        const stream = new SpdyStream(this, f.streamId, headers);
        this.streams.set(f.streamId, stream);
        if (f.flags & FLAG_UNIDIRECTIONAL) {
          stream.localEnded = true;
          stream.end();
        }
        this.socket.write(encode.synReply(f.streamId, 0, this.deflater.compress(encodeHeaderBlock({}))));
        if (f.flags & FLAG_FIN) stream.remoteFinish();
        this.emit('stream', stream);
        return;
      }
      case 'syn_reply': {
        const headers = decodeHeaderBlock(this.inflater.inflate(f.headerBlock));
        const stream = this.streams.get(f.streamId);
        if (!stream) return;
        stream.replyHeaders = headers;
        const p = this.pendingReplies.get(f.streamId);
        this.pendingReplies.delete(f.streamId);
        p?.resolve(stream);
        if (f.flags & FLAG_FIN) stream.remoteFinish();
        return;
      }
      case 'headers': {
        this.inflater.inflate(f.headerBlock);
        if (f.flags & FLAG_FIN) this.streams.get(f.streamId)?.remoteFinish();
        return;
      }
      case 'data': {
        this.sessionReceived += f.data.length;
        if (this.sessionReceived >= DEFAULT_WINDOW / 2) {
          this.credit(0, this.sessionReceived);
          this.sessionReceived = 0;
        }
        const stream = this.streams.get(f.streamId);
        if (!stream || stream.remoteEnded) return; // already gone: the peer will learn from our RST
        stream.deliver(f.data, (f.flags & FLAG_FIN) !== 0);
        this.maybeRetire(stream);
        return;
      }
      case 'rst_stream': {
        const stream = this.streams.get(f.streamId);
        if (!stream) return;
        stream.resetStatus = f.status;
        this.streams.delete(f.streamId);
        stream.emit('reset', f.status);
        this.pendingReplies.get(f.streamId)?.reject(new UnavailableError(`spdy: peer reset stream ${f.streamId} (status ${f.status})`));
        this.pendingReplies.delete(f.streamId);
        stream.remoteFinish();
        stream.destroy();
        return;
      }
      case 'ping': {
        const ours = this.role === 'client' ? 1 : 0;
        if (f.id % 2 === ours) {
          this.pings.get(f.id)?.();
          this.pings.delete(f.id);
        } else {
          this.socket.write(encode.ping(f.id));
        }
        return;
      }
      case 'goaway':
        this.goingAway = true;
        this.emit('goaway', f.lastStreamId, f.status);
        if (this.streams.size === 0) this.close();
        return;
      case 'settings':
      case 'window_update':
      case 'unknown':
        return;
    }
  }

  private teardown(): void {
    if (!this.closed) this.closed = true;
    if (!this.socket.destroyed && !this.socket.writableEnded && this.streams.size === 0) this.socket.end();
    if (this.socket.destroyed || this.socket.readableEnded) {
      for (const s of this.streams.values()) {
        s.remoteFinish();
        s.destroy();
      }
      this.streams.clear();
      for (const p of this.pendingReplies.values()) p.reject(new UnavailableError('spdy: connection closed'));
      this.pendingReplies.clear();
      if (!this.emittedClose) {
        this.emittedClose = true;
        this.emit('close');
      }
    }
  }
  private emittedClose = false;
}
