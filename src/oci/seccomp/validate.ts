/**
 * Validation of the OCI `linux.seccomp` object: named checks, each reporting the JSON path of
 * the offending field (`linux.seccomp.syscalls[3].args[0].op`). `validateSeccomp` throws the first
 * problem as a SpecError; `seccompIssues` lists them all.
 */
import { SpecError } from '../../errors.ts';
import type { LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArch, LinuxSeccompFlag, LinuxSeccompOperator } from './types.ts';

export const ACTIONS: readonly LinuxSeccompAction[] = [
  'SCMP_ACT_KILL',
  'SCMP_ACT_KILL_PROCESS',
  'SCMP_ACT_KILL_THREAD',
  'SCMP_ACT_TRAP',
  'SCMP_ACT_ERRNO',
  'SCMP_ACT_TRACE',
  'SCMP_ACT_ALLOW',
  'SCMP_ACT_LOG',
  'SCMP_ACT_NOTIFY',
];
/** Actions whose return data is set by errnoRet / defaultErrnoRet. */
export const ACTIONS_WITH_ERRNO: readonly LinuxSeccompAction[] = ['SCMP_ACT_ERRNO', 'SCMP_ACT_TRACE'];

export const OPERATORS: readonly LinuxSeccompOperator[] = [
  'SCMP_CMP_NE',
  'SCMP_CMP_LT',
  'SCMP_CMP_LE',
  'SCMP_CMP_EQ',
  'SCMP_CMP_GE',
  'SCMP_CMP_GT',
  'SCMP_CMP_MASKED_EQ',
];

export const ARCHES: readonly LinuxSeccompArch[] = [
  'SCMP_ARCH_X86',
  'SCMP_ARCH_X86_64',
  'SCMP_ARCH_X32',
  'SCMP_ARCH_ARM',
  'SCMP_ARCH_AARCH64',
  'SCMP_ARCH_MIPS',
  'SCMP_ARCH_MIPS64',
  'SCMP_ARCH_MIPS64N32',
  'SCMP_ARCH_MIPSEL',
  'SCMP_ARCH_MIPSEL64',
  'SCMP_ARCH_MIPSEL64N32',
  'SCMP_ARCH_PPC',
  'SCMP_ARCH_PPC64',
  'SCMP_ARCH_PPC64LE',
  'SCMP_ARCH_S390',
  'SCMP_ARCH_S390X',
  'SCMP_ARCH_PARISC',
  'SCMP_ARCH_PARISC64',
  'SCMP_ARCH_RISCV64',
  'SCMP_ARCH_LOONGARCH64',
];

export const FLAGS: readonly LinuxSeccompFlag[] = [
  'SECCOMP_FILTER_FLAG_TSYNC',
  'SECCOMP_FILTER_FLAG_LOG',
  'SECCOMP_FILTER_FLAG_SPEC_ALLOW',
  'SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV',
];

/** Largest errnoRet: the 16-bit SECCOMP_RET_DATA field (the kernel caps errno values at 4095). */
export const MAX_ERRNO_RET = 0xffff;
export const MAX_ARG_INDEX = 5;
const UINT64_MAX = (1n << 64n) - 1n;

export interface SeccompIssue {
  /** Name of the check that failed (stable, for tests and tooling). */
  check: string;
  path: string;
  reason: string;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
const list = (xs: readonly string[]) => xs.join(', ');

/** A uint64 given as a JSON number (exact only below 2^53) or a bigint. */
export function isUint64(v: unknown): v is number | bigint {
  if (typeof v === 'bigint') return v >= 0n && v <= UINT64_MAX;
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Every problem found, in document order. */
export function seccompIssues(v: unknown, path = 'linux.seccomp'): SeccompIssue[] {
  const issues: SeccompIssue[] = [];
  const add = (check: string, p: string, reason: string) => issues.push({ check, path: p, reason });
  if (!isObject(v)) {
    add('object', path, 'must be an object');
    return issues;
  }
  const s = v as Record<string, unknown>;

  const errnoRet = (value: unknown, p: string, action: unknown) => {
    if (value === undefined) return;
    if (!Number.isInteger(value) || (value as number) < 0 || (value as number) > MAX_ERRNO_RET) {
      add('errno-range', p, `must be an integer from 0 to ${MAX_ERRNO_RET} (an errno number such as 1 for EPERM)`);
    } else if (typeof action === 'string' && ACTIONS.includes(action as LinuxSeccompAction) && !ACTIONS_WITH_ERRNO.includes(action as LinuxSeccompAction)) {
      add('errno-action', p, `is only allowed with ${list(ACTIONS_WITH_ERRNO)}, not ${action}; remove it`);
    }
  };

  // defaultAction
  if (s.defaultAction === undefined) add('default-action', `${path}.defaultAction`, 'is required');
  else if (typeof s.defaultAction !== 'string' || !ACTIONS.includes(s.defaultAction as LinuxSeccompAction)) {
    add('action', `${path}.defaultAction`, `unknown action ${JSON.stringify(s.defaultAction)}; use one of ${list(ACTIONS)}`);
  } else if (s.defaultAction === 'SCMP_ACT_NOTIFY') {
    add('notify-default', `${path}.defaultAction`, 'SCMP_ACT_NOTIFY cannot be the default action (the write(2) that hands the listener fd over would be trapped)');
  }
  errnoRet(s.defaultErrnoRet, `${path}.defaultErrnoRet`, s.defaultAction);

  // architectures
  if (s.architectures !== undefined) {
    if (!Array.isArray(s.architectures)) add('architectures', `${path}.architectures`, 'must be an array');
    else
      s.architectures.forEach((a, i) => {
        if (typeof a !== 'string' || !ARCHES.includes(a as LinuxSeccompArch)) {
          add('arch', `${path}.architectures[${i}]`, `unknown architecture ${JSON.stringify(a)}; use one of ${list(ARCHES)}`);
        }
      });
  }

  // flags
  if (s.flags !== undefined) {
    if (!Array.isArray(s.flags)) add('flags', `${path}.flags`, 'must be an array');
    else
      s.flags.forEach((f, i) => {
        if (typeof f !== 'string' || !FLAGS.includes(f as LinuxSeccompFlag)) {
          add('flag', `${path}.flags[${i}]`, `unknown flag ${JSON.stringify(f)}; use one of ${list(FLAGS)}`);
        }
      });
  }

  for (const key of ['listenerPath', 'listenerMetadata'] as const) {
    if (s[key] !== undefined && typeof s[key] !== 'string') add('listener', `${path}.${key}`, 'must be a string');
  }

  // syscalls
  let usesNotify = false;
  if (s.syscalls !== undefined) {
    if (!Array.isArray(s.syscalls)) add('syscalls', `${path}.syscalls`, 'must be an array');
    else
      s.syscalls.forEach((sc, i) => {
        const p = `${path}.syscalls[${i}]`;
        if (!isObject(sc)) {
          add('syscall', p, 'must be an object');
          return;
        }
        if (!Array.isArray(sc.names)) add('names', `${p}.names`, sc.names === undefined ? 'is required' : 'must be an array of syscall names');
        else if (sc.names.length === 0) add('names', `${p}.names`, 'must name at least one syscall');
        else
          sc.names.forEach((n, j) => {
            if (typeof n !== 'string' || n === '') add('name', `${p}.names[${j}]`, 'must be a non-empty syscall name');
            else if (!/^[A-Za-z0-9_]+$/.test(n)) add('name', `${p}.names[${j}]`, `${JSON.stringify(n)} is not a syscall name`);
          });
        if (sc.action === undefined) add('action', `${p}.action`, 'is required');
        else if (typeof sc.action !== 'string' || !ACTIONS.includes(sc.action as LinuxSeccompAction)) {
          add('action', `${p}.action`, `unknown action ${JSON.stringify(sc.action)}; use one of ${list(ACTIONS)}`);
        } else if (sc.action === 'SCMP_ACT_NOTIFY') {
          usesNotify = true;
          if (Array.isArray(sc.names) && sc.names.includes('write')) {
            add('notify-write', `${p}.names`, 'SCMP_ACT_NOTIFY cannot be used for write (the listener fd is handed over with write(2))');
          }
        }
        errnoRet(sc.errnoRet, `${p}.errnoRet`, sc.action);
        if (sc.args !== undefined) {
          if (!Array.isArray(sc.args)) add('args', `${p}.args`, 'must be an array');
          else
            sc.args.forEach((a, k) => {
              const ap = `${p}.args[${k}]`;
              if (!isObject(a)) {
                add('arg', ap, 'must be an object');
                return;
              }
              if (a.index === undefined) add('arg-index', `${ap}.index`, 'is required');
              else if (!Number.isInteger(a.index) || (a.index as number) < 0 || (a.index as number) > MAX_ARG_INDEX) {
                add('arg-index', `${ap}.index`, `must be an integer from 0 to ${MAX_ARG_INDEX} (syscalls take at most 6 arguments)`);
              }
              if (a.value === undefined) add('arg-value', `${ap}.value`, 'is required');
              else if (!isUint64(a.value)) add('arg-value', `${ap}.value`, uint64Reason(a.value));
              if (a.valueTwo !== undefined && !isUint64(a.valueTwo)) add('arg-value', `${ap}.valueTwo`, uint64Reason(a.valueTwo));
              if (a.op === undefined) add('arg-op', `${ap}.op`, 'is required');
              else if (typeof a.op !== 'string' || !OPERATORS.includes(a.op as LinuxSeccompOperator)) {
                add('arg-op', `${ap}.op`, `unknown operator ${JSON.stringify(a.op)}; use one of ${list(OPERATORS)}`);
              }
            });
        }
      });
  }
  if (usesNotify && (typeof s.listenerPath !== 'string' || s.listenerPath === '')) {
    add('listener-path', `${path}.listenerPath`, 'is required when a rule uses SCMP_ACT_NOTIFY');
  }
  return issues;
}

function uint64Reason(v: unknown): string {
  if (typeof v === 'number' && Number.isInteger(v) && v > Number.MAX_SAFE_INTEGER) {
    return `${v} is above 2^53 and lost precision as a JSON number; pass it as a bigint`;
  }
  return 'must be an unsigned 64-bit integer';
}

/** Throws the first problem as a SpecError naming its JSON path. */
export function validateSeccomp(v: unknown, path = 'linux.seccomp'): asserts v is LinuxSeccomp {
  const [first] = seccompIssues(v, path);
  if (first) throw new SpecError(first.path, first.reason);
}
