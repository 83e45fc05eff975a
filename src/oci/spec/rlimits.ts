/** RLIMIT_* resource numbers (asm-generic/resource.h; identical on x86_64 and aarch64). */
export const RLIMITS: Record<string, number> = {
  RLIMIT_CPU: 0,
  RLIMIT_FSIZE: 1,
  RLIMIT_DATA: 2,
  RLIMIT_STACK: 3,
  RLIMIT_CORE: 4,
  RLIMIT_RSS: 5,
  RLIMIT_NPROC: 6,
  RLIMIT_NOFILE: 7,
  RLIMIT_MEMLOCK: 8,
  RLIMIT_AS: 9,
  RLIMIT_LOCKS: 10,
  RLIMIT_SIGPENDING: 11,
  RLIMIT_MSGQUEUE: 12,
  RLIMIT_NICE: 13,
  RLIMIT_RTPRIO: 14,
  RLIMIT_RTTIME: 15,
};

/** RLIM_INFINITY as the executor receives it (all 64 bits set). JSON numbers above 2^53 are clamped to it. */
export const RLIM_INFINITY = (1n << 64n) - 1n;

export function rlimitValue(n: number): bigint {
  return n >= Number.MAX_SAFE_INTEGER ? RLIM_INFINITY : BigInt(n);
}
