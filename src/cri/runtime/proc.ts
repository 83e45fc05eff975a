/** Child processes the runtime service runs: the OCI runtime CLI, conmon, mount/umount. */
import { spawn } from 'node:child_process';
import { InternalError, DeadlineExceededError, fromNodeError } from '../../errors.ts';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: Buffer;
  timedOut: boolean;
}

export interface RunOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Called with the child's pid once spawned. */
  onSpawn?: (pid: number) => void;
  /** On timeout, called instead of SIGKILLing the child (e.g. to kill what it started). */
  onTimeout?: () => void;
  maxOutputBytes?: number;
}

export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    // A clean environment, but the runtime's own settings (CORRAL_*) pass through.
    const env = opts.env ?? {
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('CORRAL_'))),
      PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    };
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env, cwd: opts.cwd });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outLen = 0;
    const max = opts.maxOutputBytes ?? 16 * 1024 * 1024;
    child.stdout.on('data', (d: Buffer) => {
      if (outLen < max) out.push(d);
      outLen += d.length;
    });
    child.stderr.on('data', (d: Buffer) => err.push(d));
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs && opts.timeoutMs > 0) {
      timer = setTimeout(() => {
        timedOut = true;
        if (opts.onTimeout) opts.onTimeout();
        else child.kill('SIGKILL');
      }, opts.timeoutMs);
    }
    child.once('spawn', () => opts.onSpawn?.(child.pid!));
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(fromNodeError(e, `run ${cmd}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err), timedOut });
    });
  });
}

export function pidAlive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
