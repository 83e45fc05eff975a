import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SpecError, UnimplementedError } from '../../errors.ts';
import { BPF_JA, BPF_JMP, BPF_MAXINSNS, decodeProgram, disassemble } from './bpf.ts';
import { checkProgram, makeFilter, runFilter, seccompDataBytes } from './bpf-interpreter.ts';
import { compileSeccomp } from './compile.ts';
import { runtimeDefaultProfile } from './default-profile.ts';
import { syscallsAarch64 } from './syscalls-aarch64.ts';
import { syscallsX32 } from './syscalls-x32.ts';
import { syscallsX86 } from './syscalls-x86.ts';
import { syscallsX86_64 } from './syscalls-x86_64.ts';
import { AUDIT, RET, reference, rng, type Call } from './test/reference.ts';
import type { LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator, NativeArch } from './types.ts';

const TABLES: Record<number, Readonly<Record<string, number>>[]> = {
  [AUDIT.X86_64]: [syscallsX86_64, syscallsX32],
  [AUDIT.I386]: [syscallsX86],
  [AUDIT.AARCH64]: [syscallsAarch64],
  [AUDIT.ARM]: [],
};

const EDGE: bigint[] = [0n, 1n, 2n, 0x7fffffffn, 0x80000000n, 0xfffffffen, 0xffffffffn, 1n << 32n, (1n << 32n) + 1n, (1n << 63n) - 1n, 1n << 63n, (1n << 64n) - 1n, (1n << 64n) - 2n];
const M64 = (1n << 64n) - 1n;

/** Interesting argument values for a profile: each rule value, its neighbours, and hi-word variants. */
function argValues(spec: LinuxSeccomp): bigint[] {
  const out = new Set<bigint>(EDGE);
  for (const sc of spec.syscalls ?? [])
    for (const a of sc.args ?? []) {
      for (const v of [BigInt(a.value), BigInt(a.valueTwo ?? 0)]) {
        for (const d of [v, v - 1n, v + 1n, v ^ (1n << 32n), v + (1n << 32n), v - (1n << 32n), v ^ 0xffffffffn, v | (1n << 63n), ~v]) out.add(d & M64);
      }
      if (a.op === 'SCMP_CMP_MASKED_EQ') {
        const m = BigInt(a.value);
        const d = BigInt(a.valueTwo ?? 0);
        out.add(d | (~m & 0x123456789abcdefn & M64));
        out.add((d | ~m) & M64);
      }
    }
  return [...out];
}

function tuples(spec: LinuxSeccomp, native: NativeArch, seed: number, count: number): Call[] {
  const r = rng(seed);
  const audits = native === 'x86_64' ? [AUDIT.X86_64, AUDIT.X86_64, AUDIT.I386, AUDIT.AARCH64, 0] : [AUDIT.AARCH64, AUDIT.AARCH64, AUDIT.ARM, AUDIT.X86_64];
  const values = argValues(spec);
  const names = (spec.syscalls ?? []).flatMap((s) => s.names);
  const out: Call[] = [];
  for (let i = 0; i < count; i++) {
    const arch = r.pick(audits);
    const tables = TABLES[arch] ?? [];
    let nr: number;
    const pickFrom = r.int(10);
    if (pickFrom < 6 && tables.length) {
      const t = r.pick(tables);
      const n = r.pick(names);
      const base = Object.hasOwn(t, n) ? t[n] : r.pick(Object.values(t));
      nr = (base + r.pick([0, 0, 0, 1, -1])) >>> 0;
    } else if (pickFrom < 8) {
      nr = r.pick([0, 1, 102, 117, 0x3fffffff, 0x40000000, 0x40000001, 0x4000ffff, 0x7fffffff, 0x80000000, 0xffffffff, 1000, 4095, 451, 452, 463]);
    } else nr = r.int(2) ? r.int(600) : Math.floor(r.next() * 2 ** 32);
    const args = Array.from({ length: 6 }, () => (r.int(5) === 0 ? r.u64() : r.pick(values)));
    out.push({ arch, nr, args });
  }
  return out;
}

function hex(n: number) {
  return '0x' + (n >>> 0).toString(16);
}

/** Compile and compare the interpreter against the reference for every call. */
function agree(spec: LinuxSeccomp, native: NativeArch, calls: Call[], label = ''): { maxSteps: number; insns: number } {
  const { program } = compileSeccomp(spec, { nativeArch: native });
  const run = makeFilter(program);
  let maxSteps = 0;
  for (const c of calls) {
    const got = run({ nr: c.nr | 0, arch: c.arch, args: c.args });
    const want = reference(spec, native, c);
    maxSteps = Math.max(maxSteps, got.steps);
    if (got.ret !== want) {
      assert.fail(
        `${label} ${native} arch=${hex(c.arch)} nr=${hex(c.nr)} args=[${c.args.map((a) => '0x' + a.toString(16)).join(',')}]: filter ${hex(got.ret)}, reference ${hex(want)}\nprofile: ${JSON.stringify(spec, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))}`,
      );
    }
  }
  return { maxSteps, insns: program.length / 8 };
}

const OPS: LinuxSeccompOperator[] = ['SCMP_CMP_NE', 'SCMP_CMP_LT', 'SCMP_CMP_LE', 'SCMP_CMP_EQ', 'SCMP_CMP_GE', 'SCMP_CMP_GT', 'SCMP_CMP_MASKED_EQ'];
const ACTIONS: LinuxSeccompAction[] = ['SCMP_ACT_KILL', 'SCMP_ACT_KILL_PROCESS', 'SCMP_ACT_KILL_THREAD', 'SCMP_ACT_TRAP', 'SCMP_ACT_ERRNO', 'SCMP_ACT_TRACE', 'SCMP_ACT_ALLOW', 'SCMP_ACT_LOG'];
const ALL_NAMES = [...new Set([...Object.keys(syscallsX86_64), ...Object.keys(syscallsX86), ...Object.keys(syscallsAarch64), 'no_such_syscall', 'accept', 'send', 'recv', 'semop'])].sort();

function randomProfile(seed: number, native: NativeArch): LinuxSeccomp {
  const r = rng(seed);
  const action = (): { action: LinuxSeccompAction; errnoRet?: number } => {
    const a = r.pick(ACTIONS);
    if ((a === 'SCMP_ACT_ERRNO' || a === 'SCMP_ACT_TRACE') && r.int(2)) return { action: a, errnoRet: r.pick([0, 1, 13, 38, 4095, 65535]) };
    return { action: a };
  };
  const value = (): bigint | number => {
    const k = r.int(4);
    if (k === 0) return r.pick(EDGE);
    if (k === 1) return r.int(64);
    if (k === 2) return r.u64();
    return BigInt(r.int(4)) << 32n | BigInt(r.int(4));
  };
  const hot = Array.from({ length: 8 }, () => r.pick(ALL_NAMES)); // names reused across rules
  const syscalls = Array.from({ length: 1 + r.int(40) }, () => {
    const names = Array.from({ length: 1 + r.int(6) }, () => (r.int(3) ? r.pick(hot) : r.pick(ALL_NAMES)));
    const args: LinuxSeccompArg[] = Array.from({ length: r.int(4) === 0 ? 0 : r.int(4) }, () => {
      const op = r.pick(OPS);
      const a: LinuxSeccompArg = { index: r.int(6), value: value(), op };
      if (op === 'SCMP_CMP_MASKED_EQ' || r.int(4) === 0) a.valueTwo = value();
      return a;
    });
    return { names, ...action(), ...(args.length ? { args } : {}) };
  });
  const d = action();
  const pool = native === 'x86_64' ? (['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32', 'SCMP_ARCH_AARCH64'] as const) : (['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM', 'SCMP_ARCH_X86_64'] as const);
  const architectures = pool.filter(() => r.int(2) === 1);
  return {
    defaultAction: d.action,
    ...(d.errnoRet !== undefined ? { defaultErrnoRet: d.errnoRet } : {}),
    ...(architectures.length ? { architectures: [...architectures] } : {}),
    syscalls,
  };
}

describe('compileSeccomp: encoding', () => {
  it('emits exact sock_filter records for a minimal profile', () => {
    const { program, flags, warnings } = compileSeccomp({ defaultAction: 'SCMP_ACT_ALLOW' }, { nativeArch: 'x86_64' });
    assert.equal(flags, 0);
    assert.deepEqual(warnings, []);
    // ld [4]  (seccomp_data.arch): code BPF_LD|BPF_W|BPF_ABS = 0x20, k = 4, little-endian
    assert.deepEqual([...program.subarray(0, 8)], [0x20, 0, 0, 0, 4, 0, 0, 0]);
    assert.equal(
      disassemble(decodeProgram(program)),
      [
        '   0: ld [4]',
        '   1: jeq #0xc000003e 2 6',
        '   2: ld [0]',
        '   3: jge #0x40000000 4 5',
        '   4: jeq #0xffffffff 5 6',
        '   5: ret #0x7fff0000',
        '   6: ret #0x80000000',
      ].join('\n'),
    );
    // records are u16 code, u8 jt, u8 jf, u32 k. jeq: code BPF_JMP|BPF_JEQ|BPF_K = 0x15, jt 0, jf 4
    assert.deepEqual([...program.subarray(8, 16)], [0x15, 0x00, 0, 4, 0x3e, 0x00, 0x00, 0xc0]);
    // jge: code 0x35, jt 0, jf 1, k 0x40000000
    assert.deepEqual([...program.subarray(24, 32)], [0x35, 0x00, 0, 1, 0x00, 0x00, 0x00, 0x40]);
    // ret: code 0x06, k SECCOMP_RET_ALLOW / SECCOMP_RET_KILL_PROCESS
    assert.deepEqual([...program.subarray(40, 48)], [0x06, 0, 0, 0, 0x00, 0x00, 0xff, 0x7f]);
    assert.deepEqual([...program.subarray(48, 56)], [0x06, 0, 0, 0, 0x00, 0x00, 0x00, 0x80]);
  });

  it('encodes seccomp_data little-endian', () => {
    const b = seccompDataBytes({ nr: 257, arch: AUDIT.X86_64, args: [0x1122334455667788n] });
    assert.deepEqual([...b.subarray(0, 8)], [1, 1, 0, 0, 0x3e, 0, 0, 0xc0]);
    assert.deepEqual([...b.subarray(16, 24)], [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
  });

  it('maps every action and errnoRet to the exact SECCOMP_RET value', () => {
    const cases: [LinuxSeccompAction, number | undefined, number][] = [
      ['SCMP_ACT_KILL', undefined, 0x00000000],
      ['SCMP_ACT_KILL_THREAD', undefined, 0x00000000],
      ['SCMP_ACT_KILL_PROCESS', undefined, 0x80000000],
      ['SCMP_ACT_TRAP', undefined, 0x00030000],
      ['SCMP_ACT_ERRNO', undefined, 0x00050001],
      ['SCMP_ACT_ERRNO', 38, 0x00050026],
      ['SCMP_ACT_ERRNO', 0, 0x00050000],
      ['SCMP_ACT_TRACE', undefined, 0x7ff00001],
      ['SCMP_ACT_TRACE', 0x1234, 0x7ff01234],
      ['SCMP_ACT_LOG', undefined, 0x7ffc0000],
      ['SCMP_ACT_ALLOW', undefined, 0x7fff0000],
    ];
    for (const [action, errnoRet, want] of cases) {
      const base: LinuxSeccomp = { defaultAction: action === 'SCMP_ACT_ALLOW' ? 'SCMP_ACT_LOG' : 'SCMP_ACT_ALLOW', syscalls: [{ names: ['getpid'], action, ...(errnoRet !== undefined ? { errnoRet } : {}) }] };
      const { program } = compileSeccomp(base, { nativeArch: 'x86_64' });
      assert.equal(runFilter(program, { nr: 39, arch: AUDIT.X86_64 }).ret, want, `${action} ${errnoRet}`);
      const dflt: LinuxSeccomp = { defaultAction: action, ...(errnoRet !== undefined ? { defaultErrnoRet: errnoRet } : {}) };
      const d = compileSeccomp(dflt, { nativeArch: 'aarch64' });
      assert.equal(runFilter(d.program, { nr: 172, arch: AUDIT.AARCH64 }).ret, want, `default ${action} ${errnoRet}`);
    }
  });

  it('maps spec.flags to SECCOMP_FILTER_FLAG_* bits', () => {
    const f = (flags: LinuxSeccomp['flags']) => compileSeccomp({ defaultAction: 'SCMP_ACT_ALLOW', flags }, { nativeArch: 'x86_64' }).flags;
    assert.equal(f(['SECCOMP_FILTER_FLAG_TSYNC']), 1);
    assert.equal(f(['SECCOMP_FILTER_FLAG_LOG']), 2);
    assert.equal(f(['SECCOMP_FILTER_FLAG_SPEC_ALLOW']), 4);
    assert.equal(f(['SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV']), 32);
    assert.equal(f(['SECCOMP_FILTER_FLAG_LOG', 'SECCOMP_FILTER_FLAG_SPEC_ALLOW']), 6);
    assert.equal(f(undefined), 0);
  });
});

describe('compileSeccomp: semantics', () => {
  it('kills unknown architectures and x32 calls unless SCMP_ARCH_X32 is listed', () => {
    const spec: LinuxSeccomp = { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO' }] };
    const { program } = compileSeccomp(spec, { nativeArch: 'x86_64' });
    assert.equal(runFilter(program, { nr: 83, arch: AUDIT.X86_64 }).ret, RET.ERRNO + 1);
    assert.equal(runFilter(program, { nr: 0, arch: AUDIT.X86_64 }).ret, RET.ALLOW);
    assert.equal(runFilter(program, { nr: 39, arch: AUDIT.I386 }).ret, RET.KILL_PROCESS, 'i386 not listed');
    assert.equal(runFilter(program, { nr: 0x40000000 + 83, arch: AUDIT.X86_64 }).ret, RET.KILL_PROCESS, 'x32 mkdir');
    assert.equal(runFilter(program, { nr: 0x40000000, arch: AUDIT.X86_64 }).ret, RET.KILL_PROCESS, 'x32 read');
    assert.equal(runFilter(program, { nr: -1, arch: AUDIT.X86_64 }).ret, RET.ALLOW, 'nr -1 is an x86_64 call (libseccomp)');
    assert.equal(runFilter(program, { nr: 83, arch: AUDIT.AARCH64 }).ret, RET.KILL_PROCESS);
    assert.equal(runFilter(program, { nr: 83, arch: 0 }).ret, RET.KILL_PROCESS);

    const withX32 = compileSeccomp({ ...spec, architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'] }, { nativeArch: 'x86_64' }).program;
    assert.equal(runFilter(withX32, { nr: 0x40000000 + 83, arch: AUDIT.X86_64 }).ret, RET.ERRNO + 1);
    assert.equal(runFilter(withX32, { nr: 0x40000000 + 84, arch: AUDIT.X86_64 }).ret, RET.ALLOW);
    assert.equal(runFilter(withX32, { nr: 39, arch: AUDIT.I386 }).ret, RET.ERRNO + 1, 'i386 mkdir is 39');
  });

  it('compares 64-bit arguments unsigned on both words', () => {
    const v = 0x00000001_80000000n;
    const mk = (op: LinuxSeccompOperator, valueTwo?: bigint): LinuxSeccomp => ({
      defaultAction: 'SCMP_ACT_ALLOW',
      syscalls: [{ names: ['personality'], action: 'SCMP_ACT_ERRNO', args: [{ index: 2, value: v, op, ...(valueTwo !== undefined ? { valueTwo } : {}) }] }],
    });
    const probe = [0n, v - 1n, v, v + 1n, 0x80000000n, 0x2_00000000n, 0x1_7fffffffn, 0x1_ffffffffn, 0x0_80000001n, M64, 1n << 63n];
    const expect: Record<string, (x: bigint) => boolean> = {
      SCMP_CMP_EQ: (x) => x === v,
      SCMP_CMP_NE: (x) => x !== v,
      SCMP_CMP_LT: (x) => x < v,
      SCMP_CMP_LE: (x) => x <= v,
      SCMP_CMP_GT: (x) => x > v,
      SCMP_CMP_GE: (x) => x >= v,
      SCMP_CMP_MASKED_EQ: (x) => (x & v) === 0x1_00000000n, // datum 0x3_00000000 & mask
    };
    for (const native of ['x86_64', 'aarch64'] as const) {
      const arch = native === 'x86_64' ? AUDIT.X86_64 : AUDIT.AARCH64;
      for (const op of OPS) {
        const { program } = compileSeccomp(mk(op, op === 'SCMP_CMP_MASKED_EQ' ? 0x3_00000000n : undefined), { nativeArch: native });
        for (const x of probe) {
          const want = expect[op](x) ? RET.ERRNO + 1 : RET.ALLOW;
          assert.equal(runFilter(program, { nr: native === 'x86_64' ? 135 : 92, arch, args: [0n, 0n, x] }).ret, want, `${native} ${op} 0x${x.toString(16)}`);
        }
      }
    }
  });

  it('compares only the low word on 32-bit ABIs (x86), as libseccomp does', () => {
    const spec: LinuxSeccomp = {
      defaultAction: 'SCMP_ACT_ALLOW',
      architectures: ['SCMP_ARCH_X86'],
      syscalls: [{ names: ['personality'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 0x5_00000008n, op: 'SCMP_CMP_EQ' }] }],
    };
    const r = compileSeccomp(spec, { nativeArch: 'x86_64' });
    assert.ok(r.warnings.some((w) => w.includes('truncated')));
    assert.equal(runFilter(r.program, { nr: 136, arch: AUDIT.I386, args: [8n] }).ret, RET.ERRNO + 1);
    assert.equal(runFilter(r.program, { nr: 135, arch: AUDIT.X86_64, args: [8n] }).ret, RET.ALLOW);
    assert.equal(runFilter(r.program, { nr: 135, arch: AUDIT.X86_64, args: [0x5_00000008n] }).ret, RET.ERRNO + 1);
  });

  it('ANDs conditions of a rule and ORs rules in order', () => {
    const spec: LinuxSeccomp = {
      defaultAction: 'SCMP_ACT_ERRNO',
      syscalls: [
        { names: ['write'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 1, op: 'SCMP_CMP_EQ' }, { index: 2, value: 100, op: 'SCMP_CMP_LT' }] },
        { names: ['write'], action: 'SCMP_ACT_TRAP', args: [{ index: 0, value: 2, op: 'SCMP_CMP_EQ' }] },
        { names: ['write'], action: 'SCMP_ACT_LOG' },
        { names: ['write'], action: 'SCMP_ACT_KILL' }, // unreachable
      ],
    };
    const { program } = compileSeccomp(spec, { nativeArch: 'x86_64' });
    const w = (a0: bigint, a2: bigint) => runFilter(program, { nr: 1, arch: AUDIT.X86_64, args: [a0, 0n, a2] }).ret;
    assert.equal(w(1n, 99n), RET.ALLOW);
    assert.equal(w(1n, 100n), RET.LOG);
    assert.equal(w(2n, 100n), RET.TRAP);
    assert.equal(w(0x1_00000001n, 1n), RET.LOG, 'hi word differs');
    assert.equal(w(3n, 1n), RET.LOG);
  });

  it('ORs conditional rules on different arguments (a case libseccomp 2.5.4 gets wrong)', () => {
    const spec: LinuxSeccomp = {
      defaultAction: 'SCMP_ACT_KILL_PROCESS',
      syscalls: [
        { names: ['setpriority'], action: 'SCMP_ACT_ALLOW', args: [{ index: 4, value: 0x1_00000005n, op: 'SCMP_CMP_EQ' }, { index: 1, value: 0x2acbdd4b_92d94c23n, op: 'SCMP_CMP_LT' }] },
        { names: ['setpriority'], action: 'SCMP_ACT_ALLOW', args: [{ index: 1, value: 1, op: 'SCMP_CMP_GT' }] },
      ],
    };
    const { program } = compileSeccomp(spec, { nativeArch: 'x86_64' });
    const args = [0n, 0x1_00000000n, 0xen, 0n, 1n, 0n];
    assert.equal(runFilter(program, { nr: 141, arch: AUDIT.X86_64, args }).ret, RET.ALLOW);
    assert.equal(runFilter(program, { nr: 141, arch: AUDIT.X86_64, args: [0n, 1n, 0n, 0n, 1n, 0n] }).ret, RET.KILL_PROCESS);
  });

  it('drops rules whose action is the default action (runc), so they shadow nothing', () => {
    const spec: LinuxSeccomp = {
      defaultAction: 'SCMP_ACT_ERRNO',
      syscalls: [
        { names: ['write'], action: 'SCMP_ACT_ERRNO' },
        { names: ['write'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 },
        { names: ['write'], action: 'SCMP_ACT_ALLOW' },
        { names: ['read'], action: 'SCMP_ACT_ERRNO', errnoRet: 5 },
      ],
    };
    const { program } = compileSeccomp(spec, { nativeArch: 'x86_64' });
    assert.equal(runFilter(program, { nr: 1, arch: AUDIT.X86_64 }).ret, RET.ALLOW);
    assert.equal(runFilter(program, { nr: 0, arch: AUDIT.X86_64 }).ret, RET.ERRNO + 5, 'different errno is a different action');
  });

  it('ignores unknown syscall names with a warning', () => {
    const r = compileSeccomp({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['no_such_call', 'getpid', 'arm_sync_file_range'], action: 'SCMP_ACT_ERRNO' }] }, { nativeArch: 'x86_64' });
    assert.equal(r.warnings.length, 1);
    assert.match(r.warnings[0], /SCMP_ARCH_X86_64: ignoring 2 syscall name\(s\).*arm_sync_file_range, no_such_call/);
    assert.equal(runFilter(r.program, { nr: 39, arch: AUDIT.X86_64 }).ret, RET.ERRNO + 1);
  });

  it('returns ENOSYS above the highest named syscall on listed arches (runc stub)', () => {
    const spec: LinuxSeccomp = {
      defaultAction: 'SCMP_ACT_ERRNO',
      architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X32'],
      syscalls: [{ names: ['read', 'openat', 'clone3'], action: 'SCMP_ACT_ALLOW' }],
    };
    const { program } = compileSeccomp(spec, { nativeArch: 'x86_64' });
    const r = (nr: number) => runFilter(program, { nr, arch: AUDIT.X86_64 }).ret;
    assert.equal(r(435), RET.ALLOW);
    assert.equal(r(434), RET.ERRNO + 1);
    assert.equal(r(436), RET.ERRNO + 38);
    assert.equal(r(0x3fffffff), RET.ERRNO + 38);
    assert.equal(r(0x40000000 + 436), RET.ERRNO + 38, 'x32 stub');
    assert.equal(r(0x40000000 + 1), RET.ERRNO + 1);
    // not with a permissive default, nor when disabled, nor for unlisted arches
    const noStub = compileSeccomp(spec, { nativeArch: 'x86_64', enosysStub: false }).program;
    assert.equal(runFilter(noStub, { nr: 436, arch: AUDIT.X86_64 }).ret, RET.ERRNO + 1);
    const unlisted = compileSeccomp({ ...spec, architectures: undefined }, { nativeArch: 'x86_64' }).program;
    assert.equal(runFilter(unlisted, { nr: 436, arch: AUDIT.X86_64 }).ret, RET.ERRNO + 1);
  });

  it('applies socket and IPC rules to socketcall(2)/ipc(2) on x86', () => {
    const spec: LinuxSeccomp = {
      defaultAction: 'SCMP_ACT_ALLOW',
      architectures: ['SCMP_ARCH_X86'],
      syscalls: [{ names: ['socket', 'accept', 'shmat'], action: 'SCMP_ACT_ERRNO', errnoRet: 13 }],
    };
    const { program } = compileSeccomp(spec, { nativeArch: 'x86_64' });
    const r = (nr: number, a0 = 0n) => runFilter(program, { nr, arch: AUDIT.I386, args: [a0] }).ret;
    assert.equal(r(359), RET.ERRNO + 13, 'direct socket');
    assert.equal(r(102, 1n), RET.ERRNO + 13, 'socketcall(SYS_SOCKET)');
    assert.equal(r(102, 5n), RET.ERRNO + 13, 'socketcall(SYS_ACCEPT)');
    assert.equal(r(102, 3n), RET.ALLOW, 'socketcall(SYS_CONNECT)');
    assert.equal(r(117, 21n), RET.ERRNO + 13, 'ipc(SHMAT)');
    assert.equal(r(117, 21n | (1n << 16n)), RET.ERRNO + 13, 'ipc(SHMAT) with a version');
    assert.equal(r(117, 22n), RET.ALLOW);
  });

  it('refuses SCMP_ACT_NOTIFY with UnimplementedError', () => {
    assert.throws(
      () => compileSeccomp({ defaultAction: 'SCMP_ACT_ALLOW', listenerPath: '/run/agent.sock', syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_NOTIFY' }] }, { nativeArch: 'x86_64' }),
      (e: unknown) => e instanceof UnimplementedError && /SCMP_ACT_NOTIFY/.test(e.message),
    );
  });

  it('validates before compiling', () => {
    assert.throws(
      () => compileSeccomp({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_ALLOW', args: [{ index: 6, value: 0, op: 'SCMP_CMP_EQ' }] }] }),
      (e: unknown) => e instanceof SpecError && e.path === 'linux.seccomp.syscalls[0].args[0].index',
    );
  });
});

describe('compileSeccomp: layout', () => {
  // 450 syscalls with alternating actions and many argument rules.
  const big = (native: NativeArch, n: number, argEvery: number): LinuxSeccomp => {
    const table = native === 'x86_64' ? syscallsX86_64 : syscallsAarch64;
    const names = Object.keys(table).slice(0, n);
    const acts: LinuxSeccompAction[] = ['SCMP_ACT_ALLOW', 'SCMP_ACT_LOG', 'SCMP_ACT_TRAP'];
    return {
      defaultAction: 'SCMP_ACT_ERRNO',
      architectures: native === 'x86_64' ? ['SCMP_ARCH_X86_64'] : ['SCMP_ARCH_AARCH64'],
      syscalls: names.map((name, i) => ({
        names: [name],
        action: acts[i % 3],
        ...(i % argEvery === 0 ? { args: [{ index: i % 6, value: BigInt(i) << 31n, op: OPS[i % OPS.length] }, { index: (i + 1) % 6, value: 0xffn, valueTwo: BigInt(i & 0xff), op: 'SCMP_CMP_MASKED_EQ' as const }] } : {}),
      })),
    };
  };

  it('handles 400+ syscalls with arg rules: long jumps, logarithmic lookups, same decisions', () => {
    for (const native of ['x86_64', 'aarch64'] as const) {
      const spec = big(native, 450, 5);
      const nSys = spec.syscalls!.length;
      assert.ok(nSys >= 300, `${native}: ${nSys} syscalls`);
      const { program } = compileSeccomp(spec, { nativeArch: native });
      const insns = decodeProgram(program);
      checkProgram(insns);
      assert.ok(insns.length > 600, `${insns.length} instructions`);
      assert.ok(insns.some((i) => i.code === (BPF_JMP | BPF_JA) && i.k > 255), 'has a long jump');
      // Every syscall number, plus tuples, against the reference.
      const arch = native === 'x86_64' ? AUDIT.X86_64 : AUDIT.AARCH64;
      const calls: Call[] = [];
      for (let nr = 0; nr < 520; nr++) calls.push({ arch, nr, args: [0n, 0n, 0n, 0n, 0n, 0n] });
      calls.push(...tuples(spec, native, 7, 4000));
      agree(spec, native, calls, 'big');
      // An unconditional lookup costs O(log n) instructions, not O(n).
      const run = makeFilter(program);
      let worst = 0;
      for (const [name, nr] of Object.entries(native === 'x86_64' ? syscallsX86_64 : syscallsAarch64)) {
        const i = spec.syscalls!.findIndex((s) => s.names[0] === name);
        if (i < 0 || i % 5 === 0) continue;
        worst = Math.max(worst, run({ nr, arch }).steps);
      }
      assert.ok(worst <= 30, `worst unconditional lookup took ${worst} instructions for ${nSys} syscalls`);
    }
  });

  it('reports programs above BPF_MAXINSNS as a SpecError', () => {
    const spec = big('x86_64', 360, 1);
    spec.architectures = ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'];
    // the same rules again under the i386 names, so each ABI section is large
    const x86 = Object.keys(syscallsX86);
    spec.syscalls = [...spec.syscalls!, ...spec.syscalls!.map((s, i) => ({ ...s, names: [x86[i % x86.length]] }))];
    assert.throws(
      () => compileSeccomp(spec, { nativeArch: 'x86_64' }),
      (e: unknown) => e instanceof SpecError && e.path === 'linux.seccomp' && new RegExp(`above the kernel limit of ${BPF_MAXINSNS}`).test(e.message),
    );
  });
});

describe('compileSeccomp: randomized against the reference evaluator', () => {
  for (const native of ['x86_64', 'aarch64'] as const) {
    it(`${native}: 300 random profiles (seeded)`, () => {
      for (let seed = 1; seed <= 300; seed++) {
        const spec = randomProfile(seed * 7919 + (native === 'x86_64' ? 0 : 1), native);
        agree(spec, native, tuples(spec, native, seed, 300), `seed ${seed}`);
      }
    });
  }
});

describe('compileSeccomp: runtime default profile', () => {
  const capSets: (string[] | undefined)[] = [undefined, [], ['CAP_SYS_ADMIN'], ['CAP_SYS_PTRACE', 'CAP_SYS_NICE', 'CAP_BPF', 'CAP_SYS_TIME']];
  for (const native of ['x86_64', 'aarch64'] as const) {
    it(`${native}: every syscall number and sampled args agree with the reference`, () => {
      for (const capabilities of capSets) {
        const spec = runtimeDefaultProfile({ arch: native, capabilities, kernel: '6.1.0' });
        const archs = native === 'x86_64' ? [AUDIT.X86_64, AUDIT.I386] : [AUDIT.AARCH64, AUDIT.ARM];
        const calls: Call[] = [];
        const r = rng(99);
        const values = argValues(spec);
        for (const arch of archs)
          for (const base of arch === AUDIT.X86_64 ? [0, 0x40000000] : [0])
            for (let nr = 0; nr < 600; nr++) calls.push({ arch, nr: base + nr, args: Array.from({ length: 6 }, () => r.pick(values)) });
        calls.push(...tuples(spec, native, 3, 3000));
        const { insns } = agree(spec, native, calls, `default caps=${capabilities}`);
        assert.ok(insns < BPF_MAXINSNS);
      }
    });
  }

  it('x86_64: allows the ordinary, denies the privileged, restricts clone flags', () => {
    const { program } = compileSeccomp(runtimeDefaultProfile({ arch: 'x86_64', capabilities: [] }), { nativeArch: 'x86_64' });
    const r = (nr: number, args: bigint[] = [], arch: number = AUDIT.X86_64) => runFilter(program, { nr, arch, args }).ret;
    assert.equal(r(syscallsX86_64.openat), RET.ALLOW);
    assert.equal(r(syscallsX86_64.mount), RET.ERRNO + 1);
    assert.equal(r(syscallsX86_64.unshare), RET.ERRNO + 1);
    assert.equal(r(syscallsX86_64.clone, [0x01200011n]), RET.ALLOW, 'fork-like clone');
    assert.equal(r(syscallsX86_64.clone, [0x20000000n | 0x11n]), RET.ERRNO + 1, 'CLONE_NEWNET');
    assert.equal(r(syscallsX86_64.clone3), RET.ERRNO + 38);
    assert.equal(r(syscallsX86_64.personality, [0xffffffffn]), RET.ALLOW);
    assert.equal(r(syscallsX86_64.personality, [0x0040000n]), RET.ERRNO + 1, 'ADDR_NO_RANDOMIZE');
    assert.equal(r(syscallsX86_64.socket, [40n]), RET.ERRNO + 1, 'AF_VSOCK');
    assert.equal(r(syscallsX86_64.socket, [2n]), RET.ALLOW);
    assert.equal(r(syscallsX86_64.mseal), RET.ERRNO + 38, 'newer than the profile: ENOSYS');
    assert.equal(r(syscallsX86.mount, [], AUDIT.I386), RET.ERRNO + 1);
    assert.equal(r(syscallsX32.read, [], AUDIT.X86_64), RET.ALLOW);
    assert.equal(r(syscallsX86_64.read, [], AUDIT.AARCH64), RET.KILL_PROCESS);
    const admin = compileSeccomp(runtimeDefaultProfile({ arch: 'x86_64', capabilities: ['SYS_ADMIN'] }), { nativeArch: 'x86_64' }).program;
    assert.equal(runFilter(admin, { nr: syscallsX86_64.clone, arch: AUDIT.X86_64, args: [0x20000000n] }).ret, RET.ALLOW);
    assert.equal(runFilter(admin, { nr: syscallsX86_64.mount, arch: AUDIT.X86_64 }).ret, RET.ALLOW);
    assert.equal(runFilter(admin, { nr: syscallsX86_64.clone3, arch: AUDIT.X86_64 }).ret, RET.ALLOW);
  });
});

void EDGE;
void disassemble;
