/**
 * `create`: validate config.json, reserve the id, set up cgroups, start the executor
 * with the compiled plan, finish the handshake (id maps, cgroup, hooks) and leave the
 * init blocked on its start fifo. Any failure undoes everything it did.
 */
import { existsSync, readFileSync, rmdirSync, statSync, writeFileSync, renameSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { CorralError, InvalidArgumentError, NotFoundError, SpecError, UnimplementedError, fromNodeError } from '../../errors.ts';
import { compileCreatePlan } from '../plan/compile.ts';
import type { CgroupMountSource } from '../plan/compile.ts';
import { SYNC } from '../plan/ops.ts';
import { validateSpec } from '../spec/validate.ts';
import { effectiveResources } from '../spec/device-rules.ts';
import type { Spec } from '../spec/types.ts';
import type { RuntimeContext } from './context.ts';
import type { Executor } from './executor.ts';
import { runHooks } from './hooks.ts';
import { findExecutableInRoot } from './resolve-in-root.ts';
import { processStartTime, validateId } from './state-store.ts';
import type { ContainerRecord } from './state-store.ts';
import { cgroupMountSources } from './cgroup-view.ts';
import { mountPointOf, sharesHostMountNs, unmountUnder } from './host-mounts.ts';
import { propagationFlags } from '../spec/mount-options.ts';
import { defaultCgroupsPath } from '../cgroups/index.ts';

export interface CreateOptions {
  id: string;
  bundle: string;
  pidFile?: string;
  consoleSocket?: string;
  noPivot?: boolean;
  noNewKeyring?: boolean;
  /** Extra fds (in the caller) that become the container's fds 3, 4, ... */
  preserveFds?: number;
  /** Container stdio (default: inherit the caller's). */
  stdio?: Array<'inherit' | 'ignore' | 'pipe' | number>;
  /** "wait": the executor stays as the init's parent and exits with its status (used by `run`). */
  parentMode?: 'exit' | 'wait';
  /**
   * The pid recorded as the creator while creating (default: this process). The corral-oci server
   * passes its client's pid, so a create whose caller was killed is seen as such by state/delete.
   */
  creatorPid?: number;
}

export interface Created {
  record: ContainerRecord;
  executor: Executor;
}

/** Read and validate <bundle>/config.json. */
export function loadBundleSpec(bundle: string): Spec {
  const file = join(bundle, 'config.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`${file} not found: --bundle must name a directory containing config.json`);
    throw fromNodeError(e, `read ${file}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SpecError('config.json', `is not valid JSON: ${(e as Error).message}`);
  }
  return validateSpec(json, { requireProcess: true });
}

function checkRuntimeSupport(spec: Spec): void {
  if (spec.linux?.seccomp?.listenerPath) {
    throw new UnimplementedError('linux.seccomp.listenerPath: seccomp user notification is not supported by this runtime yet');
  }
}

export async function create(ctx: RuntimeContext, opts: CreateOptions): Promise<Created> {
  const t0 = performance.now();
  let last = t0;
  const ms: Record<string, number> = {};
  /** Phase timings, logged at debug level when the create ends (what a profile starts from). */
  const mark = (phase: string) => {
    const t = performance.now();
    ms[phase] = Math.round((t - last) * 100) / 100;
    last = t;
  };
  const id = validateId(opts.id);
  const bundle = resolve(opts.bundle);
  const spec = loadBundleSpec(bundle);
  checkRuntimeSupport(spec);
  const rootfs = isAbsolute(spec.root!.path) ? spec.root!.path : resolve(bundle, spec.root!.path);
  try {
    if (!statSync(rootfs).isDirectory()) throw new SpecError('root.path', `${rootfs} is not a directory`);
  } catch (e) {
    if (e instanceof CorralError) throw e;
    throw new SpecError('root.path', `${rootfs} does not exist`);
  }
  const proc = spec.process!;
  if (!findExecutableInRoot(rootfs, proc.args![0], proc.env ?? [], proc.cwd)) {
    throw new SpecError('process.args[0]', `executable "${proc.args![0]}" was not found in the container (PATH and cwd of process, inside ${rootfs})`);
  }
  if (proc.terminal && !opts.consoleSocket) {
    throw new InvalidArgumentError('process.terminal is true: pass --console-socket so the pty master can be handed to the caller');
  }
  if (opts.consoleSocket && !proc.terminal) {
    throw new InvalidArgumentError('--console-socket was given but process.terminal is false in config.json');
  }

  const record: ContainerRecord = {
    id, bundle, rootfs, pid: 0, pidStartTime: '', phase: 'creating', creatorPid: opts.creatorPid ?? process.pid, created: new Date().toISOString(),
    owner: 'root', cgroupsPath: spec.linux?.cgroupsPath || defaultCgroupsPath(id), started: false, spec,
  };
  // A relative cgroupsPath is relative to the caller's cgroup (as with runc, which runs in it).
  if (!record.cgroupsPath.startsWith('/')) record.cgroupRelativeTo = callerCgroup(record.creatorPid);
  ctx.store.reserve(record);
  mark('validate+reserve');
  const cg = ctx.cgroup(record);
  let executor: Executor | undefined;
  let createdCgroupDirs: string[] = [];
  try {
    const fifo = ctx.store.fifo(id);
    createdCgroupDirs = missingAncestors(cg.dirs());
    cg.create();
    const set = cg.set(effectiveResources(spec));
    for (const w of set.warnings) ctx.logger.warn(w);
    mark('cgroup create+set');
    const mounts: CgroupMountSource[] = cgroupMountSources(cg);
    const plan = compileCreatePlan({
      spec, bundle, rootfs, parentMode: opts.parentMode ?? 'exit', startFifo: fifo, consoleSocket: opts.consoleSocket,
      noPivot: opts.noPivot, preserveFds: opts.preserveFds, cgroupMode: cg.mode === 'v2' ? 'v2' : 'v1', cgroupMounts: mounts,
      rootfsParentMount: propagationFlags(spec.linux?.rootfsPropagation) !== undefined ? mountPointOf(rootfs) : undefined,
      deviceFilter: set.deviceProgram ? { cgroupDir: cg.dirs()[0], program: set.deviceProgram } : undefined,
    });
    for (const w of plan.warnings ?? []) ctx.logger.warn(w);
    mark('compile');
    const preserve = Array.from({ length: opts.preserveFds ?? 0 }, (_, i) => 3 + i);
    executor = ctx.spawnExecutor({ plan, stdio: opts.stdio ?? ['inherit', 'inherit', 'inherit'], preserveFds: preserve });
    const pid = await executor.childPid();
    mark('executor started');
    record.pid = pid;
    record.pidStartTime = processStartTime(pid) ?? '';
    ctx.store.save(record);
    writeIdMaps(spec, pid);
    await cg.apply(pid);
    mark('cgroup attach');
    if (proc.oomScoreAdj !== undefined) writeOomScoreAdj(pid, proc.oomScoreAdj);
    executor.send(SYNC.GO);
    if (plan.ops.some((o) => o.op === 'syncRecvState')) executor.send(JSON.stringify(ctx.hookState(record, 'creating')));
    if (spec.hooks?.prestart?.length || spec.hooks?.createRuntime?.length) {
      await executor.expect(SYNC.HOOKS);
      const state = ctx.hookState(record, 'creating');
      await runHooks(spec.hooks.prestart, 'prestart', state);
      await runHooks(spec.hooks.createRuntime, 'createRuntime', state);
      executor.send(SYNC.HOOKS_DONE);
    }
    await executor.expect(SYNC.READY);
    mark('container setup');
    record.phase = 'created';
    record.creatorPid = 0;
    ctx.store.save(record);
    if (opts.pidFile) writePidFile(opts.pidFile, pid);
    mark('state saved');
    ctx.logger.debug('create timing', { id, ms: { ...ms, total: Math.round((performance.now() - t0) * 100) / 100 } });
    return { record, executor };
  } catch (e) {
    await rollback(ctx, record, executor, createdCgroupDirs);
    throw e;
  }
}

async function rollback(ctx: RuntimeContext, record: ContainerRecord, executor: Executor | undefined, createdDirs: string[]): Promise<void> {
  if (record.pid > 0) {
    try { process.kill(record.pid, 'SIGKILL'); } catch { /* already gone */ }
  }
  executor?.close();
  try {
    await ctx.cgroup(record).destroy();
    // Parents this create made (e.g. "a/b" for cgroupsPath "a/b/c") go too, deepest first.
    for (const dir of createdDirs) {
      try { rmdirSync(dir); } catch { /* in use by someone else meanwhile, or gone */ }
    }
  } catch (e) {
    ctx.logger.warn(`rollback: removing cgroup ${record.cgroupsPath} failed: ${(e as Error).message}`);
  }
  if (sharesHostMountNs(record.spec)) unmountUnder(record.rootfs);
  ctx.store.remove(record.id);
}

/** For each cgroup dir, the ancestors (excluding the dir itself) that do not exist yet, deepest first. */
function missingAncestors(dirs: string[]): string[] {
  const out: string[] = [];
  for (const dir of dirs) {
    for (let p = dirname(dir); p !== '/' && !existsSync(p); p = dirname(p)) out.push(p);
  }
  return out.sort((a, b) => b.length - a.length);
}

function writeIdMaps(spec: Spec, pid: number): void {
  const userNew = spec.linux?.namespaces?.some((n) => n.type === 'user' && !n.path);
  if (!userNew) return;
  const fmt = (m: { containerID: number; hostID: number; size: number }[]) => m.map((x) => `${x.containerID} ${x.hostID} ${x.size}\n`).join('');
  try {
    writeFileSync(`/proc/${pid}/uid_map`, fmt(spec.linux!.uidMappings!));
  } catch (e) {
    throw new SpecError('linux.uidMappings', `the kernel refused the uid map: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
  try {
    writeFileSync(`/proc/${pid}/gid_map`, fmt(spec.linux!.gidMappings!));
  } catch (e) {
    throw new SpecError('linux.gidMappings', `the kernel refused the gid map: ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
}

function writeOomScoreAdj(pid: number, value: number): void {
  const file = `/proc/${pid}/oom_score_adj`;
  try {
    writeFileSync(file, String(value));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    let current = '?';
    try { current = readFileSync(file, 'utf8').trim(); } catch { /* gone */ }
    if (code === 'EACCES' || code === 'EPERM') {
      throw new SpecError('process.oomScoreAdj', `cannot set ${value}: lowering oom_score_adj below the current ${current} needs CAP_SYS_RESOURCE, which this runtime's root does not have here; use a value ≥ ${current} or omit it`);
    }
    throw fromNodeError(e, `write ${file}`);
  }
}

export function writePidFile(path: string, pid: number): void {
  const abs = resolve(path);
  const tmp = join(dirname(abs), `.${Date.now()}.${process.pid}.pid`);
  try {
    writeFileSync(tmp, String(pid));
    renameSync(tmp, abs);
  } catch (e) {
    throw fromNodeError(e, `write pid file ${abs}`);
  }
}

function callerCgroup(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  } catch (e) {
    throw fromNodeError(e, `read the cgroup of the calling process ${pid} (a relative linux.cgroupsPath is relative to it)`);
  }
}
