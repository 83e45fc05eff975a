/**
 * Loads compiled programs into real processes on this kernel (no executor involved): a small
 * static C helper (test/load-bpf.c) sets no_new_privs, calls seccomp(SECCOMP_SET_MODE_FILTER)
 * with our bytes and runs busybox or one raw syscall.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { compileSeccomp } from './compile.ts';
import { runtimeDefaultProfile } from './default-profile.ts';
import { syscallsX86_64 } from './syscalls-x86_64.ts';
import { syscallsAarch64 } from './syscalls-aarch64.ts';
import type { LinuxSeccomp } from './types.ts';

const here = dirname(fileURLToPath(import.meta.url));
const BUSYBOX = '/bin/busybox';
const native = process.arch === 'x64' ? 'x86_64' : process.arch === 'arm64' ? 'aarch64' : undefined;
const table = native === 'aarch64' ? syscallsAarch64 : syscallsX86_64;
const gcc = spawnSync('gcc', ['--version']).status === 0;
const skip = !native ? `no syscall tables for ${process.arch}` : !gcc ? 'gcc not installed (needed to build test/load-bpf.c)' : !existsSync(BUSYBOX) ? `${BUSYBOX} missing (apt-get install busybox-static)` : false;

describe('seccomp programs on the real kernel', { skip }, () => {
  let dir = '';
  let helper = '';
  let n = 0;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'corral-seccomp-'));
    helper = join(dir, 'load-bpf');
    const cc = spawnSync('gcc', ['-static', '-O1', '-Wall', '-o', helper, join(here, 'test/load-bpf.c')], { encoding: 'utf8' });
    assert.equal(cc.status, 0, `gcc failed: ${cc.stderr}`);
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function run(spec: LinuxSeccomp, mode: 'exec' | 'syscall', args: string[]) {
    const { program, flags } = compileSeccomp(spec);
    const file = join(dir, `prog-${n++}.bpf`);
    writeFileSync(file, program);
    const r = spawnSync(helper, [file, String(flags), mode, ...args], { encoding: 'utf8', cwd: dir, timeout: 30_000 });
    assert.notEqual(r.status, 125, `the kernel rejected the program: ${r.stderr}`);
    return r;
  }

  const denyMkdir = (action: LinuxSeccomp['defaultAction'], errnoRet?: number): LinuxSeccomp => ({
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: native === 'x86_64' ? ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'] : ['SCMP_ARCH_AARCH64'],
    syscalls: [{ names: ['mkdir', 'mkdirat'], action, ...(errnoRet !== undefined ? { errnoRet } : {}) }],
  });

  it('denies mkdir with EPERM and allows everything else', () => {
    const r = run(denyMkdir('SCMP_ACT_ERRNO'), 'exec', [BUSYBOX, 'mkdir', 'x']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /Operation not permitted/);
    assert.equal(existsSync(join(dir, 'x')), false);
    const ok = run(denyMkdir('SCMP_ACT_ERRNO'), 'exec', [BUSYBOX, 'touch', 'y']);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(existsSync(join(dir, 'y')), true);
  });

  it('returns the configured errno', () => {
    const r = run(denyMkdir('SCMP_ACT_ERRNO', 5), 'exec', [BUSYBOX, 'mkdir', 'x']);
    assert.match(r.stderr, /Input\/output error/);
  });

  it('kills the process with SIGSYS for SCMP_ACT_KILL_PROCESS', () => {
    const r = run(denyMkdir('SCMP_ACT_KILL_PROCESS'), 'exec', [BUSYBOX, 'mkdir', 'x']);
    assert.equal(r.signal, 'SIGSYS');
  });

  it('compares the high word of 64-bit arguments', () => {
    const spec: LinuxSeccomp = {
      defaultAction: 'SCMP_ACT_ALLOW',
      syscalls: [{ names: ['getpid'], action: 'SCMP_ACT_ERRNO', errnoRet: 13, args: [{ index: 0, value: 0x1_00000000n, op: 'SCMP_CMP_GE' }] }],
    };
    // getpid ignores its arguments, so the filter alone decides
    const low = run(spec, 'syscall', [String(table.getpid), '0xffffffff']);
    assert.match(low.stdout, /ret=\d+ errno=0/);
    const high = run(spec, 'syscall', [String(table.getpid), '0x100000000']);
    assert.match(high.stdout, /ret=-1 errno=13/);
  });

  it('runs busybox under the runtime default profile and enforces it', () => {
    const profile = runtimeDefaultProfile({ capabilities: [] });
    const ok = run(profile, 'exec', [BUSYBOX, 'sh', '-c', 'mkdir d && echo hi > d/f && cat d/f && ls d']);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /hi/);
    const unshare = run(profile, 'exec', [BUSYBOX, 'unshare', '-n', BUSYBOX, 'true']);
    assert.notEqual(unshare.status, 0);
    assert.match(unshare.stderr, /Operation not permitted/);
    const chroot = run(profile, 'exec', [BUSYBOX, 'chroot', '/', BUSYBOX, 'true']);
    assert.match(chroot.stderr, /Operation not permitted/);
    // With CAP_SYS_CHROOT granted the profile allows chroot (we run as root, so it succeeds).
    const chrootOk = run(runtimeDefaultProfile({ capabilities: ['CAP_SYS_CHROOT'] }), 'exec', [BUSYBOX, 'chroot', '/', BUSYBOX, 'true']);
    assert.equal(chrootOk.status, 0, chrootOk.stderr);
  });

  it('returns ENOSYS for syscalls newer than the profile and EPERM for known denied ones', () => {
    const profile = runtimeDefaultProfile({ capabilities: [] });
    const newer = run(profile, 'syscall', ['470']);
    assert.match(newer.stdout, /ret=-1 errno=38/);
    const denied = run(profile, 'syscall', [String(table.mount)]);
    assert.match(denied.stdout, /ret=-1 errno=1\b/);
    const clone3 = run(profile, 'syscall', [String(table.clone3)]);
    assert.match(clone3.stdout, /ret=-1 errno=38/);
  });

  it('loads a program that needs long jumps (400+ syscalls with argument rules)', () => {
    const names = Object.keys(table).filter((n) => n !== 'getpid').slice(0, 420);
    const spec: LinuxSeccomp = {
      defaultAction: 'SCMP_ACT_ALLOW',
      syscalls: [
        // never matched in practice (the high word of an argument equal to a rule-specific number)
        ...names.map((name, i) => ({ names: [name], action: 'SCMP_ACT_TRAP' as const, args: [{ index: i % 6, value: (BigInt(i) + 0x1000n) << 32n, op: 'SCMP_CMP_EQ' as const }] })),
        { names: ['getpid'], action: 'SCMP_ACT_ERRNO', errnoRet: 22, args: [{ index: 1, value: 0xff00n, valueTwo: 0x1200n, op: 'SCMP_CMP_MASKED_EQ' }] },
      ],
    };
    const { program } = compileSeccomp(spec);
    assert.ok(program.length / 8 > 1000, `${program.length / 8} instructions`);
    assert.match(run(spec, 'syscall', [String(table.getpid), '0', '0x12ab']).stdout, /errno=22/);
    assert.match(run(spec, 'syscall', [String(table.getpid), '0', '0x13ab']).stdout, /errno=0/);
  });
});
