/**
 * The CRI gRPC server: RuntimeService and ImageService on a unix socket.
 *
 * Implementations plug in as handler tables (RuntimeServiceImpl / ImageServiceImpl): plain
 * objects whose methods take the decoded request and return the response. Any method nobody
 * provided answers UNIMPLEMENTED naming the method. Errors thrown by handlers are turned into
 * gRPC statuses in exactly one place, toStatus() below.
 */
import * as grpc from '@grpc/grpc-js';
import net from 'node:net';
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { CorralError, FailedPreconditionError, UnimplementedError, fromNodeError, type ErrorCode } from '../errors.ts';
import { serviceDefinition } from './proto.ts';
import type { ImageServiceMethods, RuntimeServiceMethods } from './types.gen.ts';
import { ImageServiceMethodNames, RuntimeServiceMethodNames } from './types.gen.ts';
import type { Logger } from './log.ts';
import type { CriMetrics } from './metrics.ts';
import { AuthorityFixingStream } from './h2/authority.ts';

// ---- handler types -------------------------------------------------------------------

/**
 * What a handler may return for message type T: every field optional (proto3 defaults fill
 * the gaps), message fields may be null, 64-bit integers as decimal strings.
 */
export type Reply<T> = T extends Buffer
  ? Buffer | Uint8Array
  : T extends string | number | boolean
    ? T
    : T extends readonly (infer U)[]
      ? Reply<U>[]
      : T extends object
        ? { [K in keyof T]?: Reply<NonNullable<T[K]>> | null }
        : T;

export interface CallContext {
  service: 'RuntimeService' | 'ImageService';
  method: string;
  /** Aborted when the client cancels or the deadline passes. */
  signal: AbortSignal;
  metadata: grpc.Metadata;
  log: Logger;
}

export type UnaryHandler<Req, Res> = (request: Req, ctx: CallContext) => Promise<Reply<Res>> | Reply<Res>;
export type ServerStreamHandler<Req, Res> = (request: Req, ctx: CallContext) => AsyncIterable<Reply<Res>>;

type Impl<M> = {
  [K in keyof M]: M[K] extends { request: infer Q; response: infer R; stream: true }
    ? ServerStreamHandler<Q, R>
    : M[K] extends { request: infer Q; response: infer R }
      ? UnaryHandler<Q, R>
      : never;
};

/** Every RuntimeService method, typed. Provide any subset to CriServer.use(). */
export type RuntimeServiceImpl = Impl<RuntimeServiceMethods>;
export type ImageServiceImpl = Impl<ImageServiceMethods>;

// ---- the one error boundary ----------------------------------------------------------

const grpcCodes: Record<ErrorCode, grpc.status> = {
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT, // 3
  DEADLINE_EXCEEDED: grpc.status.DEADLINE_EXCEEDED, // 4
  NOT_FOUND: grpc.status.NOT_FOUND, // 5
  ALREADY_EXISTS: grpc.status.ALREADY_EXISTS, // 6
  PERMISSION_DENIED: grpc.status.PERMISSION_DENIED, // 7
  RESOURCE_EXHAUSTED: grpc.status.RESOURCE_EXHAUSTED, // 8
  FAILED_PRECONDITION: grpc.status.FAILED_PRECONDITION, // 9
  UNIMPLEMENTED: grpc.status.UNIMPLEMENTED, // 12
  INTERNAL: grpc.status.INTERNAL, // 13
  UNAVAILABLE: grpc.status.UNAVAILABLE, // 14
};

export interface GrpcStatus {
  code: grpc.status;
  details: string;
}

/** CorralError → gRPC status. Anything else is a bug: INTERNAL, with the message kept. */
export function toStatus(err: unknown, where: string): GrpcStatus {
  if (err instanceof CorralError) return { code: grpcCodes[err.code] ?? grpc.status.INTERNAL, details: err.message };
  const message = err instanceof Error ? err.message : String(err);
  return { code: grpc.status.INTERNAL, details: `${where}: internal error: ${message}` };
}

export function statusName(code: grpc.status): string {
  return grpc.status[code] ?? String(code);
}

// ---- server --------------------------------------------------------------------------

export interface CriServerOptions {
  socketPath: string;
  log: Logger;
  metrics: CriMetrics;
  /** Largest request accepted (default 16 MiB, as the kubelet sends). */
  maxReceiveBytes?: number;
}

type AnyHandler = (request: unknown, ctx: CallContext) => unknown;

export class CriServer {
  private readonly options: CriServerOptions;
  private readonly runtime: Partial<Record<string, AnyHandler>> = {};
  private readonly image: Partial<Record<string, AnyHandler>> = {};
  private grpcServer: grpc.Server | null = null;
  private listener: net.Server | null = null;
  private injector: grpc.ConnectionInjector | null = null;
  private readonly active = new Set<AbortController>();

  constructor(options: CriServerOptions) {
    this.options = options;
  }

  /** Plug in handlers; later calls override earlier ones method by method. Must precede start(). */
  use(impl: { runtime?: Partial<RuntimeServiceImpl>; image?: Partial<ImageServiceImpl> }): this {
    if (this.grpcServer) throw new FailedPreconditionError('CriServer.use() after start(): plug handlers in before serving');
    Object.assign(this.runtime, impl.runtime ?? {});
    Object.assign(this.image, impl.image ?? {});
    return this;
  }

  get socketPath(): string {
    return this.options.socketPath;
  }

  async start(): Promise<void> {
    const path = this.options.socketPath;
    await prepareSocketPath(path);
    const server = new grpc.Server({
      'grpc.max_receive_message_length': this.options.maxReceiveBytes ?? 16 * 1024 * 1024,
      'grpc.max_send_message_length': -1,
    });
    server.addService(serviceDefinition('RuntimeService'), this.table('RuntimeService', RuntimeServiceMethodNames, this.runtime));
    server.addService(serviceDefinition('ImageService'), this.table('ImageService', ImageServiceMethodNames, this.image));
    // We own the unix listener and hand each connection to gRPC through the authority fixer
    // (see h2/authority.ts: 1.26-era Go clients send the socket path as :authority).
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    const listener = net.createServer((sock) => {
      sock.on('error', () => {});
      injector.injectConnection(new AuthorityFixingStream(sock));
    });
    await new Promise<void>((resolve, reject) => {
      listener.once('error', (err) => reject(fromNodeError(err, `listen on ${path}`)));
      listener.listen(path, () => resolve());
    });
    chmodSync(path, 0o600);
    this.grpcServer = server;
    this.listener = listener;
    this.injector = injector;
    this.options.log.info('serving CRI', { socket: path });
  }

  /** Stop accepting calls, cancel open streams, wait up to graceMs for calls in flight, remove the socket. */
  async stop(graceMs = 5000): Promise<void> {
    const server = this.grpcServer;
    if (!server) return;
    this.grpcServer = null;
    const listener = this.listener!;
    const closed = new Promise<void>((resolve) => listener.close(() => resolve()));
    for (const a of this.active) a.abort();
    this.injector?.drain(graceMs);
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, graceMs);
      t.unref();
      server.tryShutdown(() => {
        clearTimeout(t);
        resolve();
      });
    });
    this.injector?.destroy();
    await closed;
    try {
      unlinkSync(this.options.socketPath);
    } catch {}
  }

  private table(service: 'RuntimeService' | 'ImageService', names: readonly string[], impls: Partial<Record<string, AnyHandler>>): grpc.UntypedServiceImplementation {
    const def = serviceDefinition(service);
    const out: grpc.UntypedServiceImplementation = {};
    for (const name of names) {
      const handler = impls[name];
      if (def[name]?.responseStream) out[name] = this.streamCall(service, name, handler);
      else out[name] = this.unaryCall(service, name, handler);
    }
    return out;
  }

  private context(service: CallContext['service'], method: string, call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>) {
    const abort = new AbortController();
    this.active.add(abort);
    call.on('cancelled', () => abort.abort());
    const ctx: CallContext = { service, method, signal: abort.signal, metadata: call.metadata, log: this.options.log.child({ rpc: `${service}/${method}` }) };
    return { ctx, done: () => this.active.delete(abort) };
  }

  private finish(service: string, method: string, stopTimer: () => number, err: unknown): GrpcStatus | null {
    stopTimer();
    if (err === null) return null;
    const st = toStatus(err, `${service}.${method}`);
    this.options.metrics.operationErrors.inc({ service, method, code: statusName(st.code) });
    const log = this.options.log;
    if (st.code === grpc.status.INTERNAL) log.error('CRI call failed', { rpc: `${service}/${method}`, code: statusName(st.code), error: st.details, stack: err instanceof Error ? err.stack : undefined });
    else log.debug('CRI call returned an error', { rpc: `${service}/${method}`, code: statusName(st.code), error: st.details });
    return st;
  }

  private unaryCall(service: CallContext['service'], method: string, handler: AnyHandler | undefined): grpc.handleUnaryCall<unknown, unknown> {
    return (call, callback) => {
      const stopTimer = this.options.metrics.operationSeconds.startTimer({ service, method });
      if (!handler) {
        const st = this.finish(service, method, stopTimer, notImplemented(service, method))!;
        callback({ code: st.code, details: st.details } as grpc.ServiceError);
        return;
      }
      const { ctx, done } = this.context(service, method, call);
      Promise.resolve()
        .then(() => handler(call.request, ctx))
        .then(
          (res) => {
            done();
            this.finish(service, method, stopTimer, null);
            callback(null, res ?? {});
          },
          (err: unknown) => {
            done();
            const st = this.finish(service, method, stopTimer, err)!;
            callback({ code: st.code, details: st.details } as grpc.ServiceError);
          },
        );
    };
  }

  private streamCall(service: CallContext['service'], method: string, handler: AnyHandler | undefined): grpc.handleServerStreamingCall<unknown, unknown> {
    return (call) => {
      const stopTimer = this.options.metrics.operationSeconds.startTimer({ service, method });
      const fail = (err: unknown) => {
        const st = this.finish(service, method, stopTimer, err)!;
        call.emit('error', { code: st.code, details: st.details });
      };
      if (!handler) return fail(notImplemented(service, method));
      const { ctx, done } = this.context(service, method, call);
      void (async () => {
        try {
          const iterable = handler(call.request, ctx) as AsyncIterable<unknown>;
          const it = iterable[Symbol.asyncIterator]();
          const stop = () => void it.return?.();
          ctx.signal.addEventListener('abort', stop, { once: true });
          try {
            for (;;) {
              const r = await it.next();
              if (r.done || ctx.signal.aborted) break;
              if (!call.write(r.value)) await new Promise((res) => call.once('drain', res));
            }
          } finally {
            ctx.signal.removeEventListener('abort', stop);
          }
          done();
          this.finish(service, method, stopTimer, null);
          if (!call.cancelled) call.end();
        } catch (err) {
          done();
          if (!call.cancelled) fail(err);
        }
      })();
    };
  }
}

function notImplemented(service: string, method: string): CorralError {
  return new UnimplementedError(`${service}.${method} is not implemented by corrald yet`);
}

/**
 * Make the socket's directory, remove a stale socket left by a dead daemon, and refuse to
 * start when a live daemon answers on it (or the path is not a socket at all).
 */
export async function prepareSocketPath(path: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o711 });
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return;
    throw fromNodeError(err, `inspect ${path}`);
  }
  if (!st.isSocket()) {
    throw new FailedPreconditionError(`${path} exists and is not a socket; move it away or choose another --socket`);
  }
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) {
    throw new FailedPreconditionError(`another daemon is already serving on ${path}; stop it first or choose another --socket`);
  }
  try {
    unlinkSync(path);
  } catch (err) {
    throw fromNodeError(err, `remove stale socket ${path}`);
  }
}
