/**
 * Executing one CNI plugin: find the binary in the plugin directories, run it with the CNI_*
 * environment and the config on stdin, and turn its stdout into a result or a typed error.
 *
 * Protocol (spec section "Execution protocol"): the plugin reads the config from stdin, gets its
 * parameters from CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS and CNI_PATH,
 * prints a result (ADD, VERSION) or nothing (DEL, CHECK, STATUS, GC) and exits 0; on failure it
 * prints an error document {cniVersion, code, msg, details} and exits non-zero.
 */

import { spawn } from 'node:child_process';
import { access, constants, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CorralError,
  DeadlineExceededError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  type ErrorCode,
  fromNodeError,
} from '../errors.ts';
import { asErrorDocument } from './result.ts';
import { CNI_ERROR, type CniCommand } from './types.ts';

export const DEFAULT_PLUGIN_DIRS = ['/opt/cni/bin', '/usr/lib/cni'];
export const DEFAULT_TIMEOUT_MS = 60_000;
const MAX_STDOUT = 4 << 20;
const MAX_STDERR = 64 << 10;

const cniCodeToCorral: Record<number, ErrorCode> = {
  [CNI_ERROR.INCOMPATIBLE_VERSION]: 'FAILED_PRECONDITION',
  [CNI_ERROR.UNSUPPORTED_FIELD]: 'INVALID_ARGUMENT',
  [CNI_ERROR.UNKNOWN_CONTAINER]: 'NOT_FOUND',
  [CNI_ERROR.INVALID_ENV]: 'INVALID_ARGUMENT',
  [CNI_ERROR.IO_FAILURE]: 'INTERNAL',
  [CNI_ERROR.DECODING_FAILURE]: 'INVALID_ARGUMENT',
  [CNI_ERROR.INVALID_NETWORK_CONFIG]: 'INVALID_ARGUMENT',
  [CNI_ERROR.TRY_AGAIN_LATER]: 'UNAVAILABLE',
  [CNI_ERROR.PLUGIN_NOT_AVAILABLE]: 'UNAVAILABLE',
  [CNI_ERROR.LIMITED_CONNECTIVITY]: 'UNAVAILABLE',
};

/**
 * A plugin reported an error document (or failed without one: `cniCode` is then undefined).
 * `code` is the Corral code the CNI code maps to (1 → FAILED_PRECONDITION, 3 → NOT_FOUND,
 * 2/4/6/7 → INVALID_ARGUMENT, 11/50/51 → UNAVAILABLE, others → INTERNAL).
 */
export class CniPluginError extends CorralError {
  override readonly code: ErrorCode;
  readonly plugin: string;
  readonly command: CniCommand;
  readonly cniCode: number | undefined;
  readonly msg: string;
  readonly details: string | undefined;
  readonly stderr: string;
  readonly exitCode: number | null;
  constructor(init: {
    plugin: string;
    command: CniCommand;
    cniCode?: number;
    msg: string;
    details?: string;
    stderr?: string;
    exitCode?: number | null;
    network?: string;
  }) {
    const where = `CNI plugin "${init.plugin}" ${init.command}${init.network ? ` (network ${init.network})` : ''}`;
    const codePart = init.cniCode === undefined ? '' : ` [CNI error ${init.cniCode}]`;
    const detail = init.details ? `: ${init.details}` : '';
    const stderrTail = !init.details && init.cniCode === undefined && init.stderr ? `; stderr: ${init.stderr.trim().slice(-500)}` : '';
    super(`${where} failed${codePart}: ${init.msg}${detail}${stderrTail}`);
    this.code = (init.cniCode !== undefined ? cniCodeToCorral[init.cniCode] : undefined) ?? 'INTERNAL';
    this.plugin = init.plugin;
    this.command = init.command;
    this.cniCode = init.cniCode;
    this.msg = init.msg;
    this.details = init.details;
    this.stderr = init.stderr ?? '';
    this.exitCode = init.exitCode ?? null;
  }
}

/** Find the executable for plugin `type`: the first of `dirs` that holds it. */
export async function findPlugin(type: string, dirs: readonly string[]): Promise<string> {
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.+-]*$/.test(type)) {
    throw new InvalidArgumentError(`CNI plugin type ${JSON.stringify(type)} is not a plain binary name`);
  }
  let notExecutable: string | undefined;
  for (const dir of dirs) {
    const path = join(dir, type);
    try {
      const st = await stat(path);
      if (!st.isFile()) continue;
    } catch {
      continue;
    }
    try {
      await access(path, constants.X_OK);
      return path;
    } catch {
      notExecutable ??= path;
    }
  }
  if (notExecutable) throw new PermissionDeniedError(`CNI plugin ${notExecutable} is not executable; chmod +x it`);
  throw new NotFoundError(
    `CNI plugin "${type}" not found in ${dirs.join(':') || '(no plugin directories)'}; install it (Debian: containernetworking-plugins) or fix the plugin directories`,
  );
}

/** CNI_ARGS encoding: "K1=V1;K2=V2". */
export function encodeCniArgs(args: Record<string, string> | undefined): string {
  if (!args) return '';
  return Object.entries(args)
    .map(([k, v]) => {
      if (!k || /[=;]/.test(k)) throw new InvalidArgumentError(`CNI_ARGS key ${JSON.stringify(k)} must be non-empty without "=" or ";"`);
      if (/;/.test(v)) throw new InvalidArgumentError(`CNI_ARGS value for ${k} must not contain ";"`);
      return `${k}=${v}`;
    })
    .join(';');
}

export interface InvokeRequest {
  /** Plugin type (binary name). */
  type: string;
  command: CniCommand;
  /** Config written to stdin. */
  config: unknown;
  pluginDirs: readonly string[];
  containerId?: string;
  netns?: string;
  ifName?: string;
  /** Already encoded CNI_ARGS. */
  cniArgs?: string;
  timeoutMs?: number;
  /** Extra environment; PATH and the rest of process.env are inherited (CNI_* from it are dropped). */
  env?: Record<string, string>;
  /** For messages. */
  network?: string;
  /** Default: spawnPlugin. */
  runner?: PluginRunner;
}

/** What running a plugin process yields (stdout and stderr as UTF-8). */
export interface PluginRun {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/**
 * How a plugin process is run: `spawnPlugin` (a child of this process) by default; a daemon may
 * pass a cheaper way (corrald runs them through its plan server). On timeout the plugin and what
 * it started are killed and `timedOut` is set; a plugin that cannot be started rejects.
 */
export type PluginRunner = (path: string, env: Record<string, string>, stdin: string, timeoutMs: number) => Promise<PluginRun>;

export const spawnPlugin: PluginRunner = (path, env, stdin, timeoutMs) =>
  new Promise<PluginRun>((resolve, reject) => {
    // Own process group, so a timeout also kills whatever the plugin started (which would
    // otherwise keep stdout open).
    const child = spawn(path, [], { env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outLen = 0;
    let errLen = 0;
    let timedOut = false;
    let spawnError: Error | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, timeoutMs);
    child.stdout.on('data', (b: Buffer) => {
      if (outLen < MAX_STDOUT) out.push(b);
      outLen += b.length;
    });
    child.stderr.on('data', (b: Buffer) => {
      if (errLen < MAX_STDERR) err.push(b);
      errLen += b.length;
    });
    // A plugin may exit without reading stdin (EPIPE); its exit status tells what happened.
    child.stdin.on('error', () => {});
    child.on('error', (e) => {
      spawnError = e;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (spawnError) return reject(fromNodeError(spawnError, `run CNI plugin ${path}`));
      resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), timedOut });
    });
    child.stdin.end(stdin);
  });

export interface InvokeOutput {
  /** Parsed stdout, or undefined when the plugin printed nothing. */
  stdout: unknown;
  stderr: string;
  path: string;
}

/**
 * Run one plugin. Resolves with its (parsed) stdout on exit 0; rejects with a CniPluginError for
 * error documents and failures, DeadlineExceededError on timeout (the plugin is SIGKILLed),
 * NotFoundError/PermissionDeniedError when the binary is missing/not executable.
 */
export async function invokePlugin(req: InvokeRequest): Promise<InvokeOutput> {
  const path = await findPlugin(req.type, req.pluginDirs);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('CNI_')) env[k] = v;
  env.PATH ??= '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
  Object.assign(env, req.env ?? {});
  env.CNI_COMMAND = req.command;
  env.CNI_PATH = req.pluginDirs.join(':');
  if (req.command !== 'VERSION') {
    if (req.containerId !== undefined) env.CNI_CONTAINERID = req.containerId;
    if (req.netns !== undefined) env.CNI_NETNS = req.netns;
    if (req.ifName !== undefined) env.CNI_IFNAME = req.ifName;
    env.CNI_ARGS = req.cniArgs ?? '';
  }
  const input = JSON.stringify(req.config);
  const timeoutMs = req.timeoutMs ?? DEFAULT_TIMEOUT_MS;

  const { code, signal, stdout, stderr, timedOut } = await (req.runner ?? spawnPlugin)(path, env, input, timeoutMs);
  if (timedOut) {
    throw new DeadlineExceededError(
      `CNI plugin "${req.type}" ${req.command}${req.network ? ` (network ${req.network})` : ''} did not finish within ${timeoutMs} ms and was killed`,
    );
  }
  let parsed: unknown;
  const text = stdout.trim();
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
  }
  if (code !== 0) {
    const doc = asErrorDocument(parsed);
    if (doc) {
      throw new CniPluginError({
        plugin: req.type, command: req.command, cniCode: doc.code, msg: doc.msg || '(no message)', details: doc.details,
        stderr, exitCode: code, network: req.network,
      });
    }
    throw new CniPluginError({
      plugin: req.type, command: req.command,
      msg: signal ? `killed by ${signal}` : `exit status ${code}${text ? `, output: ${text.slice(0, 500)}` : ''}`,
      stderr, exitCode: code, network: req.network,
    });
  }
  if (text && parsed === undefined) {
    throw new InternalError(`CNI plugin "${req.type}" ${req.command} printed output that is not JSON: ${text.slice(0, 500)}`);
  }
  // Some plugins print an error document and still exit 0; treat it as the error it is.
  const doc = asErrorDocument(parsed);
  if (doc && doc.code !== 0) {
    throw new CniPluginError({
      plugin: req.type, command: req.command, cniCode: doc.code, msg: doc.msg || '(no message)', details: doc.details,
      stderr, exitCode: code, network: req.network,
    });
  }
  return { stdout: parsed, stderr, path };
}
