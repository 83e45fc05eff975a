/**
 * The OCI runtime-spec 1.2 `linux.seccomp` object (config.json), field for field.
 * See https://github.com/opencontainers/runtime-spec/blob/main/config-linux.md#seccomp
 */

export type LinuxSeccompAction =
  | 'SCMP_ACT_KILL'
  | 'SCMP_ACT_KILL_PROCESS'
  | 'SCMP_ACT_KILL_THREAD'
  | 'SCMP_ACT_TRAP'
  | 'SCMP_ACT_ERRNO'
  | 'SCMP_ACT_TRACE'
  | 'SCMP_ACT_ALLOW'
  | 'SCMP_ACT_LOG'
  | 'SCMP_ACT_NOTIFY';

export type LinuxSeccompOperator =
  | 'SCMP_CMP_NE'
  | 'SCMP_CMP_LT'
  | 'SCMP_CMP_LE'
  | 'SCMP_CMP_EQ'
  | 'SCMP_CMP_GE'
  | 'SCMP_CMP_GT'
  | 'SCMP_CMP_MASKED_EQ';

export type LinuxSeccompArch =
  | 'SCMP_ARCH_X86'
  | 'SCMP_ARCH_X86_64'
  | 'SCMP_ARCH_X32'
  | 'SCMP_ARCH_ARM'
  | 'SCMP_ARCH_AARCH64'
  | 'SCMP_ARCH_MIPS'
  | 'SCMP_ARCH_MIPS64'
  | 'SCMP_ARCH_MIPS64N32'
  | 'SCMP_ARCH_MIPSEL'
  | 'SCMP_ARCH_MIPSEL64'
  | 'SCMP_ARCH_MIPSEL64N32'
  | 'SCMP_ARCH_PPC'
  | 'SCMP_ARCH_PPC64'
  | 'SCMP_ARCH_PPC64LE'
  | 'SCMP_ARCH_S390'
  | 'SCMP_ARCH_S390X'
  | 'SCMP_ARCH_PARISC'
  | 'SCMP_ARCH_PARISC64'
  | 'SCMP_ARCH_RISCV64'
  | 'SCMP_ARCH_LOONGARCH64';

export type LinuxSeccompFlag =
  | 'SECCOMP_FILTER_FLAG_TSYNC'
  | 'SECCOMP_FILTER_FLAG_LOG'
  | 'SECCOMP_FILTER_FLAG_SPEC_ALLOW'
  | 'SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV';

/**
 * One argument comparison. `value`/`valueTwo` are uint64 in the spec: a plain JSON number is
 * exact only up to 2^53, so larger values must be given as bigint (validation rejects unsafe numbers).
 */
export interface LinuxSeccompArg {
  index: number;
  value: number | bigint;
  valueTwo?: number | bigint;
  op: LinuxSeccompOperator;
}

export interface LinuxSyscall {
  names: string[];
  action: LinuxSeccompAction;
  errnoRet?: number;
  args?: LinuxSeccompArg[];
}

export interface LinuxSeccomp {
  defaultAction: LinuxSeccompAction;
  defaultErrnoRet?: number;
  architectures?: LinuxSeccompArch[];
  flags?: LinuxSeccompFlag[];
  listenerPath?: string;
  listenerMetadata?: string;
  syscalls?: LinuxSyscall[];
}

/** Architectures Corral can compile a filter for (the machine's native ABI). */
export type NativeArch = 'x86_64' | 'aarch64';
