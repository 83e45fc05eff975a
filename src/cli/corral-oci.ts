/**
 * `corral-oci`: runc's command-line surface over the runtime library. Each verb is
 * a thin option parser calling src/oci/runtime; errors go to stderr and, with
 * --log, to the log file (JSON lines with --log-format json, as containerd reads them).
 */
import { appendFileSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { constants } from 'node:os';
import { CorralError, InvalidArgumentError, UnimplementedError } from '../errors.ts';
import { parseArgs, bool, int, list, str } from './args.ts';
import type { FlagSpec, Parsed } from './args.ts';
import { RuntimeContext } from '../oci/runtime/context.ts';
import type { Logger } from '../oci/runtime/context.ts';
import { create, loadBundleSpec } from '../oci/runtime/create.ts';
import { start } from '../oci/runtime/start.ts';
import { kill } from '../oci/runtime/kill.ts';
import { deleteContainer } from '../oci/runtime/delete.ts';
import { exec } from '../oci/runtime/exec.ts';
import { list as listContainers, pause, ps, resume, stats, update } from '../oci/runtime/lifecycle.ts';
import { exampleSpec } from '../oci/spec/defaults.ts';
import { features } from '../oci/runtime/features.ts';
import type { Process } from '../oci/spec/types.ts';
import type { LinuxResources } from '../oci/cgroups/types.ts';
import type { Executor, ExecutorSpawner } from '../oci/runtime/executor.ts';

/**
 * Where one CLI invocation's I/O goes. The default is this process (stdio, cwd, signals); the
 * corral-oci server (oci-server.ts) runs `main` per client request with the client's cwd, frames
 * for stdout/stderr/stdin, and an executor spawner that has the client start corral-exec.
 */
export interface CliIo {
  /** Every relative path on the command line is resolved against this (never process.chdir). */
  cwd: string;
  /** The invoking process (recorded as the creator of a container while it is created). */
  pid: number;
  /** Environment of the invocation (the CORRAL_* and NOTIFY_SOCKET-like variables at least). */
  env: Record<string, string | undefined>;
  stdout(s: string): void;
  stderr(s: string): void;
  /** All of stdin as UTF-8 (`update --resources -`). */
  readStdin(): Promise<string>;
  /** Default: the context's local `startExecutor`. */
  spawnExecutor?: ExecutorSpawner;
  /** Forward the usual terminal/job-control signals to the executor's launcher until the returned function is called. */
  forwardSignals(executor: Executor): () => void;
  /**
   * For `run` of a terminal container without --console-socket: a console socket path whose pty master
   * the caller relays to its own stdio (the C client does; a plain Node process cannot receive fds).
   */
  consoleSocket?(): Promise<string>;
}

const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH'];

/** The invocation is this process. */
export function processIo(): CliIo {
  return {
    cwd: process.cwd(),
    pid: process.pid,
    env: process.env,
    stdout: (t) => { process.stdout.write(t); },
    stderr: (t) => { process.stderr.write(t); },
    readStdin: async () => readFileSync(0, 'utf8'),
    forwardSignals(executor) {
      const forward = (sig: NodeJS.Signals) => executor.launcher.kill(sig);
      for (const sig of FORWARDED) process.on(sig, forward);
      return () => { for (const sig of FORWARDED) process.off(sig, forward); };
    },
  };
}

const VERSION = '0.1.0';

const GLOBAL_FLAGS: FlagSpec[] = [
  { name: 'root', type: 'string', help: 'state directory (default /run/corral-oci)' },
  { name: 'log', type: 'string', help: 'log file (default stderr)' },
  { name: 'log-format', type: 'string', help: 'text or json' },
  { name: 'debug', type: 'bool', help: 'log debug messages' },
  { name: 'systemd-cgroup', type: 'bool', help: 'use the systemd cgroup driver (not supported)' },
  { name: 'rootless', type: 'string', help: 'accepted for compatibility' },
  { name: 'criu', type: 'string', help: 'accepted for compatibility (checkpointing is not supported)' },
  { name: 'help', alias: ['h'], type: 'bool' },
  { name: 'version', alias: ['v'], type: 'bool' },
];

const CREATE_FLAGS: FlagSpec[] = [
  { name: 'bundle', alias: ['b'], type: 'string', help: 'bundle directory (default: current directory)' },
  { name: 'pid-file', type: 'string', help: 'write the init pid here' },
  { name: 'console-socket', type: 'string', help: 'unix socket that receives the pty master' },
  { name: 'no-pivot', type: 'bool', help: 'use MS_MOVE + chroot instead of pivot_root' },
  { name: 'no-new-keyring', type: 'bool', help: 'do not create a session keyring' },
  { name: 'preserve-fds', type: 'int', help: 'pass N extra fds (3..3+N-1) to the container' },
];

class CliLogger implements Logger {
  private readonly file?: string;
  private readonly json: boolean;
  private readonly debugOn: boolean;
  private readonly io: CliIo;
  constructor(file: string | undefined, json: boolean, debug: boolean, io: CliIo) {
    this.file = file;
    this.json = json;
    this.debugOn = debug;
    this.io = io;
  }
  private write(level: string, msg: string, fields?: Record<string, unknown>): void {
    const line = this.json
      ? JSON.stringify({ level, msg, time: new Date().toISOString(), ...fields }) + '\n'
      : `${new Date().toISOString()} ${level}: ${msg}\n`;
    if (this.file) {
      try { appendFileSync(this.file, line); return; } catch { /* fall back to stderr */ }
    }
    if (level !== 'debug' || this.debugOn) this.io.stderr(this.json ? line : `corral-oci: ${level}: ${msg}\n`);
  }
  debug(m: string, f?: Record<string, unknown>) { if (this.debugOn) this.write('debug', m, f); }
  info(m: string, f?: Record<string, unknown>) { this.write('info', m, f); }
  warn(m: string, f?: Record<string, unknown>) { this.write('warning', m, f); }
  error(m: string, f?: Record<string, unknown>) { this.write('error', m, f); }
}

function needId(p: Parsed, verb: string): string {
  const id = p.positional[0];
  if (!id) throw new InvalidArgumentError(`"${verb}" requires a container id`);
  return id;
}

function printJson(io: CliIo, v: unknown): void {
  io.stdout(JSON.stringify(v, null, 2) + '\n');
}

type Verb = (ctx: RuntimeContext, args: string[], io: CliIo) => Promise<number | void>;

/** A path-valued flag, resolved against the invocation's cwd. */
function pathFlag(p: Parsed, name: string, io: CliIo): string | undefined {
  const v = str(p, name);
  return v === undefined ? undefined : resolve(io.cwd, v);
}

const verbs: Record<string, Verb> = {
  async create(ctx, argv, io) {
    const p = parseArgs(argv, CREATE_FLAGS);
    const { executor } = await create(ctx, createOpts(p, needId(p, 'create'), io));
    executor.close();
  },

  async start(ctx, argv) {
    await start(ctx, needId(parseArgs(argv, []), 'start'));
  },

  async run(ctx, argv, io) {
    const p = parseArgs(argv, [...CREATE_FLAGS, { name: 'detach', alias: ['d'], type: 'bool' }, { name: 'keep', type: 'bool' }, { name: 'no-subreaper', type: 'bool' }]);
    const id = needId(p, 'run');
    const detach = bool(p, 'detach');
    const opts = createOpts(p, id, io);
    if (!detach && !opts.consoleSocket && loadBundleSpec(opts.bundle).process?.terminal) {
      // Like runc run: the pty is ours to relay to this terminal.
      if (!io.consoleSocket) {
        throw new InvalidArgumentError('process.terminal is true: pass --console-socket, or run through bin/corral-oci (its client relays the terminal)');
      }
      opts.consoleSocket = await io.consoleSocket();
    }
    const { executor } = await create(ctx, { ...opts, parentMode: detach ? 'exit' : 'wait' });
    if (detach) {
      await start(ctx, id);
      executor.close();
      return 0;
    }
    const unforward = io.forwardSignals(executor);
    try {
      await start(ctx, id);
      const { code, signal } = await executor.launcherExit();
      return code ?? 128 + (signal ? osSignal(signal) : 0);
    } finally {
      unforward();
      if (!bool(p, 'keep')) await deleteContainer(ctx, id, { force: true });
    }
  },

  async state(ctx, argv, io) {
    const id = needId(parseArgs(argv, []), 'state');
    printJson(io, ctx.state(ctx.store.load(id)));
  },

  async kill(ctx, argv) {
    const p = parseArgs(argv, [{ name: 'all', alias: ['a'], type: 'bool' }]);
    kill(ctx, needId(p, 'kill'), p.positional[1], { all: bool(p, 'all') });
  },

  async delete(ctx, argv) {
    const p = parseArgs(argv, [{ name: 'force', alias: ['f'], type: 'bool' }]);
    if (p.positional.length === 0) throw new InvalidArgumentError('"delete" requires a container id');
    for (const id of p.positional) await deleteContainer(ctx, id, { force: bool(p, 'force') });
  },

  async exec(ctx, argv, io) {
    const p = parseArgs(argv, EXEC_FLAGS, { stopAtPositional: true });
    const id = needId(p, 'exec');
    const proc = execProcess(ctx, p, id, io);
    const detach = bool(p, 'detach');
    const started = await exec(ctx, id, {
      process: proc, detach, pidFile: pathFlag(p, 'pid-file', io), consoleSocket: pathFlag(p, 'console-socket', io), preserveFds: int(p, 'preserve-fds'),
    });
    if (detach) {
      started.executor.close();
      return 0;
    }
    const unforward = io.forwardSignals(started.executor);
    try {
      return await started.wait();
    } finally {
      unforward();
    }
  },

  async list(ctx, argv, io) {
    const p = parseArgs(argv, [{ name: 'format', alias: ['f'], type: 'string' }, { name: 'quiet', alias: ['q'], type: 'bool' }]);
    const all = listContainers(ctx);
    if (bool(p, 'quiet')) {
      for (const c of all) io.stdout(`${c.id}\n`);
    } else if (str(p, 'format') === 'json') {
      io.stdout(JSON.stringify(all) + '\n');
    } else {
      const rows = [['ID', 'PID', 'STATUS', 'BUNDLE', 'CREATED', 'OWNER'], ...all.map((c) => [c.id, String(c.pid), c.status, c.bundle, c.created, c.owner])];
      const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
      for (const r of rows) io.stdout(r.map((c, i) => c.padEnd(widths[i] + 3)).join('').trimEnd() + '\n');
    }
  },

  async ps(ctx, argv, io) {
    const p = parseArgs(argv, [{ name: 'format', alias: ['f'], type: 'string' }], { stopAtPositional: true });
    const id = needId(p, 'ps');
    const pids = ps(ctx, id);
    if (str(p, 'format') === 'json') {
      io.stdout(JSON.stringify(pids) + '\n');
      return;
    }
    const { execFileSync } = await import('node:child_process');
    const psArgs = p.positional.slice(1);
    const out = execFileSync('ps', psArgs.length ? psArgs : ['-ef'], { encoding: 'utf8', cwd: io.cwd });
    const [header, ...lines] = out.split('\n');
    const pidCol = header.trim().split(/\s+/).indexOf('PID');
    if (pidCol < 0) throw new InvalidArgumentError('ps output has no PID column; include it in the ps arguments');
    io.stdout(header + '\n');
    const set = new Set(pids.map(String));
    for (const l of lines) if (set.has(l.trim().split(/\s+/)[pidCol])) io.stdout(l + '\n');
  },

  async pause(ctx, argv) {
    await pause(ctx, needId(parseArgs(argv, []), 'pause'));
  },

  async resume(ctx, argv) {
    resume(ctx, needId(parseArgs(argv, []), 'resume'));
  },

  async update(ctx, argv, io) {
    const p = parseArgs(argv, UPDATE_FLAGS);
    const id = needId(p, 'update');
    const warnings = update(ctx, id, await updateResources(p, io));
    for (const w of warnings) ctx.logger.warn(w);
  },

  async events(ctx, argv, io) {
    const p = parseArgs(argv, [{ name: 'stats', type: 'bool' }, { name: 'interval', type: 'string' }]);
    const id = needId(p, 'events');
    const emit = () => io.stdout(JSON.stringify({ type: 'stats', id, data: stats(ctx, id) }) + '\n');
    if (bool(p, 'stats')) {
      emit();
      return;
    }
    const ms = parseDuration(str(p, 'interval') ?? '5s');
    for (;;) {
      const record = ctx.store.load(id);
      if (ctx.status(record) === 'stopped') return;
      emit();
      await new Promise((r) => setTimeout(r, ms));
    }
  },

  async features(_ctx, _argv, io) {
    printJson(io, features());
  },

  async spec(_ctx, argv, io) {
    const p = parseArgs(argv, [{ name: 'bundle', alias: ['b'], type: 'string' }, { name: 'rootless', type: 'bool' }]);
    const file = join(resolve(io.cwd, str(p, 'bundle') ?? '.'), 'config.json');
    if (existsSync(file)) throw new InvalidArgumentError(`${file} already exists; remove it first`);
    writeFileSync(file, JSON.stringify(exampleSpec({ rootless: bool(p, 'rootless') }), null, '\t') + '\n');
  },
};
verbs.ls = verbs.list;

const EXEC_FLAGS: FlagSpec[] = [
  { name: 'process', alias: ['p'], type: 'string', help: 'process.json to run' },
  { name: 'tty', alias: ['t'], type: 'bool' },
  { name: 'console-socket', type: 'string' },
  { name: 'pid-file', type: 'string' },
  { name: 'detach', alias: ['d'], type: 'bool' },
  { name: 'cwd', type: 'string' },
  { name: 'env', alias: ['e'], type: 'list' },
  { name: 'user', alias: ['u'], type: 'string', help: 'UID[:GID]' },
  { name: 'additional-gids', alias: ['g'], type: 'list' },
  { name: 'cap', alias: ['c'], type: 'list' },
  { name: 'no-new-privs', type: 'bool' },
  { name: 'preserve-fds', type: 'int' },
  { name: 'process-label', type: 'string' },
  { name: 'apparmor', type: 'string' },
  { name: 'ignore-paused', type: 'bool' },
  { name: 'cgroup', type: 'list' },
];

const UPDATE_FLAGS: FlagSpec[] = [
  { name: 'resources', alias: ['r'], type: 'string', help: 'resources JSON file, or - for stdin' },
  { name: 'memory', type: 'string' },
  { name: 'memory-swap', type: 'string' },
  { name: 'memory-reservation', type: 'string' },
  { name: 'kernel-memory', type: 'string' },
  { name: 'kernel-memory-tcp', type: 'string' },
  { name: 'cpu-shares', type: 'string' },
  { name: 'cpu-quota', type: 'string' },
  { name: 'cpu-period', type: 'string' },
  { name: 'cpu-rt-period', type: 'string' },
  { name: 'cpu-rt-runtime', type: 'string' },
  { name: 'cpuset-cpus', type: 'string' },
  { name: 'cpuset-mems', type: 'string' },
  { name: 'pids-limit', type: 'string' },
  { name: 'blkio-weight', type: 'string' },
];

function createOpts(p: Parsed, id: string, io: CliIo) {
  if (bool(p, 'no-new-keyring')) { /* we never create a session keyring: nothing to do */ }
  return {
    id,
    bundle: resolve(io.cwd, str(p, 'bundle') ?? '.'),
    pidFile: pathFlag(p, 'pid-file', io),
    consoleSocket: pathFlag(p, 'console-socket', io),
    noPivot: bool(p, 'no-pivot'),
    preserveFds: int(p, 'preserve-fds'),
    creatorPid: io.pid,
  };
}

function execProcess(ctx: RuntimeContext, p: Parsed, id: string, io: CliIo): Process {
  const file = str(p, 'process');
  if (file) {
    try {
      return JSON.parse(readFileSync(resolve(io.cwd, file), 'utf8')) as Process;
    } catch (e) {
      throw new InvalidArgumentError(`--process ${file}: ${(e as Error).message}`);
    }
  }
  const record = ctx.store.load(id);
  const base = record.spec.process!;
  const args = p.positional.slice(1);
  if (args.length === 0) throw new InvalidArgumentError('exec needs a command (or --process FILE)');
  const proc: Process = structuredClone({ ...base, args, terminal: bool(p, 'tty'), consoleSize: undefined });
  if (str(p, 'cwd')) proc.cwd = str(p, 'cwd')!;
  for (const e of list(p, 'env')) {
    const key = e.split('=')[0];
    proc.env = [...(proc.env ?? []).filter((x) => x.split('=')[0] !== key), e];
  }
  const user = str(p, 'user');
  if (user) {
    const [uid, gid] = user.split(':');
    if (!/^\d+$/.test(uid) || (gid !== undefined && !/^\d+$/.test(gid))) throw new InvalidArgumentError(`--user must be UID[:GID], got "${user}"`);
    proc.user = { ...proc.user, uid: Number(uid), gid: gid === undefined ? proc.user.gid : Number(gid) };
  }
  const gids = list(p, 'additional-gids');
  if (gids.length) proc.user.additionalGids = gids.map(Number);
  const caps = list(p, 'cap');
  if (caps.length) {
    const c = proc.capabilities ?? {};
    const add = (s?: string[]) => [...new Set([...(s ?? []), ...caps])];
    proc.capabilities = { ...c, bounding: add(c.bounding), effective: add(c.effective), permitted: add(c.permitted), inheritable: add(c.inheritable), ambient: add(c.ambient) };
  }
  if (bool(p, 'no-new-privs')) proc.noNewPrivileges = true;
  if (str(p, 'apparmor')) proc.apparmorProfile = str(p, 'apparmor');
  if (str(p, 'process-label')) proc.selinuxLabel = str(p, 'process-label');
  return proc;
}

function parseSize(v: string, flag: string): number {
  const m = /^(-?\d+)([kmgt]?)b?$/i.exec(v.trim());
  if (!m) throw new InvalidArgumentError(`--${flag}: invalid size "${v}"`);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Number(m[1]) * mult;
}

async function updateResources(p: Parsed, io: CliIo): Promise<LinuxResources> {
  const file = str(p, 'resources');
  let r: LinuxResources = {};
  if (file) {
    const text = file === '-' ? await io.readStdin() : readFileSync(resolve(io.cwd, file), 'utf8');
    try {
      r = JSON.parse(text) as LinuxResources;
    } catch (e) {
      throw new InvalidArgumentError(`--resources: invalid JSON: ${(e as Error).message}`);
    }
  }
  const num = (f: string) => {
    const v = str(p, f);
    if (v === undefined) return undefined;
    if (!/^-?\d+$/.test(v)) throw new InvalidArgumentError(`--${f}: expected an integer, got "${v}"`);
    return Number(v);
  };
  const size = (f: string) => (str(p, f) === undefined ? undefined : parseSize(str(p, f)!, f));
  const mem = { limit: size('memory'), swap: size('memory-swap'), reservation: size('memory-reservation'), kernel: size('kernel-memory'), kernelTCP: size('kernel-memory-tcp') };
  const cpu = { shares: num('cpu-shares'), quota: num('cpu-quota'), period: num('cpu-period'), realtimePeriod: num('cpu-rt-period'), realtimeRuntime: num('cpu-rt-runtime'), cpus: str(p, 'cpuset-cpus'), mems: str(p, 'cpuset-mems') };
  const clean = <T extends object>(o: T) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
  if (Object.values(mem).some((v) => v !== undefined)) r.memory = { ...r.memory, ...clean(mem) };
  if (Object.values(cpu).some((v) => v !== undefined)) r.cpu = { ...r.cpu, ...clean(cpu) };
  if (num('pids-limit') !== undefined) r.pids = { limit: num('pids-limit')! };
  if (num('blkio-weight') !== undefined) r.blockIO = { ...r.blockIO, weight: num('blkio-weight') };
  return r;
}

function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(s);
  if (!m) throw new InvalidArgumentError(`invalid duration "${s}" (e.g. 500ms, 5s, 1m)`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60000, h: 3600000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
}

function osSignal(name: string): number {
  return (constants.signals as Record<string, number>)[name] ?? 0;
}

const USAGE = `corral-oci — an OCI runtime (runc-compatible command line)

Usage: corral-oci [global options] COMMAND [options] [arguments]

Commands:
   create    create a container from a bundle (init waits for start)
   start     start a created container
   run       create and start; wait for it unless --detach
   state     print the container's OCI state as JSON
   kill      send a signal to the container (--all: every process)
   delete    delete a stopped container (--force: kill it first)
   exec      run a new process in a container
   list, ls  list containers (--format json, --quiet)
   ps        list the container's processes (--format json)
   pause     freeze every process of the container
   resume    thaw a paused container
   update    change resource limits (--resources FILE|-, or flags)
   events    print container stats (--stats once, or every --interval)
   features  print what this runtime supports (JSON)
   spec      write a template config.json

Global options:
${''}`;

export async function main(argv: string[], io: CliIo = processIo()): Promise<number> {
  const g = parseArgs(argv, GLOBAL_FLAGS, { stopAtPositional: true });
  const logger = new CliLogger(pathFlag(g, 'log', io), str(g, 'log-format') === 'json', bool(g, 'debug'), io);
  if (bool(g, 'version')) {
    io.stdout(`corral-oci version ${VERSION}\nspec: 1.2.0\n`);
    return 0;
  }
  const [verb, ...rest] = g.positional;
  if (bool(g, 'help') || !verb || verb === 'help') {
    io.stdout(USAGE + GLOBAL_FLAGS.map((f) => `   --${f.name}\t${f.help ?? ''}`).join('\n') + '\n');
    return verb || bool(g, 'help') ? 0 : 1;
  }
  const fn = verbs[verb];
  try {
    if (!fn) throw new InvalidArgumentError(`unknown command "${verb}"; see corral-oci --help`);
    if (bool(g, 'systemd-cgroup')) {
      throw new UnimplementedError('--systemd-cgroup: the systemd cgroup driver is not supported; use the cgroupfs driver (omit the flag)');
    }
    const ctx = new RuntimeContext({ root: pathFlag(g, 'root', io), logger, spawnExecutor: io.spawnExecutor });
    logger.debug(`${verb} ${rest.join(' ')}`);
    const code = await fn(ctx, rest, io);
    return typeof code === 'number' ? code : 0;
  } catch (e) {
    const msg = e instanceof CorralError ? e.message : e instanceof Error ? `internal error: ${e.stack ?? e.message}` : String(e);
    logger.error(msg);
    if (str(g, 'log')) io.stderr(`corral-oci: ${msg}\n`);
    return 1;
  }
}

if (import.meta.main) {
  main(process.argv.slice(2)).then((code) => process.exit(code), (e) => {
    process.stderr.write(`corral-oci: ${e?.stack ?? e}\n`);
    process.exit(1);
  });
}
