/**
 * A straightforward evaluator of an OCI seccomp profile, written independently of the compiler
 * (no BPF, no ranges, BigInt comparisons): the decision the filter must return for one syscall.
 * It encodes the semantics documented in compile.ts (runc + libseccomp).
 */
import { syscallsAarch64 } from '../syscalls-aarch64.ts';
import { syscallsX32 } from '../syscalls-x32.ts';
import { syscallsX86 } from '../syscalls-x86.ts';
import { syscallsX86_64 } from '../syscalls-x86_64.ts';
import type { LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, NativeArch } from '../types.ts';

export const AUDIT = { X86_64: 0xc000003e, I386: 0x40000003, AARCH64: 0xc00000b7, ARM: 0x40000028 } as const;

export const RET = {
  KILL_PROCESS: 0x80000000,
  KILL_THREAD: 0,
  TRAP: 0x00030000,
  ERRNO: 0x00050000,
  TRACE: 0x7ff00000,
  LOG: 0x7ffc0000,
  ALLOW: 0x7fff0000,
} as const;

export function refRet(action: LinuxSeccompAction, errno?: number): number {
  switch (action) {
    case 'SCMP_ACT_KILL':
    case 'SCMP_ACT_KILL_THREAD':
      return 0;
    case 'SCMP_ACT_KILL_PROCESS':
      return 0x80000000;
    case 'SCMP_ACT_TRAP':
      return 0x30000;
    case 'SCMP_ACT_ERRNO':
      return 0x50000 + (errno ?? 1);
    case 'SCMP_ACT_TRACE':
      return 0x7ff00000 + (errno ?? 1);
    case 'SCMP_ACT_ALLOW':
      return 0x7fff0000;
    case 'SCMP_ACT_LOG':
      return 0x7ffc0000;
    default:
      throw new Error(`reference: action ${action} not modelled`);
  }
}

const SOCKETCALL: Record<string, number> = {
  socket: 1, bind: 2, connect: 3, listen: 4, accept: 5, getsockname: 6, getpeername: 7, socketpair: 8, send: 9,
  recv: 10, sendto: 11, recvfrom: 12, shutdown: 13, setsockopt: 14, getsockopt: 15, sendmsg: 16, recvmsg: 17,
  accept4: 18, recvmmsg: 19, sendmmsg: 20,
};
const IPC: Record<string, number> = {
  semop: 1, semget: 2, semctl: 3, semtimedop: 4, msgsnd: 11, msgrcv: 12, msgget: 13, msgctl: 14, shmat: 21,
  shmdt: 22, shmget: 23, shmctl: 24,
};

export interface Call {
  arch: number;
  nr: number;
  args: bigint[];
}

const M32 = 0xffffffffn;
const M64 = (1n << 64n) - 1n;

function holds(a: LinuxSeccompArg, args: bigint[], bits: 32 | 64): boolean {
  const mask = bits === 32 ? M32 : M64;
  const x = (args[a.index] ?? 0n) & mask;
  const v = BigInt(a.value) & mask;
  const v2 = BigInt(a.valueTwo ?? 0) & mask;
  switch (a.op) {
    case 'SCMP_CMP_EQ': return x === v;
    case 'SCMP_CMP_NE': return x !== v;
    case 'SCMP_CMP_LT': return x < v;
    case 'SCMP_CMP_LE': return x <= v;
    case 'SCMP_CMP_GT': return x > v;
    case 'SCMP_CMP_GE': return x >= v;
    case 'SCMP_CMP_MASKED_EQ': return (x & v) === (v2 & v); // libseccomp masks the datum too
  }
}

function get(table: Readonly<Record<string, number>>, name: string): number | undefined {
  return Object.hasOwn(table, name) ? table[name] : undefined;
}

export function reference(spec: LinuxSeccomp, native: NativeArch, call: Call, opts: { enosysStub?: boolean } = {}): number {
  const nr = call.nr >>> 0;
  const listed = spec.architectures ?? [];
  let arch: string | undefined;
  if (native === 'x86_64' && call.arch === AUDIT.X86_64) arch = nr >= 0x40000000 && nr !== 0xffffffff ? 'SCMP_ARCH_X32' : 'SCMP_ARCH_X86_64';
  else if (native === 'x86_64' && call.arch === AUDIT.I386) arch = 'SCMP_ARCH_X86';
  else if (native === 'aarch64' && call.arch === AUDIT.AARCH64) arch = 'SCMP_ARCH_AARCH64';
  const nativeScmp = native === 'x86_64' ? 'SCMP_ARCH_X86_64' : 'SCMP_ARCH_AARCH64';
  if (!arch || (arch !== nativeScmp && !listed.includes(arch as never))) return RET.KILL_PROCESS;
  const table = { SCMP_ARCH_X86_64: syscallsX86_64, SCMP_ARCH_X32: syscallsX32, SCMP_ARCH_X86: syscallsX86, SCMP_ARCH_AARCH64: syscallsAarch64 }[arch]!;
  const bits = arch === 'SCMP_ARCH_X86' || arch === 'SCMP_ARCH_X32' ? 32 : 64;
  const dflt = refRet(spec.defaultAction, spec.defaultErrnoRet);
  for (const rule of spec.syscalls ?? []) {
    const ret = refRet(rule.action, rule.errnoRet);
    if (ret === dflt) continue;
    const args = rule.args ?? [];
    for (const name of rule.names) {
      if (get(table, name) === nr && args.every((a) => holds(a, call.args, bits))) return ret;
      if (arch === 'SCMP_ARCH_X86' && args.length === 0) {
        const a0 = call.args[0] ?? 0n;
        if (nr === 102 && get(SOCKETCALL, name) !== undefined && (a0 & M32) === BigInt(SOCKETCALL[name])) return ret;
        if (nr === 117 && get(IPC, name) !== undefined && (a0 & 0xffffn) === BigInt(IPC[name])) return ret;
      }
    }
  }
  // runc's -ENOSYS stub
  if ((opts.enosysStub ?? true) && !['SCMP_ACT_ALLOW', 'SCMP_ACT_LOG', 'SCMP_ACT_TRACE'].includes(spec.defaultAction) && listed.includes(arch as never)) {
    let max = -1;
    for (const rule of spec.syscalls ?? []) for (const n of rule.names) max = Math.max(max, get(table, n) ?? -1);
    if (max > 0 && nr > max && !(arch === 'SCMP_ARCH_X86_64' && nr === 0xffffffff)) return RET.ERRNO + 38;
  }
  return dflt;
}

/** Deterministic PRNG (mulberry32). */
export function rng(seed: number): { next(): number; int(n: number): number; pick<T>(xs: readonly T[]): T; u64(): bigint } {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    next,
    int,
    pick: (xs) => xs[int(xs.length)],
    u64: () => (BigInt(Math.floor(next() * 2 ** 32)) << 32n) | BigInt(Math.floor(next() * 2 ** 32)),
  };
}
