/**
 * Differential test against libseccomp (what runc uses): the same profiles are built with
 * libseccomp (test/scmp-export.c, seccomp_export_bpf) and our interpreter runs libseccomp's BPF;
 * its decisions must equal our reference evaluator (and so our compiler, see compile.test.ts).
 * The profiles stay inside the semantics both define identically: one action per syscall, no
 * repeated argument index in a rule, runc's -ENOSYS stub off (libseccomp does not have it), and
 * at most one conditional rule per syscall (libseccomp 2.5.4 gets ORed rules on different arguments
 * wrong; compile.test.ts covers that case against the reference).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { makeFilter } from './bpf-interpreter.ts';
import { X86_IPC, X86_SOCKETCALL, compileSeccomp } from './compile.ts';
import { runtimeDefaultProfile } from './default-profile.ts';
import { syscallsX32 } from './syscalls-x32.ts';
import { syscallsX86 } from './syscalls-x86.ts';
import { syscallsX86_64 } from './syscalls-x86_64.ts';
import { AUDIT, reference, refRet, rng, type Call } from './test/reference.ts';
import type { LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArch, LinuxSeccompOperator, LinuxSyscall } from './types.ts';

const here = dirname(fileURLToPath(import.meta.url));
const skip =
  process.arch !== 'x64' ? 'the differential test is written for an x86_64 host'
  : !existsSync('/usr/include/seccomp.h') ? 'libseccomp-dev not installed'
  : spawnSync('gcc', ['--version']).status !== 0 ? 'gcc not installed' : false;

const OP_NUM: Record<LinuxSeccompOperator, number> = { SCMP_CMP_NE: 1, SCMP_CMP_LT: 2, SCMP_CMP_LE: 3, SCMP_CMP_EQ: 4, SCMP_CMP_GE: 5, SCMP_CMP_GT: 6, SCMP_CMP_MASKED_EQ: 7 };
const ARCH_NAME: Partial<Record<LinuxSeccompArch, string>> = { SCMP_ARCH_X86_64: 'x86_64', SCMP_ARCH_X86: 'x86', SCMP_ARCH_X32: 'x32' };
/** Names newer than libseccomp 2.5.4's tables. */
const TOO_NEW = new Set(['statmount', 'listmount', 'lsm_get_self_attr', 'lsm_set_self_attr', 'lsm_list_modules', 'mseal']);
const MUX = (n: string) => (Object.hasOwn(X86_SOCKETCALL, n) || n === 'socketcall' ? 'socketcall' : Object.hasOwn(X86_IPC, n) || n === 'ipc' ? 'ipc' : n);

function describeForLibseccomp(spec: LinuxSeccomp): string {
  const dflt = refRet(spec.defaultAction, spec.defaultErrnoRet);
  const lines = [`D ${dflt.toString(16)}`];
  for (const a of spec.architectures ?? []) lines.push(`A ${ARCH_NAME[a]}`);
  for (const sc of spec.syscalls ?? []) {
    const ret = refRet(sc.action, sc.errnoRet);
    if (ret === dflt) continue; // runc skips these
    const conds = (sc.args ?? []).map((a) => {
      const v = BigInt(a.value);
      const v2 = BigInt(a.valueTwo ?? 0);
      return `${a.index} ${OP_NUM[a.op]} ${v} ${v2}`;
    });
    for (const n of sc.names) lines.push(`R ${ret.toString(16)} ${n} ${conds.length} ${conds.join(' ')}`);
  }
  return lines.join('\n') + '\n';
}

/** Random profiles restricted to the semantics libseccomp and Corral share. */
function profile(seed: number): LinuxSeccomp {
  const r = rng(seed);
  const names = [...new Set([...Object.keys(syscallsX86_64), ...Object.keys(syscallsX86), ...Object.keys(syscallsX32), 'accept', 'send', 'recv'])].filter((n) => !TOO_NEW.has(n)).sort();
  const actions: LinuxSeccompAction[] = ['SCMP_ACT_KILL', 'SCMP_ACT_KILL_PROCESS', 'SCMP_ACT_TRAP', 'SCMP_ACT_ERRNO', 'SCMP_ACT_TRACE', 'SCMP_ACT_ALLOW', 'SCMP_ACT_LOG'];
  const ops = Object.keys(OP_NUM) as LinuxSeccompOperator[];
  const edge = [0n, 1n, 0xffffffffn, 1n << 32n, (1n << 32n) + 5n, 1n << 63n, (1n << 64n) - 1n];
  const value = () => (r.int(3) === 0 ? r.pick(edge) : r.int(2) ? BigInt(r.int(16)) : r.u64());
  const actionOf = new Map<string, { action: LinuxSeccompAction; errnoRet?: number }>();
  const hot = Array.from({ length: 6 }, () => r.pick(names));
  const syscalls: LinuxSyscall[] = [];
  const conditional = new Set<string>();
  for (let i = 0, n = 1 + r.int(30); i < n; i++) {
    let args: LinuxSeccompArg[] = [];
    const used = new Set<number>();
    for (let k = 0, m = r.int(3) ? r.int(4) : 0; k < m; k++) {
      const index = r.int(6);
      if (used.has(index)) continue;
      used.add(index);
      const op = r.pick(ops);
      args.push({ index, op, value: value(), ...(op === 'SCMP_CMP_MASKED_EQ' ? { valueTwo: value() } : {}) });
    }
    let a = r.pick(actions);
    const act = a === 'SCMP_ACT_ERRNO' || a === 'SCMP_ACT_TRACE' ? { action: a, errnoRet: r.pick([1, 5, 38]) } : { action: a };
    const picked = Array.from({ length: 1 + r.int(5) }, () => (r.int(2) ? r.pick(hot) : r.pick(names)));
    const keep = picked.filter((nm) => {
      if (args.length && MUX(nm) !== nm) return false; // conditions on socketcall-multiplexed calls differ
      // libseccomp 2.5.4 mis-evaluates several conditional rules on one syscall when they test
      // different arguments (it skips reloading the accumulator), so give each syscall one.
      if (args.length && conditional.has(nm)) return false;
      const key = MUX(nm);
      const prev = actionOf.get(key);
      if (!prev) {
        actionOf.set(key, act);
        return true;
      }
      return prev.action === act.action && prev.errnoRet === act.errnoRet;
    });
    if (args.length) for (const nm of keep) conditional.add(nm);
    if (keep.length) syscalls.push({ names: [...new Set(keep)], ...act, ...(args.length ? { args } : {}) });
    a = act.action;
  }
  const d = r.pick(actions);
  const archs = (['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'] as const).filter(() => r.int(2) === 1);
  return { defaultAction: d, ...(d === 'SCMP_ACT_ERRNO' ? { defaultErrnoRet: r.pick([1, 13]) } : {}), ...(archs.length ? { architectures: [...archs] } : {}), syscalls };
}

function calls(spec: LinuxSeccomp, seed: number, count: number): Call[] {
  const r = rng(seed);
  const vals: bigint[] = [0n, 1n, 0xffffffffn, 1n << 32n, (1n << 64n) - 1n];
  for (const sc of spec.syscalls ?? []) for (const a of sc.args ?? []) for (const v of [BigInt(a.value), BigInt(a.valueTwo ?? 0)]) vals.push(v, (v + 1n) & ((1n << 64n) - 1n), v > 0n ? v - 1n : 0n, v ^ (1n << 32n));
  const names = (spec.syscalls ?? []).flatMap((s) => s.names);
  const out: Call[] = [];
  for (let i = 0; i < count; i++) {
    const arch = r.pick([AUDIT.X86_64, AUDIT.X86_64, AUDIT.I386, AUDIT.AARCH64]);
    const t = arch === AUDIT.I386 ? syscallsX86 : r.int(3) === 0 ? syscallsX32 : syscallsX86_64;
    const n = r.pick(names);
    let nr = r.int(4) ? (Object.hasOwn(t, n) ? t[n] : r.pick(Object.values(t))) : r.pick([102, 117, 0, 0x40000000, 0x3fffffff, r.int(600)]);
    if (r.int(8) === 0) nr = (nr + 1) >>> 0;
    const args = Array.from({ length: 6 }, () => (r.int(4) ? r.pick(vals) : r.u64()));
    if (arch === AUDIT.I386 && (nr === 102 || nr === 117) && r.int(2)) args[0] = BigInt(r.int(25));
    out.push({ arch, nr, args });
  }
  return out;
}

describe('semantics agree with libseccomp', { skip }, () => {
  let dir = '';
  let tool = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'corral-scmp-'));
    tool = join(dir, 'scmp-export');
    const cc = spawnSync('gcc', ['-O1', '-Wall', '-o', tool, join(here, 'test/scmp-export.c'), '-lseccomp'], { encoding: 'utf8' });
    assert.equal(cc.status, 0, `gcc failed: ${cc.stderr}`);
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function check(spec: LinuxSeccomp, cs: Call[], label: string) {
    const r = spawnSync(tool, [], { input: describeForLibseccomp(spec) });
    assert.equal(r.status, 0, `${label}: libseccomp failed: ${r.stderr}`);
    const run = makeFilter(new Uint8Array(r.stdout));
    const ours = makeFilter(compileSeccomp(spec, { nativeArch: 'x86_64', enosysStub: false }).program);
    for (const c of cs) {
      // ipc(2) call numbers with version bits: we compare the low 16 bits, libseccomp all 32.
      if (c.arch === AUDIT.I386 && c.nr === 117 && (c.args[0] & 0xffff0000n) !== 0n) continue;
      const want = reference(spec, 'x86_64', c, { enosysStub: false });
      const got = run({ nr: c.nr | 0, arch: c.arch, args: c.args }).ret;
      assert.equal(ours({ nr: c.nr | 0, arch: c.arch, args: c.args }).ret, want, `${label}: our filter differs from the reference`);
      if (got !== want) {
        assert.fail(`${label}: arch=0x${c.arch.toString(16)} nr=0x${c.nr.toString(16)} args=[${c.args.map((a) => '0x' + a.toString(16))}]: libseccomp 0x${got.toString(16)}, reference 0x${want.toString(16)}\n${describeForLibseccomp(spec)}`);
      }
    }
  }

  it('on 200 random profiles (seeded)', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const spec = profile(seed * 104729);
      check(spec, calls(spec, seed, 400), `seed ${seed}`);
    }
  });

  it('on the runtime default profile', () => {
    for (const capabilities of [[], ['CAP_SYS_ADMIN']]) {
      const spec = runtimeDefaultProfile({ arch: 'x86_64', capabilities, kernel: '6.1.0' });
      const cs: Call[] = [];
      const r = rng(5);
      for (const arch of [AUDIT.X86_64, AUDIT.I386])
        for (const base of arch === AUDIT.X86_64 ? [0, 0x40000000] : [0])
          for (let nr = 0; nr < 460; nr++) cs.push({ arch, nr: base + nr, args: Array.from({ length: 6 }, () => r.pick([0n, 8n, 40n, 0x20000n, 0xffffffffn, 0x7e020000n, 0x10000000n, 1n << 32n])) });
      // the default profile has one action per syscall except socket(AF_VSOCK) through socketcall
      check(spec, cs, `default ${capabilities}`);
    }
  });
});
