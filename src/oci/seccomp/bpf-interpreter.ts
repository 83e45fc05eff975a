/**
 * A small classic-BPF interpreter with the kernel's semantics for seccomp filters, plus the
 * static checks the kernel applies when loading one (bpf_check_classic + seccomp_check_filter).
 * Used by tests to run compiled programs over (arch, nr, args) tuples.
 */
import {
  BPF_A,
  BPF_ABS,
  BPF_ADD,
  BPF_ALU,
  BPF_AND,
  BPF_DIV,
  BPF_IMM,
  BPF_JA,
  BPF_JEQ,
  BPF_JGE,
  BPF_JGT,
  BPF_JMP,
  BPF_JSET,
  BPF_K,
  BPF_LD,
  BPF_LDX,
  BPF_LEN,
  BPF_LSH,
  BPF_MAXINSNS,
  BPF_MEM,
  BPF_MEMWORDS,
  BPF_MISC,
  BPF_MOD,
  BPF_MUL,
  BPF_NEG,
  BPF_OR,
  BPF_RET,
  BPF_RSH,
  BPF_ST,
  BPF_STX,
  BPF_SUB,
  BPF_TAX,
  BPF_TXA,
  BPF_W,
  BPF_X,
  BPF_XOR,
  SECCOMP_DATA_SIZE,
  decodeProgram,
  type SockFilter,
} from './bpf.ts';

export interface SeccompData {
  nr: number;
  arch: number;
  instructionPointer?: bigint;
  /** Up to six 64-bit arguments (missing ones are 0). */
  args?: readonly bigint[];
}

/** struct seccomp_data in little-endian layout. */
export function seccompDataBytes(d: SeccompData): Uint8Array {
  const b = new Uint8Array(SECCOMP_DATA_SIZE);
  const dv = new DataView(b.buffer);
  dv.setInt32(0, d.nr | 0, true);
  dv.setUint32(4, d.arch >>> 0, true);
  dv.setBigUint64(8, BigInt.asUintN(64, d.instructionPointer ?? 0n), true);
  for (let i = 0; i < 6; i++) dv.setBigUint64(16 + 8 * i, BigInt.asUintN(64, d.args?.[i] ?? 0n), true);
  return b;
}

export class BpfCheckError extends Error {}

const ALLOWED = new Set<number>([
  BPF_LD | BPF_W | BPF_ABS,
  BPF_LD | BPF_W | BPF_LEN,
  BPF_LDX | BPF_W | BPF_LEN,
  BPF_LD | BPF_IMM,
  BPF_LDX | BPF_IMM,
  BPF_LD | BPF_MEM,
  BPF_LDX | BPF_MEM,
  BPF_ST,
  BPF_STX,
  BPF_MISC | BPF_TAX,
  BPF_MISC | BPF_TXA,
  BPF_RET | BPF_K,
  BPF_RET | BPF_A,
  BPF_JMP | BPF_JA,
  ...[BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH, BPF_MOD, BPF_XOR].flatMap((op) => [BPF_ALU | op | BPF_K, BPF_ALU | op | BPF_X]),
  BPF_ALU | BPF_NEG,
  ...[BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET].flatMap((op) => [BPF_JMP | op | BPF_K, BPF_JMP | op | BPF_X]),
]);

/** The load-time checks the kernel applies to a seccomp filter; throws BpfCheckError. */
export function checkProgram(prog: readonly SockFilter[]): void {
  if (prog.length === 0 || prog.length > BPF_MAXINSNS) throw new BpfCheckError(`program length ${prog.length} not in 1..${BPF_MAXINSNS}`);
  prog.forEach((ins, pc) => {
    if (!ALLOWED.has(ins.code)) throw new BpfCheckError(`pc ${pc}: opcode 0x${ins.code.toString(16)} not allowed in seccomp filters`);
    if (ins.code === (BPF_LD | BPF_W | BPF_ABS) && (ins.k >= SECCOMP_DATA_SIZE || ins.k & 3)) {
      throw new BpfCheckError(`pc ${pc}: load offset ${ins.k} outside struct seccomp_data or unaligned`);
    }
    if ((ins.code & 0x07) === BPF_JMP) {
      if ((ins.code & 0xf0) === BPF_JA) {
        if (pc + 1 + ins.k >= prog.length) throw new BpfCheckError(`pc ${pc}: ja beyond end`);
      } else if (pc + 1 + ins.jt >= prog.length || pc + 1 + ins.jf >= prog.length) {
        throw new BpfCheckError(`pc ${pc}: conditional jump beyond end`);
      }
    }
    if ((ins.code === (BPF_ALU | BPF_DIV | BPF_K) || ins.code === (BPF_ALU | BPF_MOD | BPF_K)) && ins.k === 0) {
      throw new BpfCheckError(`pc ${pc}: division by constant zero`);
    }
    if ((ins.code === (BPF_LD | BPF_MEM) || ins.code === (BPF_LDX | BPF_MEM) || ins.code === BPF_ST || ins.code === BPF_STX) && ins.k >= BPF_MEMWORDS) {
      throw new BpfCheckError(`pc ${pc}: scratch memory index ${ins.k} out of range`);
    }
  });
  const last = prog[prog.length - 1];
  if (last.code !== (BPF_RET | BPF_K) && last.code !== (BPF_RET | BPF_A)) throw new BpfCheckError('last instruction is not a RET');
}

export interface RunResult {
  /** The SECCOMP_RET_* value the filter returned. */
  ret: number;
  /** Instructions executed. */
  steps: number;
}

/** Run a program (bytes or decoded) on one seccomp_data. Throws on programs that fail checkProgram. */
export function runFilter(program: Uint8Array | readonly SockFilter[], data: SeccompData): RunResult {
  return makeFilter(program)(data);
}

/** Check a program once and return a function running it (for many inputs). */
export function makeFilter(program: Uint8Array | readonly SockFilter[]): (data: SeccompData) => RunResult {
  const prog = program instanceof Uint8Array ? decodeProgram(program) : program;
  checkProgram(prog);
  return (data) => execute(prog, data);
}

function execute(prog: readonly SockFilter[], data: SeccompData): RunResult {
  const bytes = seccompDataBytes(data);
  const dv = new DataView(bytes.buffer);
  const M = new Uint32Array(BPF_MEMWORDS);
  let A = 0;
  let X = 0;
  let steps = 0;
  for (let pc = 0; pc < prog.length; pc++) {
    const { code, jt, jf, k } = prog[pc];
    steps++;
    const src = code & BPF_X ? X : k;
    switch (code & 0x07) {
      case BPF_LD:
        if (code === (BPF_LD | BPF_W | BPF_ABS)) A = dv.getUint32(k, true);
        else if (code === (BPF_LD | BPF_W | BPF_LEN)) A = SECCOMP_DATA_SIZE;
        else if (code === (BPF_LD | BPF_IMM)) A = k;
        else if (code === (BPF_LD | BPF_MEM)) A = M[k];
        break;
      case BPF_LDX:
        if (code === (BPF_LDX | BPF_W | BPF_LEN)) X = SECCOMP_DATA_SIZE;
        else if (code === (BPF_LDX | BPF_IMM)) X = k;
        else if (code === (BPF_LDX | BPF_MEM)) X = M[k];
        break;
      case BPF_ST:
        M[k] = A;
        break;
      case BPF_STX:
        M[k] = X;
        break;
      case BPF_ALU:
        switch (code & 0xf0) {
          case BPF_ADD: A = (A + src) >>> 0; break;
          case BPF_SUB: A = (A - src) >>> 0; break;
          case BPF_MUL: A = Number((BigInt(A) * BigInt(src)) & 0xffffffffn); break;
          case BPF_DIV: if (src === 0) return { ret: 0, steps }; A = Math.floor(A / src) >>> 0; break;
          case BPF_MOD: if (src === 0) return { ret: 0, steps }; A = A % src; break;
          case BPF_OR: A = (A | src) >>> 0; break;
          case BPF_AND: A = (A & src) >>> 0; break;
          case BPF_XOR: A = (A ^ src) >>> 0; break;
          case BPF_LSH: A = src >= 32 ? 0 : (A << src) >>> 0; break;
          case BPF_RSH: A = src >= 32 ? 0 : A >>> src; break;
          case BPF_NEG: A = -A >>> 0; break;
        }
        break;
      case BPF_JMP: {
        const op = code & 0xf0;
        if (op === BPF_JA) {
          pc += k;
          break;
        }
        let cond: boolean;
        if (op === BPF_JEQ) cond = A === src;
        else if (op === BPF_JGT) cond = A > src;
        else if (op === BPF_JGE) cond = A >= src;
        else cond = (A & src) !== 0;
        pc += cond ? jt : jf;
        break;
      }
      case BPF_RET:
        return { ret: (code & BPF_A ? A : k) >>> 0, steps };
      case BPF_MISC:
        if ((code & 0xf8) === BPF_TAX) X = A;
        else if ((code & 0xf8) === BPF_TXA) A = X;
        break;
    }
  }
  throw new BpfCheckError('fell off the end of the program');
}
