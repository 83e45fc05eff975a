/*
 * corral-exec: carries out a plan compiled by the TypeScript runtime.
 *
 *   corral-exec <plan-fd> <sync-fd>
 *   corral-exec --serve           host plans, one after another, from stdin (see serve() below)
 *
 * The contract (process model, every op's semantics, sync messages) is
 * src/oci/plan/ops.ts; the wire format is docs/plan-format.md. This program
 * makes no policy decisions: it validates the whole plan, then runs its ops in
 * order and reports the first failure as `error <op-index> <errno> <message>`
 * on the sync fd.
 *
 * Exit codes: 0 plan finished without exec, 1 an op failed (reported on the
 * sync fd), 2 usage error or malformed plan (nothing was done), 3 startup
 * failure (memfd re-exec). A "wait" launcher exits with its child's status.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <linux/bpf.h>

extern char **environ;

/* ---- limits (docs/plan-format.md) ------------------------------------------ */
#define MAX_PLAN (16u << 20) /* whole plan */
#define MAX_BYTES (1u << 20) /* one bytes argument or list item */
#define MAX_LIST 65536u      /* items in one list */
#define MAX_OPS 65536u
#define MAX_ARGS 8
#define MAX_LINE 4096 /* one sync line */

#define EXTRA_KEEP_LOCKED_FLAGS 1
#define EXTRA_OPTIONAL 2
#define MKDIR_NONE 0
#define MKDIR_DIR 1
#define MKDIR_FILE 2
#define NS_FLAGS                                                                                  \
  (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |   \
   CLONE_NEWNET | CLONE_NEWTIME)
#define SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

/* One decoded argument: ints in `i`; bytes in `s` (NUL-terminated copy, length `len`);
 * lists in `list` (NULL-terminated, `n` items). */
struct arg {
  uint64_t i;
  char *s;
  uint32_t len;
  char **list;
  uint32_t n;
};

struct op {
  unsigned code;
  struct arg a[MAX_ARGS];
};

/* ---- process state ----------------------------------------------------------- */
static int sync_fd = -1;
static int root_fd = -1;
static int console_sock = -1;
static int fifo_fd = -1;
static int cur_op = -1;

/* Report the failure of the current op on the sync fd and exit 1. err 0 = not a kernel error. */
__attribute__((format(printf, 2, 3), noreturn)) static void die(int err, const char *fmt, ...) {
  char msg[1024], line[1400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  int n = snprintf(line, sizeof line, "error %d %d %s%s%s", cur_op, err, msg, err ? ": " : "",
                   err ? strerror(err) : "");
  if (n < 0 || n >= (int)sizeof line - 1) n = sizeof line - 2;
  for (int k = 0; k < n; k++)
    if (line[k] == '\n' || line[k] == '\r') line[k] = ' ';
  line[n++] = '\n';
  if (sync_fd < 0 || send(sync_fd, line, n, MSG_NOSIGNAL) != n) {
    if (sync_fd < 0 || errno != ENOTSOCK || write(sync_fd, line, n) != n)
      if (write(2, line, n) < 0) { /* nothing left to tell */ }
  }
  _exit(1);
}

static void sync_write(const char *buf, size_t n) {
  while (n > 0) {
    ssize_t w = send(sync_fd, buf, n, MSG_NOSIGNAL);
    if (w < 0 && errno == ENOTSOCK) w = write(sync_fd, buf, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) die(errno, "write on sync fd");
    buf += w;
    n -= (size_t)w;
  }
}

/* Read one line (without "\n") from the sync fd byte by byte; -1 on EOF. */
static int sync_read_line(char *buf, size_t cap) {
  size_t n = 0;
  for (;;) {
    char c;
    ssize_t r = read(sync_fd, &c, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) die(errno, "read on sync fd");
    if (r == 0) return -1;
    if (c == '\n') break;
    if (n + 1 >= cap) die(0, "sync line longer than %zu bytes", cap - 1);
    buf[n++] = c;
  }
  buf[n] = 0;
  return (int)n;
}

static const char *nul_if_empty(const char *s) { return *s ? s : NULL; }

static void write_all(int fd, const char *buf, size_t n, const char *what) {
  while (n > 0) {
    ssize_t w = write(fd, buf, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) die(errno, "write %s", what);
    buf += w;
    n -= (size_t)w;
  }
}

/* Highest capability the kernel knows (probing needs no /proc). */
static int last_cap(void) {
  int c = 0;
  while (c < 63 && prctl(PR_CAPBSET_READ, c + 1, 0, 0, 0) >= 0) c++;
  return c;
}

/* MOUNT_EXTRA.KEEP_LOCKED_FLAGS: OR in the flags of the mounted file system that the kernel
 * locks in a less privileged mount namespace. Atime flags are taken from the target only when
 * `flags` names none, since exactly one atime mode can be requested. */
static unsigned long keep_locked(unsigned long flags, const struct statfs *st) {
  unsigned long f = st->f_flags;
  if (f & ST_RDONLY) flags |= MS_RDONLY;
  if (f & ST_NOSUID) flags |= MS_NOSUID;
  if (f & ST_NODEV) flags |= MS_NODEV;
  if (f & ST_NOEXEC) flags |= MS_NOEXEC;
  if (!(flags & (MS_NOATIME | MS_RELATIME | MS_STRICTATIME)))
    flags |= (f & ST_NOATIME) ? MS_NOATIME : (f & ST_RELATIME) ? MS_RELATIME : MS_STRICTATIME;
  if (f & ST_NODIRATIME) flags |= MS_NODIRATIME;
  return flags;
}

/* ---- resolution inside the root ---------------------------------------------- */

static int in_root(const char *path, int oflags) {
  struct open_how how = {.flags = (uint64_t)(oflags | O_CLOEXEC),
                         .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
  if (root_fd < 0) {
    errno = EBADF;
    return -1;
  }
  return (int)syscall(SYS_openat2, root_fd, *path ? path : "/", &how, sizeof how);
}

/*
 * mkdir -p inside the root, one component at a time with *at calls on O_PATH fds; the last
 * component becomes an empty regular file when `last_file`. Symlinks are spliced into the rest of
 * the path (absolute ones restart at the root) and ".." is applied to the symlink-free prefix, so
 * nothing outside the root is ever created. Returns 0 or -1 with errno. The caller resolves the
 * result again with in_root(), which is the authority.
 */
static int mkdir_walk(const char *path, mode_t mode, int last_file) {
  char rest[2 * PATH_MAX], tmp[2 * PATH_MAX], prefix[PATH_MAX] = "";
  int links = 0, cur, err = 0;
  if (strlen(path) >= sizeof rest) return errno = ENAMETOOLONG, -1;
  strcpy(rest, path);
  if ((cur = in_root("/", O_PATH | O_DIRECTORY)) < 0) return -1;
  char *p = rest;
  for (;;) {
    while (*p == '/') p++;
    if (!*p) break;
    char *e = strchrnul(p, '/'), name[NAME_MAX + 1];
    if (e - p > NAME_MAX) { err = ENAMETOOLONG; break; }
    memcpy(name, p, e - p);
    name[e - p] = 0;
    p = e;
    char *q = p;
    while (*q == '/') q++;
    int last = !*q;
    if (!strcmp(name, ".")) continue;
    if (!strcmp(name, "..")) {
      char *slash = strrchr(prefix, '/');
      if (slash) *slash = 0;
      close(cur);
      if ((cur = in_root(prefix, O_PATH | O_DIRECTORY)) < 0) return -1;
      continue;
    }
    int fd = openat(cur, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
      int r;
      if (last && last_file) {
        r = openat(cur, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (r >= 0) close(r);
      } else {
        r = mkdirat(cur, name, mode);
      }
      if (r < 0 && errno != EEXIST) { err = errno; break; }
      fd = openat(cur, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    }
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) { err = errno; if (fd >= 0) close(fd); break; }
    if (S_ISLNK(st.st_mode)) {
      char target[PATH_MAX];
      ssize_t n = readlinkat(fd, "", target, sizeof target - 1);
      close(fd);
      if (n < 0) { err = errno; break; }
      target[n] = 0;
      if (++links > 40) { err = ELOOP; break; }
      if ((size_t)snprintf(tmp, sizeof tmp, "%s%s", target, p) >= sizeof tmp) { err = ENAMETOOLONG; break; }
      strcpy(rest, tmp);
      p = rest;
      if (target[0] == '/') {
        prefix[0] = 0;
        close(cur);
        if ((cur = in_root("/", O_PATH | O_DIRECTORY)) < 0) return -1;
      }
      continue;
    }
    if (!S_ISDIR(st.st_mode)) {
      close(fd);
      if (!last) err = ENOTDIR;
      break;
    }
    size_t pl = strlen(prefix);
    if (pl + 1 + strlen(name) >= sizeof prefix) { close(fd); err = ENAMETOOLONG; break; }
    sprintf(prefix + pl, "/%s", name);
    close(cur);
    cur = fd;
  }
  close(cur);
  if (err) errno = err;
  return err ? -1 : 0;
}

/* Resolve `path` in the root, creating it first (see mkdir_walk) when missing. */
static int in_root_mkdir(const char *path, mode_t mode, int last_file) {
  int fd = in_root(path, O_PATH);
  if (fd >= 0 || errno != ENOENT) return fd;
  if (mkdir_walk(path, mode, last_file) < 0) return -1;
  return in_root(path, O_PATH);
}

/* Split "a/b/c" into an O_PATH fd of "a/b" (resolved in the root) and the name "c". */
static int in_root_parent(const char *path, char *name) {
  char dir[PATH_MAX];
  size_t n = strlen(path);
  while (n > 1 && path[n - 1] == '/') n--;
  if (n >= sizeof dir) return errno = ENAMETOOLONG, -1;
  memcpy(dir, path, n);
  dir[n] = 0;
  char *slash = strrchr(dir, '/');
  const char *base = slash ? slash + 1 : dir;
  if (!*base || !strcmp(base, ".") || !strcmp(base, "..") || strlen(base) > NAME_MAX)
    return errno = EINVAL, -1;
  strcpy(name, base);
  if (slash) slash[1] = 0;
  else strcpy(dir, "/");
  return in_root(dir, O_PATH | O_DIRECTORY);
}

/* ---- ops: any process ---------------------------------------------------------- */

static void op_setns(struct arg *a) {
  int fd = open(a[0].s, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die(errno, "open %s", a[0].s);
  if (setns(fd, (int)a[1].i) < 0) die(errno, "setns %s", a[0].s);
  close(fd);
}

static void op_unshare(struct arg *a) {
  if (unshare((int)a[0].i) < 0) die(errno, "unshare 0x%llx", (unsigned long long)a[0].i);
}

static void op_write_file(struct arg *a) {
  int fd = open(a[0].s, O_WRONLY | O_CLOEXEC);
  if (fd < 0) die(errno, "open %s", a[0].s);
  write_all(fd, a[1].s, a[1].len, a[0].s);
  if (close(fd) < 0) die(errno, "close %s", a[0].s);
}

static void op_sync_send(struct arg *a) {
  char *line = malloc(a[0].len + 2);
  if (!line) die(ENOMEM, "syncSend");
  memcpy(line, a[0].s, a[0].len);
  line[a[0].len] = '\n';
  sync_write(line, a[0].len + 1);
  free(line);
}

static void op_sync_wait(struct arg *a) {
  char line[MAX_LINE];
  if (sync_read_line(line, sizeof line) < 0) die(0, "sync fd closed while waiting for \"%s\"", a[0].s);
  if (!strcmp(line, a[0].s)) return;
  if (!strncmp(line, "abort", 5)) die(0, "aborted by the runtime:%s", line + 5);
  die(0, "expected \"%s\" on the sync fd, got \"%.200s\"", a[0].s, line);
}

/* The hook state the runtime sends once the init's pid is known (for in-container hooks). */
static char hook_state[MAX_LINE];
static size_t hook_state_len;

static void op_sync_recv_state(struct arg *a) {
  (void)a;
  if (sync_read_line(hook_state, sizeof hook_state) < 0) die(0, "sync fd closed while waiting for the hook state");
  hook_state_len = strlen(hook_state);
}

/* Create the start fifo (in the launcher, with host paths and credentials); an existing one is an error. */
static void op_mkfifo(struct arg *a) {
  if (mkfifo(a[0].s, (mode_t)a[1].i) < 0) die(errno, "mkfifo %s", a[0].s);
  if (chmod(a[0].s, (mode_t)a[1].i) < 0) die(errno, "chmod %s", a[0].s); /* not subject to the umask */
}

/* ---- ops: cgroup v2 device filter ------------------------------------------------ */

static long sys_bpf(int cmd, union bpf_attr *attr) { return syscall(SYS_bpf, cmd, attr, sizeof *attr); }

/* Load a BPF_PROG_TYPE_CGROUP_DEVICE program and attach it to the cgroup directory,
 * replacing (detaching) any device programs attached there before. */
static void op_attach_device_filter(struct arg *a) {
  if (a[1].len == 0 || a[1].len % 8) die(EINVAL, "device filter program has %u bytes (not a multiple of 8)", a[1].len);
  int dir = open(a[0].s, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) die(errno, "open cgroup %s", a[0].s);
  uint32_t old_ids[64];
  union bpf_attr q;
  memset(&q, 0, sizeof q);
  q.query.target_fd = (uint32_t)dir;
  q.query.attach_type = BPF_CGROUP_DEVICE;
  q.query.prog_ids = (uint64_t)(uintptr_t)old_ids;
  q.query.prog_cnt = 64;
  if (sys_bpf(BPF_PROG_QUERY, &q) < 0) die(errno, "query device programs of %s", a[0].s);
  uint32_t old_cnt = q.query.prog_cnt;
  static char log[4096];
  union bpf_attr l;
  memset(&l, 0, sizeof l);
  l.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
  l.insns = (uint64_t)(uintptr_t)a[1].s;
  l.insn_cnt = a[1].len / 8;
  l.license = (uint64_t)(uintptr_t)"Apache-2.0";
  l.log_buf = (uint64_t)(uintptr_t)log;
  l.log_size = sizeof log;
  l.log_level = 1;
  int prog = (int)sys_bpf(BPF_PROG_LOAD, &l);
  if (prog < 0) die(errno, "load device filter: %.300s", log);
  union bpf_attr at;
  memset(&at, 0, sizeof at);
  at.target_fd = (uint32_t)dir;
  at.attach_bpf_fd = (uint32_t)prog;
  at.attach_type = BPF_CGROUP_DEVICE;
  at.attach_flags = BPF_F_ALLOW_MULTI;
  if (sys_bpf(BPF_PROG_ATTACH, &at) < 0) die(errno, "attach device filter to %s", a[0].s);
  for (uint32_t i = 0; i < old_cnt && i < 64; i++) {
    union bpf_attr g;
    memset(&g, 0, sizeof g);
    g.prog_id = old_ids[i];
    int ofd = (int)sys_bpf(BPF_PROG_GET_FD_BY_ID, &g);
    if (ofd < 0) continue; /* already gone */
    union bpf_attr d;
    memset(&d, 0, sizeof d);
    d.target_fd = (uint32_t)dir;
    d.attach_bpf_fd = (uint32_t)ofd;
    d.attach_type = BPF_CGROUP_DEVICE;
    if (sys_bpf(BPF_PROG_DETACH, &d) < 0 && errno != ENOENT) die(errno, "detach the previous device filter of %s", a[0].s);
    close(ofd);
  }
  close(prog);
  close(dir);
}

/* ---- ops: process creation ------------------------------------------------------ */

static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

/* The launcher in parentMode "wait": forward signals, then exit with the child's status. */
static __attribute__((noreturn)) void launcher_wait(pid_t pid, const sigset_t *set) {
  for (;;) {
    siginfo_t si;
    int sig = sigwaitinfo(set, &si);
    if (sig < 0) continue;
    if (sig != SIGCHLD) {
      kill(pid, sig);
      continue;
    }
    int st;
    pid_t r;
    while ((r = waitpid(pid, &st, WNOHANG)) < 0 && errno == EINTR) {}
    if (r == pid) _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    if (r < 0) _exit(1);
  }
}

static void op_clone(struct arg *a) {
  static sigset_t old;
  sigset_t set;
  int gate[2];
  uint64_t flags = a[0].i;
  if (flags & ~(uint64_t)NS_FLAGS) die(EINVAL, "clone flags 0x%llx are not namespace flags", (unsigned long long)flags);
  if (pipe2(gate, O_CLOEXEC) < 0) die(errno, "pipe");
  sigemptyset(&set);
  for (size_t k = 0; k < sizeof forwarded / sizeof *forwarded; k++) sigaddset(&set, forwarded[k]);
  sigaddset(&set, SIGCHLD);
  sigprocmask(SIG_BLOCK, &set, &old);
  uint64_t args[8] = {flags, 0, 0, 0, SIGCHLD, 0, 0, 0}; /* struct clone_args, CLONE_ARGS_SIZE_VER0 */
  pid_t pid = (pid_t)syscall(SYS_clone3, args, sizeof args);
  if (pid < 0) die(errno, "clone3 0x%llx", (unsigned long long)flags);
  if (pid == 0) { /* the child: wait until the launcher has reported our pid */
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(gate[1]);
    char c;
    while (read(gate[0], &c, 1) < 0 && errno == EINTR) {}
    close(gate[0]);
    return;
  }
  close(gate[0]);
  char line[32];
  int n = snprintf(line, sizeof line, "pid %d\n", (int)pid);
  if (send(sync_fd, line, n, MSG_NOSIGNAL) < 0 && errno == ENOTSOCK && write(sync_fd, line, n) < 0) {}
  close(gate[1]); /* release the child */
  /* The launcher needs nothing else: drop the sync fd (so the runtime sees EOF when the
   * child execs) and every other inherited fd except the stdio it shares with the child. */
  syscall(SYS_close_range, 3U, ~0U, 0U);
  if (a[1].i == 0) _exit(0);
  launcher_wait(pid, &set);
}

/* ---- ops: environment ------------------------------------------------------------ */

static void op_sethostname(struct arg *a) {
  if (sethostname(a[0].s, a[0].len) < 0) die(errno, "sethostname %s", a[0].s);
}

static void op_setdomainname(struct arg *a) {
  if (setdomainname(a[0].s, a[0].len) < 0) die(errno, "setdomainname %s", a[0].s);
}

static void op_mount(struct arg *a) {
  const char *src = a[0].s, *dst = a[1].s, *type = a[2].s, *data = a[4].s;
  unsigned long flags = (unsigned long)a[3].i;
  uint64_t extra = a[5].i;
  struct stat st;
  struct statfs sf;
  if ((extra & EXTRA_OPTIONAL) && stat(dst, &st) < 0 && errno == ENOENT) return;
  if ((extra & EXTRA_KEEP_LOCKED_FLAGS) && (flags & MS_REMOUNT)) {
    if (statfs(dst, &sf) < 0) die(errno, "statfs %s", dst);
    flags = keep_locked(flags, &sf);
  }
  if (mount(nul_if_empty(src), nul_if_empty(dst), nul_if_empty(type), flags, nul_if_empty(data)) < 0)
    die(errno, "mount \"%s\" on %s (type \"%s\", flags 0x%lx)", src, dst, type, flags);
}

static void op_umount(struct arg *a) {
  if (umount2(a[0].s, (int)a[1].i) < 0 && !(a[2].i && (errno == EINVAL || errno == ENOENT)))
    die(errno, "unmount %s", a[0].s);
}

static void op_open_root(struct arg *a) {
  int fd = open(a[0].s, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) die(errno, "open root %s", a[0].s);
  if (root_fd >= 0) close(root_fd);
  root_fd = fd;
}

static void op_mount_in_root(struct arg *a) {
  const char *src = a[0].s, *dst = a[1].s, *type = a[2].s, *data = a[4].s;
  unsigned long flags = (unsigned long)a[3].i;
  uint64_t mk = a[5].i, extra = a[6].i;
  int fd = mk == MKDIR_NONE ? in_root(dst, O_PATH) : in_root_mkdir(dst, 0755, mk == MKDIR_FILE);
  if (fd < 0) {
    if (errno == ENOENT && (extra & EXTRA_OPTIONAL)) return;
    die(errno, "resolve %s in the root", dst);
  }
  if ((extra & EXTRA_KEEP_LOCKED_FLAGS) && (flags & MS_REMOUNT)) {
    struct statfs sf;
    if (fstatfs(fd, &sf) < 0) die(errno, "statfs %s", dst);
    flags = keep_locked(flags, &sf);
  }
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  if (mount(nul_if_empty(src), proc, nul_if_empty(type), flags, nul_if_empty(data)) < 0)
    die(errno, "mount \"%s\" on %s in the root (type \"%s\", flags 0x%lx)", src, dst, type, flags);
  close(fd);
}

static void op_mkdir_in_root(struct arg *a) {
  int fd = in_root_mkdir(a[0].s, (mode_t)a[1].i, 0);
  struct stat st;
  if (fd < 0) die(errno, "mkdir -p %s in the root", a[0].s);
  if (fstat(fd, &st) < 0) die(errno, "stat %s", a[0].s);
  if (!S_ISDIR(st.st_mode)) die(ENOTDIR, "mkdir -p %s in the root", a[0].s);
  close(fd);
}

static void op_mknod_in_root(struct arg *a) {
  char name[NAME_MAX + 1];
  int dir = in_root_parent(a[0].s, name);
  if (dir < 0) die(errno, "resolve the parent of %s in the root", a[0].s);
  mode_t old = umask(0); /* the node gets exactly the requested mode */
  int r = mknodat(dir, name, (mode_t)a[1].i, makedev(a[2].i, a[3].i));
  int e = errno;
  umask(old);
  if (r < 0) {
    if (e == EEXIST) return (void)close(dir);
    die(e, "mknod %s in the root", a[0].s);
  }
  if (fchownat(dir, name, (uid_t)a[4].i, (gid_t)a[5].i, AT_SYMLINK_NOFOLLOW) < 0)
    die(errno, "chown %s in the root", a[0].s);
  close(dir);
}

static void op_symlink_in_root(struct arg *a) {
  char name[NAME_MAX + 1];
  int dir = in_root_parent(a[1].s, name);
  if (dir < 0) die(errno, "resolve the parent of %s in the root", a[1].s);
  if (symlinkat(a[0].s, dir, name) < 0 && errno != EEXIST) die(errno, "symlink %s in the root", a[1].s);
  close(dir);
}

static void op_pivot_root(struct arg *a) {
  if (chdir(a[0].s) < 0) die(errno, "chdir %s", a[0].s);
  if (syscall(SYS_pivot_root, ".", ".") < 0) die(errno, "pivot_root %s", a[0].s);
  if (umount2(".", MNT_DETACH) < 0) die(errno, "unmount the old root");
  if (chdir("/") < 0) die(errno, "chdir /");
}

static void op_move_root(struct arg *a) {
  if (chdir(a[0].s) < 0) die(errno, "chdir %s", a[0].s);
  if (mount(a[0].s, "/", NULL, MS_MOVE, NULL) < 0) die(errno, "move %s to /", a[0].s);
  if (chroot(".") < 0) die(errno, "chroot %s", a[0].s);
  if (chdir("/") < 0) die(errno, "chdir /");
}

/* No mount namespace: chroot into the rootfs without touching the (host's) mount tree. */
static void op_chroot(struct arg *a) {
  if (chdir(a[0].s) < 0) die(errno, "chdir %s", a[0].s);
  if (chroot(".") < 0) die(errno, "chroot %s", a[0].s);
  if (chdir("/") < 0) die(errno, "chdir /");
}

static void op_mask_path(struct arg *a) {
  struct stat st;
  if (stat(a[0].s, &st) < 0) {
    if (errno == ENOENT) return;
    die(errno, "stat %s", a[0].s);
  }
  int r = S_ISDIR(st.st_mode) ? mount("tmpfs", a[0].s, "tmpfs", MS_RDONLY, NULL)
                              : mount("/dev/null", a[0].s, NULL, MS_BIND, NULL);
  if (r < 0) die(errno, "mask %s", a[0].s);
}

static void op_readonly_path(struct arg *a) {
  struct statfs sf;
  if (mount(a[0].s, a[0].s, NULL, MS_BIND | MS_REC, NULL) < 0) {
    if (errno == ENOENT) return;
    die(errno, "bind %s onto itself", a[0].s);
  }
  if (statfs(a[0].s, &sf) < 0) die(errno, "statfs %s", a[0].s);
  unsigned long flags = keep_locked(MS_BIND | MS_REMOUNT | MS_RDONLY, &sf);
  if (mount(a[0].s, a[0].s, NULL, flags, NULL) < 0) die(errno, "remount %s read-only", a[0].s);
}

static void op_console_connect(struct arg *a) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (a[0].len >= sizeof sa.sun_path) die(ENAMETOOLONG, "console socket %s", a[0].s);
  memcpy(sa.sun_path, a[0].s, a[0].len);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die(errno, "socket");
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die(errno, "connect to console socket %s", a[0].s);
  if (console_sock >= 0) close(console_sock);
  console_sock = fd;
}

static void send_fd(int sock, int fd, const char *payload) {
  char cbuf[CMSG_SPACE(sizeof(int))] = {0};
  struct iovec iov = {.iov_base = (void *)payload, .iov_len = strlen(payload)};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof fd);
  while (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0)
    if (errno != EINTR) die(errno, "send the console over the console socket");
}

static void op_setup_console(struct arg *a) {
  int m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC), unlock = 0, n;
  if (m < 0) die(errno, "open /dev/ptmx");
  if (ioctl(m, TIOCSPTLCK, &unlock) < 0) die(errno, "unlock the pty");
  if (ioctl(m, TIOCGPTN, &n) < 0) die(errno, "get the pty number");
  char slave[64];
  snprintf(slave, sizeof slave, "/dev/pts/%d", n);
  int s = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (s < 0) s = open(slave, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (s < 0) die(errno, "open the pty slave %s", slave);
  if (a[0].i || a[1].i) {
    struct winsize ws;
    if (ioctl(s, TIOCGWINSZ, &ws) < 0) die(errno, "get the console size");
    if (a[0].i) ws.ws_row = (unsigned short)a[0].i;
    if (a[1].i) ws.ws_col = (unsigned short)a[1].i;
    if (ioctl(m, TIOCSWINSZ, &ws) < 0) die(errno, "set the console size");
  }
  send_fd(console_sock, m, "console");
  close(m);
  close(console_sock);
  console_sock = -1;
  if (setsid() < 0 && !(errno == EPERM && getsid(0) == getpid())) die(errno, "setsid");
  if (ioctl(s, TIOCSCTTY, 0) < 0) die(errno, "make %s the controlling terminal", slave);
  for (int fd = 0; fd < 3; fd++)
    if (dup2(s, fd) < 0) die(errno, "dup the console onto fd %d", fd);
  if (s > 2) close(s);
  if (a[2].i && mount(slave, "/dev/console", NULL, MS_BIND, NULL) < 0)
    die(errno, "bind %s onto /dev/console", slave);
}

static void op_open_start_fifo(struct arg *a) {
  int fd = open(a[0].s, O_PATH | O_CLOEXEC);
  if (fd < 0) die(errno, "open the start fifo %s", a[0].s);
  if (fifo_fd >= 0) close(fifo_fd);
  fifo_fd = fd;
}

static void op_wait_start(struct arg *a) {
  (void)a;
  char path[64];
  int fd;
  snprintf(path, sizeof path, "/proc/self/fd/%d", fifo_fd);
  while ((fd = open(path, O_WRONLY | O_CLOEXEC)) < 0)
    if (errno != EINTR) die(errno, "open the start fifo for writing");
  write_all(fd, "0", 1, "the start fifo");
  close(fd);
  close(fifo_fd);
  fifo_fd = -1;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void op_run_hook(struct arg *a) {
  const char *path = a[0].s;
  /* An empty stdin means: the state the runtime sent with syncRecvState (if any). */
  const char *data = a[4].len ? a[4].s : hook_state;
  size_t total = a[4].len ? a[4].len : hook_state_len;
  char *argv0[] = {(char *)path, NULL};
  char **argv = a[1].n ? a[1].list : argv0;
  size_t left = total;
  int in[2];
  sigset_t pipeset, old;
  sigemptyset(&pipeset);
  sigaddset(&pipeset, SIGPIPE);
  if (pipe2(in, O_CLOEXEC) < 0) die(errno, "pipe");
  sigprocmask(SIG_BLOCK, &pipeset, &old); /* EPIPE instead of SIGPIPE if the hook ignores stdin */
  pid_t pid = fork();
  if (pid < 0) die(errno, "fork hook %s", path);
  if (pid == 0) {
    sigprocmask(SIG_SETMASK, &old, NULL);
    setpgid(0, 0); /* so a timeout kills the hook's whole process group */
    if (dup2(in[0], 0) < 0) _exit(127);
    execve(path, argv, a[2].list);
    _exit(127);
  }
  setpgid(pid, pid);
  close(in[0]);
  int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pfd < 0) die(errno, "pidfd_open");
  fcntl(in[1], F_SETFL, O_NONBLOCK);
  int64_t deadline = now_ms() + (int64_t)a[3].i * 1000;
  for (;;) {
    if (in[1] >= 0 && left == 0) {
      close(in[1]);
      in[1] = -1;
    }
    struct pollfd p[2] = {{.fd = pfd, .events = POLLIN}, {.fd = in[1], .events = POLLOUT}};
    int64_t wait = -1;
    if (a[3].i) {
      wait = deadline - now_ms();
      if (wait <= 0) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
        die(ETIMEDOUT, "hook %s did not finish within %llus and was killed", path, (unsigned long long)a[3].i);
      }
    }
    int r = poll(p, in[1] >= 0 ? 2 : 1, (int)(wait > INT_MAX ? INT_MAX : wait));
    if (r < 0 && errno != EINTR) die(errno, "poll");
    if (r <= 0) continue;
    if (in[1] >= 0 && p[1].revents) {
      ssize_t w = write(in[1], data + (total - left), left);
      if (w > 0) left -= (size_t)w;
      else if (w < 0 && errno != EAGAIN && errno != EINTR) left = 0; /* the hook closed its stdin */
    }
    if (p[0].revents) break;
  }
  if (in[1] >= 0) close(in[1]);
  close(pfd);
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) die(errno, "wait for hook %s", path);
  struct timespec zero = {0, 0};
  while (sigtimedwait(&pipeset, NULL, &zero) > 0) {} /* discard a pending SIGPIPE */
  sigprocmask(SIG_SETMASK, &old, NULL);
  if (WIFSIGNALED(st)) die(0, "hook %s was killed by signal %d", path, WTERMSIG(st));
  if (WEXITSTATUS(st) != 0) die(0, "hook %s exited with status %d", path, WEXITSTATUS(st));
}

/* ---- ops: process attributes --------------------------------------------------- */

static void op_setrlimit(struct arg *a) {
  struct rlimit rl = {.rlim_cur = (rlim_t)a[1].i, .rlim_max = (rlim_t)a[2].i};
  if (setrlimit((int)a[0].i, &rl) < 0) die(errno, "setrlimit %d", (int)a[0].i);
}

static void op_umask(struct arg *a) { umask((mode_t)a[0].i); }

static void op_personality(struct arg *a) {
  if (personality((unsigned long)a[0].i) < 0) die(errno, "personality 0x%llx", (unsigned long long)a[0].i);
}

static void op_chdir(struct arg *a) {
  if (chdir(a[0].s) < 0) die(errno, "chdir %s", a[0].s);
}

static void op_caps_bounding(struct arg *a) {
  for (int c = 0, last = last_cap(); c <= last; c++)
    if (!((a[0].i >> c) & 1) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0)
      die(errno, "drop capability %d from the bounding set", c);
}

static void op_set_user(struct arg *a) {
  uid_t uid = (uid_t)a[0].i;
  gid_t gid = (gid_t)a[1].i;
  if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) die(errno, "PR_SET_KEEPCAPS");
  if (a[3].i) {
    size_t n = a[2].len / 4;
    gid_t *groups = calloc(n + 1, sizeof *groups);
    if (!groups) die(ENOMEM, "setgroups");
    for (size_t k = 0; k < n; k++) {
      const unsigned char *b = (const unsigned char *)a[2].s + 4 * k;
      groups[k] = (gid_t)b[0] | (gid_t)b[1] << 8 | (gid_t)b[2] << 16 | (gid_t)b[3] << 24;
    }
    if (setgroups(n, groups) < 0) die(errno, "setgroups (%zu groups)", n);
    free(groups);
  }
  if (setresgid(gid, gid, gid) < 0) die(errno, "setresgid %u", gid);
  if (setresuid(uid, uid, uid) < 0) die(errno, "setresuid %u", uid);
  if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0) die(errno, "PR_SET_KEEPCAPS");
}

static void op_caps_set(struct arg *a) {
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct d[2];
  for (int k = 0; k < 2; k++) {
    d[k].effective = (uint32_t)(a[0].i >> (32 * k));
    d[k].permitted = (uint32_t)(a[1].i >> (32 * k));
    d[k].inheritable = (uint32_t)(a[2].i >> (32 * k));
  }
  if (syscall(SYS_capset, &h, d) < 0) die(errno, "capset");
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) die(errno, "clear the ambient set");
  for (int c = 0, last = last_cap(); c <= last; c++)
    if (((a[3].i >> c) & 1) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0)
      die(errno, "raise ambient capability %d", c);
}

static void op_no_new_privs(struct arg *a) {
  (void)a;
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die(errno, "PR_SET_NO_NEW_PRIVS");
}

static void op_seccomp(struct arg *a) {
  struct sock_fprog prog = {.len = (unsigned short)(a[0].len / sizeof(struct sock_filter)),
                            .filter = (struct sock_filter *)a[0].s};
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, (unsigned)a[1].i, &prog) < 0)
    die(errno, "load the seccomp filter (%u instructions)", prog.len);
}

static void op_cloexec_from(struct arg *a) {
  unsigned from = (unsigned)a[0].i;
  if (syscall(SYS_close_range, from, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
  if (errno != EPERM && errno != ENOSYS && errno != EINVAL) die(errno, "close_range %u CLOEXEC", from);
  /* Old kernels, or a seccomp profile without close_range: mark each open fd by hand. */
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd");
  int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) die(errno, "open /proc/self/fd to mark fds close-on-exec");
  char buf[4096];
  for (;;) {
    long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
    if (n < 0) die(errno, "read /proc/self/fd");
    if (n == 0) break;
    for (long off = 0; off < n;) {
      struct { uint64_t ino; int64_t off; unsigned short reclen; unsigned char type; char name[]; } *d = (void *)(buf + off);
      off += d->reclen;
      char *end;
      long fd = strtol(d->name, &end, 10);
      if (*end || end == d->name || fd < (long)from || fd == dfd) continue;
      int fl = fcntl((int)fd, F_GETFD);
      if (fl >= 0 && fcntl((int)fd, F_SETFD, fl | FD_CLOEXEC) < 0) die(errno, "mark fd %ld close-on-exec", fd);
    }
  }
  close(dfd);
}

static void op_exec(struct arg *a) {
  const char *path = a[0].s;
  char **argv = a[1].list, **env = a[2].list;
  if (!a[3].i || strchr(path, '/')) {
    execve(path, argv, env);
    die(errno, "exec %s", path);
  }
  const char *search = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (char **e = env; *e; e++)
    if (!strncmp(*e, "PATH=", 5)) { search = *e + 5; break; }
  int eacces = 0;
  for (const char *d = search;; d++) {
    const char *end = strchrnul(d, ':');
    char buf[PATH_MAX];
    int n = end == d ? snprintf(buf, sizeof buf, "%s", path)
                     : snprintf(buf, sizeof buf, "%.*s/%s", (int)(end - d), d, path);
    if (n > 0 && n < (int)sizeof buf) {
      execve(buf, argv, env);
      if (errno == EACCES) eacces = 1;
      else if (errno != ENOENT && errno != ENOTDIR && errno != ESTALE && errno != ENODEV && errno != ETIMEDOUT)
        die(errno, "exec %s", buf);
    }
    if (!*end) break;
    d = end;
  }
  die(eacces ? EACCES : ENOENT, "exec %s (searched PATH %s)", path, search);
}

/* ---- the op table (same order as OP_TABLE in src/oci/plan/encode.ts) -----------------
 * Argument letters: i u32 int, q u64 int, b 0/1, p parentMode (0 exit, 1 wait), k mkdir 0..2,
 * s string (bytes without NUL), d raw bytes, g u32-LE array (bytes), l list of strings.
 * `need`/`gives`: ordering rules checked before anything runs. */
#define R_ROOT 1
#define R_CONSOLE 2
#define R_FIFO 4
struct opdef {
  const char *name, *sig;
  void (*fn)(struct arg *);
  int need, gives;
};
static const struct opdef OPS[] = {
    {"setns", "si", op_setns, 0, 0},
    {"unshare", "i", op_unshare, 0, 0},
    {"writeFile", "sd", op_write_file, 0, 0},
    {"syncSend", "s", op_sync_send, 0, 0},
    {"syncWait", "s", op_sync_wait, 0, 0},
    {"clone", "ip", op_clone, 0, 0},
    {"sethostname", "s", op_sethostname, 0, 0},
    {"setdomainname", "s", op_setdomainname, 0, 0},
    {"mount", "sssisi", op_mount, 0, 0},
    {"openRoot", "s", op_open_root, 0, R_ROOT},
    {"mountInRoot", "sssiski", op_mount_in_root, R_ROOT, 0},
    {"mkdirInRoot", "si", op_mkdir_in_root, R_ROOT, 0},
    {"mknodInRoot", "siiiii", op_mknod_in_root, R_ROOT, 0},
    {"symlinkInRoot", "ss", op_symlink_in_root, R_ROOT, 0},
    {"pivotRoot", "s", op_pivot_root, 0, 0},
    {"moveRoot", "s", op_move_root, 0, 0},
    {"maskPath", "s", op_mask_path, 0, 0},
    {"readonlyPath", "s", op_readonly_path, 0, 0},
    {"consoleConnect", "s", op_console_connect, 0, R_CONSOLE},
    {"setupConsole", "iib", op_setup_console, R_CONSOLE, 0},
    {"openStartFifo", "s", op_open_start_fifo, 0, R_FIFO},
    {"waitStart", "", op_wait_start, R_FIFO, 0},
    {"runHook", "sllid", op_run_hook, 0, 0},
    {"setrlimit", "iqq", op_setrlimit, 0, 0},
    {"umask", "i", op_umask, 0, 0},
    {"personality", "i", op_personality, 0, 0},
    {"chdir", "s", op_chdir, 0, 0},
    {"capsBounding", "q", op_caps_bounding, 0, 0},
    {"setUser", "iigb", op_set_user, 0, 0},
    {"capsSet", "qqqq", op_caps_set, 0, 0},
    {"noNewPrivs", "", op_no_new_privs, 0, 0},
    {"seccomp", "di", op_seccomp, 0, 0},
    {"cloexecFrom", "i", op_cloexec_from, 0, 0},
    {"exec", "sllb", op_exec, 0, 0},
    {"syncRecvState", "", op_sync_recv_state, 0, 0},
    {"attachDeviceFilter", "sd", op_attach_device_filter, 0, 0},
    {"mkfifo", "si", op_mkfifo, 0, 0},
    {"chroot", "s", op_chroot, 0, 0},
    {"umount", "sib", op_umount, 0, 0},
};
#define NOPS (sizeof OPS / sizeof *OPS)
#define OP_CLONE 6 /* opcodes are 1-based table positions */
#define OP_SECCOMP 32
#define OP_EXEC 34

/* ---- plan decoding and validation ------------------------------------------------- */

static const uint8_t *pp, *pstart, *pend;
static char where[96] = "header";

__attribute__((format(printf, 1, 2), noreturn)) static void bad(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "corral-exec: invalid plan (%s, byte %zu): ", where, (size_t)(pp - pstart));
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(2);
}

static uint64_t take(int n) {
  if (pend - pp < n) bad("truncated");
  uint64_t v = 0;
  for (int k = n - 1; k >= 0; k--) v = v << 8 | pp[k];
  pp += n;
  return v;
}

static char *take_bytes(uint32_t *len, int no_nul) {
  uint32_t n = (uint32_t)take(4);
  if (n > MAX_BYTES) bad("bytes of length %u exceed %u", n, MAX_BYTES);
  if ((uint64_t)(pend - pp) < n) bad("truncated bytes of length %u", n);
  if (no_nul && memchr(pp, 0, n)) bad("string contains a NUL byte");
  char *s = malloc(n + 1);
  if (!s) bad("out of memory");
  memcpy(s, pp, n);
  s[n] = 0;
  pp += n;
  *len = n;
  return s;
}

static void decode_arg(char t, struct arg *a) {
  static const char *ints = "iqbpk";
  int want = strchr(ints, t) ? 1 : t == 'l' ? 3 : 2;
  int type = (int)take(1);
  if (type != want) bad("argument type %d, want %d", type, want);
  if (want == 1) {
    a->i = take(8);
    uint64_t max = t == 'q' ? UINT64_MAX : t == 'i' ? UINT32_MAX : t == 'k' ? 2 : 1;
    if (a->i > max) bad("integer %llu out of range (max %llu)", (unsigned long long)a->i, (unsigned long long)max);
  } else if (want == 2) {
    a->s = take_bytes(&a->len, t == 's');
    if (t == 'g' && a->len % 4) bad("group list length %u is not a multiple of 4", a->len);
  } else {
    a->n = (uint32_t)take(4);
    if (a->n > MAX_LIST) bad("list of %u items exceeds %u", a->n, MAX_LIST);
    if ((uint64_t)(pend - pp) < (uint64_t)a->n * 4) bad("truncated list");
    a->list = calloc(a->n + 1, sizeof *a->list);
    if (!a->list) bad("out of memory");
    for (uint32_t k = 0; k < a->n; k++) {
      uint32_t len;
      a->list[k] = take_bytes(&len, 1);
    }
  }
}

static struct op *decode_plan(uint32_t *count) {
  pp = pstart;
  if (pend - pp < 12 || memcmp(pp, "CRLP", 4)) bad("bad magic (want \"CRLP\")");
  pp += 4;
  uint32_t version = (uint32_t)take(4), n = (uint32_t)take(4);
  if (version != 1) bad("unsupported version %u (want 1)", version);
  if (n > MAX_OPS) bad("%u ops exceed %u", n, MAX_OPS);
  struct op *ops = calloc(n ? n : 1, sizeof *ops);
  if (!ops) bad("out of memory");
  int have = 0, clones = 0;
  for (uint32_t k = 0; k < n; k++) {
    snprintf(where, sizeof where, "op %u", k);
    unsigned code = (unsigned)take(2), argc = (unsigned)take(2);
    if (code < 1 || code > NOPS) bad("unknown opcode %u", code);
    const struct opdef *d = &OPS[code - 1];
    snprintf(where, sizeof where, "op %u (%s)", k, d->name);
    if (argc != strlen(d->sig)) bad("%u arguments, want %zu", argc, strlen(d->sig));
    for (unsigned j = 0; j < argc; j++) decode_arg(d->sig[j], &ops[k].a[j]);
    ops[k].code = code;
    if ((d->need & have) != d->need)
      bad("needs a preceding %s", d->need == R_ROOT ? "openRoot" : d->need == R_CONSOLE ? "consoleConnect" : "openStartFifo");
    have |= d->gives;
    if (code == OP_CLONE && ++clones > 1) bad("more than one clone");
    if (code == OP_EXEC && k != n - 1) bad("exec must be the last op");
    if (code == OP_EXEC && ops[k].a[1].n == 0) bad("exec needs a non-empty argv");
    if (code == OP_SECCOMP) {
      uint32_t len = ops[k].a[0].len;
      if (len == 0 || len % sizeof(struct sock_filter) || len / sizeof(struct sock_filter) > BPF_MAXINSNS)
        bad("seccomp program of %u bytes is not 1..%d instructions of 8 bytes", len, BPF_MAXINSNS);
    }
  }
  snprintf(where, sizeof where, "end");
  if (pp != pend) bad("%zu trailing bytes", (size_t)(pend - pp));
  *count = n;
  return ops;
}

static void read_plan(int fd) {
  size_t cap = 65536, n = 0;
  uint8_t *buf = malloc(cap);
  for (;;) {
    if (!buf) bad("out of memory");
    if (n == cap) {
      if (cap > MAX_PLAN) bad("plan larger than %u bytes", MAX_PLAN);
      buf = realloc(buf, cap *= 2);
      continue;
    }
    ssize_t r = read(fd, buf + n, cap - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      fprintf(stderr, "corral-exec: read plan fd %d: %s\n", fd, strerror(errno));
      exit(2);
    }
    if (r == 0) break;
    n += (size_t)r;
    if (n > MAX_PLAN) bad("plan larger than %u bytes", MAX_PLAN);
  }
  pstart = pp = buf;
  pend = buf + n;
}

/* ---- startup ------------------------------------------------------------------------- */

/* CVE-2019-5736: run from a sealed memfd copy so that a container process can never write
 * through /proc/<pid>/exe into the executor binary on the host. */
static void ensure_sealed_memfd(char **argv) {
  int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (self < 0) {
    fprintf(stderr, "corral-exec: open /proc/self/exe: %s\n", strerror(errno));
    exit(3);
  }
  int seals = fcntl(self, F_GET_SEALS);
  if (seals >= 0 && (seals & SEALS) == SEALS) return (void)close(self);
  int m = memfd_create("corral-exec", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  struct stat st;
  if (m < 0 || fstat(self, &st) < 0) goto fail;
  for (off_t done = 0; done < st.st_size;) {
    ssize_t r = sendfile(m, self, NULL, (size_t)(st.st_size - done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) goto fail;
    done += r;
  }
  if (fcntl(m, F_ADD_SEALS, SEALS) < 0) goto fail;
  close(self);
  fexecve(m, argv, environ);
fail:
  fprintf(stderr, "corral-exec: re-exec from a sealed memfd: %s\n", strerror(errno));
  exit(3);
}

static int parse_fd(const char *s) {
  char *end;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < 0 || v > INT_MAX || fcntl((int)v, F_GETFD) < 0) {
    fprintf(stderr, "corral-exec: \"%s\" is not an open fd\n", s);
    exit(2);
  }
  return (int)v;
}

/* ---- serve mode ----------------------------------------------------------------------
 * For host-side work of a long-lived caller (corrald: pinning pod namespaces, mounting and
 * unmounting snapshots, running CNI plugins), so each job costs a fork of this small process
 * instead of a spawn from a large one. Jobs run concurrently, each plan in a fresh child in a
 * process group of its own. stdin carries requests, stdout replies (docs/plan-format.md):
 *   request  u32 LE length | u32 id | u32 flags | u32 n | n bytes of stdin | plan
 *   reply    u32 LE length | u32 id | i32 status | u32 o | u32 e | o bytes stdout | e bytes stderr | text
 * flags: 1 = the child's stdin is the given bytes and its stdout and stderr are captured into the
 * reply; else stdin and stdout are /dev/null and stderr joins the text. 2 = kill job `id` (its
 * whole process group); the killed job still gets its reply.
 * status: the child's exit status (exit code, or 128 + signal). text: what the plan wrote on its
 * sync fd (error lines) and, without flag 1, on stderr; at most 64 KiB. EOF on stdin ends the
 * server once the running jobs are done. */
#define SERVE_MAX 64
#define SERVE_TEXT (64u << 10)
#define SERVE_OUT (16u << 20)
#define SERVE_MAX_STDIN (16u << 20) /* a job's stdin, as large as a plan */
#define REQ_CAPTURE 1u
#define REQ_KILL 2u

struct job {
  uint32_t id;
  pid_t pid;
  int pidfd, sock, out, err;
  int sock_eof; /* every holder of the other end closed it (exec, exit): stop polling it */
  uint32_t got;
  char *text;
};
static struct job jobs[SERVE_MAX];
static int njobs;

static int read_full(int fd, void *buf, size_t n) {
  for (size_t got = 0; got < n;) {
    ssize_t r = read(fd, (char *)buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

/* The whole content of a capture memfd (bounded), appended to nothing: caller frees. */
static char *slurp(int fd, uint32_t *len, uint32_t max) {
  struct stat st;
  *len = 0;
  if (fd < 0 || fstat(fd, &st) < 0 || st.st_size <= 0) return NULL;
  uint32_t n = st.st_size > (off_t)max ? max : (uint32_t)st.st_size;
  char *b = malloc(n);
  if (!b) return NULL;
  ssize_t r = pread(fd, b, n, 0);
  *len = r > 0 ? (uint32_t)r : 0;
  return b;
}

static void job_text(struct job *j, const char *buf, size_t n) {
  size_t room = SERVE_TEXT - j->got;
  if (n > room) n = room;
  memcpy(j->text + j->got, buf, n);
  j->got += (uint32_t)n;
}

static void drain(struct job *j) {
  char tmp[4096];
  for (;;) {
    if (j->sock_eof) return;
    ssize_t r = recv(j->sock, tmp, sizeof tmp, MSG_DONTWAIT);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) j->sock_eof = 1;
    if (r <= 0) return;
    job_text(j, tmp, (size_t)r);
  }
}

static void finish_job(int k) {
  struct job *j = &jobs[k];
  int ws = 0;
  /* Nothing of a job outlives it: what the plan left in its group (a plugin's stray children) is
   * killed while the exited child is still unreaped, so its pid (the group's id) cannot be reused. */
  kill(-j->pid, SIGKILL);
  while (waitpid(j->pid, &ws, 0) < 0 && errno == EINTR) {
  }
  int32_t status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
  drain(j);
  uint32_t olen = 0, elen = 0;
  char *out = slurp(j->out, &olen, SERVE_OUT), *err = slurp(j->err, &elen, SERVE_TEXT);
  uint32_t head[5] = {16 + olen + elen + j->got, j->id, (uint32_t)status, olen, elen};
  write_all(1, (const char *)head, sizeof head, "reply");
  if (olen) write_all(1, out, olen, "reply");
  if (elen) write_all(1, err, elen, "reply");
  if (j->got) write_all(1, j->text, j->got, "reply");
  free(out);
  free(err);
  free(j->text);
  close(j->pidfd);
  close(j->sock);
  if (j->out >= 0) close(j->out);
  if (j->err >= 0) close(j->err);
  jobs[k] = jobs[--njobs];
}

static void reply_failure(uint32_t id, const char *what) {
  char text[256];
  int n = snprintf(text, sizeof text, "corral-exec --serve: %s: %s\n", what, strerror(errno));
  uint32_t head[5] = {16 + (uint32_t)n, id, 2, 0, 0};
  write_all(1, (const char *)head, sizeof head, "reply");
  write_all(1, text, (size_t)n, "reply");
}

static int memfd_with(const char *name, const uint8_t *data, uint32_t n) {
  int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) return -1;
  for (uint32_t done = 0; done < n;) {
    ssize_t w = write(fd, data + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return close(fd), -1;
    done += (uint32_t)w;
  }
  if (lseek(fd, 0, SEEK_SET) < 0) return close(fd), -1;
  return fd;
}

static void start_job(uint32_t id, uint32_t flags, const uint8_t *in, uint32_t inlen, uint8_t *plan, uint32_t plen) {
  int sv[2], infd = -1, out = -1, err = -1;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return reply_failure(id, "socketpair");
  if (flags & REQ_CAPTURE) {
    infd = memfd_with("stdin", in, inlen);
    out = memfd_with("stdout", NULL, 0);
    err = memfd_with("stderr", NULL, 0);
    if (infd < 0 || out < 0 || err < 0) {
      reply_failure(id, "memfd");
      close(sv[0]), close(sv[1]), close(infd), close(out), close(err);
      return;
    }
  }
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    for (int k = 0; k < njobs; k++) { /* another job's ends would keep it from finishing */
      close(jobs[k].sock), close(jobs[k].pidfd);
      if (jobs[k].out >= 0) close(jobs[k].out);
      if (jobs[k].err >= 0) close(jobs[k].err);
    }
    close(sv[0]);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0 || dup2(infd >= 0 ? infd : null, 0) < 0 || dup2(out >= 0 ? out : null, 1) < 0 ||
        dup2(err >= 0 ? err : sv[1], 2) < 0)
      _exit(2);
    signal(SIGPIPE, SIG_DFL);
    sync_fd = sv[1];
    pstart = pp = plan;
    pend = plan + plen;
    uint32_t n;
    struct op *ops = decode_plan(&n);
    for (uint32_t k = 0; k < n; k++) {
      cur_op = (int)k;
      OPS[ops[k].code - 1].fn(ops[k].a);
    }
    _exit(0);
  }
  int e = errno;
  close(sv[1]);
  if (infd >= 0) close(infd);
  int pidfd = pid > 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
  char *text = malloc(SERVE_TEXT);
  if (pid < 0 || pidfd < 0 || !text) {
    if (pid > 0) {
      kill(-pid, SIGKILL);
      while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
      }
    }
    errno = pid < 0 ? e : errno;
    reply_failure(id, pid < 0 ? "fork" : "pidfd_open");
    free(text), close(sv[0]);
    if (pidfd >= 0) close(pidfd);
    if (out >= 0) close(out);
    if (err >= 0) close(err);
    return;
  }
  fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  jobs[njobs++] = (struct job){.id = id, .pid = pid, .pidfd = pidfd, .sock = sv[0], .out = out, .err = err, .text = text};
}

/* One request from stdin; 0 at EOF. */
static int read_request(void) {
  uint32_t head[4];
  if (read_full(0, head, 4) < 0) return 0;
  uint32_t len = head[0];
  if (len < 12 || len > 12 + SERVE_MAX_STDIN + MAX_PLAN) {
    fprintf(stderr, "corral-exec --serve: request of %u bytes\n", len);
    exit(2);
  }
  uint8_t *buf = malloc(len);
  if (!buf || read_full(0, buf, len) < 0) exit(2);
  memcpy(&head[1], buf, 12);
  uint32_t id = head[1], flags = head[2], inlen = head[3];
  if (inlen > len - 12 || inlen > SERVE_MAX_STDIN) {
    fprintf(stderr, "corral-exec --serve: request %u: stdin of %u bytes exceeds the request\n", id, inlen);
    exit(2);
  }
  if (flags & REQ_KILL) {
    for (int k = 0; k < njobs; k++)
      if (jobs[k].id == id) kill(-jobs[k].pid, SIGKILL), kill(jobs[k].pid, SIGKILL);
  } else {
    start_job(id, flags, buf + 12, inlen, buf + 12 + inlen, len - 12 - inlen);
  }
  free(buf);
  return 1;
}

static __attribute__((noreturn)) void serve(void) {
  signal(SIGPIPE, SIG_IGN);
  int open_in = 1;
  for (;;) {
    if (!open_in && njobs == 0) exit(0);
    struct pollfd pf[1 + 2 * SERVE_MAX];
    int n = 0;
    int in_slot = open_in && njobs < SERVE_MAX ? n++ : -1;
    if (in_slot >= 0) pf[in_slot] = (struct pollfd){.fd = 0, .events = POLLIN};
    int base = n;
    for (int k = 0; k < njobs; k++) {
      pf[n++] = (struct pollfd){.fd = jobs[k].sock_eof ? -1 : jobs[k].sock, .events = POLLIN};
      pf[n++] = (struct pollfd){.fd = jobs[k].pidfd, .events = POLLIN};
    }
    if (poll(pf, (nfds_t)n, -1) < 0) {
      if (errno == EINTR) continue;
      fprintf(stderr, "corral-exec --serve: poll: %s\n", strerror(errno));
      exit(2);
    }
    /* jobs first (from the end: finishing one moves the last into its slot) */
    for (int k = njobs - 1; k >= 0; k--) {
      if (pf[base + 2 * k].revents) drain(&jobs[k]);
      if (pf[base + 2 * k + 1].revents) finish_job(k);
    }
    if (in_slot >= 0 && pf[in_slot].revents && !read_request()) open_in = 0;
  }
}

int main(int argc, char **argv) {
  if (argc == 2 && !strcmp(argv[1], "--serve")) {
    ensure_sealed_memfd(argv);
    signal(SIGCHLD, SIG_DFL);
    serve();
  }
  if (argc != 3) {
    fprintf(stderr, "usage: corral-exec <plan-fd> <sync-fd>\n       corral-exec --serve\n");
    return 2;
  }
  int plan_fd = parse_fd(argv[1]);
  sync_fd = parse_fd(argv[2]);
  ensure_sealed_memfd(argv);
  signal(SIGCHLD, SIG_DFL); /* waitpid must see our children */
  read_plan(plan_fd);
  close(plan_fd);
  uint32_t n;
  struct op *ops = decode_plan(&n);
  if (fcntl(sync_fd, F_SETFD, FD_CLOEXEC) < 0) {
    fprintf(stderr, "corral-exec: sync fd: %s\n", strerror(errno));
    return 2;
  }
  for (uint32_t k = 0; k < n; k++) {
    cur_op = (int)k;
    OPS[ops[k].code - 1].fn(ops[k].a);
  }
  return 0;
}
