/**
 * The real StreamingBackend: exec, attach and port forwarding against containers run by an
 * OCI runtime CLI with runc's command line (bin/corral-oci) under conmon.
 *
 *  exec         `RUNTIME --root R --log L --log-format json exec --pid-file P ID cmd…` with the
 *               session's pipes as the process's stdio. With a TTY the runtime sends the pty
 *               master over a console socket (SCM_RIGHTS), which Node cannot receive, so the
 *               native helper `corral-stream console` runs the runtime, receives the master and
 *               relays it; resizes go to the helper's fd 3 (TIOCSWINSZ there). Runtime failures
 *               (no such container, exec of a missing file) are read from the JSON log and thrown;
 *               the process's own status is the exit code.
 *  attach       `corral-stream attach DIR` connects to conmon's SOCK_SEQPACKET attach socket
 *               (DIR = <socket-dir>/<cuuid>) and demultiplexes its 1-byte stream prefixes onto
 *               pipes; resizes are "1 HEIGHT WIDTH\n" lines on conmon's `ctl` fifo in DIR.
 *  portForward  `corral-stream netns NETNS PORT` enters the pod's pinned network namespace and
 *               connects to localhost:PORT (host-network pods: a plain TCP connection). Once the
 *               port's side closed, the client's direction gets `portCloseGraceMs`, then the relay
 *               is stopped (a WebSocket client cannot half-close its channel).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants as fsc, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import net from 'node:net';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex, Readable, Writable } from 'node:stream';
import {
  CorralError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  UnavailableError,
} from '../../errors.ts';
import { buildPath } from '../../layout.ts';
import type { ExitResult, StdioStreams, StreamingBackend, TerminalSize } from '../streaming/backend.ts';
import type { Logger } from '../log.ts';
import type { StreamContainer, StreamTargets } from './targets.ts';

export type { StreamContainer, StreamSandbox, StreamTargets, StreamContainerState } from './targets.ts';

/** build/corral-stream of this checkout (scripts/setup.sh builds it). */
export const DEFAULT_HELPER = buildPath('corral-stream');

export interface OciStreamingBackendOptions {
  targets: StreamTargets;
  /** The native relay helper (default: build/corral-stream of this checkout). */
  helperPath?: string;
  /** Parent of the per-session temp dirs (console socket, pid file, runtime log); keep it short (sockets ≤ 107 bytes). Default: os.tmpdir(). */
  workDir?: string;
  log?: Logger;
  /** After an exec'd process exited, how long background processes still holding its output may keep writing (default 2000 ms). */
  drainMs?: number;
  /**
   * Port forwarding: once the port's side closed the connection, how long the client may still
   * send before the forward ends (default 1000 ms, as containerd and CRI-O do). WebSocket clients
   * cannot half-close a channel, so without this a forward would only end with the whole session.
   */
  portCloseGraceMs?: number;
}

const noop = () => {};

export class OciStreamingBackend implements StreamingBackend {
  private readonly targets: StreamTargets;
  private readonly helper: string;
  private readonly workDir: string;
  private readonly log: Logger | undefined;
  private readonly drainMs: number;
  private readonly portCloseGraceMs: number;

  constructor(options: OciStreamingBackendOptions) {
    this.targets = options.targets;
    this.helper = options.helperPath ?? DEFAULT_HELPER;
    this.workDir = options.workDir ?? tmpdir();
    this.log = options.log;
    this.drainMs = options.drainMs ?? 2000;
    this.portCloseGraceMs = options.portCloseGraceMs ?? 1000;
  }

  async checkContainer(containerId: string): Promise<void> {
    await this.running(containerId, 'stream to');
  }

  async checkSandbox(sandboxId: string): Promise<void> {
    if (!(await this.targets.sandbox(sandboxId))) throw new NotFoundError(`pod sandbox ${sandboxId} not found`);
  }

  // ---- exec ----------------------------------------------------------------------------

  async exec(
    containerId: string,
    cmd: string[],
    tty: boolean,
    streams: StdioStreams,
    resize: AsyncIterable<TerminalSize>,
    signal: AbortSignal,
  ): Promise<ExitResult> {
    if (cmd.length === 0) throw new InvalidArgumentError('exec: cmd must name a command');
    const c = await this.running(containerId, 'exec into');
    const session = this.session();
    try {
      const runtime = [c.runtimePath, '--root', c.runtimeRoot, '--log', session.log, '--log-format', 'json', 'exec', '--pid-file', session.pid];
      const stdinMode = streams.stdin ? 'pipe' : 'ignore';
      let child: ChildProcess;
      if (tty) {
        const sock = join(session.dir, 'console.sock');
        if (Buffer.byteLength(sock) > 107) throw new InvalidArgumentError(`console socket path ${sock} is too long: use a shorter workDir`);
        const argv = ['console', ...(streams.stdin ? ['--stdin'] : []), sock, '--', ...runtime, '--tty', '--console-socket', sock, c.ociId, ...cmd];
        child = this.spawnChecked(this.helper, argv, [stdinMode, 'pipe', 'pipe', 'pipe']);
      } else {
        child = this.spawnChecked(runtime[0]!, [...runtime.slice(1), c.ociId, ...cmd], [stdinMode, streams.stdout ? 'pipe' : 'ignore', 'pipe']);
      }

      // stdout; in TTY mode the helper's stderr is the runtime's and the helper's diagnostics
      const diag = new Collector();
      let held: HoldRuntimeMessages | null = null;
      const outputs: Readable[] = [];
      if (child.stdout) outputs.push(child.stdout);
      if (child.stdout && streams.stdout) child.stdout.pipe(streams.stdout, { end: false });
      else child.stdout?.resume();
      if (tty) {
        child.stderr!.on('data', (d: Buffer) => diag.add(d));
        outputs.push(child.stderr!);
        const ctl = child.stdio[3] as Writable;
        ctl.on('error', noop);
        void (async () => {
          for await (const s of resize) {
            if (ctl.destroyed || !ctl.writable) break;
            ctl.write(`${s.width} ${s.height}\n`);
          }
        })();
      } else {
        // the runtime's own error line ("corral-oci: …") also lands on the process's stderr: hold it back
        held = new HoldRuntimeMessages(child.stderr!, streams.stderr);
        outputs.push(child.stderr!);
      }

      const stdinDone = connectStdin(streams.stdin, child);
      const onAbort = () => this.killExec(session.pid, child);
      signal.addEventListener('abort', onAbort, { once: true });
      let status: { code: number | null; signal: NodeJS.Signals | null };
      try {
        status = await exited(child);
        await drained(outputs, this.drainMs);
      } finally {
        signal.removeEventListener('abort', onAbort);
        stdinDone();
        for (const o of outputs) o.destroy();
        (child.stdio[3] as Writable | null | undefined)?.destroy();
      }

      const failure = runtimeError(session.log);
      if (failure) throw failure;
      if (tty && diag.text().includes('corral-stream: ')) throw new InternalError(`exec in container ${containerId}: ${diag.text().trim()}`);
      held?.release();
      return { exitCode: status.code ?? 128 + signalNumber(status.signal) };
    } finally {
      session.cleanup();
    }
  }

  /** Stop the exec'd process (its pid is in the pid file once it was started), else the runtime/helper. */
  private killExec(pidFile: string, child: ChildProcess): void {
    const attempt = () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const pid = Number(readText(pidFile).trim());
      if (Number.isInteger(pid) && pid > 0) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      } else {
        child.kill('SIGTERM');
      }
      setTimeout(attempt, 200).unref();
    };
    attempt();
  }

  // ---- attach --------------------------------------------------------------------------

  async attach(containerId: string, tty: boolean, streams: StdioStreams, resize: AsyncIterable<TerminalSize>, signal: AbortSignal): Promise<ExitResult | void> {
    const c = await this.running(containerId, 'attach to');
    if (!c.conmonSocketDir) {
      throw new FailedPreconditionError(`container ${containerId} has no conmon attach socket (it was not started under conmon with --socket-dir-path)`);
    }
    if (signal.aborted) return;
    const dir = join(c.conmonSocketDir, c.conmonCuuid ?? c.ociId);
    const useStdin = !!streams.stdin && c.stdin;
    const child = this.spawnChecked(this.helper, ['attach', ...(useStdin ? ['--stdin'] : []), dir], [useStdin ? 'pipe' : 'ignore', 'pipe', 'pipe', 'pipe']);
    // fd 1: container stdout, fd 3: container stderr, fd 2: the helper's own messages
    const containerErr = child.stdio[3] as Readable;
    if (streams.stdout) child.stdout!.pipe(streams.stdout, { end: false });
    else child.stdout!.resume();
    const err = streams.stderr ?? (tty ? streams.stdout : null);
    if (err) containerErr.pipe(err, { end: false });
    else containerErr.resume();
    const diag = new Collector();
    child.stderr!.on('data', (d: Buffer) => diag.add(d));
    if (streams.stdin && !useStdin) streams.stdin.resume(); // the container has no stdin: discard
    const stdinDone = connectStdin(useStdin ? streams.stdin : null, child);

    // resizes: conmon's ctl fifo, "1 HEIGHT WIDTH\n" (message type 1 = window resize)
    let ctl = -1;
    void (async () => {
      for await (const s of resize) {
        if (!c.tty) continue;
        if (child.exitCode !== null || child.signalCode !== null) break;
        try {
          if (ctl < 0) ctl = openSync(join(dir, 'ctl'), fsc.O_WRONLY | fsc.O_NONBLOCK);
          writeSync(ctl, `1 ${s.height} ${s.width}\n`);
        } catch (e) {
          this.log?.debug('streaming: attach resize failed', { container: containerId, error: String(e) });
        }
      }
    })();

    let detached = false;
    const onAbort = () => {
      detached = true;
      child.kill('SIGTERM');
    };
    signal.addEventListener('abort', onAbort, { once: true });
    let status: { code: number | null; signal: NodeJS.Signals | null };
    try {
      status = await exited(child);
      await drained([child.stdout!, containerErr, child.stderr!], this.drainMs);
    } finally {
      signal.removeEventListener('abort', onAbort);
      stdinDone();
      if (ctl >= 0) closeSync(ctl);
      ctl = -2;
    }
    if (detached) return;
    if (status.code === 2) throw new UnavailableError(`attach to container ${containerId}: ${stripPrefix(diag.text())}`);
    if (status.code !== 0) throw new InternalError(`attach to container ${containerId}: ${stripPrefix(diag.text()) || `helper exited with ${status.code ?? status.signal}`}`);
  }

  // ---- port forwarding -----------------------------------------------------------------

  async portForward(sandboxId: string, port: number, stream: Duplex, signal: AbortSignal): Promise<void> {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new InvalidArgumentError(`port ${port} is out of range 1-65535`);
    const sb = await this.targets.sandbox(sandboxId);
    if (!sb) throw new NotFoundError(`pod sandbox ${sandboxId} not found`);
    if (!sb.netnsPath) return hostPortForward(port, stream, signal, this.portCloseGraceMs);

    // fd 3 says "c" once the connection is made: from then on the end of the port's output is the
    // end of the stream; before that, the relay failed and its exit status + message say why
    const child = this.spawnChecked(this.helper, ['netns', sb.netnsPath, String(port)], ['pipe', 'pipe', 'pipe', 'pipe']);
    const diag = new Collector();
    child.stderr!.on('data', (d: Buffer) => diag.add(d));
    const status3 = child.stdio[3] as Readable;
    const connected = new Promise<boolean>((resolve) => {
      status3.once('data', () => resolve(true));
      status3.once('end', () => resolve(false));
      status3.once('close', () => resolve(false));
    });
    status3.resume();
    child.stdin!.on('error', noop);
    stream.pipe(child.stdin!);
    child.stdout!.pipe(stream, { end: false });
    // the port's side is done: end the stream, give the client's direction a grace period, then stop the relay
    let portDone = false;
    let grace: NodeJS.Timeout | undefined;
    child.stdout!.once('end', () => {
      void connected.then((ok) => {
        if (!ok) return;
        if (!stream.writableEnded && !stream.destroyed) stream.end();
        if (child.exitCode !== null || child.signalCode !== null) return;
        grace = setTimeout(() => {
          portDone = true;
          child.kill('SIGKILL');
        }, this.portCloseGraceMs);
      });
    });
    const onAbort = () => child.kill('SIGKILL');
    const onStreamGone = () => {
      if (stream.destroyed && child.exitCode === null) child.kill('SIGKILL');
    };
    signal.addEventListener('abort', onAbort, { once: true });
    stream.once('error', onAbort);
    stream.once('close', onStreamGone);
    try {
      const status = await exited(child);
      await drained([child.stdout!, child.stderr!], this.drainMs);
      stream.unpipe(child.stdin!);
      if (status.code !== 0 && !portDone) {
        if (signal.aborted || stream.destroyed) return;
        const text = stripPrefix(diag.text()) || `relay exited with ${status.code ?? status.signal}`;
        throw status.code === 3 ? new FailedPreconditionError(text) : new UnavailableError(text);
      }
      if (!stream.writableEnded && !stream.destroyed) stream.end();
    } finally {
      clearTimeout(grace);
      signal.removeEventListener('abort', onAbort);
      stream.off('error', onAbort);
      stream.off('close', onStreamGone);
    }
  }

  // ---- helpers -------------------------------------------------------------------------

  private async running(containerId: string, what: string): Promise<StreamContainer> {
    const c = await this.targets.container(containerId);
    if (!c) throw new NotFoundError(`container ${containerId} not found`);
    if (c.state !== 'running') throw new FailedPreconditionError(`cannot ${what} container ${containerId}: it is ${c.state}, not running`);
    return c;
  }

  private session(): { dir: string; pid: string; log: string; cleanup(): void } {
    mkdirSync(this.workDir, { recursive: true, mode: 0o700 });
    const dir = mkdtempSync(join(this.workDir, 'cs-'));
    return { dir, pid: join(dir, 'pid'), log: join(dir, 'oci.log'), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
  }

  /** spawn; a failure to start (ENOENT) surfaces as 'error', which exited() turns into a rejection. */
  private spawnChecked(cmd: string, args: string[], stdio: Array<'pipe' | 'ignore'>): ChildProcess {
    return spawn(cmd, args, { stdio });
  }
}

/** Copy the client's stdin into the child; its end ends the child's stdin. Returns a disconnect function. */
function connectStdin(stdin: Readable | null, child: ChildProcess): () => void {
  const sink = child.stdin;
  if (!sink) return noop;
  sink.on('error', noop);
  if (!stdin) {
    sink.end();
    return noop;
  }
  stdin.pipe(sink);
  return () => {
    stdin.unpipe(sink);
    sink.destroy();
  };
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve({ code: child.exitCode, signal: child.signalCode });
    child.once('error', (e: NodeJS.ErrnoException) => {
      reject(new UnavailableError(`cannot run ${child.spawnfile}: ${e.message}${e.code === 'ENOENT' ? ' (run scripts/setup.sh to build the helpers)' : ''}`));
    });
    child.once('exit', (code, sig) => resolve({ code, signal: sig }));
  });
}

/** Resolve when every readable ended (or after ms, for output held open by background processes). */
function drained(streams: Readable[], ms: number): Promise<void> {
  const one = (s: Readable) =>
    new Promise<void>((resolve) => {
      if (s.readableEnded || s.destroyed) return resolve();
      s.once('end', () => resolve());
      s.once('close', () => resolve());
    });
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
  return Promise.race([Promise.all(streams.map(one)).then(noop), limit]).finally(() => clearTimeout(timer));
}

function hostPortForward(port: number, stream: Duplex, signal: AbortSignal, graceMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let connected = false;
    let grace: NodeJS.Timeout | undefined;
    // the port's side is done (pipe() ends the stream): the client's direction gets graceMs
    sock.once('end', () => (grace = setTimeout(() => sock.destroy(), graceMs)));
    sock.once('connect', () => {
      connected = true;
      stream.pipe(sock);
      sock.pipe(stream);
    });
    sock.on('error', (e) => {
      if (!connected) reject(new UnavailableError(`connect to localhost:${port}: ${e.message}`));
    });
    sock.once('close', () => {
      clearTimeout(grace);
      stream.unpipe(sock);
      if (connected) resolve();
    });
    const onAbort = () => sock.destroy();
    signal.addEventListener('abort', onAbort, { once: true });
    stream.once('error', () => sock.destroy());
  });
}

/** The last error the runtime logged (JSON lines), as a CorralError. */
function runtimeError(logFile: string): CorralError | null {
  let last: string | null = null;
  for (const line of readText(logFile).split('\n')) {
    if (!line.trim()) continue;
    try {
      const v = JSON.parse(line) as { level?: string; msg?: string };
      if (v.level === 'error' && typeof v.msg === 'string') last = v.msg;
    } catch {
      /* not JSON */
    }
  }
  if (last === null) return null;
  const text = `OCI runtime exec failed: ${last}`;
  if (/\bENOENT\b|not found|does not exist/i.test(last)) return new NotFoundError(text);
  if (/\bE(PERM|ACCES)\b/.test(last)) return new PermissionDeniedError(text);
  if (/must be (created or )?running|is stopped|is paused/.test(last)) return new FailedPreconditionError(text);
  return new InternalError(text);
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

function stripPrefix(text: string): string {
  return text
    .trim()
    .split('\n')
    .map((l) => l.replace(/^corral-stream: /, ''))
    .join('; ');
}

function signalNumber(sig: NodeJS.Signals | null): number {
  return sig ? ((osConstants.signals as Record<string, number>)[sig] ?? 0) : 0;
}

/** Bounded collector for diagnostics. */
class Collector {
  private parts: Buffer[] = [];
  private size = 0;
  add(b: Buffer): void {
    if (this.size > 65536) return;
    this.parts.push(b);
    this.size += b.length;
  }
  text(): string {
    return Buffer.concat(this.parts).toString('utf8');
  }
}

/**
 * Passes the process's stderr through, except that from the first chunk starting with the
 * runtime's own prefix ("corral-oci: ") everything is held until the outcome is known: the
 * runtime reports its failures on the same stderr the process uses.
 */
class HoldRuntimeMessages {
  private readonly src: Readable;
  private readonly dst: Writable | null;
  private held: Buffer[] = [];
  constructor(src: Readable, dst: Writable | null) {
    this.src = src;
    this.dst = dst;
    src.on('data', (d: Buffer) => this.add(d));
  }
  private add(chunk: Buffer): void {
    if (this.held.length > 0 || chunk.subarray(0, 12).toString('latin1') === 'corral-oci: ') {
      this.held.push(chunk);
      return;
    }
    if (!this.dst || this.dst.destroyed) return;
    if (!this.dst.write(chunk)) {
      this.src.pause();
      this.dst.once('drain', () => this.src.resume());
    }
  }
  release(): void {
    if (this.dst && !this.dst.destroyed) for (const b of this.held) this.dst.write(b);
    this.held = [];
  }
}
