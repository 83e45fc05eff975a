import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ARM64_DEFINES, evalCondition, parseGeneric, parseX32 } from '../../../scripts/gen-syscalls.ts';
import { syscallsAarch64 } from './syscalls-aarch64.ts';
import { syscallsX32 } from './syscalls-x32.ts';
import { syscallsX86 } from './syscalls-x86.ts';
import { syscallsX86_64 } from './syscalls-x86_64.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');

describe('syscall tables', () => {
  it('have the well-known numbers', () => {
    const x86_64: Record<string, number> = { read: 0, write: 1, open: 2, mmap: 9, clone: 56, fork: 57, execve: 59, mkdir: 83, personality: 135, arch_prctl: 158, openat: 257, mkdirat: 258, seccomp: 317, clone3: 435, futex_waitv: 449 };
    const aarch64: Record<string, number> = { io_setup: 0, fcntl: 25, mkdirat: 34, renameat: 38, statfs: 43, ftruncate: 46, openat: 56, close: 57, lseek: 62, read: 63, write: 64, newfstatat: 79, fstat: 80, personality: 92, exit: 93, getrlimit: 163, socket: 198, clone: 220, execve: 221, mmap: 222, fadvise64: 223, seccomp: 277, clone3: 435 };
    const x86: Record<string, number> = { exit: 1, fork: 2, read: 3, mkdir: 39, socketcall: 102, ipc: 117, clone: 120, personality: 136, _llseek: 140, _newselect: 142, mmap2: 192, fcntl64: 221, openat: 295, socket: 359, clone3: 435 };
    for (const [t, want] of [[syscallsX86_64, x86_64], [syscallsAarch64, aarch64], [syscallsX86, x86]] as const) {
      for (const [name, nr] of Object.entries(want)) assert.equal(t[name], nr, name);
    }
    assert.equal(syscallsX32.read, 0x40000000);
    assert.equal(syscallsX32.openat, 0x40000000 + 257);
    assert.equal(syscallsX32.rt_sigaction, 0x40000000 + 512);
    assert.equal(syscallsX32.execve, 0x40000000 + 520);
    assert.equal(syscallsX32.mkdir, 0x40000000 + 83);
  });

  it('contain only names the architecture has', () => {
    for (const n of ['open', 'mkdir', 'fork', 'stat', 'access', 'fcntl64', 'mmap2', 'arch_specific_syscall', 'syscalls', 'sync_file_range2']) {
      assert.equal(Object.hasOwn(syscallsAarch64, n), false, `aarch64 ${n}`);
    }
    assert.equal(Object.hasOwn(syscallsX86_64, 'socketcall'), false);
    assert.equal(Object.hasOwn(syscallsX32, 'rt_sigaction') && !Object.hasOwn(syscallsX32, 'uselib'), true, 'x32 drops 64-bit-only calls');
    for (const t of [syscallsX86_64, syscallsAarch64, syscallsX86, syscallsX32]) {
      assert.equal(new Set(Object.values(t)).size, Object.values(t).length, 'numbers are unique');
    }
  });

  it('are what the generator produces from the installed headers', { skip: !existsSync('/usr/include/asm-generic/unistd.h') && 'linux-libc-dev headers not installed' }, () => {
    execFileSync(process.execPath, [join(root, 'scripts/gen-syscalls.ts'), '--check'], { stdio: 'pipe' });
  });

  it('generator: evaluates the generic header with __NR3264 aliases and conditions', () => {
    const text = [
      '#define __NR_io_setup 0',
      '__SC_COMP(__NR_io_setup, sys_io_setup, compat_sys_io_setup)',
      '#define __NR3264_fcntl 25',
      '__SC_COMP_3264(__NR3264_fcntl, sys_fcntl64, sys_fcntl, \\',
      '  compat_sys_fcntl64)',
      '#ifdef __ARCH_WANT_RENAMEAT',
      '#define __NR_renameat 38',
      '#endif /* __ARCH_WANT_RENAMEAT */',
      '#ifdef __ARCH_WANT_SYNC_FILE_RANGE2',
      '#define __NR_sync_file_range2 84',
      '#else',
      '#define __NR_sync_file_range 84',
      '#endif',
      '#if defined(__ARCH_WANT_TIME32_SYSCALLS) || __BITS_PER_LONG != 32',
      '#define __NR_io_getevents 4',
      '#endif',
      '#undef __NR_syscalls',
      '#define __NR_syscalls 451',
      '#if __BITS_PER_LONG == 64 && !defined(__SYSCALL_COMPAT)',
      '#define __NR_fcntl __NR3264_fcntl',
      '#else',
      '#define __NR_fcntl64 __NR3264_fcntl',
      '#endif',
    ].join('\n');
    const t = parseGeneric(text, ARM64_DEFINES);
    assert.deepEqual(Object.fromEntries([...t].sort()), { fcntl: 25, io_getevents: 4, io_setup: 0, renameat: 38, sync_file_range: 84 });
    const t32 = parseGeneric(text, { __BITS_PER_LONG: '32' });
    assert.deepEqual(Object.fromEntries([...t32].sort()), { fcntl64: 25, io_setup: 0, sync_file_range: 84 });
    assert.equal(evalCondition('!defined(X) && (1 == 1)', new Map()), 1);
    assert.deepEqual([...parseX32('#define __NR_read (__X32_SYSCALL_BIT + 0)\n#define __NR_execve (__X32_SYSCALL_BIT + 520)')], [['read', 0x40000000], ['execve', 0x40000208]]);
  });
});
