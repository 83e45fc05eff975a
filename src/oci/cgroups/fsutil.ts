/** Small synchronous helpers for reading and writing cgroup interface files. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CorralError, FailedPreconditionError, fromErrno, fromNodeError, InternalError } from '../../errors.ts';
import { isCgroupFs } from './detect.ts';
import { UNLIMITED } from './types.ts';

// libuv opens every file O_CLOEXEC.
const { O_WRONLY, O_TRUNC } = fs.constants;

function errCode(err: unknown): string | undefined {
  const c = (err as { code?: unknown })?.code;
  return typeof c === 'string' ? c : undefined;
}

/** Read a file; undefined when it does not exist. */
export function readOptional(dir: string, file: string): string | undefined {
  try {
    return fs.readFileSync(path.join(dir, file), 'utf8');
  } catch (err) {
    if (errCode(err) === 'ENOENT' || errCode(err) === 'ENOTDIR') return undefined;
    throw fromNodeError(err, `read ${path.join(dir, file)}`);
  }
}

export function readRequired(dir: string, file: string): string {
  try {
    return fs.readFileSync(path.join(dir, file), 'utf8');
  } catch (err) {
    throw fromNodeError(err, `read ${path.join(dir, file)}`);
  }
}

export function fileExists(dir: string, file: string): boolean {
  return fs.existsSync(path.join(dir, file));
}

/** Node reports kernel-internal errnos such as ENOTSUPP (524) as "Unknown system error". */
function errnoOf(err: unknown): string {
  const code = errCode(err);
  if (code && /^E[A-Z0-9]+$/.test(code)) return code;
  const n = (err as { errno?: unknown })?.errno;
  if (n === -524 || n === 524) return 'ENOTSUPP';
  return code ?? 'EIO';
}

const writeHints: Record<string, string> = {
  EINVAL: 'the kernel rejected the value (out of range, or inconsistent with a related or parent setting)',
  EBUSY: 'the cgroup is in use (e.g. usage is above the new limit, or it has children)',
  ENOSPC: 'no CPUs/memory nodes assigned (cpuset) or a hierarchy limit was reached',
  EPERM: 'not permitted (the parent cgroup does not grant it, or a capability is missing)',
  ENOENT: 'the interface file does not exist: the controller is not enabled or the kernel does not support it',
  EOPNOTSUPP: 'the kernel does not support this setting',
  ENOTSUPP: 'the kernel does not support this setting',
};

/**
 * Write `value` to a cgroup file with a single write(2), without O_CREAT (a missing
 * interface file is an error, as on the real cgroupfs).
 */
export function writeFile(dir: string, file: string, value: string): void {
  const p = path.join(dir, file);
  let fd: number;
  try {
    fd = fs.openSync(p, O_WRONLY | O_TRUNC);
  } catch (err) {
    throw cgroupWriteError(err, p, value);
  }
  try {
    const buf = Buffer.from(value);
    const n = fs.writeSync(fd, buf, 0, buf.length);
    if (n !== buf.length) throw new InternalError(`write ${JSON.stringify(value)} to ${p}: short write (${n} of ${buf.length} bytes)`);
  } catch (err) {
    throw cgroupWriteError(err, p, value);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * writeFile without blocking the thread: for cgroup.procs, whose first write in a burst waits for
 * an RCU grace period on cgroup v1 (tens of ms on some kernels), which a daemon's event loop
 * should not sit through.
 */
export async function writeFileAsync(dir: string, file: string, value: string): Promise<void> {
  const p = path.join(dir, file);
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(p, O_WRONLY | O_TRUNC);
  } catch (err) {
    throw cgroupWriteError(err, p, value);
  }
  try {
    const buf = Buffer.from(value);
    const { bytesWritten } = await fh.write(buf, 0, buf.length);
    if (bytesWritten !== buf.length) throw new InternalError(`write ${JSON.stringify(value)} to ${p}: short write (${bytesWritten} of ${buf.length} bytes)`);
  } catch (err) {
    throw cgroupWriteError(err, p, value);
  } finally {
    await fh.close();
  }
}

function cgroupWriteError(err: unknown, p: string, value: string): CorralError {
  if (err instanceof CorralError) return err;
  const errno = errnoOf(err);
  const e = fromErrno(errno === 'ENOTSUPP' ? 'EOPNOTSUPP' : errno, `write ${JSON.stringify(value)} to ${p}`, writeHints[errno], err);
  e.errno = errno;
  return e;
}

/** Whether err is a CorralError carrying one of the given errno names. */
export function hasErrno(err: unknown, ...names: string[]): boolean {
  return err instanceof CorralError && err.errno !== undefined && names.includes(err.errno);
}

/** Parse an unsigned integer file value; "max" → UNLIMITED. */
export function parseUint(s: string | undefined): number {
  if (s === undefined) return 0;
  const t = s.trim();
  if (t === 'max') return UNLIMITED;
  const n = Number(t);
  return Number.isFinite(n) ? n : 0;
}

/** "key value" lines (memory.stat, cpu.stat, cgroup.events) → record. */
export function parseFlatKeyed(text: string | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  if (!text) return out;
  for (const line of text.split('\n')) {
    const parts = line.trim().split(/\s+/);
    if (parts.length !== 2) continue;
    out[parts[0]] = parseUint(parts[1]);
  }
  return out;
}

/** Space-separated numbers (cpuacct.usage_percpu). */
export function parseNumberList(text: string | undefined): number[] {
  if (!text) return [];
  return text.trim().split(/\s+/).filter(Boolean).map(Number);
}

/** PIDs in a cgroup.procs file. */
export function readProcs(dir: string): number[] {
  const t = readOptional(dir, 'cgroup.procs');
  if (!t) return [];
  return t.split('\n').filter(Boolean).map(Number);
}

/** Child cgroup directories of dir (not following symlinks). */
export function childDirs(dir: string): string[] {
  let ents: fs.Dirent[];
  try {
    ents = fs.readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    if (errCode(err) === 'ENOENT') return [];
    throw fromNodeError(err, `list ${dir}`);
  }
  return ents.filter((e) => e.isDirectory()).map((e) => path.join(dir, e.name));
}

/** dir and all descendant directories, deepest first (post-order). */
export function treePostOrder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const c of childDirs(d)) walk(c);
    out.push(d);
  };
  walk(dir);
  return out;
}

/** All PIDs in dir and its descendants. */
export function procsRecursive(dir: string): number[] {
  const seen = new Set<number>();
  for (const d of treePostOrder(dir)) for (const p of readProcs(d)) seen.add(p);
  return [...seen].sort((a, b) => a - b);
}

let sleepCell: Int32Array | undefined; // created lazily: module scope must stay snapshot-safe
/** Block the thread for ms milliseconds (used only by synchronous kill paths). */
export function sleepSync(ms: number): void {
  Atomics.wait((sleepCell ??= new Int32Array(new SharedArrayBuffer(4))), 0, 0, ms);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Send a signal, ignoring processes that are already gone. */
export function signalPid(pid: number, signal: NodeJS.Signals | number): void {
  try {
    process.kill(pid, signal);
  } catch (err) {
    if (errCode(err) !== 'ESRCH') throw fromNodeError(err, `send ${String(signal)} to pid ${pid}`);
  }
}

/**
 * rmdir a cgroup tree deepest-first. Real cgroupfs directories are removed with
 * rmdir only (EBUSY is retried a few times: exiting tasks linger briefly). On a
 * non-cgroup file system (a fake cgroupfs in tests) the plain files are removed too.
 */
export function removeCgroupTree(dir: string): void {
  const fake = fs.existsSync(dir) && !isCgroupFs(dir);
  for (const d of treePostOrder(dir)) {
    for (let attempt = 0; ; attempt++) {
      try {
        fs.rmdirSync(d);
        break;
      } catch (err) {
        const code = errCode(err);
        if (code === 'ENOENT') break;
        if (code === 'ENOTEMPTY' && fake) {
          for (const f of fs.readdirSync(d)) fs.rmSync(path.join(d, f), { force: true });
          continue;
        }
        if (code === 'EBUSY' && attempt < 50) {
          sleepSync(10);
          continue;
        }
        if (code === 'EBUSY') {
          throw new FailedPreconditionError(
            `remove cgroup ${d}: EBUSY; it still has processes (${readProcs(d).join(' ') || 'none listed'}) or child cgroups`,
            { cause: err, errno: 'EBUSY' },
          );
        }
        throw fromNodeError(err, `remove cgroup ${d}`);
      }
    }
  }
}

/** mkdir -p; returns the directories that were created, outermost first. */
export function mkdirAll(dir: string): string[] {
  const created: string[] = [];
  const missing: string[] = [];
  let d = dir;
  while (!fs.existsSync(d)) {
    missing.unshift(d);
    const up = path.dirname(d);
    if (up === d) break;
    d = up;
  }
  for (const m of missing) {
    try {
      fs.mkdirSync(m);
      created.push(m);
    } catch (err) {
      if (errCode(err) !== 'EEXIST') throw fromNodeError(err, `create cgroup directory ${m}`);
    }
  }
  return created;
}
