/**
 * `delete`: remove a stopped container (a created one is killed first, as runc does);
 * with `force`, kill a running or paused one. Runs poststop hooks, removes the cgroup
 * (killing stray processes) and the state directory. A create killed half-way
 * (state "creating" with its creator gone) is cleaned up too.
 */
import { FailedPreconditionError, NotFoundError } from '../../errors.ts';
import type { RuntimeContext } from './context.ts';
import { runHooksWarn } from './hooks.ts';
import { isAlive } from './state-store.ts';
import { sharesHostMountNs, unmountUnder } from './host-mounts.ts';

export async function deleteContainer(ctx: RuntimeContext, id: string, opts: { force?: boolean } = {}): Promise<void> {
  let record;
  try {
    record = ctx.store.load(id);
  } catch (e) {
    if (e instanceof NotFoundError && opts.force) return;
    throw e;
  }
  const status = ctx.status(record);
  if ((status === 'running' || status === 'paused') && !opts.force) {
    throw new FailedPreconditionError(`cannot delete container "${id}": it is ${status}; stop it first or use --force`);
  }
  if (status === 'creating' && !opts.force) {
    throw new FailedPreconditionError(`cannot delete container "${id}": it is still being created; use --force`);
  }
  const cg = record.cgroupsPath ? ctx.cgroup(record) : undefined;
  if (status !== 'stopped') {
    if (cg?.exists()) {
      if (status === 'paused') cg.thaw();
      cg.killAll(9);
    }
    if (record.pid > 0 && isAlive(record)) {
      try { process.kill(record.pid, 'SIGKILL'); } catch { /* gone */ }
    }
    await waitGone(record.pid, record.pidStartTime);
  }
  if (cg?.exists()) await cg.destroy();
  if (record.rootfs && sharesHostMountNs(record.spec)) unmountUnder(record.rootfs);
  if (record.started || status !== 'creating') {
    await runHooksWarn(record.spec.hooks?.poststop, 'poststop', ctx.hookState(record, 'stopped'), (m) => ctx.logger.warn(m));
  }
  ctx.store.remove(id);
}

async function waitGone(pid: number, startTime: string): Promise<void> {
  for (let i = 0; i < 2000 && pid > 0 && isAlive({ pid, pidStartTime: startTime }); i++) {
    await new Promise((r) => setTimeout(r, i < 50 ? 1 : 10));
  }
}
