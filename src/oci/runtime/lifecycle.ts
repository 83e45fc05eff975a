/** Small verbs: list, ps, pause, resume, update, events/stats. */
import type { LinuxResources } from '../cgroups/types.ts';
import type { CgroupStats } from '../cgroups/types.ts';
import type { RuntimeContext } from './context.ts';
import type { State } from '../spec/types.ts';

export function list(ctx: RuntimeContext): Array<State & { rootfs: string; created: string; owner: string }> {
  const out = [];
  for (const id of ctx.store.ids()) {
    try {
      out.push(ctx.state(ctx.store.load(id)));
    } catch (e) {
      ctx.logger.warn(`list: skipping "${id}": ${(e as Error).message}`);
    }
  }
  return out;
}

export function ps(ctx: RuntimeContext, id: string): number[] {
  const record = ctx.store.load(id);
  const cg = ctx.cgroup(record);
  return cg.exists() ? cg.pids() : [];
}

export async function pause(ctx: RuntimeContext, id: string): Promise<void> {
  const record = ctx.store.load(id);
  ctx.requireStatus(record, ['running', 'created'], 'pause');
  await ctx.cgroup(record).freeze();
}

export function resume(ctx: RuntimeContext, id: string): void {
  const record = ctx.store.load(id);
  ctx.requireStatus(record, ['paused'], 'resume');
  ctx.cgroup(record).thaw();
}

export function update(ctx: RuntimeContext, id: string, resources: LinuxResources): string[] {
  const record = ctx.store.load(id);
  ctx.requireStatus(record, ['created', 'running', 'paused'], 'update');
  const res = ctx.cgroup(record).set(resources);
  record.spec.linux = { ...record.spec.linux, resources: mergeResources(record.spec.linux?.resources ?? {}, resources) };
  ctx.store.save(record);
  return res.warnings;
}

function mergeResources(a: LinuxResources, b: LinuxResources): LinuxResources {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k];
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && prev && typeof prev === 'object' && !Array.isArray(prev) ? { ...prev, ...v } : v;
  }
  return out as LinuxResources;
}

export function stats(ctx: RuntimeContext, id: string): CgroupStats {
  const record = ctx.store.load(id);
  ctx.requireStatus(record, ['created', 'running', 'paused'], 'read stats of');
  return ctx.cgroup(record).stats();
}
