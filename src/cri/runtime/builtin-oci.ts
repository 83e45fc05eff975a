/**
 * corrald's built-in OCI handler. A RuntimeClass handler whose executable is a corral-oci client of
 * this same build (bin/corral-oci → build/corral-oci-client, with corral-oci-client.conf beside it
 * naming our executor) gets two things a foreign runc-compatible binary cannot:
 *
 *  - corrald hosts the corral-oci server that client connects to (<server dir>/<build_id>.sock), so
 *    conmon's `corral-oci create` reaches warm code from the first container on, and no second Node
 *    process stays resident beside the daemon;
 *  - the verbs corrald itself calls (start, kill, delete, state, update) run in-process through the
 *    same CLI entry point as the client's requests (`main(argv, io)`), which saves a client process
 *    and a socket round trip per verb. `exec` stays a child process: its stdio must be the child's.
 *
 * When another server already listens on the socket (a standalone one started by some other caller)
 * corrald uses it like any client and tries again later to take over once it has idled out.
 */
import { existsSync, lstatSync, mkdirSync, readFileSync, realpathSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { InternalError } from '../../errors.ts';
import { main, type CliIo } from '../../cli/corral-oci.ts';
import { OciServer } from '../../cli/oci-server.ts';
import { executorPath } from '../../oci/runtime/executor.ts';
import type { Logger } from '../log.ts';
import type { RunResult } from './proc.ts';

const DEFAULT_SERVER_DIR = '/run/corral-oci-server';
const RETRY_HOST_MS = 15_000;
/** What scripts/setup.sh builds src/cli/oci-client into (bin/corral-oci links to it). */
const CLIENT_NAME = 'corral-oci-client';

interface ClientConf {
  build_id: string;
  executor: string;
}

function realpathOrNull(p: string): string | null {
  try {
    return realpathSync(p);
  } catch {
    return null;
  }
}

/** The client config beside the real executable of `handlerPath`, if it is a corral-oci client of this build. */
export function builtinClientConf(handlerPath: string): ClientConf | null {
  const exe = realpathOrNull(handlerPath);
  if (!exe || basename(exe) !== CLIENT_NAME) return null;
  const confPath = join(dirname(exe), 'corral-oci-client.conf');
  if (!existsSync(confPath)) return null;
  const conf: Record<string, string> = {};
  for (const line of readFileSync(confPath, 'utf8').split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) conf[line.slice(0, eq)] = line.slice(eq + 1);
  }
  if (!conf.build_id || !conf.executor) return null;
  // The same build as this daemon's code: the client's executor is ours.
  const ours = realpathOrNull(executorPath());
  if (!ours || realpathOrNull(conf.executor) !== ours) return null;
  return { build_id: conf.build_id, executor: conf.executor };
}

export class BuiltinOci {
  readonly handlerPath: string;
  readonly sockPath: string;
  private readonly log: Logger;
  private server: OciServer | null = null;
  private retry: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(handlerPath: string, sockPath: string, log: Logger) {
    this.handlerPath = handlerPath;
    this.sockPath = sockPath;
    this.log = log;
  }

  /** The built-in handler for `handlerPath`, or null when it is another runtime (runc, crun, an older build). */
  static for(handlerPath: string, log: Logger): BuiltinOci | null {
    const conf = builtinClientConf(handlerPath);
    if (!conf) return null;
    const dir = process.env.CORRAL_OCI_SERVER_DIR || DEFAULT_SERVER_DIR;
    return new BuiltinOci(handlerPath, join(dir, `${conf.build_id}.sock`), log);
  }

  get hosting(): boolean {
    return this.server !== null;
  }

  /** Serve the handler's clients from this process (now, or later if another server has the socket). */
  async host(): Promise<void> {
    if (this.closed || this.server) return;
    const dir = dirname(this.sockPath);
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const st = lstatSync(dir);
      // the client refuses a dir that is not ours alone; so do we
      if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o077) !== 0) {
        this.log.warn('not hosting the corral-oci server: its dir is not private to this user', { dir });
        return;
      }
      const server = new OciServer(this.sockPath);
      if (await server.listen()) {
        if (this.closed) {
          await server.close();
          return;
        }
        this.server = server;
        this.log.info('hosting the corral-oci server', { socket: this.sockPath });
        return;
      }
      this.log.info('another corral-oci server listens; using it, will take over when it idles out', { socket: this.sockPath });
    } catch (e) {
      this.log.warn('cannot host the corral-oci server; the handler starts its own', { socket: this.sockPath, error: String(e) });
    }
    this.retry = setTimeout(() => void this.host(), RETRY_HOST_MS);
    this.retry.unref();
  }

  /** Run one CLI invocation of the handler in this process, output collected like a child's. */
  async run(args: string[]): Promise<RunResult> {
    const out: string[] = [];
    const err: string[] = [];
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (k.startsWith('CORRAL_') && v !== undefined) env[k] = v;
    const io: CliIo = {
      cwd: '/',
      pid: process.pid,
      env,
      stdout: (s) => void out.push(s),
      stderr: (s) => void err.push(s),
      readStdin: async () => '',
      spawnExecutor: () => {
        throw new InternalError(`corral-oci ${args.join(' ')}: verbs that start processes run in a child process, not in corrald`);
      },
      forwardSignals: () => () => {},
    };
    let code: number;
    try {
      code = await main(args, io);
    } catch (e) {
      err.push(`corral-oci: ${(e as Error)?.message ?? String(e)}\n`);
      code = 1;
    }
    return { code, signal: null, stdout: Buffer.from(out.join('')), stderr: Buffer.from(err.join('')), timedOut: false };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    const s = this.server;
    this.server = null;
    await s?.close();
  }
}
