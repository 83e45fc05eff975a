/**
 * The runc-compatible runtime CLI behind a RuntimeClass handler (bin/corral-oci by default,
 * /usr/sbin/runc, ...), and conmon, which supervises each container's init process.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { InternalError, NotFoundError, DeadlineExceededError, fromNodeError } from '../../errors.ts';
import type { Process } from '../../oci/spec/types.ts';
import { run, pidAlive, type RunOptions, type RunResult } from './proc.ts';
import type { BuiltinOci } from './builtin-oci.ts';

export interface OciState {
  id: string;
  status: 'creating' | 'created' | 'running' | 'stopped' | 'paused';
  pid: number;
  bundle: string;
}

export class OciRuntime {
  readonly path: string;
  readonly root: string;
  /** Set for the built-in handler: its verbs (not exec) run in this process. */
  readonly builtin: BuiltinOci | null;

  constructor(path: string, root: string, builtin: BuiltinOci | null = null) {
    this.path = path;
    this.root = root;
    this.builtin = builtin;
  }

  private args(verb: string, ...rest: string[]): string[] {
    return ['--root', this.root, verb, ...rest];
  }

  /** One verb that starts no process of its own: in-process for the built-in handler, else the CLI. */
  private verb(args: string[], opts: RunOptions): Promise<RunResult> {
    return this.builtin ? this.builtin.run(args) : run(this.path, args, opts);
  }

  /** `verb`, requiring exit 0; the error names the verb and carries the runtime's last stderr lines. */
  private async verbOk(args: string[], what: string, opts: RunOptions): Promise<RunResult> {
    const r = await this.verb(args, opts);
    if (r.timedOut) throw new DeadlineExceededError(`${what}: ${this.path} did not finish within ${opts.timeoutMs} ms`);
    if (r.code !== 0) {
      const msg = r.stderr.toString().trim().split('\n').filter(Boolean).slice(-3).join('; ');
      throw new InternalError(`${what}: ${this.path} ${args[2] ?? ''} exited with ${r.code ?? r.signal}${msg ? `: ${msg}` : ''}`);
    }
    return r;
  }

  async start(id: string): Promise<void> {
    await this.verbOk(this.args('start', id), `start container ${id}`, { timeoutMs: 60_000 });
  }

  async kill(id: string, signal: string, all = false): Promise<void> {
    await this.verbOk(this.args('kill', ...(all ? ['--all'] : []), id, signal.replace(/^SIG/, '')), `signal container ${id}`, { timeoutMs: 30_000 });
  }

  /** Delete (force: kill first); a container the runtime does not know is already gone. */
  async delete(id: string, force = true): Promise<void> {
    const r = await this.verb(this.args('delete', ...(force ? ['--force'] : []), id), { timeoutMs: 60_000 });
    if (r.code === 0) return;
    const err = r.stderr.toString();
    if (/does not exist|not found|no such/i.test(err)) return;
    throw new InternalError(`delete container ${id} in ${this.path}: ${err.trim() || `exit ${r.code ?? r.signal}`}`);
  }

  async state(id: string): Promise<OciState | null> {
    const r = await this.verb(this.args('state', id), { timeoutMs: 30_000 });
    if (r.code !== 0) {
      if (/does not exist|not found|no such/i.test(r.stderr.toString())) return null;
      throw new InternalError(`state of container ${id}: ${r.stderr.toString().trim()}`);
    }
    return JSON.parse(r.stdout.toString()) as OciState;
  }

  async update(id: string, resourcesFile: string): Promise<string> {
    const r = await this.verbOk(this.args('update', '--resources', resourcesFile, id), `update resources of container ${id}`, { timeoutMs: 30_000 });
    return r.stderr.toString();
  }

  /**
   * `exec --process FILE ID`, collecting output. On timeout the exec'd process (its pid comes
   * from --pid-file) is SIGKILLed and DeadlineExceeded is thrown.
   */
  async execSync(id: string, processFile: string, proc: Process, pidFile: string, timeoutMs: number): Promise<{ stdout: Buffer; stderr: Buffer; exitCode: number }> {
    writeFileSync(processFile, JSON.stringify(proc));
    const killExec = () => {
      try {
        const pid = Number(readFileSync(pidFile, 'utf8').trim());
        if (pid > 0 && pidAlive(pid)) process.kill(pid, 'SIGKILL');
      } catch {}
    };
    const r = await run(this.path, this.args('exec', '--process', processFile, '--pid-file', pidFile, id), { timeoutMs, onTimeout: killExec });
    if (r.timedOut) {
      throw new DeadlineExceededError(`ExecSync in container ${id}: the command did not finish within ${timeoutMs / 1000} s; it was killed`);
    }
    const stderr = r.stderr.toString();
    if (r.code === 1 && /^corral-oci: |^time=.*level=error|exec failed/m.test(stderr) && r.stdout.length === 0) {
      // The runtime itself failed (bad command, container gone): report it rather than exit 1.
      if (/no such file|not found|executable file/i.test(stderr)) return { stdout: r.stdout, stderr: r.stderr, exitCode: 127 };
      if (/does not exist|not running|stopped/i.test(stderr)) throw new NotFoundError(`ExecSync: container ${id} is not running: ${stderr.trim()}`);
    }
    return { stdout: r.stdout, stderr: r.stderr, exitCode: r.code ?? 128 + (r.signal ? 9 : 0) };
  }
}

export interface ConmonOptions {
  conmon: string;
  id: string;
  name: string;
  runtime: OciRuntime;
  bundle: string;
  pidFile: string;
  conmonPidFile: string;
  exitDir: string;
  socketDir: string;
  logPath: string;
  logMaxBytes: number;
  tty: boolean;
  stdin: boolean;
  stdinOnce: boolean;
  timeoutMs?: number;
}

/**
 * Start conmon, which runs `RUNTIME create` and stays as the container's parent (double-forked,
 * so it outlives us). Resolves with the container's pid from conmon's sync pipe.
 */
export function startConmon(o: ConmonOptions): Promise<{ pid: number }> {
  const args = [
    '--api-version', '1', '-c', o.id, '-u', o.id, '-n', o.name, '-r', o.runtime.path,
    '--runtime-arg', `--root=${o.runtime.root}`, '-b', o.bundle, '-p', o.pidFile,
    '--exit-dir', o.exitDir, '--socket-dir-path', o.socketDir, '-l', `k8s-file:${o.logPath}`,
    '--conmon-pidfile', o.conmonPidFile, '--log-level', 'error',
  ];
  if (o.logMaxBytes > 0) args.push('--log-size-max', String(o.logMaxBytes));
  if (o.stdin) args.push('-i');
  if (o.stdin && !o.stdinOnce) args.push('--leave-stdin-open');
  if (o.tty) args.push('-t');
  return new Promise((resolve, reject) => {
    const child = spawn(o.conmon, args, {
      stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
      // conmon passes its environment to the runtime: keep the runtime's own settings (CORRAL_*).
      env: {
        ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('CORRAL_'))),
        PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', _OCI_SYNCPIPE: '3',
      },
      detached: true,
    });
    let stderr = '';
    let buf = '';
    let done = false;
    const finish = (err: Error | null, pid?: number) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sync?.destroy();
      child.stderr?.destroy();
      child.unref();
      if (err) reject(err);
      else resolve({ pid: pid! });
    };
    const timer = setTimeout(() => finish(new DeadlineExceededError(`conmon for container ${o.id} reported nothing within ${(o.timeoutMs ?? 120_000) / 1000} s`)), o.timeoutMs ?? 120_000);
    child.stderr!.on('data', (d) => (stderr += String(d)));
    child.once('error', (e) => finish(fromNodeError(e, `start conmon (${o.conmon})`)));
    const sync = child.stdio[3] as import('node:stream').Duplex | null;
    sync?.on('error', () => {});
    sync?.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /\{[^{}]*\}/.exec(buf);
      if (!m) return;
      let msg: { data?: number; message?: string };
      try {
        msg = JSON.parse(m[0]);
      } catch {
        return;
      }
      if (typeof msg.data === 'number' && msg.data > 0) finish(null, msg.data);
      else finish(new InternalError(`create container ${o.id}: ${msg.message?.trim() || 'the OCI runtime failed'}${stderr ? ` (${stderr.trim()})` : ''}`));
    });
    sync?.on('close', () => {
      setTimeout(() => finish(new InternalError(`create container ${o.id}: conmon exited without reporting a pid${stderr ? `: ${stderr.trim()}` : ''}`)), 50);
    });
  });
}
