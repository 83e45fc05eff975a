import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  BPF_DEVCG_ACC_MKNOD, BPF_DEVCG_ACC_READ, BPF_DEVCG_ACC_WRITE, BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR,
  compileDeviceFilter, decodeInsns,
} from './v2-devices.ts';
import { findCgroupMounts } from './detect.ts';
import { createCgroupManager } from './manager.ts';
import { DEFAULT_ALLOWED_DEVICES } from './devices.ts';
import type { LinuxDeviceCgroup } from './types.ts';

// ---- A tiny eBPF interpreter for exactly the instructions the compiler may emit,
// with the verifier's structural checks (forward jumps in range, initialized
// registers, ctx reads only at 0/4/8, exit with a scalar in r0).

type Reg = { k: 'uninit' } | { k: 'ctx' } | { k: 'scalar'; v: bigint };
const M32 = 0xffffffffn;
const M64 = 0xffffffffffffffffn;

interface Query { type: number; access: number; major: number; minor: number }

function run(bytes: Uint8Array, q: Query): number {
  const prog = decodeInsns(bytes);
  assert.ok(prog.length > 0 && prog.length <= 4096, 'program length');
  assert.equal(prog[prog.length - 1].code, 0x95, 'last instruction is exit');
  const regs: Reg[] = Array.from({ length: 11 }, () => ({ k: 'uninit' }) as Reg);
  regs[1] = { k: 'ctx' };
  const ctx = [BigInt((q.access << 16) | q.type), BigInt(q.major), BigInt(q.minor)];
  const scalar = (r: number): bigint => {
    const x = regs[r];
    assert.equal(x.k, 'scalar', `r${r} must be an initialized scalar`);
    return (x as { v: bigint }).v;
  };
  let pc = 0;
  for (let steps = 0; steps < 10000; steps++) {
    assert.ok(pc >= 0 && pc < prog.length, `pc ${pc} in range`);
    const i = prog[pc];
    assert.ok(i.dst <= 10 && i.src <= 10);
    const jump = (): void => {
      assert.ok(i.off >= 0, 'no backward jumps');
      assert.ok(pc + 1 + i.off < prog.length, 'jump target in range');
      pc += i.off;
    };
    switch (i.code) {
      case 0x61: // ldxw
        assert.equal(regs[i.src].k, 'ctx', 'loads only from the context');
        assert.ok([0, 4, 8].includes(i.off), `ctx offset ${i.off}`);
        regs[i.dst] = { k: 'scalar', v: ctx[i.off / 4] & M32 };
        break;
      case 0x54: regs[i.dst] = { k: 'scalar', v: scalar(i.dst) & BigInt(i.imm >>> 0) & M32 }; break;
      case 0x74: assert.ok(i.imm >= 0 && i.imm < 32); regs[i.dst] = { k: 'scalar', v: (scalar(i.dst) & M32) >> BigInt(i.imm) }; break;
      case 0xb4: regs[i.dst] = { k: 'scalar', v: BigInt(i.imm >>> 0) }; break;
      case 0xbc: regs[i.dst] = { k: 'scalar', v: scalar(i.src) & M32 }; break;
      case 0x55: if (scalar(i.dst) !== (BigInt(i.imm) & M64)) jump(); break;
      case 0x5d: if (scalar(i.dst) !== scalar(i.src)) jump(); break;
      case 0x95: return Number(scalar(0));
      default: assert.fail(`unexpected opcode 0x${i.code.toString(16)} at ${pc}`);
    }
    pc++;
  }
  assert.fail('no exit');
}

// Reference semantics, written independently: last matching rule wins, default deny.
function reference(rules: LinuxDeviceCgroup[], q: Query): number {
  const acc = (s: string | undefined): number => {
    const a = s || 'rwm';
    return (a.includes('m') ? BPF_DEVCG_ACC_MKNOD : 0) | (a.includes('r') ? BPF_DEVCG_ACC_READ : 0) | (a.includes('w') ? BPF_DEVCG_ACC_WRITE : 0);
  };
  for (let i = rules.length - 1; i >= 0; i--) {
    const r = rules[i];
    const t = r.type ?? 'a';
    if (t !== 'a' && (t === 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR) !== q.type) continue;
    if (r.major != null && r.major !== -1 && r.major !== q.major) continue;
    if (r.minor != null && r.minor !== -1 && r.minor !== q.minor) continue;
    if ((q.access & acc(r.access)) !== q.access) continue;
    return r.allow ? 1 : 0;
  }
  return 0;
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];

test('fixed cases', () => {
  const rules: LinuxDeviceCgroup[] = [
    { allow: false, access: 'rwm' },
    ...DEFAULT_ALLOWED_DEVICES,
    { allow: false, type: 'c', major: 1, minor: 9, access: 'w' },
  ];
  const p = compileDeviceFilter(rules);
  const C = BPF_DEVCG_DEV_CHAR;
  const B = BPF_DEVCG_DEV_BLOCK;
  assert.equal(run(p, { type: C, access: BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE, major: 1, minor: 3 }), 1); // /dev/null rw
  assert.equal(run(p, { type: C, access: BPF_DEVCG_ACC_READ, major: 1, minor: 9 }), 1); // urandom r
  assert.equal(run(p, { type: C, access: BPF_DEVCG_ACC_WRITE, major: 1, minor: 9 }), 0); // urandom w denied by last rule
  assert.equal(run(p, { type: B, access: BPF_DEVCG_ACC_READ, major: 8, minor: 0 }), 0); // sda read
  assert.equal(run(p, { type: B, access: BPF_DEVCG_ACC_MKNOD, major: 8, minor: 0 }), 1); // mknod allowed
  assert.equal(run(p, { type: C, access: BPF_DEVCG_ACC_READ, major: 136, minor: 42 }), 1); // pts
  // empty list and allow-all
  assert.equal(run(compileDeviceFilter([]), { type: C, access: 2, major: 1, minor: 3 }), 0);
  const all = compileDeviceFilter([{ allow: true }]);
  assert.equal(run(all, { type: B, access: 7, major: 8, minor: 0 }), 1);
  // a reset discards earlier rules
  const reset = compileDeviceFilter([{ allow: true, type: 'c', major: 1, minor: 3 }, { allow: false }]);
  assert.equal(run(reset, { type: C, access: 2, major: 1, minor: 3 }), 0);
  assert.equal(decodeInsns(reset).length, 8); // 6 loads + default
});

test('randomized: compiled program equals reference semantics', () => {
  const r = rng(12345);
  const majors = [undefined, null, -1, 1, 5, 8, 136];
  const minors = [undefined, null, -1, 0, 1, 3, 5];
  const accesses = [undefined, '', 'r', 'w', 'm', 'rw', 'rm', 'wm', 'rwm', 'mwr'];
  for (let n = 0; n < 400; n++) {
    const rules: LinuxDeviceCgroup[] = [];
    const len = Math.floor(r() * 7);
    for (let i = 0; i < len; i++) {
      rules.push({ allow: r() < 0.5, type: pick(r, [undefined, 'a', 'b', 'c', 'c', 'b'] as const), major: pick(r, majors), minor: pick(r, minors), access: pick(r, accesses) });
    }
    const prog = compileDeviceFilter(rules);
    for (let k = 0; k < 40; k++) {
      const q: Query = {
        type: pick(r, [BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR]),
        access: pick(r, [1, 2, 4, 6, 3, 7]),
        major: pick(r, [1, 5, 8, 136, 7]),
        minor: pick(r, [0, 1, 3, 5, 9]),
      };
      assert.equal(run(prog, q), reference(rules, q), `rules ${JSON.stringify(rules)} query ${JSON.stringify(q)}`);
    }
  }
});

// ---- The real kernel: load the program, attach it to a v2 cgroup, and open devices from inside.

const LOADER_C = String.raw`
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <stdint.h>
static char prog[65536];
static char logbuf[65536];
int main(int argc, char **argv) {
  if (argc < 3) return 100;
  int pf = open(argv[1], O_RDONLY);
  if (pf < 0) { perror("open prog"); return 101; }
  ssize_t n = read(pf, prog, sizeof prog);
  close(pf);
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
  a.insns = (uint64_t)(uintptr_t)prog;
  a.insn_cnt = (uint32_t)(n / 8);
  a.license = (uint64_t)(uintptr_t)"Apache-2.0";
  a.log_buf = (uint64_t)(uintptr_t)logbuf;
  a.log_size = sizeof logbuf;
  a.log_level = 1;
  int fd = syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof a);
  if (fd < 0) { printf("load-failed %s\n%s\n", strerror(errno), logbuf); return 2; }
  int cg = open(argv[2], O_RDONLY | O_DIRECTORY);
  if (cg < 0) { perror("open cgroup"); return 102; }
  memset(&a, 0, sizeof a);
  a.target_fd = cg;
  a.attach_bpf_fd = fd;
  a.attach_type = BPF_CGROUP_DEVICE;
  a.attach_flags = BPF_F_ALLOW_MULTI;
  if (syscall(SYS_bpf, BPF_PROG_ATTACH, &a, sizeof a) < 0) { printf("attach-failed %s\n", strerror(errno)); return 3; }
  char procs[4096], pid[32];
  snprintf(procs, sizeof procs, "%s/cgroup.procs", argv[2]);
  int pfd = open(procs, O_WRONLY);
  int len = snprintf(pid, sizeof pid, "%d", getpid());
  if (pfd < 0 || write(pfd, pid, len) != len) { perror("join"); return 104; }
  close(pfd);
  for (int i = 3; i < argc; i++) {
    int d = open(argv[i], O_RDONLY);
    printf("%s %s\n", argv[i], d >= 0 ? "ok" : strerror(errno));
    if (d >= 0) close(d);
  }
  return 0;
}
`;

function haveCc(): boolean {
  return spawnSync('cc', ['--version']).status === 0 && fs.existsSync('/usr/include/linux/bpf.h');
}

test('real kernel accepts the program and enforces it', { skip: !haveCc() || !findCgroupMounts().v2 ? 'needs cc, linux/bpf.h and a cgroup2 mount' : false }, async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-bpf-'));
  const v2root = findCgroupMounts().v2!.mountPoint;
  const parent = `/corral-test-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const mgr = createCgroupManager({ cgroupsPath: `${parent}/dev`, mode: 'v2', root: v2root });
  // With BPF_F_ALLOW_MULTI every attached program must allow: the second program gets its own cgroup.
  const mgr2 = createCgroupManager({ cgroupsPath: `${parent}/dev2`, mode: 'v2', root: v2root });
  const parentMgr = createCgroupManager({ cgroupsPath: parent, mode: 'v2', root: v2root });
  try {
    execFileSync('cc', ['-O2', '-o', path.join(tmp, 'loader'), '-x', 'c', '-'], { input: LOADER_C });
    mgr.create();
    const res = mgr.set({ devices: [{ allow: false }, { allow: true, type: 'c', major: 1, minor: 3, access: 'rwm' }, { allow: true, type: 'c', major: 1, minor: 5, access: 'w' }] });
    assert.ok(res.deviceProgram);
    fs.writeFileSync(path.join(tmp, 'prog.bin'), res.deviceProgram);
    const out = execFileSync(path.join(tmp, 'loader'), [path.join(tmp, 'prog.bin'), mgr.dirs()[0], '/dev/null', '/dev/zero', '/dev/full'], { encoding: 'utf8' });
    assert.match(out, /^\/dev\/null ok$/m);
    assert.match(out, /^\/dev\/zero Operation not permitted$/m); // allowed only for write, opened for read
    assert.match(out, /^\/dev\/full Operation not permitted$/m);
    // The default list loads as well (it is the longest program a runtime normally emits).
    mgr2.create();
    const def = mgr2.set({ devices: [{ allow: false }, ...DEFAULT_ALLOWED_DEVICES] }).deviceProgram!;
    fs.writeFileSync(path.join(tmp, 'prog2.bin'), def);
    const out2 = execFileSync(path.join(tmp, 'loader'), [path.join(tmp, 'prog2.bin'), mgr2.dirs()[0], '/dev/null', '/dev/full', '/dev/vda'], { encoding: 'utf8' });
    assert.match(out2, /^\/dev\/null ok$/m);
    assert.match(out2, /^\/dev\/full ok$/m);
    if (fs.existsSync('/dev/vda')) assert.match(out2, /^\/dev\/vda Operation not permitted$/m);
  } finally {
    await mgr.destroy();
    await mgr2.destroy();
    await parentMgr.destroy();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  assert.equal(fs.existsSync(path.join(v2root, parent)), false);
});
