/**
 * The plan: the contract between the TypeScript runtime and the C executor
 * (src/executor/corral-exec.c). TypeScript interprets config.json and compiles
 * an ordered list of these operations; the executor only carries them out, in
 * order, and reports the first failure. It makes no policy decisions.
 *
 * Wire format: see docs/plan-format.md and ./encode.ts. Every op carries an
 * optional `origin` (e.g. "mounts[3]") that is NOT sent to the executor; the
 * runtime uses it to turn "op 17 failed with EPERM" into an error that names
 * the config.json path.
 *
 * Process model:
 *   - The executor starts as the "launcher". Ops before `clone` run in it.
 *   - `clone` creates the child with the given namespace flags. The launcher then
 *     writes `pid <child-host-pid>\n` on the sync fd and either exits 0
 *     (parentMode "exit") or waits for the child, forwarding signals, and exits
 *     with the child's status (parentMode "wait": exit code, or 128+signal).
 *   - The child runs the remaining ops. On failure it writes
 *     `error <op-index> <errno> <message>\n` on the sync fd and _exit(1)s.
 *   - `exec` replaces the child; the sync fd is close-on-exec, so the runtime
 *     sees EOF on success.
 *
 * Paths named `*InRoot` are relative to the rootfs opened by `openRoot` and are
 * resolved with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS): a symlink in
 * the rootfs can never lead outside it.
 */

/** Namespace clone flags (linux/sched.h). */
export const CLONE = {
  NEWNS: 0x00020000,
  NEWCGROUP: 0x02000000,
  NEWUTS: 0x04000000,
  NEWIPC: 0x08000000,
  NEWUSER: 0x10000000,
  NEWPID: 0x20000000,
  NEWNET: 0x40000000,
  NEWTIME: 0x00000080,
} as const;

/** mount(2) flags (linux/mount.h). */
export const MS = {
  RDONLY: 1,
  NOSUID: 2,
  NODEV: 4,
  NOEXEC: 8,
  SYNCHRONOUS: 16,
  REMOUNT: 32,
  MANDLOCK: 64,
  DIRSYNC: 128,
  NOSYMFOLLOW: 256,
  NOATIME: 1024,
  NODIRATIME: 2048,
  BIND: 4096,
  MOVE: 8192,
  REC: 16384,
  SILENT: 32768,
  UNBINDABLE: 1 << 17,
  PRIVATE: 1 << 18,
  SLAVE: 1 << 19,
  SHARED: 1 << 20,
  RELATIME: 1 << 21,
  STRICTATIME: 1 << 24,
  LAZYTIME: 1 << 25,
} as const;

/** How `mountInRoot` prepares a missing target. */
export const MKDIR = {
  /** The target must exist. */
  NONE: 0,
  /** mkdir -p the target as a directory (mode 0755). */
  DIR: 1,
  /** mkdir -p the parent and create an empty regular file (for file bind mounts). */
  FILE: 2,
} as const;

/** Bits of `mountInRoot.extra` / `mount.extra`. */
export const MOUNT_EXTRA = {
  /** On MS_REMOUNT, OR in the flags the kernel locks (nosuid/nodev/noexec/rdonly/atime) from statfs of the target. */
  KEEP_LOCKED_FLAGS: 1,
  /** Ignore ENOENT of the target (used for optional mounts). */
  OPTIONAL: 2,
} as const;

export type Op =
  // ---- any process -------------------------------------------------------
  /** Open `path` (a /proc/<pid>/ns/* or bind-mounted ns file) and setns(fd, nstype). */
  | { op: 'setns'; path: string; nstype: number; origin?: string }
  /** unshare(flags). */
  | { op: 'unshare'; flags: number; origin?: string }
  /** open(path, O_WRONLY|O_CLOEXEC) (no O_CREAT/O_TRUNC) and write data; e.g. cgroup.procs, sysctls, oom_score_adj. */
  | { op: 'writeFile'; path: string; data: string; origin?: string }
  /** Write `sync` message (a line without "\n") on the sync fd. */
  | { op: 'syncSend'; message: string; origin?: string }
  /** Read one line from the sync fd; it must equal `message`, else fail ("abort" lines carry a reason). */
  | { op: 'syncWait'; message: string; origin?: string }
  // ---- process creation ----------------------------------------------------
  /** clone(flags | SIGCHLD). See the process model above. */
  | { op: 'clone'; flags: number; parentMode: 'exit' | 'wait'; origin?: string }
  // ---- environment (child) --------------------------------------------------
  | { op: 'sethostname'; name: string; origin?: string }
  | { op: 'setdomainname'; name: string; origin?: string }
  /** mount(2) with absolute paths; empty strings are passed as NULL. */
  | { op: 'mount'; source: string; target: string; fstype: string; flags: number; data: string; extra: number; origin?: string }
  /** Open the rootfs directory (absolute path) as the root for all *InRoot ops. */
  | { op: 'openRoot'; path: string; origin?: string }
  /** mount(2) onto a target resolved inside the root; `source` is a path in the current mount ns or a device name. */
  | { op: 'mountInRoot'; source: string; target: string; fstype: string; flags: number; data: string; mkdir: number; extra: number; origin?: string }
  /** mkdir -p inside the root. */
  | { op: 'mkdirInRoot'; path: string; mode: number; origin?: string }
  /** mknod inside the root (mode includes S_IFCHR/S_IFBLK/S_IFIFO) then chown; an existing node is left as is. */
  | { op: 'mknodInRoot'; path: string; mode: number; major: number; minor: number; uid: number; gid: number; origin?: string }
  /** symlink(target, linkpath) with linkpath inside the root; EEXIST is ignored. */
  | { op: 'symlinkInRoot'; target: string; linkpath: string; origin?: string }
  /** chdir(rootfs); pivot_root(".", "."); umount2(".", MNT_DETACH); chdir("/"). */
  | { op: 'pivotRoot'; path: string; origin?: string }
  /** --no-pivot: chdir(rootfs); mount(rootfs, "/", MS_MOVE); chroot("."); chdir("/"). */
  | { op: 'moveRoot'; path: string; origin?: string }
  /** Make `path` unreadable: a directory gets a read-only empty tmpfs, anything else /dev/null bound over it. ENOENT is ignored. */
  | { op: 'maskPath'; path: string; origin?: string }
  /** Bind `path` onto itself and remount it read-only (keeping locked flags). ENOENT is ignored. */
  | { op: 'readonlyPath'; path: string; origin?: string }
  /** Connect to a unix socket at `path` (before pivot); used by `setupConsole`. */
  | { op: 'consoleConnect'; path: string; origin?: string }
  /**
   * After pivot: open /dev/ptmx, unlock, open the pty slave, set its size (rows/cols 0 = leave),
   * send the master over the console socket (SCM_RIGHTS, payload "console"), setsid(), TIOCSCTTY,
   * dup the slave onto 0/1/2, and if `mountConsole` bind the slave onto /dev/console.
   */
  | { op: 'setupConsole'; rows: number; cols: number; mountConsole: boolean; origin?: string }
  /** Open a fifo (absolute path, before pivot) with O_PATH, for `waitStart`. */
  | { op: 'openStartFifo'; path: string; origin?: string }
  /** open("/proc/self/fd/<fifo>", O_WRONLY) — blocks until `start` opens the fifo — then write "0" and close. */
  | { op: 'waitStart'; origin?: string }
  /** fork+exec a hook and wait: `stdin` is written to its stdin; timeout 0 = none; non-zero exit fails. */
  | { op: 'runHook'; path: string; args: string[]; env: string[]; timeoutSec: number; stdin: string; origin?: string }
  // ---- process attributes (child) -------------------------------------------
  | { op: 'setrlimit'; resource: number; soft: bigint; hard: bigint; origin?: string }
  | { op: 'umask'; mask: number; origin?: string }
  | { op: 'personality'; domain: number; origin?: string }
  | { op: 'chdir'; path: string; origin?: string }
  /** Drop every capability not in `keep` from the bounding set (caps above cap_last_cap are ignored). */
  | { op: 'capsBounding'; keep: bigint; origin?: string }
  /** prctl(PR_SET_KEEPCAPS,1); setgroups(groups) (skipped if `setgroups` false); setresgid; setresuid; PR_SET_KEEPCAPS 0. */
  | { op: 'setUser'; uid: number; gid: number; groups: number[]; setgroups: boolean; origin?: string }
  /** capset (v3) with the three sets, then clear and raise the ambient set. */
  | { op: 'capsSet'; effective: bigint; permitted: bigint; inheritable: bigint; ambient: bigint; origin?: string }
  | { op: 'noNewPrivs'; origin?: string }
  /** Load a classic BPF program (8-byte sock_filter records) with seccomp(SECCOMP_SET_MODE_FILTER, flags). */
  | { op: 'seccomp'; program: Uint8Array; flags: number; origin?: string }
  /** Mark every fd >= `from` close-on-exec (close_range CLOSE_RANGE_CLOEXEC). */
  | { op: 'cloexecFrom'; from: number; origin?: string }
  /** execve(path, argv, env). If `searchPath` and path has no "/", search the PATH found in env (default "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"). */
  | { op: 'exec'; path: string; argv: string[]; env: string[]; searchPath: boolean; origin?: string }
  /** Read one line (the OCI state JSON) from the sync fd; later `runHook` ops with an empty `stdin` get it. */
  | { op: 'syncRecvState'; origin?: string }
  /**
   * cgroup v2 devices: load `program` (eBPF, 8-byte instructions) as BPF_PROG_TYPE_CGROUP_DEVICE, attach it to
   * `cgroupDir` with BPF_F_ALLOW_MULTI, then detach every device program that was attached there before.
   */
  | { op: 'attachDeviceFilter'; cgroupDir: string; program: Uint8Array; origin?: string }
  /** mkfifo(path) then chmod(path, mode); fails if it exists. */
  | { op: 'mkfifo'; path: string; mode: number; origin?: string }
  /** Without a mount namespace: chdir(path); chroot("."); chdir("/") — the mount tree is left alone. */
  | { op: 'chroot'; path: string; origin?: string }
  /** umount2(path, flags); with missingOk, EINVAL (not a mount point) and ENOENT are not failures. */
  | { op: 'umount'; path: string; flags: number; missingOk: boolean; origin?: string };

export type OpName = Op['op'];

export interface Plan {
  ops: Op[];
  /** Things the compiler skipped or adjusted (e.g. unknown seccomp syscall names); for the runtime's log. */
  warnings?: string[];
}

/** Messages the runtime and the executor exchange on the sync fd (one line each). */
export const SYNC = {
  /** runtime → child: uid/gid maps written, cgroups joined; go on. */
  GO: 'go',
  /** child → runtime: stopped before pivot_root so the runtime can run prestart/createRuntime hooks. */
  HOOKS: 'hooks',
  /** runtime → child: hooks done. */
  HOOKS_DONE: 'hooks-done',
  /** child → runtime: the container is created and waits for `start`. */
  READY: 'ready',
} as const;
