/**
 * `exec`: run an additional process in a running (or created) container. The
 * executor joins the container's cgroups and namespaces, forks, applies the
 * process attributes and execs. Without `detach` it stays the process's parent
 * and reports its exit status.
 */
import { validateSpec } from '../spec/validate.ts';
import { SpecError } from '../../errors.ts';
import type { Process } from '../spec/types.ts';
import { compileExecPlan } from '../plan/compile.ts';
import type { RuntimeContext } from './context.ts';
import type { Executor } from './executor.ts';
import { writePidFile } from './create.ts';

export interface ExecOptions {
  process: Process;
  detach?: boolean;
  pidFile?: string;
  consoleSocket?: string;
  preserveFds?: number;
  stdio?: Array<'inherit' | 'ignore' | 'pipe' | number>;
}

export interface ExecStarted {
  pid: number;
  executor: Executor;
  /** Resolves with the exit status (code, or 128+signal) when not detached; 0 when detached. */
  wait(): Promise<number>;
}

export async function exec(ctx: RuntimeContext, id: string, opts: ExecOptions): Promise<ExecStarted> {
  const record = ctx.store.load(id);
  ctx.requireStatus(record, ['created', 'running'], 'exec into');
  // Validate the process with the same checks as config.json's process.
  validateSpec({ ...record.spec, process: opts.process }, { requireProcess: true });
  if (opts.process.terminal && !opts.consoleSocket) throw new SpecError('process.terminal', 'a terminal needs --console-socket');
  const cg = ctx.cgroup(record);
  const plan = compileExecPlan({
    process: opts.process,
    initPid: record.pid,
    namespaces: (record.spec.linux?.namespaces ?? []).map((n) => n.type),
    cgroupProcs: cg.exists() ? cg.cgroupProcsPaths() : [],
    seccomp: record.spec.linux?.seccomp,
    consoleSocket: opts.consoleSocket,
    preserveFds: opts.preserveFds,
    detach: !!opts.detach,
  });
  for (const w of plan.warnings ?? []) ctx.logger.warn(w);
  const preserve = Array.from({ length: opts.preserveFds ?? 0 }, (_, i) => 3 + i);
  const executor = ctx.spawnExecutor({ plan, stdio: opts.stdio ?? ['inherit', 'inherit', 'inherit'], preserveFds: preserve });
  const pid = await executor.childPid();
  if (opts.pidFile) writePidFile(opts.pidFile, pid);
  await executor.waitExec();
  return {
    pid,
    executor,
    async wait() {
      const { code, signal } = await executor.launcherExit();
      if (opts.detach) return 0;
      if (code !== null) return code;
      return 128 + (signal ? (await import('node:os')).constants.signals[signal as NodeJS.Signals] ?? 0 : 0);
    },
  };
}
