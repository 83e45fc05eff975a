/** `kill`: send a signal to the init, or with `all` to every process in the container's cgroup. */
import { fromNodeError } from '../../errors.ts';
import type { RuntimeContext } from './context.ts';
import { parseSignal } from './signals.ts';

export function kill(ctx: RuntimeContext, id: string, signal?: string | number, opts: { all?: boolean } = {}): void {
  const record = ctx.store.load(id);
  const sig = typeof signal === 'number' ? signal : parseSignal(signal);
  ctx.requireStatus(record, ['created', 'running', 'paused'], 'kill');
  if (opts.all) {
    ctx.cgroup(record).killAll(sig);
    return;
  }
  try {
    process.kill(record.pid, sig);
  } catch (e) {
    throw fromNodeError(e, `signal ${sig} to container "${id}" (pid ${record.pid})`);
  }
}
