/**
 * cgroup v2 (unified hierarchy) manager.
 *
 * Controllers are enabled lazily: `set()` works out which controllers its
 * resources need and enables exactly those (when the hierarchy offers them) in
 * cgroup.subtree_control of every ancestor from the mount point down to the
 * container's parent. `create()` only makes the directories, so freezing and
 * killing (core cgroup files) work on a hierarchy with no controllers at all.
 *
 * Device rules are compiled to an eBPF program returned from `set()`; the executor
 * attaches it (see v2-devices.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, SpecError } from '../../errors.ts';
import { BaseManager, lazyOwnCgroup, resolveCgroupDir, type ManagerInit } from './base.ts';
import type { CgroupMount } from './detect.ts';
import {
  fileExists, hasErrno, mkdirAll, parseFlatKeyed, parseUint, readOptional, readRequired, writeFile, writeFileAsync,
} from './fsutil.ts';
import type { BlkioEntry, CgroupState, CgroupStats, LinuxResources, MemoryEntry, SetResult } from './types.ts';
import { UNLIMITED } from './types.ts';
import { emptyEntry, hugepageSizes, rdmaLine, validatePageSize } from './v1.ts';
import { compileDeviceFilter } from './v2-devices.ts';

/** runc/crun: cpu.shares (2..262144) → cpu.weight (1..10000). */
export function sharesToWeight(shares: number): number {
  if (shares === 0) return 0;
  const w = 1 + Math.trunc(((shares - 2) * 9999) / 262142);
  return Math.min(10000, Math.max(1, w));
}

/** runc: blkio.weight (10..1000) → io.weight (1..10000). */
export function blkioWeightToIoWeight(w: number): number {
  if (w === 0) return 0;
  return Math.min(10000, Math.max(1, 1 + Math.trunc(((w - 10) * 9999) / 990)));
}

/**
 * OCI memory.swap is memory+swap (v1 semantics); memory.swap.max is swap alone.
 * Returns -1 for "max", 0 for "leave unset".
 */
export function swapToV2(swap: number, limit: number): number {
  if (limit === -1 && swap === 0) return -1;
  if (swap === -1 || swap === 0) return swap;
  if (limit === 0 || limit === -1) {
    throw new SpecError('linux.resources.memory.swap', 'a swap limit needs a memory limit (memory.limit) as well');
  }
  if (swap < limit) throw new SpecError('linux.resources.memory.swap', `memory+swap limit ${swap} is lower than the memory limit ${limit}`);
  return swap - limit;
}

/** Controller names in a cgroup.controllers / cgroup.subtree_control file (also accepts "+cpu"). */
export function parseControllers(text: string | undefined): Set<string> {
  const out = new Set<string>();
  for (const t of (text ?? '').trim().split(/\s+/)) {
    if (!t) continue;
    if (t.startsWith('-')) out.delete(t.slice(1));
    else out.add(t.startsWith('+') ? t.slice(1) : t);
  }
  return out;
}

const UNIFIED_KEY = /^[a-z][a-z0-9_]*\.[a-z0-9_.]+$/;

/** Core files that need no controller but that a container must not use via `unified`. */
const UNIFIED_FORBIDDEN = new Set(['cgroup.procs', 'cgroup.threads', 'cgroup.subtree_control', 'cgroup.kill', 'cgroup.freeze', 'cgroup.type']);

interface Write {
  controller?: string;
  file: string;
  value: string;
  /** Missing file is skipped rather than an error. */
  optional?: boolean;
}

export class V2Manager extends BaseManager {
  readonly mode = 'v2' as const;
  readonly dir: string;
  private readonly mount: CgroupMount;
  private readonly oomGroup: boolean;

  constructor(init: ManagerInit & { oomGroup?: boolean }) {
    super(init);
    const m = init.mounts.v2;
    if (!m) throw new FailedPreconditionError('cgroup v2 is not mounted (no cgroup2 entry in mountinfo)');
    this.mount = m;
    const own = lazyOwnCgroup(init.procfs, init.relativeTo);
    this.dir = resolveCgroupDir(m, this.path, () => own().v2);
    this.oomGroup = init.oomGroup ?? false;
  }

  dirs(): string[] {
    return [this.dir];
  }

  protected procsDir(): string {
    return this.dir;
  }

  create(): void {
    mkdirAll(this.dir);
  }

  async apply(pid: number): Promise<void> {
    if (!Number.isInteger(pid) || pid <= 0) throw new InvalidArgumentError(`invalid pid ${pid}`);
    this.create();
    await writeFileAsync(this.dir, 'cgroup.procs', String(pid));
  }

  cgroupProcsPaths(): string[] {
    return [path.join(this.dir, 'cgroup.procs')];
  }

  /** Directories from the mount point down to the container's parent. */
  private ancestors(): string[] {
    const rel = path.relative(this.mount.mountPoint, this.dir);
    const out = [this.mount.mountPoint];
    const parts = rel.split(path.sep).filter(Boolean);
    for (let i = 0; i < parts.length - 1; i++) out.push(path.join(out[out.length - 1], parts[i]));
    return out;
  }

  /**
   * Controllers enabled in `d` (usable by its files): those in the parent's
   * cgroup.subtree_control; for the mount point, its cgroup.controllers.
   */
  private enabledIn(d: string): Set<string> {
    if (d === this.mount.mountPoint) return parseControllers(readOptional(d, 'cgroup.controllers'));
    return parseControllers(readOptional(path.dirname(d), 'cgroup.subtree_control'));
  }

  /** Controllers usable in the container's cgroup. */
  enabledControllers(): Set<string> {
    return this.enabledIn(this.dir);
  }

  /** Enable `needed` along the ancestor chain; FailedPrecondition naming what is unavailable. */
  private enableControllers(needed: Set<string>): void {
    if (needed.size === 0) return;
    for (const d of this.ancestors()) {
      const avail = this.enabledIn(d);
      const missing = [...needed].filter((c) => !avail.has(c));
      if (missing.length > 0) {
        throw new FailedPreconditionError(
          `cgroup v2 controller(s) ${missing.join(', ')} needed by linux.resources are not available in ${d} (it offers: ${[...avail].join(' ') || 'none'}); enable them in the parent's cgroup.subtree_control or drop the settings`,
        );
      }
      const cur = parseControllers(readOptional(d, 'cgroup.subtree_control'));
      const add = [...needed].filter((c) => !cur.has(c));
      if (add.length === 0) continue;
      try {
        writeFile(d, 'cgroup.subtree_control', add.map((c) => `+${c}`).join(' '));
      } catch (err) {
        const hint = hasErrno(err, 'EBUSY')
          ? `${d} has processes of its own (cgroup v2 "no internal processes" rule); use a cgroupsPath whose ancestors hold no processes`
          : 'the controllers could not be enabled';
        throw new FailedPreconditionError(`enable ${add.join(', ')} in ${path.join(d, 'cgroup.subtree_control')}: ${hint}`, { cause: err });
      }
    }
  }

  set(r: LinuxResources): SetResult {
    const warnings: string[] = [];
    const writes: Write[] = [];
    const where = 'linux.resources';
    const nz = (v: number | undefined): v is number => v !== undefined && v !== 0;

    const m = r.memory;
    if (m) {
      const limit = m.limit ?? 0;
      const swap = m.swap ?? 0;
      if (!Number.isInteger(limit) || limit < -1) throw new SpecError(`${where}.memory.limit`, `invalid value ${limit}`);
      const swapMax = swapToV2(swap, limit);
      if (limit !== 0) writes.push({ controller: 'memory', file: 'memory.max', value: limit === -1 ? 'max' : String(limit) });
      if (swapMax !== 0) writes.push({ controller: 'memory', file: 'memory.swap.max', value: swapMax === -1 ? 'max' : String(swapMax), optional: swapMax === -1 });
      if (nz(m.reservation)) writes.push({ controller: 'memory', file: 'memory.low', value: m.reservation === -1 ? 'max' : String(m.reservation) });
      if (this.oomGroup && limit !== 0 && !(r.unified && 'memory.oom.group' in r.unified)) {
        writes.push({ controller: 'memory', file: 'memory.oom.group', value: '1', optional: true });
      }
      if (nz(m.kernel)) this.warn(`${where}.memory.kernel ignored: cgroup v2 has no kernel memory limit`, warnings);
      if (nz(m.kernelTCP)) this.warn(`${where}.memory.kernelTCP ignored: cgroup v2 has no kernel TCP memory limit`, warnings);
      if (m.swappiness !== undefined && m.swappiness !== -1 && m.swappiness < 2 ** 63) {
        this.warn(`${where}.memory.swappiness ignored: cgroup v2 has no per-cgroup swappiness`, warnings);
      }
      if (m.disableOOMKiller) this.warn(`${where}.memory.disableOOMKiller ignored: cgroup v2 cannot disable the OOM killer`, warnings);
      if (m.useHierarchy === false) this.warn(`${where}.memory.useHierarchy=false ignored: cgroup v2 is always hierarchical`, warnings);
    }

    const c = r.cpu;
    if (c) {
      if (nz(c.realtimePeriod) || nz(c.realtimeRuntime)) {
        throw new FailedPreconditionError(`${where}.cpu.realtimePeriod/realtimeRuntime need cgroup v1: cgroup v2 has no RT group scheduling interface`);
      }
      if (nz(c.shares)) writes.push({ controller: 'cpu', file: 'cpu.weight', value: String(sharesToWeight(c.shares)) });
      if (nz(c.quota) || nz(c.period)) {
        let quota: string;
        if (nz(c.quota)) quota = c.quota > 0 ? String(c.quota) : 'max';
        else quota = 'keep';
        writes.push({ controller: 'cpu', file: 'cpu.max', value: nz(c.period) ? `${quota} ${c.period}` : quota });
      }
      if (c.burst !== undefined) writes.push({ controller: 'cpu', file: 'cpu.max.burst', value: String(c.burst), optional: c.burst === 0 });
      if (c.idle !== undefined) writes.push({ controller: 'cpu', file: 'cpu.idle', value: String(c.idle), optional: c.idle === 0 });
      if (c.cpus) writes.push({ controller: 'cpuset', file: 'cpuset.cpus', value: c.cpus });
      if (c.mems) writes.push({ controller: 'cpuset', file: 'cpuset.mems', value: c.mems });
    }

    if (r.pids) {
      if (!Number.isInteger(r.pids.limit)) throw new SpecError(`${where}.pids.limit`, 'must be an integer');
      writes.push({ controller: 'pids', file: 'pids.max', value: r.pids.limit > 0 ? String(r.pids.limit) : 'max' });
    }

    const b = r.blockIO;
    if (b) {
      const bfq = fileExists(this.dir, 'io.bfq.weight');
      if (nz(b.weight)) {
        if (b.weight < 10 || b.weight > 1000) throw new SpecError(`${where}.blockIO.weight`, `invalid weight ${b.weight}: use 10..1000`);
        if (bfq) writes.push({ controller: 'io', file: 'io.bfq.weight', value: String(b.weight) });
        else writes.push({ controller: 'io', file: 'io.weight', value: String(blkioWeightToIoWeight(b.weight)) });
      }
      if (nz(b.leafWeight)) this.warn(`${where}.blockIO.leafWeight ignored: cgroup v2 has no leaf weight`, warnings);
      for (const wd of b.weightDevice ?? []) {
        if (nz(wd.weight)) {
          writes.push(bfq
            ? { controller: 'io', file: 'io.bfq.weight', value: `${wd.major}:${wd.minor} ${wd.weight}` }
            : { controller: 'io', file: 'io.weight', value: `${wd.major}:${wd.minor} ${blkioWeightToIoWeight(wd.weight)}` });
        }
        if (nz(wd.leafWeight)) this.warn(`${where}.blockIO.weightDevice leafWeight ignored: cgroup v2 has no leaf weight`, warnings);
      }
      const th: Array<[keyof typeof b, string]> = [
        ['throttleReadBpsDevice', 'rbps'], ['throttleWriteBpsDevice', 'wbps'],
        ['throttleReadIOPSDevice', 'riops'], ['throttleWriteIOPSDevice', 'wiops'],
      ];
      for (const [key, k] of th) {
        for (const t of (b[key] as { major: number; minor: number; rate: number }[] | undefined) ?? []) {
          writes.push({ controller: 'io', file: 'io.max', value: `${t.major}:${t.minor} ${k}=${t.rate === 0 ? 'max' : t.rate}` });
        }
      }
    }

    (r.hugepageLimits ?? []).forEach((h, i) => {
      validatePageSize(h.pageSize, `${where}.hugepageLimits[${i}].pageSize`);
      const v = h.limit < 0 ? 'max' : String(h.limit);
      writes.push({ controller: 'hugetlb', file: `hugetlb.${h.pageSize}.max`, value: v });
      writes.push({ controller: 'hugetlb', file: `hugetlb.${h.pageSize}.rsvd.max`, value: v, optional: true });
    });

    if (r.network && (r.network.classID !== undefined || (r.network.priorities?.length ?? 0) > 0)) {
      throw new FailedPreconditionError(`${where}.network needs the cgroup v1 net_cls/net_prio controllers, which cgroup v2 does not have (use eBPF/nftables on the cgroup instead)`);
    }

    for (const [dev, lim] of Object.entries(r.rdma ?? {})) writes.push({ controller: 'rdma', file: 'rdma.max', value: rdmaLine(dev, lim) });

    for (const [k, v] of Object.entries(r.unified ?? {})) {
      if (!UNIFIED_KEY.test(k) || k.includes('..')) throw new SpecError(`${where}.unified`, `${JSON.stringify(k)} is not a cgroup interface file name`);
      if (UNIFIED_FORBIDDEN.has(k)) throw new SpecError(`${where}.unified`, `${k} is managed by the runtime and cannot be set`);
      if (typeof v !== 'string') throw new SpecError(`${where}.unified.${k}`, 'value must be a string');
      const prefix = k.slice(0, k.indexOf('.'));
      writes.push({ controller: prefix === 'cgroup' ? undefined : prefix, file: k, value: v });
    }

    let deviceProgram: Uint8Array | undefined;
    if (r.devices && r.devices.length > 0) deviceProgram = compileDeviceFilter(r.devices);

    // Enable what is needed, then check before writing anything.
    const needed = new Set(writes.map((w) => w.controller).filter((x): x is string => x !== undefined));
    if (!this.exists()) throw new FailedPreconditionError(`set resources on ${this.dir}: the cgroup does not exist; call create() first`);
    this.enableControllers(needed);
    const enabled = this.enabledControllers();
    for (const w of writes) {
      if (w.controller && !enabled.has(w.controller)) {
        throw new FailedPreconditionError(`${w.file} needs the cgroup v2 "${w.controller}" controller, which is not enabled for ${this.dir}`);
      }
    }
    if (m?.checkBeforeUpdate && nz(m.limit) && m.limit > 0) {
      const cur = parseUint(readOptional(this.dir, 'memory.current'));
      if (cur > m.limit) throw new FailedPreconditionError(`memory limit ${m.limit} is below the current usage ${cur} of ${this.dir} (checkBeforeUpdate is set)`);
    }
    for (const w of writes) {
      if (!fileExists(this.dir, w.file)) {
        if (w.optional) continue;
        throw new FailedPreconditionError(`${path.join(this.dir, w.file)} does not exist: this kernel does not support it`);
      }
      let value = w.value;
      if (w.file === 'cpu.max' && value.startsWith('keep')) {
        const curQuota = (readRequired(this.dir, 'cpu.max').trim().split(/\s+/)[0]) || 'max';
        value = curQuota + value.slice(4);
      }
      writeFile(this.dir, w.file, value);
    }
    return deviceProgram ? { deviceProgram, warnings } : { warnings };
  }

  protected requestFreeze(): void {
    writeFile(this.dir, 'cgroup.freeze', '1');
  }

  thaw(): void {
    writeFile(this.dir, 'cgroup.freeze', '0');
  }

  state(): CgroupState {
    if (!fs.existsSync(this.dir)) return 'absent';
    const frozen = parseFlatKeyed(readOptional(this.dir, 'cgroup.events')).frozen === 1;
    const want = (readOptional(this.dir, 'cgroup.freeze') ?? '0').trim() === '1';
    if (frozen) return 'paused';
    return want ? 'freezing' : 'running';
  }

  /** SIGKILL uses cgroup.kill (Linux 5.14+; kills the whole subtree atomically), else each PID is signalled. */
  killAll(signal: NodeJS.Signals | number): void {
    if ((signal === 'SIGKILL' || signal === 9) && fileExists(this.dir, 'cgroup.kill')) {
      writeFile(this.dir, 'cgroup.kill', '1');
      return;
    }
    this.signalEach(signal);
  }

  oomKillCount(): number {
    return parseFlatKeyed(readOptional(this.dir, 'memory.events')).oom_kill ?? 0;
  }

  stats(): CgroupStats {
    const d = this.dir;
    const cpu = parseFlatKeyed(readOptional(d, 'cpu.stat'));
    const entry = (name: string): MemoryEntry => {
      const cur = readOptional(d, `${name}.current`);
      if (cur === undefined) return emptyEntry();
      return {
        usage: parseUint(cur),
        limit: parseUint(readOptional(d, `${name}.max`) ?? 'max'),
        max: parseUint(readOptional(d, `${name}.peak`)),
        failcnt: name === 'memory' ? parseFlatKeyed(readOptional(d, 'memory.events')).max ?? 0 : 0,
      };
    };
    const usage = entry('memory');
    const swapOnly = entry('memory.swap');
    // runc reports v2 swap as memory+swap, like v1's memsw.
    const swap: MemoryEntry = {
      usage: swapOnly.usage + usage.usage,
      max: swapOnly.max,
      limit: swapOnly.limit === UNLIMITED || usage.limit === UNLIMITED ? UNLIMITED : swapOnly.limit + usage.limit,
      failcnt: parseFlatKeyed(readOptional(d, 'memory.swap.events')).fail ?? 0,
    };
    const raw = parseFlatKeyed(readOptional(d, 'memory.stat'));
    const pidsMax = (readOptional(d, 'pids.max') ?? 'max').trim();
    const io = parseIoStat(readOptional(d, 'io.stat'));
    const hugetlb: CgroupStats['hugetlb'] = {};
    for (const size of hugepageSizes(d, '.max')) {
      if (size.includes('rsvd')) continue;
      hugetlb[size] = {
        usage: parseUint(readOptional(d, `hugetlb.${size}.current`)),
        max: 0,
        failcnt: parseFlatKeyed(readOptional(d, `hugetlb.${size}.events`)).max ?? 0,
      };
    }
    return {
      cpu: {
        usage: {
          total: (cpu.usage_usec ?? 0) * 1000,
          percpu: [],
          percpuKernel: [],
          percpuUser: [],
          kernel: (cpu.system_usec ?? 0) * 1000,
          user: (cpu.user_usec ?? 0) * 1000,
        },
        throttling: {
          periods: cpu.nr_periods ?? 0,
          throttledPeriods: cpu.nr_throttled ?? 0,
          throttledTime: (cpu.throttled_usec ?? 0) * 1000,
        },
      },
      memory: {
        cache: raw.file ?? 0,
        usage,
        swap: fileExists(d, 'memory.swap.current') ? swap : emptyEntry(),
        kernel: { usage: (raw.kernel ?? ((raw.kernel_stack ?? 0) + (raw.slab ?? 0) + (raw.sock ?? 0))), limit: 0, max: 0, failcnt: 0 },
        kernelTCP: { usage: raw.sock ?? 0, limit: 0, max: 0, failcnt: 0 },
        raw,
        oomKill: this.oomKillCount(),
      },
      pids: {
        current: parseUint(readOptional(d, 'pids.current')),
        limit: pidsMax === 'max' ? 0 : parseUint(pidsMax),
      },
      blkio: io,
      hugetlb,
    };
  }
}

/** io.stat "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=5 dios=6" → runc's blkio entries. */
export function parseIoStat(text: string | undefined): { ioServiceBytesRecursive: BlkioEntry[]; ioServicedRecursive: BlkioEntry[] } {
  const bytes: BlkioEntry[] = [];
  const ios: BlkioEntry[] = [];
  const ops: Record<string, [BlkioEntry[], string]> = {
    rbytes: [bytes, 'Read'], wbytes: [bytes, 'Write'], dbytes: [bytes, 'Discard'],
    rios: [ios, 'Read'], wios: [ios, 'Write'], dios: [ios, 'Discard'],
  };
  for (const line of (text ?? '').split('\n')) {
    const parts = line.trim().split(/\s+/);
    const mm = /^(\d+):(\d+)$/.exec(parts[0] ?? '');
    if (!mm) continue;
    for (const kv of parts.slice(1)) {
      const [k, v] = kv.split('=');
      const o = ops[k];
      if (o) o[0].push({ major: Number(mm[1]), minor: Number(mm[2]), op: o[1], value: Number(v) });
    }
  }
  return { ioServiceBytesRecursive: bytes, ioServicedRecursive: ios };
}
