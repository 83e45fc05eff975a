/**
 * `start`: open the init's start fifo so it proceeds to exec the user process,
 * then run poststart hooks (failures are warnings, as the spec says).
 */
import { closeSync, constants, openSync, readSync, unlinkSync } from 'node:fs';
import { FailedPreconditionError, fromNodeError } from '../../errors.ts';
import type { RuntimeContext } from './context.ts';
import { runHooksWarn } from './hooks.ts';
import type { ContainerRecord } from './state-store.ts';

let sleeper: Int32Array | undefined; // created lazily: module scope must stay snapshot-safe

export async function start(ctx: RuntimeContext, id: string): Promise<ContainerRecord> {
  const record = ctx.store.load(id);
  ctx.requireStatus(record, ['created'], 'start');
  const fifo = ctx.store.fifo(id);
  releaseInit(fifo, record);
  record.phase = 'running';
  record.started = true;
  ctx.store.save(record);
  await runHooksWarn(record.spec.hooks?.poststart, 'poststart', ctx.hookState(record, 'running'), (m) => ctx.logger.warn(m));
  return record;
}

/** Opening the fifo for reading unblocks the init's open(O_WRONLY); it writes one byte, then execs. */
function releaseInit(fifo: string, record: ContainerRecord): void {
  let fd: number;
  try {
    fd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    throw fromNodeError(e, `open start fifo of "${record.id}"`);
  }
  try {
    const buf = Buffer.alloc(1);
    for (let spins = 0; ; spins++) {
      let n = 0;
      try {
        n = readSync(fd, buf, 0, 1, null);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw fromNodeError(e, `read start fifo of "${record.id}"`);
        n = -1;
      }
      if (n === 1) break;
      // n === 0: no writer yet (the init is about to open it) or it died.
      if (spins > 10 && !processAlive(record.pid)) {
        throw new FailedPreconditionError(`container "${record.id}" init exited before it could be started`);
      }
      if (spins > 20000) throw new FailedPreconditionError(`container "${record.id}" did not respond to start`);
      Atomics.wait((sleeper ??= new Int32Array(new SharedArrayBuffer(4))), 0, 0, spins < 100 ? 0.05 : 1);
    }
  } finally {
    closeSync(fd);
  }
  try { unlinkSync(fifo); } catch { /* already gone */ }
}

function processAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}
