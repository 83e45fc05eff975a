/**
 * Generates the syscall-number tables used by the seccomp compiler
 * (src/oci/seccomp/syscalls-*.ts) from the kernel UAPI headers installed on this machine
 * (Debian package linux-libc-dev):
 *
 *   x86_64  /usr/include/x86_64-linux-gnu/asm/unistd_64.h   `#define __NR_read 0`
 *   x86     /usr/include/x86_64-linux-gnu/asm/unistd_32.h   (i386, SCMP_ARCH_X86)
 *   x32     /usr/include/x86_64-linux-gnu/asm/unistd_x32.h  `#define __NR_read (__X32_SYSCALL_BIT + 0)`
 *   aarch64 /usr/include/asm-generic/unistd.h               the generic table, evaluated with arm64's
 *           configuration (64-bit, __ARCH_WANT_* as arch/arm64/include/uapi/asm/unistd.h sets them),
 *           including the __NR3264_* aliases (__NR_fcntl = __NR3264_fcntl = 25, ...).
 *
 * Since Linux 5.1 (pidfd_send_signal = 424) every architecture uses the same numbers for new
 * syscalls, so syscalls newer than the installed headers are added from SUPPLEMENT below
 * (marked in the output). Usage:
 *
 *   node scripts/gen-syscalls.ts            # (re)write the tables
 *   node scripts/gen-syscalls.ts --check    # exit 1 if the committed tables are stale
 */
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outDir = join(root, 'src/oci/seccomp');

const X32_SYSCALL_BIT = 0x40000000;

export type Table = Map<string, number>;

/** `#define __NR_name <number>` lines (x86_64 / i386 headers). */
export function parseFlat(text: string): Table {
  const t: Table = new Map();
  for (const line of text.split('\n')) {
    const m = /^#define\s+__NR_(\w+)\s+(\d+)\s*$/.exec(line);
    if (m) t.set(m[1], Number(m[2]));
  }
  return t;
}

/** `#define __NR_name (__X32_SYSCALL_BIT + <number>)` lines (x32 header). */
export function parseX32(text: string): Table {
  const t: Table = new Map();
  for (const line of text.split('\n')) {
    const m = /^#define\s+__NR_(\w+)\s+\(__X32_SYSCALL_BIT\s*\+\s*(\d+)\)\s*$/.exec(line);
    if (m) t.set(m[1], X32_SYSCALL_BIT + Number(m[2]));
  }
  return t;
}

/**
 * asm-generic/unistd.h evaluated by a small preprocessor: only `#if/#ifdef/#ifndef/#else/#endif`
 * with `defined(X)`, `!`, `||`, `&&`, `==`, `!=` and integer macros are needed. `defines` holds the
 * macros the architecture sets (a value of '' means defined without a value).
 */
export function parseGeneric(text: string, defines: Record<string, string>): Table {
  const macros = new Map<string, string>(Object.entries(defines));
  const stack: { active: boolean; taken: boolean; parentActive: boolean }[] = [];
  const active = () => stack.every((s) => s.active);
  // Join continuation lines.
  const lines = text.replace(/\\\n/g, ' ').split('\n');
  for (const raw of lines) {
    const line = raw.replace(/\/\*.*?\*\//g, '').trim();
    let m: RegExpExecArray | null;
    if ((m = /^#\s*ifdef\s+(\w+)/.exec(line))) {
      const parentActive = active();
      const v = macros.has(m[1]);
      stack.push({ active: v, taken: v, parentActive });
    } else if ((m = /^#\s*ifndef\s+(\w+)/.exec(line))) {
      const parentActive = active();
      const v = !macros.has(m[1]);
      stack.push({ active: v, taken: v, parentActive });
    } else if ((m = /^#\s*if\s+(.*)$/.exec(line))) {
      const parentActive = active();
      const v = evalCondition(m[1], macros) !== 0;
      stack.push({ active: v, taken: v, parentActive });
    } else if ((m = /^#\s*elif\s+(.*)$/.exec(line))) {
      const top = stack[stack.length - 1];
      if (!top) throw new Error('#elif without #if');
      const v = !top.taken && evalCondition(m[1], macros) !== 0;
      top.active = v;
      top.taken ||= v;
    } else if (/^#\s*else\b/.test(line)) {
      const top = stack[stack.length - 1];
      if (!top) throw new Error('#else without #if');
      top.active = !top.taken;
      top.taken = true;
    } else if (/^#\s*endif\b/.test(line)) {
      if (!stack.pop()) throw new Error('#endif without #if');
    } else if (!active()) {
      continue;
    } else if ((m = /^#\s*define\s+(\w+)(?:\s+(.*))?$/.exec(line))) {
      if (!m[1].includes('(')) macros.set(m[1], (m[2] ?? '').trim());
    } else if ((m = /^#\s*undef\s+(\w+)/.exec(line))) {
      macros.delete(m[1]);
    }
  }
  if (stack.length) throw new Error('unterminated #if');
  const resolve = (name: string, depth = 0): number | undefined => {
    const v = macros.get(name);
    if (v === undefined || depth > 8) return undefined;
    if (/^\d+$/.test(v)) return Number(v);
    if (/^\w+$/.test(v)) return resolve(v, depth + 1);
    return undefined;
  };
  const t: Table = new Map();
  for (const name of macros.keys()) {
    if (!name.startsWith('__NR_')) continue;
    const sys = name.slice('__NR_'.length);
    if (sys === 'syscalls' || sys === 'arch_specific_syscall') continue;
    const nr = resolve(name);
    if (nr !== undefined) t.set(sys, nr);
  }
  return t;
}

/** Evaluate a preprocessor condition (subset) to a number. */
export function evalCondition(expr: string, macros: Map<string, string>): number {
  const toks = expr.match(/defined|\w+|\|\||&&|==|!=|[!()]/g) ?? [];
  let i = 0;
  const peek = () => toks[i];
  const next = () => toks[i++];
  const primary = (): number => {
    const t = next();
    if (t === '!') return primary() ? 0 : 1;
    if (t === '(') {
      const v = or();
      if (next() !== ')') throw new Error(`bad condition: ${expr}`);
      return v;
    }
    if (t === 'defined') {
      let name = next();
      if (name === '(') {
        name = next();
        if (next() !== ')') throw new Error(`bad condition: ${expr}`);
      }
      return macros.has(name) ? 1 : 0;
    }
    if (t !== undefined && /^\d+$/.test(t)) return Number(t);
    if (t !== undefined && /^\w+$/.test(t)) {
      const v = macros.get(t);
      return v !== undefined && /^\d+$/.test(v) ? Number(v) : 0;
    }
    throw new Error(`bad condition: ${expr}`);
  };
  const eq = (): number => {
    let v = primary();
    while (peek() === '==' || peek() === '!=') {
      const op = next();
      const r = primary();
      v = (op === '==' ? v === r : v !== r) ? 1 : 0;
    }
    return v;
  };
  const and = (): number => {
    let v = eq();
    while (peek() === '&&') {
      next();
      const r = eq();
      v = v && r ? 1 : 0;
    }
    return v;
  };
  const or = (): number => {
    let v = and();
    while (peek() === '||') {
      next();
      const r = and();
      v = v || r ? 1 : 0;
    }
    return v;
  };
  const v = or();
  if (i !== toks.length) throw new Error(`bad condition: ${expr}`);
  return v;
}

/** What arch/arm64/include/uapi/asm/unistd.h sets before including asm-generic/unistd.h. */
export const ARM64_DEFINES: Record<string, string> = {
  __BITS_PER_LONG: '64',
  __ARCH_WANT_RENAMEAT: '',
  __ARCH_WANT_NEW_STAT: '',
  __ARCH_WANT_SET_GET_RLIMIT: '',
  __ARCH_WANT_TIME32_SYSCALLS: '',
  __ARCH_WANT_SYS_CLONE3: '',
  __ARCH_WANT_MEMFD_SECRET: '',
};

/**
 * Syscalls added after Linux 6.1 (the Debian 12 headers). Numbers are shared by all architectures
 * (x32 adds __X32_SYSCALL_BIT to the "common" ones). `only` limits an entry to some tables.
 */
const SUPPLEMENT: { name: string; nr: number; only?: Arch[] }[] = [
  { name: 'cachestat', nr: 451 },
  { name: 'fchmodat2', nr: 452 },
  { name: 'map_shadow_stack', nr: 453, only: ['x86_64', 'aarch64', 'x86'] },
  { name: 'futex_wake', nr: 454 },
  { name: 'futex_wait', nr: 455 },
  { name: 'futex_requeue', nr: 456 },
  { name: 'statmount', nr: 457 },
  { name: 'listmount', nr: 458 },
  { name: 'lsm_get_self_attr', nr: 459 },
  { name: 'lsm_set_self_attr', nr: 460 },
  { name: 'lsm_list_modules', nr: 461 },
  { name: 'mseal', nr: 462, only: ['x86_64', 'aarch64', 'x32'] },
];

type Arch = 'x86_64' | 'x86' | 'x32' | 'aarch64';

interface Source {
  arch: Arch;
  header: string;
  exportName: string;
  file: string;
  parse: (text: string) => Table;
  scmp: string;
}

const SOURCES: Source[] = [
  {
    arch: 'x86_64',
    header: '/usr/include/x86_64-linux-gnu/asm/unistd_64.h',
    exportName: 'syscallsX86_64',
    file: 'syscalls-x86_64.ts',
    parse: parseFlat,
    scmp: 'SCMP_ARCH_X86_64',
  },
  {
    arch: 'aarch64',
    header: '/usr/include/asm-generic/unistd.h',
    exportName: 'syscallsAarch64',
    file: 'syscalls-aarch64.ts',
    parse: (t) => parseGeneric(t, ARM64_DEFINES),
    scmp: 'SCMP_ARCH_AARCH64',
  },
  {
    arch: 'x86',
    header: '/usr/include/x86_64-linux-gnu/asm/unistd_32.h',
    exportName: 'syscallsX86',
    file: 'syscalls-x86.ts',
    parse: parseFlat,
    scmp: 'SCMP_ARCH_X86',
  },
  {
    arch: 'x32',
    header: '/usr/include/x86_64-linux-gnu/asm/unistd_x32.h',
    exportName: 'syscallsX32',
    file: 'syscalls-x32.ts',
    parse: parseX32,
    scmp: 'SCMP_ARCH_X32',
  },
];

/** Known numbers the generator refuses to get wrong. */
const CHECKS: Record<Arch, Record<string, number>> = {
  x86_64: { read: 0, openat: 257, clone: 56, clone3: 435, execve: 59, mkdir: 83, mkdirat: 258, personality: 135 },
  aarch64: {
    io_setup: 0, openat: 56, clone: 220, clone3: 435, execve: 221, fcntl: 25, lseek: 62, mmap: 222,
    fstat: 80, newfstatat: 79, renameat: 38, getrlimit: 163, mkdirat: 34, sync_file_range: 84, memfd_secret: 447,
  },
  x86: { exit: 1, read: 3, openat: 295, clone: 120, socketcall: 102, mkdir: 39, clone3: 435 },
  x32: { read: X32_SYSCALL_BIT + 0, openat: X32_SYSCALL_BIT + 257, rt_sigaction: X32_SYSCALL_BIT + 512, execve: X32_SYSCALL_BIT + 520 },
};

function render(src: Source, table: Table, supplemented: Set<string>): string {
  const entries = [...table.entries()].sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : 1));
  const hex = src.arch === 'x32';
  const body = entries
    .map(([name, nr]) => {
      const v = hex ? `0x${nr.toString(16)}` : String(nr);
      return `  ${name}: ${v},${supplemented.has(name) ? ' // newer than the headers (see scripts/gen-syscalls.ts)' : ''}`;
    })
    .join('\n');
  return `// GENERATED FILE - DO NOT EDIT. Regenerate with: node scripts/gen-syscalls.ts
// Source: ${src.header} (${src.scmp})${src.arch === 'x32' ? '\n// Numbers include __X32_SYSCALL_BIT (0x40000000), as seccomp_data.nr reports them.' : ''}

/** Syscall name -> number for ${src.scmp}. */
export const ${src.exportName}: Readonly<Record<string, number>> = Object.freeze({
${body}
});
`;
}

export function generate(): Map<string, string> {
  const out = new Map<string, string>();
  for (const src of SOURCES) {
    if (!existsSync(src.header)) {
      if (src.arch === 'x86' || src.arch === 'x32') {
        console.error(`gen-syscalls: ${src.header} missing; skipping ${src.scmp}`);
        continue;
      }
      throw new Error(`gen-syscalls: ${src.header} missing; install linux-libc-dev`);
    }
    const table = src.parse(readFileSync(src.header, 'utf8'));
    const supplemented = new Set<string>();
    for (const s of SUPPLEMENT) {
      if (s.only && !s.only.includes(src.arch)) continue;
      const nr = src.arch === 'x32' ? X32_SYSCALL_BIT + s.nr : s.nr;
      const have = table.get(s.name);
      if (have !== undefined) {
        if (have !== nr) throw new Error(`gen-syscalls: ${src.arch} ${s.name} is ${have} in the headers, supplement says ${nr}`);
        continue;
      }
      const clash = [...table.entries()].find(([, n]) => n === nr);
      if (clash) throw new Error(`gen-syscalls: ${src.arch} supplement ${s.name}=${nr} clashes with ${clash[0]}`);
      table.set(s.name, nr);
      supplemented.add(s.name);
    }
    for (const [name, nr] of Object.entries(CHECKS[src.arch])) {
      if (table.get(name) !== nr) {
        throw new Error(`gen-syscalls: ${src.arch} ${name} parsed as ${table.get(name)}, expected ${nr}`);
      }
    }
    out.set(src.file, render(src, table, supplemented));
  }
  return out;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const check = process.argv.includes('--check');
  let stale = false;
  for (const [file, text] of generate()) {
    const path = join(outDir, file);
    const old = existsSync(path) ? readFileSync(path, 'utf8') : '';
    if (old === text) continue;
    if (check) {
      console.error(`gen-syscalls: ${path} is stale`);
      stale = true;
    } else {
      writeFileSync(path, text);
      console.log(`gen-syscalls: wrote ${path}`);
    }
  }
  if (stale) process.exit(1);
}
