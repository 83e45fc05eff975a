/**
 * Classic BPF and seccomp constants (linux/filter.h, linux/bpf_common.h, linux/seccomp.h,
 * linux/audit.h) and the `struct sock_filter` encoding: u16 code, u8 jt, u8 jf, u32 k, in host
 * byte order (little-endian on every architecture Corral supports).
 */

// Instruction classes
export const BPF_LD = 0x00;
export const BPF_LDX = 0x01;
export const BPF_ST = 0x02;
export const BPF_STX = 0x03;
export const BPF_ALU = 0x04;
export const BPF_JMP = 0x05;
export const BPF_RET = 0x06;
export const BPF_MISC = 0x07;
// ld/ldx sizes and modes
export const BPF_W = 0x00;
export const BPF_H = 0x08;
export const BPF_B = 0x10;
export const BPF_IMM = 0x00;
export const BPF_ABS = 0x20;
export const BPF_IND = 0x40;
export const BPF_MEM = 0x60;
export const BPF_LEN = 0x80;
export const BPF_MSH = 0xa0;
// alu/jmp operations
export const BPF_ADD = 0x00;
export const BPF_SUB = 0x10;
export const BPF_MUL = 0x20;
export const BPF_DIV = 0x30;
export const BPF_OR = 0x40;
export const BPF_AND = 0x50;
export const BPF_LSH = 0x60;
export const BPF_RSH = 0x70;
export const BPF_NEG = 0x80;
export const BPF_MOD = 0x90;
export const BPF_XOR = 0xa0;
export const BPF_JA = 0x00;
export const BPF_JEQ = 0x10;
export const BPF_JGT = 0x20;
export const BPF_JGE = 0x30;
export const BPF_JSET = 0x40;
// sources
export const BPF_K = 0x00;
export const BPF_X = 0x08;
export const BPF_A = 0x10; // ret source
// misc
export const BPF_TAX = 0x00;
export const BPF_TXA = 0x80;

export const BPF_MAXINSNS = 4096;
export const BPF_MEMWORDS = 16;

// seccomp filter return values (SECCOMP_RET_*)
export const SECCOMP_RET_KILL_PROCESS = 0x80000000;
export const SECCOMP_RET_KILL_THREAD = 0x00000000;
export const SECCOMP_RET_TRAP = 0x00030000;
export const SECCOMP_RET_ERRNO = 0x00050000;
export const SECCOMP_RET_USER_NOTIF = 0x7fc00000;
export const SECCOMP_RET_TRACE = 0x7ff00000;
export const SECCOMP_RET_LOG = 0x7ffc0000;
export const SECCOMP_RET_ALLOW = 0x7fff0000;
export const SECCOMP_RET_ACTION_FULL = 0xffff0000;
export const SECCOMP_RET_DATA = 0x0000ffff;

// seccomp(2) SECCOMP_SET_MODE_FILTER flags
export const SECCOMP_FILTER_FLAG_TSYNC = 1 << 0;
export const SECCOMP_FILTER_FLAG_LOG = 1 << 1;
export const SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2;
export const SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3;
export const SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 1 << 4;
export const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5;

// AUDIT_ARCH_* (EM_* | __AUDIT_ARCH_64BIT 0x80000000 | __AUDIT_ARCH_LE 0x40000000)
export const AUDIT_ARCH_I386 = 0x40000003;
export const AUDIT_ARCH_X86_64 = 0xc000003e;
export const AUDIT_ARCH_ARM = 0x40000028;
export const AUDIT_ARCH_AARCH64 = 0xc00000b7;

export const X32_SYSCALL_BIT = 0x40000000;

/** struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]. */
export const SECCOMP_DATA_NR = 0;
export const SECCOMP_DATA_ARCH = 4;
export const SECCOMP_DATA_IP = 8;
export const SECCOMP_DATA_ARGS = 16;
export const SECCOMP_DATA_SIZE = 64;
/** Offset of the low / high 32-bit word of args[i] (little-endian). */
export const argLo = (i: number): number => SECCOMP_DATA_ARGS + 8 * i;
export const argHi = (i: number): number => SECCOMP_DATA_ARGS + 8 * i + 4;

export interface SockFilter {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

export function encodeProgram(insns: readonly SockFilter[]): Uint8Array {
  const out = new Uint8Array(insns.length * 8);
  const dv = new DataView(out.buffer);
  insns.forEach((ins, i) => {
    if (ins.jt > 255 || ins.jf > 255 || ins.jt < 0 || ins.jf < 0) throw new RangeError(`BPF instruction ${i}: jump offset jt=${ins.jt} jf=${ins.jf} does not fit 8 bits`);
    dv.setUint16(i * 8, ins.code, true);
    dv.setUint8(i * 8 + 2, ins.jt);
    dv.setUint8(i * 8 + 3, ins.jf);
    dv.setUint32(i * 8 + 4, ins.k >>> 0, true);
  });
  return out;
}

export function decodeProgram(bytes: Uint8Array): SockFilter[] {
  if (bytes.length % 8 !== 0) throw new RangeError(`BPF program length ${bytes.length} is not a multiple of 8`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: SockFilter[] = [];
  for (let off = 0; off < bytes.length; off += 8) {
    out.push({ code: dv.getUint16(off, true), jt: dv.getUint8(off + 2), jf: dv.getUint8(off + 3), k: dv.getUint32(off + 4, true) });
  }
  return out;
}

/** Human-readable listing (for debugging and error messages). */
export function disassemble(insns: readonly SockFilter[]): string {
  const hex = (n: number) => '0x' + (n >>> 0).toString(16);
  return insns
    .map((ins, pc) => {
      const cls = ins.code & 0x07;
      let s: string;
      if (ins.code === (BPF_LD | BPF_W | BPF_ABS)) s = `ld [${ins.k}]`;
      else if (ins.code === (BPF_ALU | BPF_AND | BPF_K)) s = `and #${hex(ins.k)}`;
      else if (ins.code === (BPF_JMP | BPF_JA)) s = `ja ${pc + 1 + ins.k}`;
      else if (cls === BPF_JMP) {
        const op = ({ [BPF_JEQ]: 'jeq', [BPF_JGT]: 'jgt', [BPF_JGE]: 'jge', [BPF_JSET]: 'jset' } as Record<number, string>)[ins.code & 0xf0];
        s = `${op ?? '?'} #${hex(ins.k)} ${pc + 1 + ins.jt} ${pc + 1 + ins.jf}`;
      } else if (ins.code === (BPF_RET | BPF_K)) s = `ret #${hex(ins.k)}`;
      else s = `code=${hex(ins.code)} jt=${ins.jt} jf=${ins.jf} k=${hex(ins.k)}`;
      return `${String(pc).padStart(4)}: ${s}`;
    })
    .join('\n');
}
