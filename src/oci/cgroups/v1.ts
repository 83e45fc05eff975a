/**
 * cgroup v1 manager (also used in hybrid mode, where the controllers live on v1 and
 * the cgroup2 mount carries none of them). One directory per mounted hierarchy;
 * co-mounted controllers ("cpu,cpuacct") share one. The container joins every
 * known controller's hierarchy plus name=systemd, as runc's cgroupfs driver does.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FailedPreconditionError, InternalError, InvalidArgumentError, SpecError } from '../../errors.ts';
import { BaseManager, lazyOwnCgroup, resolveCgroupDir, type ManagerInit } from './base.ts';
import { V1_CONTROLLERS, type CgroupMount } from './detect.ts';
import { DevicesState, devicesTransition, normalizeDeviceRules } from './devices.ts';
import {
  fileExists, hasErrno, mkdirAll, parseFlatKeyed, parseNumberList, parseUint, readOptional, readRequired, signalPid,
  removeCgroupTree, sleepSync, writeFile, writeFileAsync,
} from './fsutil.ts';
import type {
  BlkioEntry, CgroupState, CgroupStats, LinuxBlockIO, LinuxCPU, LinuxMemory, LinuxResources, MemoryEntry, SetResult,
} from './types.ts';

interface Hierarchy {
  controllers: string[];
  mount: CgroupMount;
  dir: string;
}

/** USER_HZ: cpuacct.stat counts in these ticks. */
const CLOCK_TICKS = 100;

const HUGEPAGE_SIZE = /^[1-9][0-9]*[KMG]B$/;

export function validatePageSize(s: string, where: string): void {
  if (!HUGEPAGE_SIZE.test(s)) throw new SpecError(where, `invalid hugepage size ${JSON.stringify(s)}: use e.g. "2MB" or "1GB"`);
}

export class V1Manager extends BaseManager {
  readonly mode: 'v1' | 'hybrid';
  private readonly hierarchies: Hierarchy[] = [];
  private readonly byController = new Map<string, string>();

  constructor(init: ManagerInit & { mode: 'v1' | 'hybrid' }) {
    super(init);
    this.mode = init.mode;
    const own = lazyOwnCgroup(init.procfs, init.relativeTo);
    const known = new Set<string>(V1_CONTROLLERS);
    const seen = new Set<CgroupMount>();
    for (const [ctrl, mount] of init.mounts.v1) {
      if (!known.has(ctrl) || seen.has(mount)) continue;
      seen.add(mount);
      const ctrls = mount.controllers.filter((c) => known.has(c));
      const dir = resolveCgroupDir(mount, this.path, () => own().v1.get(ctrls[0]));
      this.hierarchies.push({ controllers: ctrls, mount, dir });
      for (const c of ctrls) this.byController.set(c, dir);
    }
    if (this.hierarchies.length === 0) {
      throw new FailedPreconditionError('no cgroup v1 controller is mounted; mount the v1 hierarchies or use cgroup v2');
    }
    if (this.mode === 'hybrid' && init.mounts.v2) this.unifiedDir = resolveCgroupDir(init.mounts.v2, this.path, () => own().v2);
  }

  /**
   * Hybrid mode: the same path in the controller-less cgroup2 hierarchy. This manager puts nothing
   * there, but runc and systemd do (a pod's cgroup parent gets a twin there when runc runs its
   * containers), so destroy() removes it too.
   */
  private readonly unifiedDir: string | undefined;

  override async destroy(): Promise<void> {
    await super.destroy();
    if (this.unifiedDir && fs.existsSync(this.unifiedDir)) removeCgroupTree(this.unifiedDir);
  }

  dirs(): string[] {
    return this.hierarchies.map((h) => h.dir);
  }

  /** Directory of a controller's cgroup, or undefined when the controller is not mounted. */
  controllerDir(controller: string): string | undefined {
    return this.byController.get(controller);
  }

  private need(controller: string, what: string): string {
    const d = this.byController.get(controller);
    if (!d) {
      throw new FailedPreconditionError(
        `${what} needs the cgroup v1 "${controller}" controller, which is not mounted on this host; mount it or drop the setting`,
      );
    }
    return d;
  }

  create(): void {
    for (const h of this.hierarchies) {
      mkdirAll(h.dir);
      if (h.controllers.includes('cpuset')) this.fillCpuset(h);
    }
  }

  /** A new v1 cpuset starts with empty cpus/mems and accepts no tasks: copy them down from the parent. */
  private fillCpuset(h: Hierarchy): void {
    const rel = path.relative(h.mount.mountPoint, h.dir);
    if (rel.startsWith('..')) return;
    let parent = h.mount.mountPoint;
    for (const part of rel.split(path.sep).filter(Boolean)) {
      const d = path.join(parent, part);
      for (const f of ['cpuset.cpus', 'cpuset.mems']) {
        if ((readOptional(d, f) ?? '').trim() === '') {
          const pv = (readOptional(parent, f) ?? '').trim();
          if (pv === '') {
            throw new FailedPreconditionError(`cannot fill ${path.join(d, f)}: the parent ${path.join(parent, f)} is empty`);
          }
          writeFile(d, f, pv);
        }
      }
      parent = d;
    }
  }

  async apply(pid: number): Promise<void> {
    if (!Number.isInteger(pid) || pid <= 0) throw new InvalidArgumentError(`invalid pid ${pid}`);
    this.create();
    // the first write pays the grace period; the others follow within it and are cheap
    for (const h of this.hierarchies) await writeFileAsync(h.dir, 'cgroup.procs', String(pid));
  }

  cgroupProcsPaths(): string[] {
    return this.hierarchies.map((h) => path.join(h.dir, 'cgroup.procs'));
  }

  protected procsDir(): string {
    for (const c of ['freezer', 'pids', 'memory', 'cpu', 'devices']) {
      const d = this.byController.get(c);
      if (d) return d;
    }
    return this.hierarchies[0].dir;
  }

  // ---- set ----

  set(r: LinuxResources): SetResult {
    const warnings: string[] = [];
    if (r.unified && Object.keys(r.unified).length > 0) {
      throw new FailedPreconditionError(
        `linux.resources.unified (${Object.keys(r.unified).join(', ')}) needs cgroup v2; this host runs cgroup ${this.mode}`,
      );
    }
    if (r.cpu && (r.cpu.cpus || r.cpu.mems)) this.setCpuset(r.cpu);
    if (r.devices && r.devices.length > 0) this.setDevices(r);
    if (r.memory) this.setMemory(r.memory, warnings);
    if (r.cpu) this.setCpu(r.cpu);
    if (r.pids) {
      const d = this.need('pids', 'linux.resources.pids');
      if (!Number.isInteger(r.pids.limit)) throw new SpecError('linux.resources.pids.limit', 'must be an integer');
      writeFile(d, 'pids.max', r.pids.limit > 0 ? String(r.pids.limit) : 'max');
    }
    if (r.blockIO) this.setBlkio(r.blockIO);
    if (r.hugepageLimits && r.hugepageLimits.length > 0) {
      const d = this.need('hugetlb', 'linux.resources.hugepageLimits');
      r.hugepageLimits.forEach((h, i) => {
        validatePageSize(h.pageSize, `linux.resources.hugepageLimits[${i}].pageSize`);
        const f = `hugetlb.${h.pageSize}.limit_in_bytes`;
        if (!fileExists(d, f)) {
          throw new FailedPreconditionError(`hugepage size ${h.pageSize} is not supported by this kernel (${path.join(d, f)} is missing)`);
        }
        writeFile(d, f, String(h.limit));
        const rsvd = `hugetlb.${h.pageSize}.rsvd.limit_in_bytes`;
        if (fileExists(d, rsvd)) writeFile(d, rsvd, String(h.limit));
      });
    }
    if (r.network) {
      if (r.network.classID !== undefined) {
        writeFile(this.need('net_cls', 'linux.resources.network.classID'), 'net_cls.classid', String(r.network.classID));
      }
      if (r.network.priorities && r.network.priorities.length > 0) {
        const d = this.need('net_prio', 'linux.resources.network.priorities');
        for (const p of r.network.priorities) writeFile(d, 'net_prio.ifpriomap', `${p.name} ${p.priority}`);
      }
    }
    if (r.rdma && Object.keys(r.rdma).length > 0) {
      const d = this.need('rdma', 'linux.resources.rdma');
      for (const [dev, lim] of Object.entries(r.rdma)) writeFile(d, 'rdma.max', rdmaLine(dev, lim));
    }
    return { warnings };
  }

  private setCpuset(c: LinuxCPU): void {
    const d = this.need('cpuset', 'linux.resources.cpu.cpus/mems');
    if (c.cpus) writeFile(d, 'cpuset.cpus', c.cpus);
    if (c.mems) writeFile(d, 'cpuset.mems', c.mems);
  }

  private setDevices(r: LinuxResources): void {
    const d = this.need('devices', 'linux.resources.devices');
    const target = DevicesState.fromRules(normalizeDeviceRules(r.devices ?? []));
    const current = DevicesState.fromList(readRequired(d, 'devices.list'));
    for (const w of devicesTransition(current, target)) writeFile(d, w.file, w.value);
    if (!target.defaultAllow) {
      const after = DevicesState.fromList(readRequired(d, 'devices.list'));
      if (!after.equals(target)) {
        throw new InternalError(
          `devices cgroup ${d} does not match the requested rules after writing them: have [${after.exceptionLines().join(', ')}], want [${target.exceptionLines().join(', ')}]`,
        );
      }
    }
  }

  private setMemory(m: LinuxMemory, warnings: string[]): void {
    const any = Object.values(m).some((v) => v !== undefined);
    if (!any) return;
    const d = this.need('memory', 'linux.resources.memory');
    const where = 'linux.resources.memory';
    const limit = m.limit ?? 0;
    let swap = m.swap ?? 0;
    for (const [k, v] of [['limit', limit], ['swap', swap]] as const) {
      if (!Number.isInteger(v) || v < -1) throw new SpecError(`${where}.${k}`, `invalid value ${v}: use a byte count or -1 for unlimited`);
    }
    if (limit > 0 && swap > 0 && swap < limit) {
      throw new SpecError(`${where}.swap`, `memory+swap limit ${swap} is lower than the memory limit ${limit}; swap must be >= limit`);
    }
    if (m.checkBeforeUpdate && limit > 0) {
      const usage = parseUint(readOptional(d, 'memory.usage_in_bytes'));
      if (usage > limit) {
        throw new FailedPreconditionError(`memory limit ${limit} is below the current usage ${usage} of ${d} (checkBeforeUpdate is set)`);
      }
    }
    const memsw = fileExists(d, 'memory.memsw.limit_in_bytes');
    if (limit === -1 && swap === 0 && memsw) swap = -1;
    if (swap !== 0 && !memsw) {
      if (swap === -1) swap = 0;
      else {
        throw new FailedPreconditionError(
          `${where}.swap needs swap accounting, which this kernel lacks (${path.join(d, 'memory.memsw.limit_in_bytes')} is missing; boot with swapaccount=1)`,
        );
      }
    }
    const setLimit = (): void => {
      if (limit === 0) return;
      try {
        writeFile(d, 'memory.limit_in_bytes', String(limit));
      } catch (err) {
        if (hasErrno(err, 'EBUSY')) {
          throw new FailedPreconditionError(
            `set memory limit of ${d} to ${limit}: the current usage ${parseUint(readOptional(d, 'memory.usage_in_bytes'))} cannot be reclaimed below it (peak ${parseUint(readOptional(d, 'memory.max_usage_in_bytes'))})`,
            { cause: err, errno: 'EBUSY' },
          );
        }
        throw err;
      }
    };
    const setSwap = (): void => {
      if (swap !== 0) writeFile(d, 'memory.memsw.limit_in_bytes', String(swap));
    };
    // The kernel keeps memory.limit <= memsw.limit at every step: raise memsw first
    // when the new memsw is above the current memory limit, else lower memory first.
    if (limit !== 0 && swap !== 0) {
      const cur = parseUint(readRequired(d, 'memory.limit_in_bytes'));
      if (swap === -1 || cur < swap) {
        setSwap();
        setLimit();
      } else {
        setLimit();
        setSwap();
      }
    } else {
      setLimit();
      setSwap();
    }
    if (m.reservation !== undefined && m.reservation !== 0) writeFile(d, 'memory.soft_limit_in_bytes', String(m.reservation));
    if (m.kernel !== undefined && m.kernel !== 0) {
      this.kmem(d, 'memory.kmem.limit_in_bytes', m.kernel, `${where}.kernel`, warnings);
    }
    if (m.kernelTCP !== undefined && m.kernelTCP !== 0) {
      this.kmem(d, 'memory.kmem.tcp.limit_in_bytes', m.kernelTCP, `${where}.kernelTCP`, warnings);
    }
    if (m.swappiness !== undefined && m.swappiness !== null) {
      if (!Number.isInteger(m.swappiness) || m.swappiness < 0 || m.swappiness > 100) {
        // -1 (and 2^64-1 in some generators) mean "inherit"
        if (m.swappiness !== -1 && m.swappiness < 2 ** 63) throw new SpecError(`${where}.swappiness`, `invalid value ${m.swappiness}: use 0..100`);
      } else writeFile(d, 'memory.swappiness', String(m.swappiness));
    }
    if (m.disableOOMKiller !== undefined) writeFile(d, 'memory.oom_control', m.disableOOMKiller ? '1' : '0');
    if (m.useHierarchy !== undefined) {
      const cur = (readOptional(d, 'memory.use_hierarchy') ?? '').trim();
      const want = m.useHierarchy ? '1' : '0';
      if (cur !== want) {
        try {
          writeFile(d, 'memory.use_hierarchy', want);
        } catch (err) {
          if (!hasErrno(err, 'EINVAL', 'ENOENT', 'EBUSY')) throw err;
          this.warn(`${where}.useHierarchy=${m.useHierarchy} ignored: this kernel does not allow changing memory.use_hierarchy (it is ${cur || 'absent'})`, warnings);
        }
      }
    }
  }

  private kmem(d: string, file: string, value: number, where: string, warnings: string[]): void {
    if (!fileExists(d, file)) {
      this.warn(`${where} ignored: ${file} does not exist (kernel memory limits are deprecated and removed from this kernel)`, warnings);
      return;
    }
    try {
      writeFile(d, file, String(value));
    } catch (err) {
      if (!hasErrno(err, 'EOPNOTSUPP', 'ENOTSUPP', 'EINVAL')) throw err;
      this.warn(`${where} ignored: the kernel refused ${file} (kernel memory limits are deprecated)`, warnings);
      return;
    }
    if (value > 0 && parseUint(readOptional(d, file)) > value * 2) {
      this.warn(`${where} ignored: the kernel accepted ${file} but does not enforce it (deprecated since Linux 5.16)`, warnings);
    }
  }

  private setCpu(c: LinuxCPU): void {
    const where = 'linux.resources.cpu';
    const nonZero = [c.shares, c.quota, c.period, c.burst, c.realtimePeriod, c.realtimeRuntime, c.idle].some(
      (v) => v !== undefined && v !== 0,
    );
    // Zero burst/idle are defaults: written when the controller exists, never required.
    if (!nonZero && !(this.byController.has('cpu') && (c.idle !== undefined || c.burst !== undefined))) return;
    const d = this.need('cpu', where);
    if (c.shares !== undefined && c.shares !== 0) {
      writeFile(d, 'cpu.shares', String(c.shares));
      const got = parseUint(readOptional(d, 'cpu.shares'));
      if (got !== c.shares) throw new SpecError(`${where}.shares`, `the kernel clamped cpu.shares ${c.shares} to ${got}; use a value in its range (2..262144)`);
    }
    const quota = c.quota ?? 0;
    const period = c.period ?? 0;
    let retryPeriod = false;
    if (period !== 0) {
      try {
        writeFile(d, 'cpu.cfs_period_us', String(period));
      } catch (err) {
        // A shorter period can be refused while the old quota/new period exceeds the
        // parent's bandwidth; retry after the quota is written.
        if (!hasErrno(err, 'EINVAL') || quota === 0) throw err;
        retryPeriod = true;
      }
    }
    if (quota !== 0) {
      writeFile(d, 'cpu.cfs_quota_us', String(quota));
      if (retryPeriod) writeFile(d, 'cpu.cfs_period_us', String(period));
    }
    if (c.burst !== undefined) {
      if (!fileExists(d, 'cpu.cfs_burst_us')) {
        if (c.burst !== 0) throw new FailedPreconditionError(`${where}.burst: this kernel has no cpu.cfs_burst_us (needs Linux 5.14+)`);
      } else writeFile(d, 'cpu.cfs_burst_us', String(c.burst));
    }
    if (c.realtimePeriod !== undefined && c.realtimePeriod !== 0) {
      this.needFile(d, 'cpu.rt_period_us', `${where}.realtimePeriod`, 'the kernel lacks CONFIG_RT_GROUP_SCHED');
      writeFile(d, 'cpu.rt_period_us', String(c.realtimePeriod));
    }
    if (c.realtimeRuntime !== undefined && c.realtimeRuntime !== 0) {
      this.needFile(d, 'cpu.rt_runtime_us', `${where}.realtimeRuntime`, 'the kernel lacks CONFIG_RT_GROUP_SCHED');
      writeFile(d, 'cpu.rt_runtime_us', String(c.realtimeRuntime));
    }
    if (c.idle !== undefined) {
      if (!fileExists(d, 'cpu.idle')) {
        if (c.idle !== 0) throw new FailedPreconditionError(`${where}.idle: this kernel has no cpu.idle (needs Linux 5.15+)`);
      } else writeFile(d, 'cpu.idle', String(c.idle));
    }
  }

  private needFile(d: string, file: string, where: string, why: string): void {
    if (!fileExists(d, file)) throw new FailedPreconditionError(`${where}: ${path.join(d, file)} does not exist (${why})`);
  }

  private setBlkio(b: LinuxBlockIO): void {
    const lists = [b.weightDevice, b.throttleReadBpsDevice, b.throttleWriteBpsDevice, b.throttleReadIOPSDevice, b.throttleWriteIOPSDevice];
    const any = (b.weight !== undefined && b.weight !== 0) || (b.leafWeight !== undefined && b.leafWeight !== 0) ||
      lists.some((l) => l && l.length > 0);
    if (!any) return;
    const where = 'linux.resources.blockIO';
    const d = this.need('blkio', where);
    const bfq = fileExists(d, 'blkio.bfq.weight');
    const weightFile = bfq ? 'blkio.bfq.weight' : 'blkio.weight';
    const noWeight = (what: string): never => {
      throw new FailedPreconditionError(
        `${where}.${what}: this kernel offers no blkio weight interface (no blkio.weight or blkio.bfq.weight in ${d}; the I/O scheduler must be BFQ, or CFQ on old kernels)`,
      );
    };
    if (b.weight !== undefined && b.weight !== 0) {
      if (!Number.isInteger(b.weight) || b.weight < 10 || b.weight > 1000) throw new SpecError(`${where}.weight`, `invalid weight ${b.weight}: use 10..1000`);
      if (!fileExists(d, weightFile)) noWeight('weight');
      writeFile(d, weightFile, String(b.weight));
    }
    if (b.leafWeight !== undefined && b.leafWeight !== 0) {
      if (!fileExists(d, 'blkio.leaf_weight')) noWeight('leafWeight');
      writeFile(d, 'blkio.leaf_weight', String(b.leafWeight));
    }
    (b.weightDevice ?? []).forEach((wd, i) => {
      if (wd.weight !== undefined && wd.weight !== 0) {
        const f = bfq ? 'blkio.bfq.weight_device' : 'blkio.weight_device';
        if (!fileExists(d, f)) noWeight(`weightDevice[${i}]`);
        writeFile(d, f, `${wd.major}:${wd.minor} ${wd.weight}`);
      }
      if (wd.leafWeight !== undefined && wd.leafWeight !== 0) {
        if (!fileExists(d, 'blkio.leaf_weight_device')) noWeight(`weightDevice[${i}].leafWeight`);
        writeFile(d, 'blkio.leaf_weight_device', `${wd.major}:${wd.minor} ${wd.leafWeight}`);
      }
    });
    const throttles: Array<[keyof LinuxBlockIO, string]> = [
      ['throttleReadBpsDevice', 'blkio.throttle.read_bps_device'],
      ['throttleWriteBpsDevice', 'blkio.throttle.write_bps_device'],
      ['throttleReadIOPSDevice', 'blkio.throttle.read_iops_device'],
      ['throttleWriteIOPSDevice', 'blkio.throttle.write_iops_device'],
    ];
    for (const [key, file] of throttles) {
      const list = b[key] as { major: number; minor: number; rate: number }[] | undefined;
      for (const t of list ?? []) writeFile(d, file, `${t.major}:${t.minor} ${t.rate}`);
    }
  }

  // ---- freezer ----

  protected requestFreeze(): void {
    writeFile(this.need('freezer', 'freeze'), 'freezer.state', 'FROZEN');
  }

  thaw(): void {
    const d = this.byController.get('freezer');
    if (!d) throw new FailedPreconditionError('thaw needs the cgroup v1 "freezer" controller, which is not mounted');
    writeFile(d, 'freezer.state', 'THAWED');
  }

  state(): CgroupState {
    if (!this.exists()) return 'absent';
    const d = this.byController.get('freezer');
    if (!d) return 'running';
    const s = (readOptional(d, 'freezer.state') ?? '').trim();
    if (s === 'FROZEN') return 'paused';
    if (s === 'FREEZING') return 'freezing';
    return 'running';
  }

  /**
   * Signal all processes. To keep forking processes from escaping, the cgroup is
   * frozen while signalling (when the freezer is mounted) and thawed afterwards if
   * this call froze it; a SIGKILL always ends thawed so the processes can die.
   */
  killAll(signal: NodeJS.Signals | number): void {
    const d = this.byController.get('freezer');
    const isKill = signal === 'SIGKILL' || signal === 9;
    let froze = false;
    const before = this.state();
    if (d && before === 'running') {
      try {
        writeFile(d, 'freezer.state', 'FROZEN');
        froze = true;
        for (let i = 0; i < 200 && (readOptional(d, 'freezer.state') ?? '').trim() !== 'FROZEN'; i++) sleepSync(Math.min(1 + i, 10));
      } catch {
        froze = false;
      }
    }
    try {
      for (const pid of this.pids()) signalPid(pid, signal);
    } finally {
      if (d && (froze || (isKill && before !== 'running' && before !== 'absent'))) writeFile(d, 'freezer.state', 'THAWED');
    }
  }

  // ---- stats ----

  oomKillCount(): number {
    const d = this.byController.get('memory');
    if (!d) return 0;
    return parseFlatKeyed(readOptional(d, 'memory.oom_control')).oom_kill ?? 0;
  }

  stats(): CgroupStats {
    const st: CgroupStats = {
      cpu: {
        usage: { total: 0, percpu: [], percpuKernel: [], percpuUser: [], kernel: 0, user: 0 },
        throttling: { periods: 0, throttledPeriods: 0, throttledTime: 0 },
      },
      memory: {
        cache: 0, usage: emptyEntry(), swap: emptyEntry(), kernel: emptyEntry(), kernelTCP: emptyEntry(), raw: {}, oomKill: 0,
      },
      pids: { current: 0, limit: 0 },
      blkio: { ioServiceBytesRecursive: [], ioServicedRecursive: [] },
      hugetlb: {},
    };
    const acct = this.byController.get('cpuacct');
    if (acct) {
      const u = st.cpu.usage;
      u.total = parseUint(readOptional(acct, 'cpuacct.usage'));
      u.percpu = parseNumberList(readOptional(acct, 'cpuacct.usage_percpu'));
      u.percpuKernel = parseNumberList(readOptional(acct, 'cpuacct.usage_percpu_sys'));
      u.percpuUser = parseNumberList(readOptional(acct, 'cpuacct.usage_percpu_user'));
      const sys = readOptional(acct, 'cpuacct.usage_sys');
      const usr = readOptional(acct, 'cpuacct.usage_user');
      if (sys !== undefined && usr !== undefined) {
        u.kernel = parseUint(sys);
        u.user = parseUint(usr);
      } else {
        const s = parseFlatKeyed(readOptional(acct, 'cpuacct.stat'));
        u.kernel = ((s.system ?? 0) * 1e9) / CLOCK_TICKS;
        u.user = ((s.user ?? 0) * 1e9) / CLOCK_TICKS;
      }
    }
    const cpu = this.byController.get('cpu');
    if (cpu) {
      const s = parseFlatKeyed(readOptional(cpu, 'cpu.stat'));
      st.cpu.throttling = { periods: s.nr_periods ?? 0, throttledPeriods: s.nr_throttled ?? 0, throttledTime: s.throttled_time ?? 0 };
    }
    const mem = this.byController.get('memory');
    if (mem) {
      const entry = (prefix: string): MemoryEntry => ({
        usage: parseUint(readOptional(mem, `${prefix}usage_in_bytes`)),
        max: parseUint(readOptional(mem, `${prefix}max_usage_in_bytes`)),
        limit: parseUint(readOptional(mem, `${prefix}limit_in_bytes`)),
        failcnt: parseUint(readOptional(mem, `${prefix}failcnt`)),
      });
      st.memory.usage = entry('memory.');
      st.memory.swap = entry('memory.memsw.');
      st.memory.kernel = entry('memory.kmem.');
      st.memory.kernelTCP = entry('memory.kmem.tcp.');
      st.memory.raw = parseFlatKeyed(readOptional(mem, 'memory.stat'));
      st.memory.cache = st.memory.raw.total_cache ?? st.memory.raw.cache ?? 0;
      st.memory.oomKill = this.oomKillCount();
    }
    const pids = this.byController.get('pids');
    if (pids) {
      st.pids.current = parseUint(readOptional(pids, 'pids.current'));
      const max = (readOptional(pids, 'pids.max') ?? 'max').trim();
      st.pids.limit = max === 'max' ? 0 : parseUint(max);
    }
    const blkio = this.byController.get('blkio');
    if (blkio) {
      const pick = (a: string, b: string): BlkioEntry[] => {
        const x = parseBlkio(readOptional(blkio, a));
        return x.length > 0 ? x : parseBlkio(readOptional(blkio, b));
      };
      st.blkio.ioServiceBytesRecursive = pick('blkio.io_service_bytes_recursive', 'blkio.throttle.io_service_bytes_recursive');
      st.blkio.ioServicedRecursive = pick('blkio.io_serviced_recursive', 'blkio.throttle.io_serviced_recursive');
    }
    const huge = this.byController.get('hugetlb');
    if (huge) {
      for (const size of hugepageSizes(huge, '.limit_in_bytes')) {
        st.hugetlb[size] = {
          usage: parseUint(readOptional(huge, `hugetlb.${size}.usage_in_bytes`)),
          max: parseUint(readOptional(huge, `hugetlb.${size}.max_usage_in_bytes`)),
          failcnt: parseUint(readOptional(huge, `hugetlb.${size}.failcnt`)),
        };
      }
    }
    return st;
  }
}

export function emptyEntry(): MemoryEntry {
  return { limit: 0, usage: 0, max: 0, failcnt: 0 };
}

export function rdmaLine(dev: string, lim: { hcaHandles?: number; hcaObjects?: number }): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(dev)) throw new SpecError(`linux.resources.rdma.${dev}`, 'invalid RDMA device name');
  const parts = [dev];
  if (lim.hcaHandles !== undefined) parts.push(`hca_handle=${lim.hcaHandles}`);
  if (lim.hcaObjects !== undefined) parts.push(`hca_object=${lim.hcaObjects}`);
  return parts.join(' ');
}

/** "8:0 Read 1234" lines (v1 blkio); "Total" lines are skipped. */
export function parseBlkio(text: string | undefined): BlkioEntry[] {
  const out: BlkioEntry[] = [];
  for (const line of (text ?? '').split('\n')) {
    const m = /^(\d+):(\d+) (\S+) (\d+)$/.exec(line.trim());
    if (m) out.push({ major: Number(m[1]), minor: Number(m[2]), op: m[3], value: Number(m[4]) });
  }
  return out;
}

/** Page sizes ("2MB") that have hugetlb.<size><suffix> files in dir. */
export function hugepageSizes(dir: string, suffix: string): string[] {
  const names = readDirNames(dir);
  const out: string[] = [];
  for (const n of names) {
    if (!n.startsWith('hugetlb.') || !n.endsWith(suffix)) continue;
    const size = n.slice('hugetlb.'.length, n.length - suffix.length);
    if (HUGEPAGE_SIZE.test(size)) out.push(size);
  }
  return out.sort();
}

function readDirNames(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}
