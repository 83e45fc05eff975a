/**
 * Compiles an OCI `linux.seccomp` profile into a classic BPF program for
 * seccomp(SECCOMP_SET_MODE_FILTER). Semantics follow runc + libseccomp:
 *
 * - The filter covers the native ABI plus `architectures` that can run on it (x86_64: X86_64, X86,
 *   X32; aarch64: AARCH64). Other audit architectures get SECCOMP_RET_KILL_PROCESS. Listed
 *   architectures Corral has no syscall table for (ARM) are left out with a warning (killed too);
 *   architectures that cannot occur on the native machine are dead code and are dropped.
 * - On AUDIT_ARCH_X86_64 a syscall number >= __X32_SYSCALL_BIT (0x40000000) is an x32 call: it is
 *   looked up in the x32 table when SCMP_ARCH_X32 is listed, and killed otherwise. nr == -1 (a
 *   tracer skipping the call) gets the default action, as in libseccomp.
 * - Rules are tried in profile order; the first whose conditions all hold (AND) decides. A rule whose
 *   action (with its errno) equals the default action is dropped, as runc does.
 * - Argument comparisons are unsigned 64-bit, done on the high and low 32-bit words. For 32-bit ABIs
 *   (x86, x32) only the low word is compared, with the value truncated, as libseccomp does.
 *   SCMP_CMP_MASKED_EQ(mask=value, datum=valueTwo) is (arg & mask) == (datum & mask), as in libseccomp.
 * - Unknown syscall names (for an ABI) are ignored with a warning.
 * - runc's -ENOSYS stub: unless the default action is ALLOW/LOG/TRACE, on each listed architecture a
 *   syscall number above the highest one the profile names returns ENOSYS (so that libc falls back
 *   from syscalls newer than the profile) instead of the default action.
 * - On x86 a rule without conditions on a socket or SysV IPC call also matches the multiplexed form
 *   socketcall(call, ...) / ipc(call, ...), as libseccomp does (ipc's call is compared on its low 16
 *   bits, the part the kernel dispatches on).
 *
 * Layout: load arch, jump to the ABI's section; each section is a binary search over sorted
 * syscall-number ranges (O(log n) jumps per lookup), whose leaves are RETs or per-syscall argument
 * chains. Jumps beyond 255 instructions go through BPF_JA trampolines (32-bit offsets).
 */
import { SpecError, UnimplementedError } from '../../errors.ts';
import {
  AUDIT_ARCH_AARCH64,
  AUDIT_ARCH_I386,
  AUDIT_ARCH_X86_64,
  BPF_ABS,
  BPF_ALU,
  BPF_AND,
  BPF_JA,
  BPF_JEQ,
  BPF_JGE,
  BPF_JGT,
  BPF_JMP,
  BPF_K,
  BPF_LD,
  BPF_MAXINSNS,
  BPF_RET,
  BPF_W,
  SECCOMP_DATA_ARCH,
  SECCOMP_DATA_NR,
  SECCOMP_FILTER_FLAG_LOG,
  SECCOMP_FILTER_FLAG_SPEC_ALLOW,
  SECCOMP_FILTER_FLAG_TSYNC,
  SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  SECCOMP_RET_KILL_PROCESS,
  SECCOMP_RET_KILL_THREAD,
  SECCOMP_RET_LOG,
  SECCOMP_RET_TRACE,
  SECCOMP_RET_TRAP,
  X32_SYSCALL_BIT,
  argHi,
  argLo,
  encodeProgram,
  type SockFilter,
} from './bpf.ts';
import { syscallsAarch64 } from './syscalls-aarch64.ts';
import { syscallsX32 } from './syscalls-x32.ts';
import { syscallsX86 } from './syscalls-x86.ts';
import { syscallsX86_64 } from './syscalls-x86_64.ts';
import type { LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArch, LinuxSeccompFlag, LinuxSeccompOperator, NativeArch } from './types.ts';
import { validateSeccomp } from './validate.ts';

export type AbiName = 'x86_64' | 'x86' | 'x32' | 'aarch64';

export interface Abi {
  name: AbiName;
  scmp: LinuxSeccompArch;
  audit: number;
  table: Readonly<Record<string, number>>;
  /** 32-bit ABIs compare only the low word of arguments. */
  bits: 32 | 64;
  /** Syscall numbers this ABI's section sees (inclusive). */
  lo: number;
  hi: number;
}

export const ABIS: Readonly<Record<AbiName, Abi>> = {
  x86_64: { name: 'x86_64', scmp: 'SCMP_ARCH_X86_64', audit: AUDIT_ARCH_X86_64, table: syscallsX86_64, bits: 64, lo: 0, hi: X32_SYSCALL_BIT - 1 },
  x32: { name: 'x32', scmp: 'SCMP_ARCH_X32', audit: AUDIT_ARCH_X86_64, table: syscallsX32, bits: 32, lo: X32_SYSCALL_BIT, hi: 0xffffffff },
  x86: { name: 'x86', scmp: 'SCMP_ARCH_X86', audit: AUDIT_ARCH_I386, table: syscallsX86, bits: 32, lo: 0, hi: 0xffffffff },
  aarch64: { name: 'aarch64', scmp: 'SCMP_ARCH_AARCH64', audit: AUDIT_ARCH_AARCH64, table: syscallsAarch64, bits: 64, lo: 0, hi: 0xffffffff },
};

/** Architectures whose processes can run on each native machine (and so can reach the filter). */
export const COMPATIBLE_ARCHES: Readonly<Record<NativeArch, readonly LinuxSeccompArch[]>> = {
  x86_64: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
  aarch64: ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'],
};

const SCMP_TO_ABI: Partial<Record<LinuxSeccompArch, AbiName>> = {
  SCMP_ARCH_X86_64: 'x86_64',
  SCMP_ARCH_X32: 'x32',
  SCMP_ARCH_X86: 'x86',
  SCMP_ARCH_AARCH64: 'aarch64',
};

/** x86 socketcall(2) (nr 102) call numbers (linux/net.h SYS_*). */
export const X86_SOCKETCALL: Readonly<Record<string, number>> = {
  socket: 1, bind: 2, connect: 3, listen: 4, accept: 5, getsockname: 6, getpeername: 7, socketpair: 8, send: 9,
  recv: 10, sendto: 11, recvfrom: 12, shutdown: 13, setsockopt: 14, getsockopt: 15, sendmsg: 16, recvmsg: 17,
  accept4: 18, recvmmsg: 19, sendmmsg: 20,
};
/** x86 ipc(2) (nr 117) call numbers (linux/ipc.h). */
export const X86_IPC: Readonly<Record<string, number>> = {
  semop: 1, semget: 2, semctl: 3, semtimedop: 4, msgsnd: 11, msgrcv: 12, msgget: 13, msgctl: 14,
  shmat: 21, shmdt: 22, shmget: 23, shmctl: 24,
};
export const X86_NR_SOCKETCALL = 102;
export const X86_NR_IPC = 117;

export const ENOSYS = 38;
export const EPERM = 1;

const FLAG_BITS: Record<LinuxSeccompFlag, number> = {
  SECCOMP_FILTER_FLAG_TSYNC: SECCOMP_FILTER_FLAG_TSYNC,
  SECCOMP_FILTER_FLAG_LOG: SECCOMP_FILTER_FLAG_LOG,
  SECCOMP_FILTER_FLAG_SPEC_ALLOW: SECCOMP_FILTER_FLAG_SPEC_ALLOW,
  SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
};

/** The SECCOMP_RET_* value of an action. ERRNO and TRACE default to EPERM, as in runc. */
export function actionReturn(action: LinuxSeccompAction, errnoRet?: number): number {
  switch (action) {
    case 'SCMP_ACT_KILL':
    case 'SCMP_ACT_KILL_THREAD':
      return SECCOMP_RET_KILL_THREAD;
    case 'SCMP_ACT_KILL_PROCESS':
      return SECCOMP_RET_KILL_PROCESS;
    case 'SCMP_ACT_TRAP':
      return SECCOMP_RET_TRAP;
    case 'SCMP_ACT_ERRNO':
      return (SECCOMP_RET_ERRNO | ((errnoRet ?? EPERM) & 0xffff)) >>> 0;
    case 'SCMP_ACT_TRACE':
      return (SECCOMP_RET_TRACE | ((errnoRet ?? EPERM) & 0xffff)) >>> 0;
    case 'SCMP_ACT_ALLOW':
      return SECCOMP_RET_ALLOW;
    case 'SCMP_ACT_LOG':
      return SECCOMP_RET_LOG;
    case 'SCMP_ACT_NOTIFY':
      throw notifyUnsupported();
  }
}

function notifyUnsupported(): UnimplementedError {
  return new UnimplementedError(
    'linux.seccomp: SCMP_ACT_NOTIFY (seccomp user notification to a listener at listenerPath) is not supported by Corral; use SCMP_ACT_ERRNO or SCMP_ACT_TRACE instead',
  );
}

export function hostArch(): NativeArch {
  if (process.arch === 'x64') return 'x86_64';
  if (process.arch === 'arm64') return 'aarch64';
  throw new UnimplementedError(`seccomp: Corral has no syscall tables for host architecture ${process.arch}`);
}

export interface CompileOptions {
  /** The machine's ABI (default: the host's). */
  nativeArch?: NativeArch;
  /** runc's -ENOSYS stub for syscalls newer than the profile (default true). */
  enosysStub?: boolean;
}

export interface CompiledSeccomp {
  /** struct sock_filter records (8 bytes each, little-endian). */
  program: Uint8Array;
  /** SECCOMP_FILTER_FLAG_* bits from spec.flags, for seccomp(2). */
  flags: number;
  warnings: string[];
}

interface Cond {
  index: number;
  op: LinuxSeccompOperator;
  value: bigint;
  valueTwo: bigint;
}
interface Rule {
  conds: Cond[];
  ret: number;
}
type Leaf = { kind: 'ret'; ret: number } | { kind: 'chain'; rules: Rule[]; key: string };
interface Segment {
  lo: number;
  hi: number;
  leaf: Leaf;
}

/** What the compiler decided for one ABI (exported for tests and diagnostics). */
export interface AbiPlan {
  abi: Abi;
  /** Per syscall number, the rules in order (default-action rules already dropped). */
  rules: Map<number, Rule[]>;
  /** Numbers >= this return ENOSYS (runc stub), if set. */
  enosysFrom?: number;
  unknown: string[];
}

export interface SeccompPlan {
  native: NativeArch;
  defaultRet: number;
  abis: AbiPlan[];
  flags: number;
  warnings: string[];
}

const toBig = (v: number | bigint | undefined): bigint => (v === undefined ? 0n : BigInt(v));

/** Resolve a validated profile into per-ABI rule tables. */
export function planSeccomp(spec: LinuxSeccomp, opts: CompileOptions = {}): SeccompPlan {
  validateSeccomp(spec);
  if (spec.defaultAction === 'SCMP_ACT_NOTIFY' || spec.syscalls?.some((s) => s.action === 'SCMP_ACT_NOTIFY')) throw notifyUnsupported();
  const native = opts.nativeArch ?? hostArch();
  const warnings: string[] = [];
  const defaultRet = actionReturn(spec.defaultAction, spec.defaultErrnoRet);
  let flags = 0;
  for (const f of spec.flags ?? []) flags |= FLAG_BITS[f];

  const listed = spec.architectures ?? [];
  const names: AbiName[] = [native];
  for (const a of listed) {
    if (!COMPATIBLE_ARCHES[native].includes(a)) continue; // cannot reach a filter on this machine
    const abi = SCMP_TO_ABI[a];
    if (!abi) {
      warnings.push(`${a}: Corral has no syscall table for this architecture; its processes will be killed (SECCOMP_RET_KILL_PROCESS)`);
      continue;
    }
    if (!names.includes(abi)) names.push(abi);
  }

  const permissiveDefault = ['SCMP_ACT_ALLOW', 'SCMP_ACT_LOG', 'SCMP_ACT_TRACE'].includes(spec.defaultAction);
  const stub = (opts.enosysStub ?? true) && !permissiveDefault;
  const abis: AbiPlan[] = [];
  for (const name of names) {
    const abi = ABIS[name];
    const rules = new Map<number, Rule[]>();
    const push = (nr: number, r: Rule) => {
      const l = rules.get(nr);
      if (l) l.push(r);
      else rules.set(nr, [r]);
    };
    const unknown = new Set<string>();
    const muxWithArgs = new Set<string>();
    let truncated = false;
    let maxNr = -1;
    for (const sc of spec.syscalls ?? []) {
      const ret = actionReturn(sc.action, sc.errnoRet);
      const conds: Cond[] = (sc.args ?? []).map((a) => ({ index: a.index, op: a.op, value: toBig(a.value), valueTwo: toBig(a.valueTwo) }));
      if (abi.bits === 32 && conds.some((c) => c.value > 0xffffffffn || c.valueTwo > 0xffffffffn)) truncated = true;
      for (const n of sc.names) {
        const nr = Object.hasOwn(abi.table, n) ? abi.table[n] : undefined;
        const sock = name === 'x86' && Object.hasOwn(X86_SOCKETCALL, n) ? X86_SOCKETCALL[n] : undefined;
        const ipc = name === 'x86' && Object.hasOwn(X86_IPC, n) ? X86_IPC[n] : undefined;
        if (nr === undefined && sock === undefined && ipc === undefined) {
          unknown.add(n);
          continue;
        }
        if (nr !== undefined && nr > maxNr) maxNr = nr;
        if (ret === defaultRet) continue; // redundant with the default action (runc skips it)
        if (nr !== undefined) push(nr, { conds, ret });
        if (sock !== undefined || ipc !== undefined) {
          if (conds.length) {
            muxWithArgs.add(n);
            continue;
          }
          if (sock !== undefined) push(X86_NR_SOCKETCALL, { conds: [{ index: 0, op: 'SCMP_CMP_EQ', value: BigInt(sock), valueTwo: 0n }], ret });
          else push(X86_NR_IPC, { conds: [{ index: 0, op: 'SCMP_CMP_MASKED_EQ', value: 0xffffn, valueTwo: BigInt(ipc!) }], ret });
        }
      }
    }
    if (unknown.size) {
      warnings.push(`${abi.scmp}: ignoring ${unknown.size} syscall name(s) unknown for this architecture: ${[...unknown].sort().join(', ')}`);
    }
    if (muxWithArgs.size) {
      warnings.push(
        `${abi.scmp}: rules with argument conditions on ${[...muxWithArgs].sort().join(', ')} apply to the direct syscalls only; through socketcall(2)/ipc(2) those calls follow the socketcall/ipc rules`,
      );
    }
    if (truncated) warnings.push(`${abi.scmp}: argument values above 32 bits are truncated to their low 32 bits on this 32-bit ABI (as libseccomp does)`);
    const plan: AbiPlan = { abi, rules, unknown: [...unknown].sort() };
    if (stub && listed.includes(abi.scmp) && maxNr > 0 && maxNr < abi.hi) plan.enosysFrom = maxNr + 1;
    abis.push(plan);
  }
  return { native, defaultRet, abis, flags, warnings };
}

/** Rules after the first unconditional one can never match. */
function reachable(rules: Rule[]): Rule[] {
  const i = rules.findIndex((r) => r.conds.length === 0);
  return i < 0 ? rules : rules.slice(0, i + 1);
}

function leafFor(rules: Rule[]): Leaf {
  const r = reachable(rules);
  if (r[0].conds.length === 0) return { kind: 'ret', ret: r[0].ret };
  const key = JSON.stringify(r, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
  return { kind: 'chain', rules: r, key };
}

const sameLeaf = (a: Leaf, b: Leaf) => (a.kind === 'ret' && b.kind === 'ret' ? a.ret === b.ret : a.kind === 'chain' && b.kind === 'chain' && a.key === b.key);

/** Sorted, merged, gap-free ranges covering [abi.lo, abi.hi]. */
export function segmentsFor(plan: AbiPlan, defaultRet: number): Segment[] {
  const { abi } = plan;
  const enosys: Leaf = { kind: 'ret', ret: (SECCOMP_RET_ERRNO | ENOSYS) >>> 0 };
  const dflt: Leaf = { kind: 'ret', ret: defaultRet };
  const segs: Segment[] = [];
  const add = (lo: number, hi: number, leaf: Leaf) => {
    if (lo > hi) return;
    const last = segs[segs.length - 1];
    if (last && last.hi + 1 === lo && sameLeaf(last.leaf, leaf)) last.hi = hi;
    else segs.push({ lo, hi, leaf });
  };
  const gap = (lo: number, hi: number) => {
    const e = plan.enosysFrom;
    if (e === undefined || hi < e) add(lo, hi, dflt);
    else if (lo >= e) add(lo, hi, enosys);
    else {
      add(lo, e - 1, dflt);
      add(e, hi, enosys);
    }
  };
  let next = abi.lo;
  for (const nr of [...plan.rules.keys()].filter((n) => n >= abi.lo && n <= abi.hi).sort((a, b) => a - b)) {
    gap(next, nr - 1);
    add(nr, nr, leafFor(plan.rules.get(nr)!));
    next = nr + 1;
  }
  gap(next, abi.hi);
  return segs;
}

/**
 * Builds the program back to front: every jump goes forward, so an instruction's targets are
 * already placed when it is emitted, and distances are known. Indexes count from the end.
 */
class Emitter {
  private rev: SockFilter[] = [];
  private rets = new Map<number, number>();

  get size(): number {
    return this.rev.length;
  }
  /** Instructions skipped by a jump from the next emitted instruction to `target`. */
  private dist(target: number): number {
    return this.rev.length - target - 1;
  }
  private push(code: number, jt: number, jf: number, k: number): number {
    this.rev.push({ code, jt, jf, k: k >>> 0 });
    return this.rev.length - 1;
  }
  ld(offset: number): number {
    return this.push(BPF_LD | BPF_W | BPF_ABS, 0, 0, offset);
  }
  and(k: number): number {
    return this.push(BPF_ALU | BPF_AND | BPF_K, 0, 0, k);
  }
  ret(k: number): number {
    const i = this.rets.get(k);
    if (i !== undefined && this.dist(i) <= 240) return i;
    const j = this.push(BPF_RET | BPF_K, 0, 0, k);
    this.rets.set(k, j);
    return j;
  }
  ja(target: number): number {
    return this.push(BPF_JMP | BPF_JA, 0, 0, this.dist(target));
  }
  /** Make the next emitted instruction fall through to `target` (adding a JA unless adjacent). */
  flow(target: number): void {
    if (target !== this.rev.length - 1) this.ja(target);
  }
  /** Conditional jump on A; long distances go through JA trampolines. */
  jmp(op: number, k: number, t: number, f: number): number {
    if (t === f) return t;
    for (;;) {
      if (this.dist(t) > 255) t = this.ja(t);
      else if (this.dist(f) > 255) f = this.ja(f);
      else break;
    }
    return this.push(BPF_JMP | op | BPF_K, this.dist(t), this.dist(f), k);
  }
  finish(): SockFilter[] {
    return [...this.rev].reverse();
  }
}

const lo32 = (v: bigint) => Number(v & 0xffffffffn);
const hi32 = (v: bigint) => Number((v >> 32n) & 0xffffffffn);

/**
 * One comparison `args[c.index] <op> value` with success → T, failure → F. Returns its entry.
 * Each part starts with its own load, so an entry that collapsed onto T/F needs no load.
 */
function emitCmp(e: Emitter, c: Cond, T: number, F: number, bits: 32 | 64): number {
  // A word-compare: returns the entry of "ld off; [and mask;] <jumps>" or a collapsed target.
  const part = (off: number, jumps: () => number, mask?: number): number => {
    const start = e.size;
    const j = jumps();
    if (j < start) return j; // collapsed onto an existing block
    e.flow(j);
    if (mask !== undefined) e.and(mask);
    return e.ld(off);
  };
  const loOff = argLo(c.index);
  const hiOff = argHi(c.index);
  const v = c.value;
  switch (c.op) {
    case 'SCMP_CMP_EQ':
    case 'SCMP_CMP_NE': {
      const [t, f] = c.op === 'SCMP_CMP_EQ' ? [T, F] : [F, T];
      const lo = part(loOff, () => e.jmp(BPF_JEQ, lo32(v), t, f));
      if (bits === 32) return lo;
      return part(hiOff, () => e.jmp(BPF_JEQ, hi32(v), lo, f));
    }
    case 'SCMP_CMP_GT':
    case 'SCMP_CMP_GE':
    case 'SCMP_CMP_LT':
    case 'SCMP_CMP_LE': {
      // LT = !GE, LE = !GT
      const strict = c.op === 'SCMP_CMP_GT' || c.op === 'SCMP_CMP_LE';
      const [t, f] = c.op === 'SCMP_CMP_GT' || c.op === 'SCMP_CMP_GE' ? [T, F] : [F, T];
      const lo = part(loOff, () => e.jmp(strict ? BPF_JGT : BPF_JGE, lo32(v), t, f));
      if (bits === 32) return lo;
      // hi > vhi → t; hi == vhi → compare lo; hi < vhi → f
      return part(hiOff, () => {
        const eq = e.jmp(BPF_JEQ, hi32(v), lo, f);
        return e.jmp(BPF_JGT, hi32(v), t, eq);
      });
    }
    case 'SCMP_CMP_MASKED_EQ': {
      // libseccomp compares (arg & mask) == (datum & mask)
      const mask = v;
      const datum = c.valueTwo & v;
      const lo = part(loOff, () => e.jmp(BPF_JEQ, lo32(datum), T, F), lo32(mask));
      if (bits === 32) return lo;
      if (hi32(mask) === 0 && hi32(datum) === 0) return lo; // (hi & 0) == 0 always holds
      return part(hiOff, () => e.jmp(BPF_JEQ, hi32(datum), lo, F), hi32(mask));
    }
  }
}

function emitChain(e: Emitter, rules: Rule[], defaultRet: number, bits: 32 | 64): number {
  let next = e.ret(defaultRet);
  for (let i = rules.length - 1; i >= 0; i--) {
    const r = rules[i];
    let t = e.ret(r.ret);
    for (let k = r.conds.length - 1; k >= 0; k--) t = emitCmp(e, r.conds[k], t, next, bits);
    next = t;
  }
  return next;
}

/** Binary search over the segments; A holds the syscall number. */
function emitTree(e: Emitter, segs: Segment[], defaultRet: number, bits: 32 | 64): number {
  const chains = new Map<string, number>();
  const leaf = (l: Leaf): number => {
    if (l.kind === 'ret') return e.ret(l.ret);
    let at = chains.get(l.key);
    if (at === undefined) {
      at = emitChain(e, l.rules, defaultRet, bits);
      chains.set(l.key, at);
    }
    return at;
  };
  const walk = (a: number, b: number): number => {
    if (a === b) return leaf(segs[a].leaf);
    const m = (a + b + 1) >> 1;
    const right = walk(m, b);
    const left = walk(a, m - 1);
    return e.jmp(BPF_JGE, segs[m].lo, right, left);
  };
  return walk(0, segs.length - 1);
}

/** Assemble a plan into sock_filter instructions. */
export function assemble(plan: SeccompPlan): SockFilter[] {
  const e = new Emitter();
  const byName = new Map(plan.abis.map((p) => [p.abi.name, p]));
  // Sections, emitted back to front; dispatch order is the plan order.
  const entries: { audit: number; entry: number }[] = [];
  for (const p of [...plan.abis].reverse()) {
    if (p.abi.name === 'x32') continue; // reached through the x86_64 section
    let body: number;
    if (p.abi.name === 'x86_64') {
      const x32 = byName.get('x32');
      const x32Entry = x32 ? emitTree(e, segmentsFor(x32, plan.defaultRet), plan.defaultRet, 32) : e.ret(SECCOMP_RET_KILL_PROCESS);
      // nr == -1 (a tracer skipping the call) stays an x86_64 call, as in libseccomp
      const high = e.jmp(BPF_JEQ, 0xffffffff, e.ret(plan.defaultRet), x32Entry);
      const tree = emitTree(e, segmentsFor(p, plan.defaultRet), plan.defaultRet, 64);
      body = e.jmp(BPF_JGE, X32_SYSCALL_BIT, high, tree);
    } else {
      body = emitTree(e, segmentsFor(p, plan.defaultRet), plan.defaultRet, p.abi.bits);
    }
    e.flow(body);
    entries.unshift({ audit: p.abi.audit, entry: e.ld(SECCOMP_DATA_NR) });
  }
  let next = e.ret(SECCOMP_RET_KILL_PROCESS); // bad architecture
  for (const s of [...entries].reverse()) next = e.jmp(BPF_JEQ, s.audit, s.entry, next);
  e.flow(next);
  e.ld(SECCOMP_DATA_ARCH);
  return e.finish();
}

/** Compile an OCI seccomp profile to a BPF program for seccomp(SECCOMP_SET_MODE_FILTER). */
export function compileSeccomp(spec: LinuxSeccomp, opts: CompileOptions = {}): CompiledSeccomp {
  const plan = planSeccomp(spec, opts);
  const insns = assemble(plan);
  if (insns.length > BPF_MAXINSNS) {
    throw new SpecError(
      'linux.seccomp',
      `compiles to ${insns.length} BPF instructions, above the kernel limit of ${BPF_MAXINSNS}; merge rules, drop architectures or argument conditions`,
    );
  }
  return { program: encodeProgram(insns), flags: plan.flags, warnings: plan.warnings };
}
