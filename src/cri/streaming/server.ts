/**
 * The streaming HTTP server behind Exec, Attach and PortForward. The CRI call validates the
 * request and parks it under a random single-use token (GetExec & co. return the URL); the
 * client then connects to /exec|/attach|/portforward/<token> and upgrades to SPDY/3.1 or
 * WebSocket.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { InvalidArgumentError, ResourceExhaustedError, UnavailableError } from '../../errors.ts';
import type { AttachRequest, AttachResponse, ExecRequest, ExecResponse, PortForwardRequest, PortForwardResponse } from '../types.gen.ts';
import type { StreamingBackend } from './backend.ts';
import { TokenCache } from './tokens.ts';
import { SpdySession } from './spdy/session.ts';
import { acceptWebSocket, isWebSocketUpgrade } from './websocket.ts';
import {
  SPDY_REMOTECOMMAND_PROTOCOLS,
  WS_REMOTECOMMAND_PROTOCOLS,
  serveSpdyRemoteCommand,
  serveWebSocketRemoteCommand,
  type RemoteCommandRequest,
} from './remotecommand.ts';
import { SPDY_PORTFORWARD_PROTOCOLS, WS_PORTFORWARD_PROTOCOLS, parsePort, serveSpdyPortForward, serveWebSocketPortForward, type PortForwardTarget } from './portforward.ts';
import type { Logger } from '../log.ts';

export interface StreamingServerOptions {
  /** Address to listen on; the returned URLs use it too unless baseUrl is set. */
  address: string;
  /** 0 picks a free port. */
  port: number;
  /** URL prefix handed to clients, e.g. when listening on 0.0.0.0 behind a known node IP. */
  baseUrl?: string;
  backend: StreamingBackend;
  log: Logger;
  /** How long a URL stays valid (default 60 s). */
  tokenTtlMs?: number;
  /** Maximum URLs handed out and not yet used (default 1000). */
  maxPending?: number;
  /** How long a client gets to open all its SPDY streams (default 30 s). */
  streamCreationTimeoutMs?: number;
}

type Pending = { kind: 'exec' | 'attach'; request: RemoteCommandRequest } | { kind: 'portforward'; target: PortForwardTarget };

const ROUTE = /^\/(exec|attach|portforward)\/([A-Za-z0-9_-]{8,64})$/;

export class StreamingServer {
  private readonly options: StreamingServerOptions;
  private readonly http: http.Server;
  private readonly cache: TokenCache<Pending>;
  private readonly sockets = new Set<Duplex>();
  private base = '';

  private constructor(options: StreamingServerOptions) {
    this.options = options;
    this.cache = new TokenCache({ ttlMs: options.tokenTtlMs ?? 60_000, maxPending: options.maxPending ?? 1000 });
    this.http = http.createServer((req, res) => this.onRequest(req, res));
    this.http.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket, head));
    this.http.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  static async start(options: StreamingServerOptions): Promise<StreamingServer> {
    const s = new StreamingServer(options);
    await new Promise<void>((resolve, reject) => {
      s.http.once('error', reject);
      s.http.listen(options.port, options.address, () => {
        s.http.off('error', reject);
        resolve();
      });
    });
    const addr = s.http.address() as AddressInfo;
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    s.base = (options.baseUrl ?? `http://${host}:${addr.port}`).replace(/\/+$/, '');
    return s;
  }

  /** e.g. http://127.0.0.1:39111 */
  get url(): string {
    return this.base;
  }

  get pendingRequests(): number {
    return this.cache.size;
  }

  getExec(req: ExecRequest): ExecResponse {
    if (!req.container_id) throw new InvalidArgumentError('Exec: container_id is required');
    if (!req.cmd || req.cmd.length === 0) throw new InvalidArgumentError('Exec: cmd must name a command');
    const request = validStdio('Exec', { kind: 'exec', containerId: req.container_id, cmd: [...req.cmd], tty: req.tty, stdin: req.stdin, stdout: req.stdout, stderr: req.stderr });
    return { url: `${this.base}/exec/${this.cache.insert({ kind: 'exec', request })}` };
  }

  getAttach(req: AttachRequest): AttachResponse {
    if (!req.container_id) throw new InvalidArgumentError('Attach: container_id is required');
    const request = validStdio('Attach', { kind: 'attach', containerId: req.container_id, cmd: [], tty: req.tty, stdin: req.stdin, stdout: req.stdout, stderr: req.stderr });
    return { url: `${this.base}/attach/${this.cache.insert({ kind: 'attach', request })}` };
  }

  getPortForward(req: PortForwardRequest): PortForwardResponse {
    if (!req.pod_sandbox_id) throw new InvalidArgumentError('PortForward: pod_sandbox_id is required');
    const ports = req.port ?? [];
    for (const p of ports) {
      if (!Number.isInteger(p) || p < 1 || p > 65535) throw new InvalidArgumentError(`PortForward: port ${p} is out of range 1-65535`);
    }
    const target = { sandboxId: req.pod_sandbox_id, ports: [...ports] };
    return { url: `${this.base}/portforward/${this.cache.insert({ kind: 'portforward', target })}` };
  }

  async stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  // ---- HTTP ------------------------------------------------------------------------------

  private take(path: string | undefined): { route: string; pending: Pending } | { status: number; message: string } {
    const m = ROUTE.exec((path ?? '').split('?')[0] ?? '');
    if (!m) return { status: 404, message: 'not found: expected /exec/<token>, /attach/<token> or /portforward/<token>' };
    const pending = this.cache.consume(m[2]!);
    if (!pending) return { status: 404, message: 'unknown or expired streaming token: request a new URL through the CRI' };
    if (pending.kind !== m[1]) return { status: 404, message: `token is for ${pending.kind}, not ${m[1]}` };
    return { route: m[1]!, pending };
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const r = this.take(req.url);
    const [status, message] = 'status' in r ? [r.status, r.message] : [400, 'this endpoint needs a connection upgrade to SPDY/3.1 or websocket'];
    res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' });
    res.end(message + '\n');
  }

  private onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {});
    const r = this.take(req.url);
    if ('status' in r) return reject(socket, r.status, r.message);
    const { pending } = r;
    const log = this.options.log;
    try {
      if (isWebSocketUpgrade(req)) {
        if (pending.kind === 'portforward') {
          const query = new URL(req.url ?? '/', 'http://x').searchParams.getAll('port');
          const ports = query.length > 0 ? query.map((q) => parsePort(q)) : pending.target.ports;
          if (ports.length === 0 || ports.some((p) => p === null)) {
            throw new InvalidArgumentError('websocket port forwarding needs one or more valid ?port= query parameters');
          }
          const ws = acceptWebSocket(req, socket, head, WS_PORTFORWARD_PROTOCOLS);
          serveWebSocketPortForward(ws, pending.target, ports as number[], this.options.backend, log);
        } else {
          const ws = acceptWebSocket(req, socket, head, WS_REMOTECOMMAND_PROTOCOLS);
          serveWebSocketRemoteCommand(ws, pending.request, this.options.backend, log);
        }
        return;
      }
      if ((req.headers.upgrade ?? '').toLowerCase() !== 'spdy/3.1') {
        throw new InvalidArgumentError(`unsupported upgrade ${JSON.stringify(req.headers.upgrade ?? '')}: use SPDY/3.1 or websocket`);
      }
      const supported: readonly string[] = pending.kind === 'portforward' ? SPDY_PORTFORWARD_PROTOCOLS : SPDY_REMOTECOMMAND_PROTOCOLS;
      const offered = splitHeader(req.headers['x-stream-protocol-version']);
      if (offered.length === 0) throw new InvalidArgumentError('unable to upgrade: X-Stream-Protocol-Version is required');
      const protocol = offered.find((p) => supported.includes(p));
      if (!protocol) {
        return reject(socket, 403, `unable to upgrade: no common stream protocol (client offers ${offered.join(', ')}; server accepts ${supported.join(', ')})`, {
          'X-Accepted-Stream-Protocol-Versions': supported.join(', '),
        });
      }
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\n' +
          'Connection: Upgrade\r\n' +
          'Upgrade: SPDY/3.1\r\n' +
          `X-Stream-Protocol-Version: ${protocol}\r\n\r\n`,
      );
      if (head.length > 0) socket.unshift(head);
      const session = new SpdySession(socket, { role: 'server' });
      session.on('protocolError', (e: Error) => log.warn('streaming: SPDY protocol error', { error: e.message }));
      const timeout = this.options.streamCreationTimeoutMs ?? 30_000;
      if (pending.kind === 'portforward') serveSpdyPortForward(session, pending.target, this.options.backend, log, timeout);
      else serveSpdyRemoteCommand(session, protocol, pending.request, this.options.backend, log, timeout);
    } catch (err) {
      const status = err instanceof ResourceExhaustedError ? 429 : err instanceof UnavailableError ? 503 : 400;
      reject(socket, status, err instanceof Error ? err.message : String(err));
    }
  }
}

function validStdio(rpc: string, r: RemoteCommandRequest): RemoteCommandRequest {
  if (r.tty && r.stderr) throw new InvalidArgumentError(`${rpc}: tty and stderr cannot both be true (a terminal merges stderr into stdout)`);
  if (!r.stdin && !r.stdout && !r.stderr) throw new InvalidArgumentError(`${rpc}: one of stdin, stdout or stderr must be true`);
  return r;
}

function splitHeader(v: string | string[] | undefined): string[] {
  const all = Array.isArray(v) ? v.join(',') : (v ?? '');
  return all.split(',').map((s) => s.trim()).filter(Boolean);
}

const reasons: Record<number, string> = { 400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found', 429: 'Too Many Requests', 503: 'Service Unavailable' };

function reject(socket: Duplex, status: number, message: string, headers: Record<string, string> = {}): void {
  const body = message + '\n';
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  socket.end(
    `HTTP/1.1 ${status} ${reasons[status] ?? 'Error'}\r\n` +
      'Content-Type: text/plain; charset=utf-8\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      extra +
      'Connection: close\r\n\r\n' +
      body,
  );
}

