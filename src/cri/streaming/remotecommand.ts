/**
 * Exec/attach sessions over either transport:
 *
 *  SPDY/3.1 (what kubelet-era clients such as crictl 1.26 speak): the client opens one SPDY
 *  stream per role, named by the `streamType` header: error, stdin, stdout, stderr, resize.
 *  X-Stream-Protocol-Version picks the dialect: v4.channel.k8s.io (error = JSON Status),
 *  v3 (adds resize), v2 (error = plain text).
 *
 *  WebSocket, subprotocols v4.channel.k8s.io / v5.channel.k8s.io: every binary message starts
 *  with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error (JSON Status), 4 resize
 *  ({"Width","Height"}); v5 adds 255 = "close", payload one channel byte (client: stdin done).
 */
import { PassThrough, Writable } from 'node:stream';
import { CorralError } from '../../errors.ts';
import type { StdioStreams, StreamingBackend, ExitResult } from './backend.ts';
import { ResizeQueue, parseResize } from './backend.ts';
import type { SpdySession, SpdyStream } from './spdy/session.ts';
import type { WebSocketConnection } from './websocket.ts';
import { CloseCode } from './websocket.ts';
import type { Logger } from '../log.ts';

export interface RemoteCommandRequest {
  kind: 'exec' | 'attach';
  containerId: string;
  cmd: string[];
  tty: boolean;
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
}

export const SPDY_REMOTECOMMAND_PROTOCOLS = ['v4.channel.k8s.io', 'v3.channel.k8s.io', 'v2.channel.k8s.io'] as const;
export const WS_REMOTECOMMAND_PROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io'] as const;

export const Channel = { STDIN: 0, STDOUT: 1, STDERR: 2, ERROR: 3, RESIZE: 4, CLOSE: 255 } as const;

type Outcome = { kind: 'exit'; code: number } | { kind: 'error'; error: unknown };

/** The metav1.Status document the v4/v5 dialects put on the error stream. */
export function statusJson(outcome: Outcome): string {
  if (outcome.kind === 'exit' && outcome.code === 0) return JSON.stringify({ metadata: {}, status: 'Success' });
  if (outcome.kind === 'exit') {
    return JSON.stringify({
      metadata: {},
      status: 'Failure',
      message: `command terminated with non-zero exit code: exit status ${outcome.code}`,
      reason: 'NonZeroExitCode',
      details: { causes: [{ reason: 'ExitCode', message: String(outcome.code) }] },
    });
  }
  const err = outcome.error;
  const message = err instanceof Error ? err.message : String(err);
  const code = err instanceof CorralError ? err.code : 'INTERNAL';
  const http: Record<string, [number, string]> = {
    NOT_FOUND: [404, 'NotFound'],
    INVALID_ARGUMENT: [400, 'BadRequest'],
    ALREADY_EXISTS: [409, 'AlreadyExists'],
    FAILED_PRECONDITION: [409, 'Conflict'],
    PERMISSION_DENIED: [403, 'Forbidden'],
    UNAVAILABLE: [503, 'ServiceUnavailable'],
    DEADLINE_EXCEEDED: [504, 'Timeout'],
    RESOURCE_EXHAUSTED: [429, 'TooManyRequests'],
  };
  const [status, reason] = http[code] ?? [500, 'InternalError'];
  return JSON.stringify({ metadata: {}, status: 'Failure', message, reason, code: status });
}

/** The plain-text error the v2/v3 SPDY dialects expect; empty means success. */
function statusText(outcome: Outcome): string {
  if (outcome.kind === 'exit') return outcome.code === 0 ? '' : `command terminated with non-zero exit code: exit status ${outcome.code}`;
  return outcome.error instanceof Error ? outcome.error.message : String(outcome.error);
}

async function runBackend(
  backend: StreamingBackend,
  req: RemoteCommandRequest,
  streams: StdioStreams,
  resize: ResizeQueue,
  signal: AbortSignal,
): Promise<Outcome> {
  try {
    const r: ExitResult | void =
      req.kind === 'exec'
        ? await backend.exec(req.containerId, req.cmd, req.tty, streams, resize, signal)
        : await backend.attach(req.containerId, req.tty, streams, resize, signal);
    return { kind: 'exit', code: r?.exitCode ?? 0 };
  } catch (error) {
    return { kind: 'error', error };
  } finally {
    resize.end();
  }
}

function endWritable(w: Writable): Promise<void> {
  return new Promise((resolve) => {
    if (w.writableFinished || w.destroyed) return resolve();
    w.end(() => resolve());
    w.once('close', () => resolve());
  });
}

// ---- SPDY ------------------------------------------------------------------------------

export function serveSpdyRemoteCommand(
  session: SpdySession,
  protocol: string,
  req: RemoteCommandRequest,
  backend: StreamingBackend,
  log: Logger,
  streamCreationTimeoutMs: number,
): void {
  const byType = new Map<string, SpdyStream>();
  const expected = new Set<string>(['error']);
  if (req.stdin) expected.add('stdin');
  if (req.stdout) expected.add('stdout');
  if (req.stderr && !req.tty) expected.add('stderr');
  if (req.tty && protocol !== 'v2.channel.k8s.io') expected.add('resize');
  let started = false;
  const abort = new AbortController();

  const timer = setTimeout(() => {
    if (started) return;
    log.warn('streaming: client did not open all streams in time', { missing: [...expected].filter((t) => !byType.has(t)) });
    session.close();
  }, streamCreationTimeoutMs);
  timer.unref();

  session.on('close', () => {
    clearTimeout(timer);
    abort.abort();
  });

  session.on('stream', (s: SpdyStream) => {
    const type = s.header('streamtype') ?? '';
    if (started || byType.has(type) || !['error', 'stdin', 'stdout', 'stderr', 'resize'].includes(type)) {
      s.reset();
      return;
    }
    byType.set(type, s);
    if ([...expected].every((t) => byType.has(t))) {
      started = true;
      clearTimeout(timer);
      void start();
    }
  });

  async function start(): Promise<void> {
    const errorStream = byType.get('error')!;
    const stdinStream = byType.get('stdin');
    let stdin: PassThrough | null = null;
    if (req.stdin && stdinStream) {
      stdin = new PassThrough();
      stdinStream.pipe(stdin);
    }
    const stdout = req.stdout ? byType.get('stdout') ?? null : null;
    const stderr = req.stderr && !req.tty ? byType.get('stderr') ?? null : null;
    const resize = new ResizeQueue();
    const resizeStream = byType.get('resize');
    if (resizeStream) {
      let pending = '';
      resizeStream.setEncoding('utf8');
      resizeStream.on('data', (text: string) => {
        pending += text;
        let nl: number;
        while ((nl = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          const size = parseResize(line);
          if (size) resize.push(size);
        }
      });
    }
    const outcome = await runBackend(backend, req, { stdin, stdout, stderr }, resize, abort.signal);
    if (outcome.kind === 'error') log.info('streaming: session failed', { kind: req.kind, container: req.containerId, error: String(outcome.error) });
    await Promise.all([stdout && endWritable(stdout), stderr && endWritable(stderr)]);
    const text = protocol === 'v4.channel.k8s.io' ? statusJson(outcome) : statusText(outcome);
    if (text) errorStream.write(text);
    await endWritable(errorStream);
    session.close();
  }
}

// ---- WebSocket -------------------------------------------------------------------------

/** Writable that frames each chunk as one message on `channel`. */
export function channelWriter(ws: WebSocketConnection, channel: number, onFinal?: () => void): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      if (!ws.isOpen) return cb();
      const ok = ws.send(Buffer.concat([Buffer.from([channel]), chunk]));
      if (ok) cb();
      else ws.onDrain(() => cb());
    },
    final(cb) {
      onFinal?.();
      cb();
    },
  });
}

export function serveWebSocketRemoteCommand(ws: WebSocketConnection, req: RemoteCommandRequest, backend: StreamingBackend, log: Logger): void {
  const v5 = ws.protocol === 'v5.channel.k8s.io';
  const abort = new AbortController();
  const stdin = req.stdin ? new PassThrough() : null;
  const resize = new ResizeQueue();
  const closeSignal = (ch: number) => () => {
    if (v5 && ws.isOpen) ws.send(Buffer.from([Channel.CLOSE, ch]));
  };
  const stdout = req.stdout ? channelWriter(ws, Channel.STDOUT, closeSignal(Channel.STDOUT)) : null;
  const stderr = req.stderr && !req.tty ? channelWriter(ws, Channel.STDERR, closeSignal(Channel.STDERR)) : null;

  ws.on('message', (msg: Buffer, binary: boolean) => {
    if (!binary || msg.length === 0) return;
    const ch = msg[0]!;
    const body = msg.subarray(1);
    if (ch === Channel.STDIN) {
      if (stdin && !stdin.writableEnded) stdin.write(body);
    } else if (ch === Channel.RESIZE) {
      if (!req.tty) return;
      const size = parseResize(body.toString('utf8'));
      if (size) resize.push(size);
    } else if (ch === Channel.CLOSE && v5) {
      if (body[0] === Channel.STDIN && stdin) stdin.end();
    }
  });
  ws.on('close', () => {
    abort.abort();
    if (stdin && !stdin.writableEnded) stdin.end();
  });

  void (async () => {
    const outcome = await runBackend(backend, req, { stdin, stdout, stderr }, resize, abort.signal);
    if (outcome.kind === 'error') log.info('streaming: session failed', { kind: req.kind, container: req.containerId, error: String(outcome.error) });
    await Promise.all([stdout && endWritable(stdout), stderr && endWritable(stderr)]);
    if (ws.isOpen) ws.send(Buffer.concat([Buffer.from([Channel.ERROR]), Buffer.from(statusJson(outcome))]));
    ws.close(CloseCode.NORMAL);
  })();
}
