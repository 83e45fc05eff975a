/**
 * Port forwarding over either transport.
 *
 *  SPDY (X-Stream-Protocol-Version: portforward.k8s.io): for every forwarded connection the
 *  client opens two streams carrying the same `port` and `requestID` headers: `streamType:
 *  error` (we write a text message there if forwarding fails) and `streamType: data` (the
 *  connection's bytes, both ways).
 *
 *  WebSocket (subprotocol v4.channel.k8s.io): the ports come from the URL's `port` query
 *  parameters (or the PortForward request). Port number i uses channel 2i for data and 2i+1
 *  for errors; our first message on each of those channels is the port as 2 bytes,
 *  little-endian. One WebSocket carries one connection per port.
 */
import { Duplex } from 'node:stream';
import type { StreamingBackend } from './backend.ts';
import type { SpdySession, SpdyStream } from './spdy/session.ts';
import type { WebSocketConnection } from './websocket.ts';
import { CloseCode } from './websocket.ts';
import type { Logger } from '../log.ts';

export const SPDY_PORTFORWARD_PROTOCOLS = ['portforward.k8s.io'] as const;
export const WS_PORTFORWARD_PROTOCOLS = ['v4.channel.k8s.io'] as const;

export interface PortForwardTarget {
  sandboxId: string;
  /** Ports the PortForward request named; empty allows any port. */
  ports: number[];
}

export function parsePort(text: string | undefined): number | null {
  if (!text || !/^[0-9]{1,5}$/.test(text)) return null;
  const n = Number(text);
  return n >= 1 && n <= 65535 ? n : null;
}

function errorText(target: PortForwardTarget, port: number, err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return `error forwarding port ${port} to pod sandbox ${target.sandboxId}: ${msg}`;
}

export function serveSpdyPortForward(
  session: SpdySession,
  target: PortForwardTarget,
  backend: StreamingBackend,
  log: Logger,
  streamPairTimeoutMs: number,
): void {
  const pairs = new Map<string, { data?: SpdyStream; error?: SpdyStream; timer: NodeJS.Timeout }>();
  const abort = new AbortController();
  session.on('close', () => {
    abort.abort();
    for (const p of pairs.values()) clearTimeout(p.timer);
  });

  session.on('stream', (s: SpdyStream) => {
    const type = s.header('streamtype');
    const requestId = s.header('requestid');
    if ((type !== 'data' && type !== 'error') || !requestId) {
      s.reset();
      return;
    }
    let pair = pairs.get(requestId);
    if (!pair) {
      const timer = setTimeout(() => {
        const p = pairs.get(requestId);
        pairs.delete(requestId);
        p?.data?.reset();
        p?.error?.reset();
      }, streamPairTimeoutMs);
      timer.unref();
      pair = { timer };
      pairs.set(requestId, pair);
    }
    if (pair[type]) {
      s.reset();
      return;
    }
    pair[type] = s;
    if (pair.data && pair.error) {
      clearTimeout(pair.timer);
      pairs.delete(requestId);
      void forward(pair.data, pair.error);
    }
  });

  async function forward(data: SpdyStream, error: SpdyStream): Promise<void> {
    const port = parsePort(data.header('port'));
    const fail = (msg: string) => {
      error.end(msg);
      data.end();
    };
    if (port === null) return fail(`invalid port ${JSON.stringify(data.header('port') ?? '')}: must be 1-65535`);
    if (target.ports.length > 0 && !target.ports.includes(port)) {
      return fail(`port ${port} was not requested for forwarding (requested: ${target.ports.join(', ')})`);
    }
    try {
      await backend.portForward(target.sandboxId, port, data, abort.signal);
      error.end();
    } catch (err) {
      log.info('streaming: port forward failed', { sandbox: target.sandboxId, port, error: String(err) });
      if (!error.destroyed) error.end(errorText(target, port, err));
    }
    if (!data.writableEnded && !data.destroyed) data.end();
  }
}

/** A Duplex whose writes go out as messages on one channel and whose reads are fed by us. */
class ChannelDuplex extends Duplex {
  private readonly ws: WebSocketConnection;
  private readonly channel: number;
  constructor(ws: WebSocketConnection, channel: number) {
    super({ allowHalfOpen: true });
    this.ws = ws;
    this.channel = channel;
    this.on('error', () => {});
  }
  override _read(): void {}
  override _write(chunk: Buffer, _e: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (!this.ws.isOpen) return cb();
    if (this.ws.send(Buffer.concat([Buffer.from([this.channel]), chunk]))) cb();
    else this.ws.onDrain(() => cb());
  }
  override _final(cb: (err?: Error | null) => void): void {
    cb();
  }
}

export function serveWebSocketPortForward(ws: WebSocketConnection, target: PortForwardTarget, ports: number[], backend: StreamingBackend, log: Logger): void {
  const abort = new AbortController();
  const streams: ChannelDuplex[] = [];
  for (let i = 0; i < ports.length; i++) streams.push(new ChannelDuplex(ws, 2 * i));

  ws.on('message', (msg: Buffer, binary: boolean) => {
    if (!binary || msg.length === 0) return;
    const ch = msg[0]!;
    if (ch % 2 !== 0) return; // clients do not write error channels
    const s = streams[ch / 2];
    if (s && !s.readableEnded) s.push(msg.subarray(1));
  });
  ws.on('close', () => {
    abort.abort();
    for (const s of streams) if (!s.readableEnded) s.push(null);
  });

  const portBytes = (p: number) => {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(p);
    return b;
  };
  for (let i = 0; i < ports.length; i++) {
    ws.send(Buffer.concat([Buffer.from([2 * i]), portBytes(ports[i]!)]));
    ws.send(Buffer.concat([Buffer.from([2 * i + 1]), portBytes(ports[i]!)]));
  }

  void Promise.all(
    ports.map(async (port, i) => {
      if (target.ports.length > 0 && !target.ports.includes(port)) {
        ws.send(Buffer.concat([Buffer.from([2 * i + 1]), Buffer.from(`port ${port} was not requested for forwarding`)]));
        return;
      }
      try {
        await backend.portForward(target.sandboxId, port, streams[i]!, abort.signal);
      } catch (err) {
        log.info('streaming: port forward failed', { sandbox: target.sandboxId, port, error: String(err) });
        ws.send(Buffer.concat([Buffer.from([2 * i + 1]), Buffer.from(errorText(target, port, err))]));
      }
    }),
  ).then(() => ws.close(CloseCode.NORMAL));
}
