/**
 * cgroup v2 device control: compile `linux.resources.devices` to an eBPF program of
 * type BPF_PROG_TYPE_CGROUP_DEVICE.
 *
 * The program is only compiled here. Loading it (bpf(BPF_PROG_LOAD)) and attaching
 * it to the container's cgroup directory (bpf(BPF_PROG_ATTACH, attach type
 * BPF_CGROUP_DEVICE, flag BPF_F_ALLOW_MULTI), then detaching any program attached
 * earlier, needs the bpf() syscall and is done by the executor: `set()` on v2
 * returns the bytes as `deviceProgram`.
 *
 * Context (struct bpf_cgroup_dev_ctx): u32 access_type at 0 — device type
 * (BPF_DEVCG_DEV_BLOCK=1, _CHAR=2) in the low 16 bits, access (BPF_DEVCG_ACC_MKNOD=1,
 * _READ=2, _WRITE=4) in the high 16 bits; u32 major at 4; u32 minor at 8.
 * Return 1 to allow, 0 to deny.
 *
 * Semantics: the last matching rule wins; with no match the default is deny, unless
 * an "a *:* rwm" rule set it (rules before the last such reset are irrelevant).
 * The program uses only: ldxw, alu32 and/rsh/mov (imm and reg), jne (imm, reg),
 * exit. It calls no helpers, so it loads under any license string.
 */
import type { LinuxDeviceCgroup } from './types.ts';
import { isResetRule, normalizeDeviceRules, type DeviceRule } from './devices.ts';

export const BPF_DEVCG_DEV_BLOCK = 1;
export const BPF_DEVCG_DEV_CHAR = 2;
export const BPF_DEVCG_ACC_MKNOD = 1;
export const BPF_DEVCG_ACC_READ = 2;
export const BPF_DEVCG_ACC_WRITE = 4;

/** Opcodes used (linux/bpf_common.h, linux/bpf.h). */
export const OP = {
  LDXW: 0x61, // BPF_LDX | BPF_MEM | BPF_W
  AND32_K: 0x54, // BPF_ALU | BPF_AND | BPF_K
  RSH32_K: 0x74, // BPF_ALU | BPF_RSH | BPF_K
  MOV32_K: 0xb4, // BPF_ALU | BPF_MOV | BPF_K
  MOV32_X: 0xbc, // BPF_ALU | BPF_MOV | BPF_X
  JNE_K: 0x55, // BPF_JMP | BPF_JNE | BPF_K
  JNE_X: 0x5d, // BPF_JMP | BPF_JNE | BPF_X
  EXIT: 0x95, // BPF_JMP | BPF_EXIT
} as const;

export interface BpfInsn {
  code: number;
  dst: number;
  src: number;
  off: number;
  imm: number;
}

const insn = (code: number, dst: number, src: number, off: number, imm: number): BpfInsn => ({ code, dst, src, off, imm });

function accessMask(access: string): number {
  return (access.includes('m') ? BPF_DEVCG_ACC_MKNOD : 0) | (access.includes('r') ? BPF_DEVCG_ACC_READ : 0) |
    (access.includes('w') ? BPF_DEVCG_ACC_WRITE : 0);
}

/** Instructions for one rule; every "no match" jump goes to the end of the block. */
function ruleBlock(r: DeviceRule): BpfInsn[] {
  const checks: Array<(skip: number) => BpfInsn[]> = [];
  if (r.type !== 'a') checks.push((s) => [insn(OP.JNE_K, 2, 0, s, r.type === 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR)]);
  if (r.access !== 'rwm') {
    // r1 = requested & allowed; requested must be a subset of allowed.
    checks.push((s) => [insn(OP.MOV32_X, 1, 3, 0, 0), insn(OP.AND32_K, 1, 0, 0, accessMask(r.access)), insn(OP.JNE_X, 1, 3, s, 0)]);
  }
  if (r.major !== -1) checks.push((s) => [insn(OP.JNE_K, 4, 0, s, r.major | 0)]);
  if (r.minor !== -1) checks.push((s) => [insn(OP.JNE_K, 5, 0, s, r.minor | 0)]);
  const tail = [insn(OP.MOV32_K, 0, 0, 0, r.allow ? 1 : 0), insn(OP.EXIT, 0, 0, 0, 0)];
  // Lay out back to front so each jump knows the distance to the block end.
  let body: BpfInsn[] = tail;
  for (let i = checks.length - 1; i >= 0; i--) {
    // Each check ends with its jump, so the distance to the block end is body.length.
    body = [...checks[i](body.length), ...body];
  }
  return body;
}

/** The program as instructions (for inspection and tests). */
export function compileDeviceFilterInsns(rules: LinuxDeviceCgroup[]): BpfInsn[] {
  const norm = normalizeDeviceRules(rules);
  let defaultAllow = false;
  let start = 0;
  norm.forEach((r, i) => {
    if (isResetRule(r)) {
      defaultAllow = r.allow;
      start = i + 1;
    }
  });
  const prog: BpfInsn[] = [
    insn(OP.LDXW, 2, 1, 0, 0),
    insn(OP.AND32_K, 2, 0, 0, 0xffff),
    insn(OP.LDXW, 3, 1, 0, 0),
    insn(OP.RSH32_K, 3, 0, 0, 16),
    insn(OP.LDXW, 4, 1, 4, 0),
    insn(OP.LDXW, 5, 1, 8, 0),
  ];
  const effective = norm.slice(start);
  for (let i = effective.length - 1; i >= 0; i--) {
    const r = effective[i];
    // A rule that only restates the default and is not shadowing anything earlier is dropped.
    if (r.allow === defaultAllow && !effective.slice(0, i).some((e) => e.allow !== defaultAllow)) continue;
    prog.push(...ruleBlock(r));
  }
  prog.push(insn(OP.MOV32_K, 0, 0, 0, defaultAllow ? 1 : 0), insn(OP.EXIT, 0, 0, 0, 0));
  return prog;
}

/** Encode instructions as struct bpf_insn (8 bytes each, little-endian host). */
export function encodeInsns(prog: BpfInsn[]): Uint8Array {
  const buf = new Uint8Array(prog.length * 8);
  const dv = new DataView(buf.buffer);
  prog.forEach((p, i) => {
    dv.setUint8(i * 8, p.code);
    dv.setUint8(i * 8 + 1, (p.src << 4) | (p.dst & 0x0f));
    dv.setInt16(i * 8 + 2, p.off, true);
    dv.setInt32(i * 8 + 4, p.imm, true);
  });
  return buf;
}

export function decodeInsns(bytes: Uint8Array): BpfInsn[] {
  if (bytes.length % 8 !== 0) throw new RangeError(`eBPF program length ${bytes.length} is not a multiple of 8`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: BpfInsn[] = [];
  for (let o = 0; o < bytes.length; o += 8) {
    const regs = dv.getUint8(o + 1);
    out.push({ code: dv.getUint8(o), dst: regs & 0x0f, src: regs >> 4, off: dv.getInt16(o + 2, true), imm: dv.getInt32(o + 4, true) });
  }
  return out;
}

/** eBPF bytecode of the BPF_PROG_TYPE_CGROUP_DEVICE program for these rules. */
export function compileDeviceFilter(rules: LinuxDeviceCgroup[]): Uint8Array {
  return encodeInsns(compileDeviceFilterInsns(rules));
}
