/**
 * The corral-oci server: one long-lived Node process that runs `main(argv, io)` (corral-oci.ts)
 * for every request of the small static client `bin/corral-oci` (src/cli/oci-client/corral-oci.c),
 * so a runc-style caller does not boot Node for each verb.
 *
 * Transport: a unix stream socket in a root-only dir (see the client). Frames both ways:
 *   u32 LE payload length | u8 type | payload
 * client → server
 *   REQ          u32 pid, u32 nfds (open fds from 3 up), u32 flags (1 = stdin is a tty), u32 argc, u32 envc,
 *                then NUL-terminated strings: cwd, argv[argc], env[envc]       (first frame, exactly once)
 *   STDIN        bytes of stdin (empty = EOF), only after STDIN_REQ
 *   SPAWNED      u32 launcher pid
 *   SPAWN_FAILED i32 errno, then the message
 *   SYNC         bytes the executor wrote on its sync fd
 *   SYNC_EOF     the sync fd reached EOF
 *   EXITED       i32 exit code (-1 when killed), i32 signal number
 *   CONSOLE_PATH the console socket path the client listens on (empty: it could not make one), after CONSOLE
 * server → client
 *   ACCEPT       the request was read and will run (before it, the client may retry elsewhere)
 *   STDOUT/STDERR bytes for the client's fd 1 / 2
 *   STDIN_REQ    stream stdin (STDIN frames until EOF)
 *   SPAWN        u32 n preserved fds, then the encoded plan: fork corral-exec with fds 0..2 = the client's,
 *                3..3+n-1 = its preserved fds, then the plan pipe and the sync socket
 *   SYNC_WRITE   bytes for the executor's sync fd;   SYNC_CLOSE  close the client's sync end
 *   KILL         u32 signal for the launcher;        FORWARD     u8 1/0: forward caught signals to the launcher
 *   EXIT         i32 status: write nothing more, exit with it
 *   CONSOLE      listen on a new console socket, answer CONSOLE_PATH; relay the pty master it receives
 *                to the client's stdin/stdout (raw mode on a tty, window size followed)
 * Requests run concurrently; per-container serialization is the state store's (atomic mkdir on create).
 */
import { createConnection, createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { readFileSync, statSync, unlinkSync, writeFileSync, chmodSync } from 'node:fs';
import { constants } from 'node:os';
import { StringDecoder } from 'node:string_decoder';
import { InternalError, InvalidArgumentError, errnoNames, fromErrno } from '../errors.ts';
import { encodePlan } from '../oci/plan/encode.ts';
import { executorOverChannel } from '../oci/runtime/executor.ts';
import { signalName } from '../oci/runtime/signals.ts';
import type { Executor, ExecutorEvents, ExecutorOptions } from '../oci/runtime/executor.ts';
import { main } from './corral-oci.ts';
import { enterOwnCgroup } from './server-cgroup.ts';
import { basename } from 'node:path';
import type { CliIo } from './corral-oci.ts';

export const FRAME = {
  REQ: 1, STDIN: 2, SPAWNED: 3, SPAWN_FAILED: 4, SYNC: 5, SYNC_EOF: 6, EXITED: 7,
  CONSOLE_PATH: 8,
  ACCEPT: 64, STDOUT: 65, STDERR: 66, STDIN_REQ: 67, SPAWN: 68, SYNC_WRITE: 69, SYNC_CLOSE: 70, KILL: 71, FORWARD: 72, EXIT: 73, CONSOLE: 74,
} as const;

/** Larger than any plan (the executor refuses > 16 MiB) plus headroom. */
const MAX_FRAME = 32 * 1024 * 1024;

export interface Request {
  pid: number;
  nfds: number;
  stdinTty: boolean;
  cwd: string;
  argv: string[];
  env: Record<string, string>;
}

export function parseRequest(p: Buffer): Request {
  if (p.length < 20) throw new InvalidArgumentError('corral-oci server: short request frame');
  const pid = p.readUInt32LE(0);
  const nfds = p.readUInt32LE(4);
  const flags = p.readUInt32LE(8);
  const argc = p.readUInt32LE(12);
  const envc = p.readUInt32LE(16);
  const strings: string[] = [];
  let off = 20;
  while (off < p.length) {
    const nul = p.indexOf(0, off);
    if (nul < 0) throw new InvalidArgumentError('corral-oci server: request string without NUL');
    strings.push(p.toString('utf8', off, nul));
    off = nul + 1;
  }
  if (strings.length !== 1 + argc + envc) throw new InvalidArgumentError('corral-oci server: request string count mismatch');
  const env: Record<string, string> = {};
  for (const e of strings.slice(1 + argc)) {
    const eq = e.indexOf('=');
    if (eq > 0) env[e.slice(0, eq)] = e.slice(eq + 1);
  }
  return { pid, nfds, stdinTty: (flags & 1) !== 0, cwd: strings[0], argv: strings.slice(1, 1 + argc), env };
}

function frame(type: number, payload?: Buffer | string): Buffer {
  const body = payload === undefined ? Buffer.alloc(0) : typeof payload === 'string' ? Buffer.from(payload) : payload;
  const h = Buffer.allocUnsafe(5);
  h.writeUInt32LE(body.length, 0);
  h.writeUInt8(type, 4);
  return Buffer.concat([h, body]);
}

/** One client connection = one CLI invocation. */
class Connection {
  private readonly sock: Socket;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private started = false;
  private connected = true;
  private req?: Request;
  private exec?: { events: ExecutorEvents; setPid(pid: number): void; syncEof(): void; decoder: StringDecoder; done: boolean };
  private stdin?: { chunks: Buffer[]; resolve(s: string): void; reject(e: Error): void; promise: Promise<string> };
  private console?: { resolve(path: string): void; reject(e: Error): void };
  private readonly onDone: () => void;

  constructor(sock: Socket, onDone: () => void) {
    this.sock = sock;
    this.onDone = onDone;
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', () => { /* reported as close */ });
    sock.on('close', () => this.onClose());
  }

  private send(type: number, payload?: Buffer | string): void {
    if (!this.connected) return;
    this.sock.write(frame(type, payload));
  }

  private onData(d: Buffer): void {
    this.chunks.push(d);
    this.buffered += d.length;
    while (this.buffered >= 5) {
      let buf = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
      this.chunks = [buf];
      const len = buf.readUInt32LE(0);
      if (len > MAX_FRAME) {
        this.sock.destroy();
        return;
      }
      if (buf.length < 5 + len) return;
      const type = buf[4];
      const payload = buf.subarray(5, 5 + len);
      buf = buf.subarray(5 + len);
      this.chunks = buf.length ? [buf] : [];
      this.buffered = buf.length;
      this.onFrame(type, payload);
    }
  }

  private onFrame(type: number, p: Buffer): void {
    if (!this.started) {
      if (type !== FRAME.REQ) {
        this.sock.destroy();
        return;
      }
      this.started = true;
      let req: Request;
      try {
        req = parseRequest(Buffer.from(p));
      } catch {
        this.sock.destroy();
        return;
      }
      this.req = req;
      this.send(FRAME.ACCEPT);
      void this.run(req);
      return;
    }
    const ex = this.exec;
    switch (type) {
      case FRAME.STDIN:
        if (!this.stdin) return;
        if (p.length === 0) this.stdin.resolve(Buffer.concat(this.stdin.chunks).toString('utf8'));
        else this.stdin.chunks.push(Buffer.from(p));
        return;
      case FRAME.SPAWNED:
        ex?.setPid(p.readUInt32LE(0));
        return;
      case FRAME.SPAWN_FAILED: {
        if (!ex) return;
        ex.done = true;
        const errno = p.readInt32LE(0);
        ex.events.error(fromErrno(errnoNames[errno] ?? `E${errno}`, 'start the executor', p.toString('utf8', 4)));
        return;
      }
      case FRAME.SYNC:
        ex?.events.data(ex.decoder.write(p));
        return;
      case FRAME.CONSOLE_PATH: {
        const waiting = this.console;
        this.console = undefined;
        if (!waiting) return;
        if (p.length === 0) waiting.reject(new InternalError('corral-oci: the client could not create a console socket'));
        else waiting.resolve(Buffer.from(p).toString('utf8'));
        return;
      }
      case FRAME.SYNC_EOF:
        ex?.syncEof();
        return;
      case FRAME.EXITED: {
        if (!ex) return;
        ex.done = true;
        const code = p.readInt32LE(0);
        const sig = p.readInt32LE(4);
        ex.events.exit({ code: code >= 0 ? code : null, signal: code >= 0 ? null : signalName(sig) });
        return;
      }
      default:
        this.sock.destroy();
    }
  }

  private onClose(): void {
    if (!this.connected) return;
    this.connected = false;
    const gone = new InternalError('corral-oci: the client went away during the request');
    if (this.exec && !this.exec.done) {
      this.exec.done = true;
      this.exec.events.error(gone);
    }
    this.stdin?.reject(gone);
    this.console?.reject(gone);
    this.onDone();
  }

  private spawnExecutor(opts: ExecutorOptions): Executor {
    const req = this.req!;
    if ((opts.stdio ?? []).some((s) => s !== 'inherit')) {
      throw new InvalidArgumentError('corral-oci server: the executor can only inherit the caller\'s stdio');
    }
    const preserve = opts.preserveFds ?? [];
    if (preserve.some((fd, i) => fd !== 3 + i)) throw new InvalidArgumentError('corral-oci server: preserved fds must be 3, 4, ... in order');
    if (preserve.length > req.nfds) {
      throw new InvalidArgumentError(`--preserve-fds ${preserve.length}: the caller has only ${req.nfds} open fds from 3 up`);
    }
    if (this.exec && !this.exec.done) throw new InternalError('corral-oci server: one executor per request at a time');
    if (!this.connected) throw new InternalError('corral-oci: the client went away during the request');
    const bytes = encodePlan(opts.plan);
    let pid: number | undefined;
    let syncOpen = true;
    const self = this;
    const launcher = {
      get pid() { return pid; },
      kill(signal?: NodeJS.Signals | number): boolean {
        const n = typeof signal === 'number' ? signal : constants.signals[signal ?? 'SIGTERM'];
        if (!self.connected || n === undefined) return false;
        const b = Buffer.alloc(4);
        b.writeUInt32LE(n);
        self.send(FRAME.KILL, b);
        return true;
      },
    };
    const { executor, events } = executorOverChannel(opts.plan, {
      launcher,
      writable: () => syncOpen && self.connected,
      write: (line) => self.send(FRAME.SYNC_WRITE, line),
      close() {
        if (!syncOpen) return;
        syncOpen = false;
        self.send(FRAME.SYNC_CLOSE);
      },
    });
    this.exec = {
      events, decoder: new StringDecoder('utf8'), done: false,
      setPid: (n) => { pid = n; },
      syncEof: () => {
        syncOpen = false;
        events.eof();
      },
    };
    const head = Buffer.alloc(4);
    head.writeUInt32LE(preserve.length);
    this.send(FRAME.SPAWN, Buffer.concat([head, bytes]));
    return executor;
  }

  private async run(req: Request): Promise<void> {
    const io: CliIo = {
      cwd: req.cwd,
      pid: req.pid,
      env: req.env,
      stdout: (s) => this.send(FRAME.STDOUT, s),
      stderr: (s) => this.send(FRAME.STDERR, s),
      readStdin: () => {
        if (!this.stdin) {
          let resolve!: (s: string) => void;
          let reject!: (e: Error) => void;
          const promise = new Promise<string>((res, rej) => { resolve = res; reject = rej; });
          promise.catch(() => {});
          this.stdin = { chunks: [], resolve, reject, promise };
          if (!this.connected) reject(new InternalError('corral-oci: the client went away during the request'));
          this.send(FRAME.STDIN_REQ);
        }
        return this.stdin.promise;
      },
      spawnExecutor: (opts) => this.spawnExecutor(opts),
      consoleSocket: () => new Promise<string>((resolve, reject) => {
        if (!this.connected) return reject(new InternalError('corral-oci: the client went away during the request'));
        this.console = { resolve, reject };
        this.send(FRAME.CONSOLE);
      }),
      forwardSignals: () => {
        this.send(FRAME.FORWARD, Buffer.from([1]));
        return () => this.send(FRAME.FORWARD, Buffer.from([0]));
      },
    };
    let code: number;
    try {
      code = await main(req.argv, io);
    } catch (e) {
      io.stderr(`corral-oci: ${(e as Error)?.stack ?? String(e)}\n`);
      code = 1;
    }
    const b = Buffer.alloc(4);
    b.writeInt32LE(code);
    this.send(FRAME.EXIT, b);
    if (this.connected) this.sock.end();
  }
}

function listening(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    c.on('connect', () => { c.destroy(); resolve(true); });
    c.on('error', () => resolve(false));
  });
}

/**
 * The socket side of a server, for a process of its own (`serve`) or hosted in another long-lived
 * process (corrald hosts the server of its built-in handler). `listen` refuses when another server
 * already listens on the path; `close` stops accepting, removes the socket and pid file if they are
 * still this server's, and resolves when in-flight requests are done (or after `graceMs`).
 */
export class OciServer {
  readonly sockPath: string;
  readonly pidPath: string;
  private readonly server: Server;
  private active = 0;
  private ino = 0;
  private closing = false;
  private drained: (() => void) | undefined;
  /** Called when the last in-flight request finishes / when a request starts after idling. */
  onIdle: () => void = () => {};
  onBusy: () => void = () => {};

  constructor(sockPath: string) {
    this.sockPath = sockPath;
    this.pidPath = sockPath.replace(/\.sock$/, '') + '.pid';
    this.server = createServer({ allowHalfOpen: false }, (sock) => {
      if (this.closing) { sock.destroy(); return; }
      if (this.active++ === 0) this.onBusy();
      new Connection(sock, () => {
        if (--this.active > 0) return;
        if (this.closing) this.drained?.();
        else this.onIdle();
      });
    });
  }

  get activeRequests(): number {
    return this.active;
  }

  /** Listen (mode 0600) and write the pid file; false when another server already listens. */
  async listen(): Promise<boolean> {
    if (await listening(this.sockPath)) return false;
    try { unlinkSync(this.sockPath); } catch { /* none, or not ours to remove: listen reports it */ }
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.sockPath, () => { this.server.off('error', reject); resolve(); });
    });
    chmodSync(this.sockPath, 0o600);
    this.ino = statSync(this.sockPath).ino;
    writeFileSync(this.pidPath, `${process.pid}\n`);
    return true;
  }

  private removeOwnFiles(): void {
    try { if (statSync(this.sockPath).ino === this.ino) unlinkSync(this.sockPath); } catch { /* gone */ }
    try { if (readFileSync(this.pidPath, 'utf8').trim() === String(process.pid)) unlinkSync(this.pidPath); } catch { /* gone */ }
  }

  close(graceMs = 10_000): Promise<void> {
    if (!this.closing) {
      this.closing = true;
      this.removeOwnFiles();
      this.server.close();
    }
    if (this.active === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const t = setTimeout(resolve, graceMs);
      t.unref();
      this.drained = () => { clearTimeout(t); resolve(); };
    });
  }
}

/** `node corral-oci.cjs --server SOCKET`: serve until idle (CORRAL_OCI_SERVER_IDLE_MS, default 30 s) or SIGTERM. */
export async function serve(sockPath: string): Promise<void> {
  const idleMs = Number(process.env.CORRAL_OCI_SERVER_IDLE_MS) > 0 ? Number(process.env.CORRAL_OCI_SERVER_IDLE_MS) : 30_000;
  const log = (m: string) => process.stderr.write(`${new Date().toISOString()} corral-oci server ${process.pid}: ${m}\n`);
  process.on('uncaughtException', (e) => log(`uncaught: ${e?.stack ?? e}`));
  process.on('unhandledRejection', (e) => log(`unhandled rejection: ${(e as Error)?.stack ?? e}`));
  process.on('SIGHUP', () => {});
  process.on('SIGPIPE', () => {});

  if (await listening(sockPath)) {
    log('another server already listens; exiting');
    process.exit(0);
  }
  // named by build and pid: servers of one build in other dirs (tests, benches) must not share it
  const leaveCgroup = await enterOwnCgroup(`corral-oci-server-${basename(sockPath, '.sock')}-${process.pid}`, log);
  const server = new OciServer(sockPath);
  let idleTimer: NodeJS.Timeout | undefined;
  let stopping = false;
  const armIdle = () => {
    if (idleTimer) clearTimeout(idleTimer);
    idleTimer = setTimeout(() => stop('idle'), idleMs);
  };
  server.onIdle = armIdle;
  server.onBusy = () => {
    if (idleTimer) { clearTimeout(idleTimer); idleTimer = undefined; }
  };
  const stop = (why: string) => {
    if (stopping) return;
    stopping = true;
    log(`stopping (${why})`);
    void server.close().then(() => {
      leaveCgroup();
      removeRoutineFiles(sockPath);
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  let ok: boolean;
  try {
    ok = await server.listen();
  } catch (e) {
    log(`cannot listen on ${sockPath}: ${(e as Error).message}`);
    leaveCgroup();
    process.exit(1);
  }
  if (!ok) {
    log('another server already listens; exiting');
    leaveCgroup();
    process.exit(0);
  }
  log(`listening on ${sockPath}`);
  armIdle();
}

/**
 * What a server that ends cleanly leaves of <id>.log and <id>.lock beside its socket: nothing when
 * the log holds only routine lines (start, stop), so a machine that saw many builds does not keep a
 * pair per build id; a log with anything else (an uncaught error, a failed listen) stays for the
 * operator. Removing the lock is safe: a client that still holds the old one starts a server that
 * finds this one gone or another listening, and then exits.
 */
function removeRoutineFiles(sockPath: string): void {
  const base = sockPath.replace(/\.sock$/, '');
  const routine = /^\S+ corral-oci server \d+: (listening on .*|stopping \((idle|SIGTERM|SIGINT)\)|another server already listens; exiting)$/;
  try {
    const lines = readFileSync(`${base}.log`, 'utf8').split('\n').filter(Boolean);
    if (!lines.every((l) => routine.test(l))) return;
    unlinkSync(`${base}.log`);
  } catch {
    /* no log, or not ours to read */
  }
  try { unlinkSync(`${base}.lock`); } catch { /* gone */ }
}
