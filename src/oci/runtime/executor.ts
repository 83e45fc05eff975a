/**
 * The Node side of the C executor (src/executor/corral-exec.c): starts it with an
 * encoded plan and speaks the line protocol on the sync fd (src/oci/plan/ops.ts).
 *
 * Child fds: 0..2 from `stdio`, then `preserveFds` as 3, 4, ..., then the plan fd
 * and the sync fd (their numbers are the executor's two arguments).
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import type { Duplex, Writable } from 'node:stream';
import {
  CorralError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  errnoNames,
  fromErrno,
  fromNodeError,
} from '../../errors.ts';
import { buildPath } from '../../layout.ts';
import { encodePlan, opLabel } from '../plan/encode.ts';
import type { OpName, Plan } from '../plan/ops.ts';

export type StdioEntry = 'inherit' | 'ignore' | 'pipe' | number;

export interface ExecutorOptions {
  plan: Plan;
  /** The container's fds 0..2 (default: inherit all three). */
  stdio?: StdioEntry[];
  /** Parent fds that become the container's fds 3, 4, ... in order. */
  preserveFds?: number[];
  executorPath?: string;
  /** The executor's own environment (default: empty; the container's comes from the `exec` op). */
  env?: NodeJS.ProcessEnv;
  detached?: boolean;
}

export interface LauncherExit {
  code: number | null;
  signal: string | null;
}

/** What callers use of the launcher process (a local ChildProcess, or one a corral-oci client started). */
export interface Launcher {
  /** Its pid, once known (undefined before the spawn is reported, or if it failed). */
  readonly pid?: number;
  kill(signal?: NodeJS.Signals | number): boolean;
}

export interface Executor {
  readonly launcher: Launcher;
  /** Resolves on the launcher's `pid N` line (the child's host pid). */
  childPid(): Promise<number>;
  /** The next sync line must equal `message`; an `error` line rejects with an OpError; EOF rejects. */
  expect(message: string): Promise<void>;
  /** Write one line on the sync fd. */
  send(message: string): void;
  /** Resolves on EOF after the child exec'd; rejects on an error line or a protocol failure. */
  waitExec(): Promise<void>;
  launcherExit(): Promise<LauncherExit>;
  /** Close the plan and sync fds on our side (the processes are left alone). */
  close(): void;
}

/** An executor this process spawned itself: the launcher is a real ChildProcess (its stdio pipes are usable). */
export interface LocalExecutor extends Executor {
  readonly launcher: ChildProcess;
}

/**
 * Starts an executor for a plan. The default is `startExecutor` (a child of this process);
 * the corral-oci server uses one that asks the calling client to spawn it (src/cli/oci-server.ts).
 */
export type ExecutorSpawner = (opts: ExecutorOptions) => Executor;

/**
 * The transport under the sync protocol: how lines reach the executor, and how to close our side.
 * `executorOverChannel` turns it plus the events below into an `Executor`.
 */
export interface ExecutorChannel<L extends Launcher = Launcher> {
  readonly launcher: L;
  /** Whether a line can still be written. */
  writable(): boolean;
  write(line: string): void;
  close(): void;
}

/** Feed these from the transport: sync bytes, sync EOF, the launcher's exit, a spawn failure. */
export interface ExecutorEvents {
  data(chunk: string): void;
  eof(): void;
  exit(e: LauncherExit): void;
  /** The launcher could not be started (or the transport to it is gone): fails everything pending. */
  error(e: Error): void;
  /** The sync transport failed (the launcher's exit is still reported separately). */
  syncError(e: Error): void;
}

/** What an `error <op-index> <errno> <message>` line becomes: a CorralError naming the op. */
export interface OpErrorInfo {
  opIndex: number;
  opName?: OpName;
  origin?: string;
  /** The raw errno number (0 = not a kernel error, e.g. a hook's exit status). */
  errnoNumber: number;
}
export type OpError = CorralError & OpErrorInfo;

export function isOpError(err: unknown): err is OpError {
  return err instanceof CorralError && typeof (err as Partial<OpErrorInfo>).opIndex === 'number';
}

/** build/corral-exec of this checkout, or $CORRAL_EXECUTOR. */
export function executorPath(): string {
  return process.env.CORRAL_EXECUTOR || buildPath('corral-exec');
}

const MAX_LINE = 64 * 1024;

export function opError(plan: Plan, index: number, errno: number, message: string): OpError {
  const op = plan.ops[index];
  const what = op ? opLabel(op, index) : `executor (op ${index})`;
  const err =
    errno === 0
      ? new FailedPreconditionError(`${what}: ${message}`)
      : fromErrno(errnoNames[errno] ?? `E${errno}`, what, message);
  return Object.assign(err, { opIndex: index, opName: op?.op, origin: op?.origin, errnoNumber: errno });
}

interface Waiter {
  message: string;
  resolve: () => void;
  reject: (e: Error) => void;
}

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {}); // rejections are delivered to whoever asks; never unhandled
  return { promise, resolve, reject };
}

function describeExit(e: LauncherExit): string {
  if (e.signal) return `was killed by ${e.signal}`;
  if (e.code === 2) return 'exited with status 2 (it rejected the plan or its arguments; see its stderr)';
  return `exited with status ${e.code}`;
}

export function startExecutor(opts: ExecutorOptions): LocalExecutor {
  const bytes = encodePlan(opts.plan);
  const stdio0 = opts.stdio ?? ['inherit', 'inherit', 'inherit'];
  if (stdio0.length !== 3) throw new InvalidArgumentError('executor: stdio must have exactly 3 entries (fds 0..2)');
  const preserve = opts.preserveFds ?? [];
  for (const fd of preserve) {
    if (!Number.isInteger(fd) || fd < 0) throw new InvalidArgumentError(`executor: preserveFds entry ${fd} is not an fd`);
  }
  const planIndex = 3 + preserve.length;
  const syncIndex = planIndex + 1;
  const stdio: StdioOptions = [...stdio0, ...preserve, 'pipe', 'pipe'];
  const exe = opts.executorPath ?? executorPath();

  const launcher = spawn(exe, [String(planIndex), String(syncIndex)], {
    stdio,
    env: opts.env ?? {},
    detached: opts.detached ?? false,
  });
  const planSock = launcher.stdio[planIndex] as Writable | null;
  const syncSock = launcher.stdio[syncIndex] as Duplex | null;
  const { executor, events } = executorOverChannel(opts.plan, {
    launcher,
    writable: () => !!syncSock && !syncSock.destroyed && syncSock.writable,
    write: (line) => { syncSock!.write(line); },
    close() {
      planSock?.destroy();
      syncSock?.destroy();
    },
  });
  launcher.on('exit', (code, signal) => events.exit({ code, signal }));
  launcher.on('error', (err) => events.error(fromNodeError(err, `start the executor ${exe}`)));
  planSock?.on('error', () => {}); // EPIPE if the executor died early: its exit status tells why
  planSock?.end(bytes);
  if (syncSock) {
    syncSock.on('error', (err) => events.syncError(fromNodeError(err, 'executor sync fd')));
    syncSock.setEncoding('utf8');
    syncSock.on('data', (chunk: string) => events.data(chunk));
    syncSock.on('end', () => events.eof());
    syncSock.on('close', () => events.eof());
  }
  return executor;
}

/** The sync protocol (pid line, expect/send, error lines, exec EOF) over any transport. */
export function executorOverChannel<L extends Launcher>(plan: Plan, channel: ExecutorChannel<L>): { executor: Executor & { readonly launcher: L }; events: ExecutorEvents } {
  const hasClone = plan.ops.some((o) => o.op === 'clone');
  const exit = deferred<LauncherExit>();
  let exitInfo: LauncherExit | undefined;
  const pid = deferred<number>();
  let pidSeen = false;
  let failure: Error | undefined;
  let eof = false;
  let exitSettled = false;
  const queue: string[] = [];
  const waiters: Waiter[] = [];
  let execWaiter: { resolve: () => void; reject: (e: Error) => void } | undefined;

  function fail(e: Error): void {
    if (failure) return;
    failure = e;
    pid.reject(e);
    for (const w of waiters.splice(0)) w.reject(e);
    execWaiter?.reject(e);
    execWaiter = undefined;
  }

  function onLine(line: string): void {
    if (failure) return;
    const pm = /^pid ([1-9][0-9]*)$/.exec(line);
    if (pm && !pidSeen) {
      pidSeen = true;
      pid.resolve(Number(pm[1]));
      return;
    }
    const em = /^error (-?[0-9]+) ([0-9]+) (.*)$/s.exec(line);
    if (em) {
      fail(opError(plan, Number(em[1]), Number(em[2]), em[3]));
      return;
    }
    const w = waiters.shift();
    if (!w) {
      queue.push(line);
      if (execWaiter) fail(new InternalError(`executor: unexpected sync message ${JSON.stringify(line.slice(0, 200))}`));
      return;
    }
    if (line === w.message) w.resolve();
    else w.reject(new InternalError(`executor: expected sync message ${JSON.stringify(w.message)}, got ${JSON.stringify(line.slice(0, 200))}`));
  }

  function closedError(what: string): Error {
    const status = exitInfo ? `; the launcher ${describeExit(exitInfo)}` : '';
    return new InternalError(`executor: the sync fd closed ${what}${status}`);
  }

  function onEof(): void {
    if (eof) return;
    eof = true;
    if (!pidSeen && !failure) {
      if (!hasClone) pid.reject(new FailedPreconditionError('executor: the plan has no clone op, so there is no child pid'));
      else {
        // Without a pid line the launcher itself is gone: report how it ended.
        void exit.promise.then(
          (e) => fail(new InternalError(`executor: the launcher ${describeExit(e)} before reporting the child pid`)),
          (e: Error) => fail(e),
        );
      }
    }
    for (const w of waiters.splice(0)) w.reject(failure ?? closedError(`while waiting for ${JSON.stringify(w.message)}`));
    settleExec();
  }

  function settleExec(): void {
    if (!execWaiter || !eof) return;
    if (failure) return execWaiter.reject(failure);
    if (hasClone && !pidSeen) return; // settled by fail() once the launcher's exit is known
    const w = execWaiter;
    execWaiter = undefined;
    if (queue.length) w.reject(new InternalError(`executor: unexpected sync message ${JSON.stringify(queue[0].slice(0, 200))}`));
    else w.resolve();
  }

  let partial = '';
  const events: ExecutorEvents = {
    data(chunk) {
      partial += chunk;
      let nl: number;
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        onLine(line);
      }
      if (partial.length > MAX_LINE) {
        fail(new InternalError(`executor: sync line longer than ${MAX_LINE} bytes`));
        channel.close();
      }
    },
    eof: onEof,
    exit(e) {
      if (exitSettled) return;
      exitSettled = true;
      exitInfo = e;
      exit.resolve(e);
    },
    error(e) {
      fail(e);
      if (!exitSettled) {
        exitSettled = true;
        exit.reject(e);
      }
      onEof();
    },
    syncError: fail,
  };

  const executor = {
    launcher: channel.launcher,
    childPid: () => pid.promise,
    expect(message: string): Promise<void> {
      if (failure) return Promise.reject(failure);
      const queued = queue.shift();
      if (queued !== undefined) {
        return queued === message
          ? Promise.resolve()
          : Promise.reject(new InternalError(`executor: expected sync message ${JSON.stringify(message)}, got ${JSON.stringify(queued.slice(0, 200))}`));
      }
      if (eof) return Promise.reject(closedError(`while waiting for ${JSON.stringify(message)}`));
      return new Promise<void>((resolve, reject) => waiters.push({ message, resolve, reject }));
    },
    send(message: string): void {
      if (message.includes('\n')) throw new InvalidArgumentError('executor: a sync message must not contain a newline');
      if (!channel.writable()) {
        throw new FailedPreconditionError('executor: the sync fd is closed; the executor is gone or has exec\'d');
      }
      channel.write(`${message}\n`);
    },
    waitExec(): Promise<void> {
      if (failure) return Promise.reject(failure);
      const d = deferred<void>();
      execWaiter = { resolve: d.resolve, reject: d.reject };
      settleExec();
      return d.promise;
    },
    launcherExit: () => exit.promise,
    close: () => channel.close(),
  };
  return { executor, events };
}
