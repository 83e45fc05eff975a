/**
 * The runtime default seccomp profile: the well-known Docker/containerd default (deny with EPERM,
 * allow a list of ordinary syscalls, allow privileged ones only with the capability that makes
 * them meaningful, restrict clone(2) namespace flags without CAP_SYS_ADMIN, a fixed set of
 * personality(2) values). The cap-, arch- and kernel-dependent parts are resolved here, so the
 * result is a plain OCI `linux.seccomp` object.
 */
import { release } from 'node:os';
import { hostArch } from './compile.ts';
import type { LinuxSeccomp, LinuxSeccompArch, LinuxSyscall, NativeArch } from './types.ts';

/** Docker's default capability set (used when no capability list is given). */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
];

const ARCHES: Record<NativeArch, LinuxSeccompArch[]> = {
  x86_64: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
  aarch64: ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'],
};

/** Allowed for every container. */
const ALWAYS: readonly string[] = `
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2 dup3
epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old
eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate
fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr
flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate
ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake futimesat getcpu getcwd
getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer
getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid getresgid32 getresuid
getresuid32 getrlimit get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid
gettimeofday getuid getuid32 getxattr inotify_add_watch inotify_init inotify_init1 inotify_rm_watch
io_cancel ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set
io_setup io_submit io_uring_enter io_uring_register io_uring_setup ipc kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listxattr
llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack membarrier
memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect
mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall munmap
name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open
pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64
preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read
readahead readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages
removexattr rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending
rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select semctl
semget semop semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid
setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority
setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit
set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32 setxattr shmat shmctl
shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall socketpair
splice stat stat64 statfs statfs64 statx symlink symlinkat sync sync_file_range syncfs sysinfo tee
tgkill time timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64
times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat utime utimensat
utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
`.trim().split(/\s+/);

/** Allowed when the granted capabilities include the key. */
const BY_CAPABILITY: readonly [string, string[]][] = [
  ['CAP_DAC_READ_SEARCH', ['open_by_handle_at']],
  [
    'CAP_SYS_ADMIN',
    ['bpf', 'clone', 'clone3', 'fanotify_init', 'fsconfig', 'fsmount', 'fsopen', 'fspick', 'lookup_dcookie', 'mount',
      'mount_setattr', 'move_mount', 'open_tree', 'perf_event_open', 'quotactl', 'quotactl_fd', 'setdomainname',
      'sethostname', 'setns', 'syslog', 'umount', 'umount2', 'unshare'],
  ],
  ['CAP_SYS_BOOT', ['reboot']],
  ['CAP_SYS_CHROOT', ['chroot']],
  ['CAP_SYS_MODULE', ['delete_module', 'init_module', 'finit_module']],
  ['CAP_SYS_PACCT', ['acct']],
  ['CAP_SYS_PTRACE', ['kcmp', 'pidfd_getfd', 'process_madvise', 'process_vm_readv', 'process_vm_writev', 'ptrace']],
  ['CAP_SYS_RAWIO', ['iopl', 'ioperm']],
  ['CAP_SYS_TIME', ['settimeofday', 'stime', 'clock_settime', 'clock_settime64']],
  ['CAP_SYS_TTY_CONFIG', ['vhangup']],
  ['CAP_SYS_NICE', ['get_mempolicy', 'mbind', 'set_mempolicy', 'set_mempolicy_home_node']],
  ['CAP_SYSLOG', ['syslog']],
  ['CAP_BPF', ['bpf']],
  ['CAP_PERFMON', ['perf_event_open']],
];

/** CLONE_NEWNS|CLONE_NEWCGROUP|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWUSER|CLONE_NEWPID|CLONE_NEWNET. */
export const CLONE_NAMESPACE_FLAGS = 0x7e020000;
/** personality(2) values allowed: PER_LINUX, UNAME26, PER_LINUX32, PER_LINUX32|UNAME26, query (0xffffffff). */
export const PERSONALITY_VALUES: readonly number[] = [0x0, 0x8, 0x20000, 0x20008, 0xffffffff];

export interface DefaultProfileOptions {
  /** Native architecture (default: the host's). */
  arch?: NativeArch;
  /** Granted capabilities, "CAP_SYS_ADMIN" or "SYS_ADMIN" (default: Docker's default set). */
  capabilities?: readonly string[];
  /** Kernel release such as "6.1.0" (default: the running kernel); ptrace & co need >= 4.8. */
  kernel?: string;
}

function kernelAtLeast(rel: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(rel);
  if (!m) return true;
  const [a, b] = [Number(m[1]), Number(m[2])];
  return a > major || (a === major && b >= minor);
}

export function runtimeDefaultProfile(opts: DefaultProfileOptions | NativeArch = {}): LinuxSeccomp {
  const o: DefaultProfileOptions = typeof opts === 'string' ? { arch: opts } : opts;
  const arch = o.arch ?? hostArch();
  const caps = new Set((o.capabilities ?? DEFAULT_CAPABILITIES).map((c) => {
    const u = c.toUpperCase();
    return u.startsWith('CAP_') ? u : `CAP_${u}`;
  }));
  const has = (c: string) => caps.has(c);
  const syscalls: LinuxSyscall[] = [{ names: [...ALWAYS], action: 'SCMP_ACT_ALLOW' }];
  if (kernelAtLeast(o.kernel ?? release(), 4, 8)) {
    syscalls.push({ names: ['process_vm_readv', 'process_vm_writev', 'ptrace'], action: 'SCMP_ACT_ALLOW' });
  }
  // socket(2) except AF_VSOCK (40)
  syscalls.push({ names: ['socket'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 40, op: 'SCMP_CMP_NE' }] });
  for (const v of PERSONALITY_VALUES) {
    syscalls.push({ names: ['personality'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: v, op: 'SCMP_CMP_EQ' }] });
  }
  if (arch === 'aarch64') {
    syscalls.push({
      names: ['arm_fadvise64_64', 'arm_sync_file_range', 'sync_file_range2', 'breakpoint', 'cacheflush', 'set_tls'],
      action: 'SCMP_ACT_ALLOW',
    });
  } else {
    syscalls.push({ names: ['arch_prctl'], action: 'SCMP_ACT_ALLOW' });
    syscalls.push({ names: ['modify_ldt'], action: 'SCMP_ACT_ALLOW' });
  }
  for (const [cap, names] of BY_CAPABILITY) {
    if (has(cap)) syscalls.push({ names: [...names], action: 'SCMP_ACT_ALLOW' });
  }
  if (!has('CAP_SYS_ADMIN')) {
    // clone(2) without namespace flags (flags are argument 0 on x86 and arm; s390 differs).
    syscalls.push({ names: ['clone'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }] });
    // clone3 passes flags in memory, so it cannot be checked: make libc fall back to clone.
    syscalls.push({ names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 });
  }
  return { defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: 1, architectures: [...ARCHES[arch]], syscalls };
}
