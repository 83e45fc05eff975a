/**
 * OCI runtime-spec 1.2 `linux.resources` (config-linux.md "Control groups") and the
 * statistics shape reported by `corral events --stats` (the same JSON field names
 * as runc's `events --stats`).
 *
 * Integers are JavaScript numbers. Values above 2^53 (only "unlimited" sentinels in
 * practice) lose precision; readers map "max"/unlimited to {@link UNLIMITED}.
 */

export interface LinuxDeviceCgroup {
  /** true: allow, false: deny. */
  allow: boolean;
  /** 'a' (all), 'c' (char), 'b' (block). Omitted means 'a'. */
  type?: 'a' | 'b' | 'c' | string;
  /** Omitted, null or -1 means all majors (`*`). */
  major?: number | null;
  /** Omitted, null or -1 means all minors (`*`). */
  minor?: number | null;
  /** Any combination of 'r', 'w', 'm'. Omitted means "rwm". */
  access?: string;
}

export interface LinuxMemory {
  limit?: number;
  reservation?: number;
  /** memory+swap limit (v1 semantics). */
  swap?: number;
  /** Deprecated in the spec; ignored by kernels >= 5.16 (warned and skipped). */
  kernel?: number;
  kernelTCP?: number;
  swappiness?: number;
  disableOOMKiller?: boolean;
  useHierarchy?: boolean;
  /** Reject a new limit that is lower than the current usage. */
  checkBeforeUpdate?: boolean;
}

export interface LinuxCPU {
  shares?: number;
  quota?: number;
  burst?: number;
  period?: number;
  realtimeRuntime?: number;
  realtimePeriod?: number;
  cpus?: string;
  mems?: string;
  idle?: number;
}

export interface LinuxPids {
  /** > 0: the limit; <= 0: unlimited ("max"). */
  limit: number;
}

export interface LinuxBlockIODevice {
  major: number;
  minor: number;
}
export interface LinuxWeightDevice extends LinuxBlockIODevice {
  weight?: number;
  leafWeight?: number;
}
export interface LinuxThrottleDevice extends LinuxBlockIODevice {
  rate: number;
}

export interface LinuxBlockIO {
  weight?: number;
  leafWeight?: number;
  weightDevice?: LinuxWeightDevice[];
  throttleReadBpsDevice?: LinuxThrottleDevice[];
  throttleWriteBpsDevice?: LinuxThrottleDevice[];
  throttleReadIOPSDevice?: LinuxThrottleDevice[];
  throttleWriteIOPSDevice?: LinuxThrottleDevice[];
}

export interface LinuxHugepageLimit {
  /** "<size><unit>B", e.g. "64KB", "2MB", "1GB". */
  pageSize: string;
  limit: number;
}

export interface LinuxInterfacePriority {
  name: string;
  priority: number;
}

export interface LinuxNetwork {
  classID?: number;
  priorities?: LinuxInterfacePriority[];
}

export interface LinuxRdma {
  hcaHandles?: number;
  hcaObjects?: number;
}

export interface LinuxResources {
  devices?: LinuxDeviceCgroup[];
  memory?: LinuxMemory;
  cpu?: LinuxCPU;
  pids?: LinuxPids;
  blockIO?: LinuxBlockIO;
  hugepageLimits?: LinuxHugepageLimit[];
  network?: LinuxNetwork;
  rdma?: Record<string, LinuxRdma>;
  /** cgroup v2 only: file name → value, written verbatim. */
  unified?: Record<string, string>;
}

/** 2^64-1 as a number: what runc reports for "no limit". */
export const UNLIMITED = 18446744073709551615;

export interface CpuUsage {
  /** Total CPU time, ns. */
  total: number;
  /** Per-CPU total, ns (v1 only; empty on v2). */
  percpu: number[];
  percpuKernel: number[];
  percpuUser: number[];
  /** ns in kernel mode. */
  kernel: number;
  /** ns in user mode. */
  user: number;
}

export interface Throttling {
  periods: number;
  throttledPeriods: number;
  /** ns. */
  throttledTime: number;
}

export interface CpuStats {
  usage: CpuUsage;
  throttling: Throttling;
}

export interface MemoryEntry {
  limit: number;
  usage: number;
  max: number;
  failcnt: number;
}

export interface MemoryStats {
  cache: number;
  usage: MemoryEntry;
  /** memory+swap, as in runc (v2 values are converted to that meaning). */
  swap: MemoryEntry;
  kernel: MemoryEntry;
  kernelTCP: MemoryEntry;
  /** memory.stat verbatim. */
  raw: Record<string, number>;
  /** OOM kills seen in this cgroup (memory.oom_control / memory.events). */
  oomKill: number;
}

export interface PidsStats {
  current: number;
  /** 0 means unlimited, as in runc. */
  limit: number;
}

export interface BlkioEntry {
  major: number;
  minor: number;
  op: string;
  value: number;
}

export interface BlkioStats {
  ioServiceBytesRecursive: BlkioEntry[];
  ioServicedRecursive: BlkioEntry[];
}

export interface HugetlbStats {
  usage: number;
  max: number;
  failcnt: number;
}

export interface CgroupStats {
  cpu: CpuStats;
  memory: MemoryStats;
  pids: PidsStats;
  blkio: BlkioStats;
  /** Keyed by page size as the spec writes it ("2MB"). */
  hugetlb: Record<string, HugetlbStats>;
}

export type CgroupMode = 'v1' | 'hybrid' | 'v2';

/** 'freezing': a freeze was requested and has not completed; 'absent': no cgroup directory. */
export type CgroupState = 'running' | 'freezing' | 'paused' | 'absent';

export interface SetResult {
  /**
   * cgroup v2 only: a BPF_PROG_TYPE_CGROUP_DEVICE program implementing
   * `resources.devices`. The executor must load it (bpf(BPF_PROG_LOAD); it calls no
   * helpers, so any license string works) and attach it to the cgroup directory with
   * BPF_PROG_ATTACH / BPF_CGROUP_DEVICE (flag BPF_F_ALLOW_MULTI), replacing any program
   * it attached before. Absent when there are no device rules.
   */
  deviceProgram?: Uint8Array;
  /** Settings that were skipped (deprecated or unsupported by this kernel). */
  warnings: string[];
}
