/**
 * Server side of RFC 6455 WebSocket: the upgrade handshake with subprotocol negotiation and
 * the frame codec (client frames masked, ours not; fragmentation; ping/pong; close handshake).
 * Node ships a WebSocket client but no server.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { EventEmitter } from 'node:events';
import { InvalidArgumentError } from '../../errors.ts';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const OP_CONT = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;

export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  UNSUPPORTED: 1003,
  TOO_BIG: 1009,
  INTERNAL: 1011,
} as const;

export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  return (req.headers.upgrade ?? '').toLowerCase() === 'websocket';
}

export function offeredProtocols(req: IncomingMessage): string[] {
  const raw = req.headers['sec-websocket-protocol'];
  const joined = Array.isArray(raw) ? raw.join(',') : (raw ?? '');
  return joined.split(',').map((p) => p.trim()).filter(Boolean);
}

/**
 * Complete the handshake on an upgraded socket. `supported` is in our order of preference; the
 * first one the client also offered wins. Throws InvalidArgumentError (the caller answers 400)
 * when the request is not a valid version-13 upgrade or shares no subprotocol with us.
 */
export function acceptWebSocket(req: IncomingMessage, socket: Duplex, head: Buffer, supported: readonly string[], maxMessage = 16 << 20): WebSocketConnection {
  const key = req.headers['sec-websocket-key'];
  if (req.method !== 'GET') throw new InvalidArgumentError(`websocket upgrade must use GET, not ${req.method}`);
  if (typeof key !== 'string' || Buffer.from(key, 'base64').length !== 16) {
    throw new InvalidArgumentError('websocket upgrade without a valid Sec-WebSocket-Key');
  }
  if (req.headers['sec-websocket-version'] !== '13') {
    throw new InvalidArgumentError('websocket upgrade must use Sec-WebSocket-Version 13');
  }
  const offered = offeredProtocols(req);
  const protocol = supported.find((p) => offered.includes(p));
  if (!protocol) {
    throw new InvalidArgumentError(
      `websocket upgrade offers no supported subprotocol (offered: ${offered.join(', ') || 'none'}; supported: ${supported.join(', ')})`,
    );
  }
  const accept = createHash('sha1').update(key + GUID).digest('base64');
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\n' +
      'Upgrade: websocket\r\n' +
      'Connection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${accept}\r\n` +
      `Sec-WebSocket-Protocol: ${protocol}\r\n\r\n`,
  );
  const conn = new WebSocketConnection(socket, protocol, maxMessage);
  if (head.length > 0) conn.feed(head);
  return conn;
}

function frame(opcode: number, payload: Buffer): Buffer {
  const len = payload.length;
  let header: Buffer;
  if (len < 126) {
    header = Buffer.from([0x80 | opcode, len]);
  } else if (len < 65536) {
    header = Buffer.alloc(4);
    header[0] = 0x80 | opcode;
    header[1] = 126;
    header.writeUInt16BE(len, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode;
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(len), 2);
  }
  return Buffer.concat([header, payload]);
}

/** Events: 'message' (data: Buffer, binary: boolean), 'close' (code: number, reason: string). */
export class WebSocketConnection extends EventEmitter {
  readonly protocol: string;
  private readonly socket: Duplex;
  private readonly maxMessage: number;
  private buf: Buffer = Buffer.alloc(0);
  private fragments: Buffer[] = [];
  private fragmentOp = 0;
  private fragmentBytes = 0;
  private sentClose = false;
  private closed = false;

  constructor(socket: Duplex, protocol: string, maxMessage: number) {
    super();
    this.socket = socket;
    this.protocol = protocol;
    this.maxMessage = maxMessage;
    socket.on('data', (c: Buffer) => this.feed(c));
    socket.on('close', () => this.finish(1006, 'connection dropped'));
    socket.on('error', () => this.finish(1006, 'connection error'));
  }

  get isOpen(): boolean {
    return !this.sentClose && !this.closed;
  }

  /** Send one binary message. Returns false when the socket is backed up (wait for 'drain'). */
  send(data: Buffer): boolean {
    if (!this.isOpen) return false;
    return this.socket.write(frame(OP_BINARY, data));
  }

  sendText(text: string): boolean {
    if (!this.isOpen) return false;
    return this.socket.write(frame(OP_TEXT, Buffer.from(text, 'utf8')));
  }

  onDrain(cb: () => void): void {
    this.socket.once('drain', cb);
  }

  /** Start the close handshake; the socket ends when the peer answers (or after 5 s). */
  close(code: number = CloseCode.NORMAL, reason = ''): void {
    if (this.sentClose || this.closed) return;
    this.sentClose = true;
    const r = Buffer.from(reason.slice(0, 120), 'utf8');
    const p = Buffer.alloc(2 + r.length);
    p.writeUInt16BE(code, 0);
    r.copy(p, 2);
    this.socket.write(frame(OP_CLOSE, p));
    const t = setTimeout(() => this.socket.destroy(), 5000);
    t.unref();
    this.socket.once('close', () => clearTimeout(t));
  }

  /** @internal bytes from the socket */
  feed(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    try {
      while (this.parseOne());
    } catch (err) {
      const code = (err as { wsCode?: number }).wsCode ?? CloseCode.PROTOCOL_ERROR;
      this.close(code, err instanceof Error ? err.message : String(err));
      this.socket.end();
    }
  }

  private fail(code: number, message: string): never {
    throw Object.assign(new Error(message), { wsCode: code });
  }

  private parseOne(): boolean {
    const b = this.buf;
    if (b.length < 2) return false;
    const fin = (b[0]! & 0x80) !== 0;
    if (b[0]! & 0x70) this.fail(CloseCode.PROTOCOL_ERROR, 'reserved bits set');
    const op = b[0]! & 0x0f;
    const masked = (b[1]! & 0x80) !== 0;
    let len = b[1]! & 0x7f;
    let off = 2;
    if (len === 126) {
      if (b.length < 4) return false;
      len = b.readUInt16BE(2);
      off = 4;
    } else if (len === 127) {
      if (b.length < 10) return false;
      const big = b.readBigUInt64BE(2);
      if (big > BigInt(this.maxMessage)) this.fail(CloseCode.TOO_BIG, 'frame too large');
      len = Number(big);
      off = 10;
    }
    if (!masked) this.fail(CloseCode.PROTOCOL_ERROR, 'client frames must be masked');
    if (len > this.maxMessage) this.fail(CloseCode.TOO_BIG, 'frame too large');
    if (b.length < off + 4 + len) return false;
    const mask = b.subarray(off, off + 4);
    const payload = Buffer.from(b.subarray(off + 4, off + 4 + len));
    for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i & 3]!;
    this.buf = b.subarray(off + 4 + len);

    if (op >= 0x8) {
      if (!fin || len > 125) this.fail(CloseCode.PROTOCOL_ERROR, 'bad control frame');
      if (op === OP_PING) {
        if (this.isOpen) this.socket.write(frame(OP_PONG, payload));
      } else if (op === OP_CLOSE) {
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        const reason = payload.length > 2 ? payload.toString('utf8', 2) : '';
        if (!this.sentClose) {
          this.sentClose = true;
          this.socket.write(frame(OP_CLOSE, payload.subarray(0, 2)));
        }
        this.socket.end();
        this.finish(code, reason);
        return false;
      } else if (op !== OP_PONG) {
        this.fail(CloseCode.PROTOCOL_ERROR, `unknown control opcode ${op}`);
      }
      return true;
    }
    if (op === OP_CONT) {
      if (this.fragments.length === 0) this.fail(CloseCode.PROTOCOL_ERROR, 'continuation without a start');
    } else if (op === OP_TEXT || op === OP_BINARY) {
      if (this.fragments.length > 0) this.fail(CloseCode.PROTOCOL_ERROR, 'new message inside a fragmented one');
      this.fragmentOp = op;
    } else {
      this.fail(CloseCode.PROTOCOL_ERROR, `unknown opcode ${op}`);
    }
    this.fragments.push(payload);
    this.fragmentBytes += payload.length;
    if (this.fragmentBytes > this.maxMessage) this.fail(CloseCode.TOO_BIG, 'message too large');
    if (fin) {
      const msg = this.fragments.length === 1 ? this.fragments[0]! : Buffer.concat(this.fragments);
      this.fragments = [];
      this.fragmentBytes = 0;
      if (!this.closed) this.emit('message', msg, this.fragmentOp === OP_BINARY);
    }
    return true;
  }

  private finish(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.emit('close', code, reason);
  }
}
