/*
 * bin/corral-oci: the runc-compatible CLI as a small static client of the corral-oci server
 * (src/cli/oci-server.ts, one Node process per build), so callers that run the runtime once per verb
 * (conmon, containerd-shim, podman) do not boot Node each time. Policy-free: it forwards argv, cwd,
 * some env, and relays bytes; every decision is made in TypeScript.
 *
 * Config: <dir of the real executable>/corral-oci-client.conf, written by scripts/setup.sh, lines
 * key=value: node, bundle, executor, build_id, compile_cache, unpack_helper.
 *
 * Flow: connect to $CORRAL_OCI_SERVER_DIR (default /run/corral-oci-server, mode 0700, owned by us)
 * /<build_id>.sock; if nobody listens, take <build_id>.lock (flock), start the server (fork, setsid,
 * fork, exec node bundle --server SOCK; stderr to <build_id>.log) and retry for ~2 s. Without a server
 * (or CORRAL_OCI_NO_SERVER=1) exec node on the bundle with the same argv: the CLI always works.
 *
 * The server cannot receive fds, so this process spawns the executor when asked (SPAWN): fds 0..2 and
 * the preserved fds 3..3+n-1 are ours, then a pipe with the plan and one end of a socketpair for the
 * sync lines, which are relayed as frames. The frame format is described in oci-server.ts.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

enum {
  F_REQ = 1, F_STDIN = 2, F_SPAWNED = 3, F_SPAWN_FAILED = 4, F_SYNC = 5, F_SYNC_EOF = 6, F_EXITED = 7,
  F_CONSOLE_PATH = 8,
  F_ACCEPT = 64, F_STDOUT = 65, F_STDERR = 66, F_STDIN_REQ = 67, F_SPAWN = 68, F_SYNC_WRITE = 69,
  F_SYNC_CLOSE = 70, F_KILL = 71, F_FORWARD = 72, F_EXIT = 73, F_CONSOLE = 74,
};
#define MAX_FRAME (32u * 1024 * 1024)

extern char **environ;

static struct {
  char node[PATH_MAX], bundle[PATH_MAX], executor[PATH_MAX], build_id[128], compile_cache[PATH_MAX], unpack_helper[PATH_MAX];
} cfg;
static int g_argc;
static char **g_argv;
static int nfds_preserved; /* open fds 3, 4, ... (contiguous) at start */
static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static char lock_path[PATH_MAX], log_path[PATH_MAX];

static volatile sig_atomic_t launcher_pid; /* 0: none */
static volatile sig_atomic_t forwarding;
static int chld_pipe[2] = {-1, -1};

static void die(const char *msg) {
  fprintf(stderr, "corral-oci: %s\n", msg);
  exit(1);
}

static void copy(char *dst, size_t cap, const char *src) {
  size_t n = strlen(src);
  if (n >= cap) die("corral-oci-client.conf: value too long");
  memcpy(dst, src, n + 1);
}

static void load_config(void) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 32);
  if (n <= 0) die("cannot find my own executable (/proc/self/exe)");
  exe[n] = 0;
  char *slash = strrchr(exe, '/');
  if (!slash) die("cannot find my own executable (/proc/self/exe)");
  strcpy(slash + 1, "corral-oci-client.conf");
  FILE *f = fopen(exe, "re");
  if (!f) {
    fprintf(stderr, "corral-oci: cannot read %s: %s; run scripts/setup.sh\n", exe, strerror(errno));
    exit(1);
  }
  char line[PATH_MAX + 64];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    char *eq = strchr(line, '=');
    if (!eq) continue;
    *eq = 0;
    const char *v = eq + 1;
    if (!strcmp(line, "node")) copy(cfg.node, sizeof cfg.node, v);
    else if (!strcmp(line, "bundle")) copy(cfg.bundle, sizeof cfg.bundle, v);
    else if (!strcmp(line, "executor")) copy(cfg.executor, sizeof cfg.executor, v);
    else if (!strcmp(line, "build_id")) copy(cfg.build_id, sizeof cfg.build_id, v);
    else if (!strcmp(line, "compile_cache")) copy(cfg.compile_cache, sizeof cfg.compile_cache, v);
    else if (!strcmp(line, "unpack_helper")) copy(cfg.unpack_helper, sizeof cfg.unpack_helper, v);
  }
  fclose(f);
  if (!cfg.node[0] || !cfg.bundle[0]) die("corral-oci-client.conf lacks node= or bundle=; run scripts/setup.sh");
}

static void default_env(const char *name, const char *value) {
  const char *cur = getenv(name);
  if ((!cur || !*cur) && value[0]) setenv(name, value, 1);
}

/* Today's path: run the bundled CLI in a Node of its own, with our argv. */
static void exec_direct(void) {
  signal(SIGPIPE, SIG_DFL); /* an ignored signal would survive the exec */
  default_env("NODE_COMPILE_CACHE", cfg.compile_cache);
  default_env("CORRAL_EXECUTOR", cfg.executor);
  default_env("CORRAL_UNPACK_HELPER", cfg.unpack_helper);
  char **av = calloc((size_t)g_argc + 4, sizeof *av);
  if (!av) die("out of memory");
  av[0] = cfg.node;
  av[1] = "--no-warnings";
  av[2] = cfg.bundle;
  for (int i = 1; i < g_argc; i++) av[i + 2] = g_argv[i];
  execv(cfg.node, av);
  fprintf(stderr, "corral-oci: exec %s: %s\n", cfg.node, strerror(errno));
  exit(1);
}

static void close_from(int first) {
  if (syscall(SYS_close_range, (unsigned)first, ~0u, 0) == 0) return;
  long max = sysconf(_SC_OPEN_MAX);
  if (max < 0 || max > 65536) max = 65536;
  for (int fd = first; fd < max; fd++) close(fd);
}

static int count_preserved(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return 0;
  int own = dirfd(d);
  unsigned char seen[1024] = {0};
  struct dirent *e;
  while ((e = readdir(d))) {
    int fd = atoi(e->d_name);
    if (e->d_name[0] >= '0' && e->d_name[0] <= '9' && fd != own && fd >= 0 && fd < 1024) seen[fd] = 1;
  }
  closedir(d);
  int n = 0;
  while (3 + n < 1024 && seen[3 + n]) n++;
  return n;
}

static int write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int conn = -1;

static void send_frame(uint8_t type, const void *a, size_t alen, const void *b, size_t blen) {
  unsigned char h[5];
  uint32_t len = (uint32_t)(alen + blen);
  memcpy(h, &len, 4); /* little-endian hosts only (x86_64, aarch64), as the plan format */
  h[4] = type;
  if (write_all(conn, h, 5) < 0 || (alen && write_all(conn, a, alen) < 0) || (blen && write_all(conn, b, blen) < 0)) {
    /* the server is gone: the read side reports it */
  }
}

/* ---- the server: where it lives, connecting, starting it ---- */

static int setup_paths(void) {
  const char *dir = getenv("CORRAL_OCI_SERVER_DIR");
  if (!dir || !*dir) dir = "/run/corral-oci-server";
  if (!cfg.build_id[0]) return -1;
  if (mkdir(dir, 0700) < 0 && errno != EEXIST) return -1;
  struct stat st;
  if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077)) return -1;
  if ((size_t)snprintf(sock_path, sizeof sock_path, "%s/%s.sock", dir, cfg.build_id) >= sizeof sock_path) return -1;
  snprintf(lock_path, sizeof lock_path, "%s/%s.lock", dir, cfg.build_id);
  snprintf(log_path, sizeof log_path, "%s/%s.log", dir, cfg.build_id);
  return 0;
}

static int try_connect(void) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  memcpy(a.sun_path, sock_path, strlen(sock_path) + 1);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
  int e = errno;
  close(fd);
  errno = e;
  return -1;
}

static void start_server(void) {
  pid_t pid = fork();
  if (pid < 0) return;
  if (pid == 0) {
    setsid();
    if (fork() != 0) _exit(0);
    if (chdir("/") < 0) _exit(127);
    umask(022); /* the state dirs (0711) must stay traversable for user-namespaced inits */
    int null = open("/dev/null", O_RDWR);
    int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (null < 0) _exit(127);
    dup2(null, 0);
    dup2(null, 1);
    dup2(log >= 0 ? log : null, 2);
    close_from(3);
    static char cache[PATH_MAX + 32], exe[PATH_MAX + 32], unpack[PATH_MAX + 32], idle[64];
    char *envp[8];
    int n = 0;
    envp[n++] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    snprintf(cache, sizeof cache, "NODE_COMPILE_CACHE=%s", cfg.compile_cache);
    if (cfg.compile_cache[0]) envp[n++] = cache;
    snprintf(exe, sizeof exe, "CORRAL_EXECUTOR=%s", cfg.executor);
    if (cfg.executor[0]) envp[n++] = exe;
    snprintf(unpack, sizeof unpack, "CORRAL_UNPACK_HELPER=%s", cfg.unpack_helper);
    if (cfg.unpack_helper[0]) envp[n++] = unpack;
    const char *idle_ms = getenv("CORRAL_OCI_SERVER_IDLE_MS");
    if (idle_ms && strlen(idle_ms) < 32) {
      snprintf(idle, sizeof idle, "CORRAL_OCI_SERVER_IDLE_MS=%s", idle_ms);
      envp[n++] = idle;
    }
    envp[n] = NULL;
    char *av[] = {cfg.node, "--no-warnings", cfg.bundle, "--server", sock_path, NULL};
    execve(cfg.node, av, envp);
    _exit(127);
  }
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
  }
}

/*
 * A server started from here would be reparented to the nearest child subreaper above us. Under a
 * container monitor (conmon, a containerd shim) that is the monitor itself, which then waits for the
 * server before it exits. So under one we use a running server but never start one (the verb then
 * runs in its own Node process).
 */
static int parent_is_monitor(void) {
  char path[64], comm[64] = {0};
  snprintf(path, sizeof path, "/proc/%d/comm", (int)getppid());
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, comm, sizeof comm - 1);
  close(fd);
  if (n <= 0) return 0;
  return !strncmp(comm, "conmon", 6) || !strncmp(comm, "containerd-shim", 15);
}

/* A connection to a server, starting one if needed; -1 if there is none to be had. */
static int server_connect(void) {
  int fd = try_connect();
  if (fd >= 0) return fd;
  if (errno != ENOENT && errno != ECONNREFUSED) return -1;
  if (parent_is_monitor()) return -1;
  int lk = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lk < 0) return -1;
  while (flock(lk, LOCK_EX) < 0) {
    if (errno != EINTR) {
      close(lk);
      return -1;
    }
  }
  fd = try_connect();
  if (fd < 0) {
    start_server();
    for (int i = 0; i < 400 && fd < 0; i++) { /* ~2 s */
      struct timespec ts = {0, 5 * 1000 * 1000};
      nanosleep(&ts, NULL);
      fd = try_connect();
    }
  }
  close(lk); /* releases the lock */
  return fd;
}

static int want_env(const char *e) {
  static const char *const exact[] = {"NOTIFY_SOCKET=", "LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES=", NULL};
  if (!strncmp(e, "CORRAL_", 7)) return 1;
  for (int i = 0; exact[i]; i++)
    if (!strncmp(e, exact[i], strlen(exact[i]))) return 1;
  return 0;
}

static void send_request(const char *cwd) {
  size_t cap = 20 + strlen(cwd) + 1, envc = 0;
  for (int i = 1; i < g_argc; i++) cap += strlen(g_argv[i]) + 1;
  for (char **e = environ; *e; e++)
    if (want_env(*e)) cap += strlen(*e) + 1, envc++;
  char *p = malloc(cap);
  if (!p) die("out of memory");
  uint32_t head[5] = {(uint32_t)getpid(), (uint32_t)nfds_preserved, isatty(0) ? 1u : 0u, (uint32_t)(g_argc - 1), (uint32_t)envc};
  memcpy(p, head, 20);
  size_t off = 20;
#define PUT(s) do { size_t l_ = strlen(s) + 1; memcpy(p + off, (s), l_); off += l_; } while (0)
  PUT(cwd);
  for (int i = 1; i < g_argc; i++) PUT(g_argv[i]);
  for (char **e = environ; *e; e++)
    if (want_env(*e)) PUT(*e);
#undef PUT
  send_frame(F_REQ, p, off, NULL, 0);
  free(p);
}

/* ---- the executor ---- */

static int sync_fd = -1;
static int launcher_reaped;

static void on_chld(int sig) {
  (void)sig;
  int e = errno;
  if (write(chld_pipe[1], "x", 1) < 0) {
  }
  errno = e;
}

static const int FORWARD_SIGS[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
#define NFORWARD (sizeof FORWARD_SIGS / sizeof FORWARD_SIGS[0])

static void copy_winsize(void);
static volatile sig_atomic_t console_master;

static void on_forward(int sig) {
  if (sig == SIGWINCH && console_master >= 0) {
    copy_winsize(); /* the kernel signals the container's foreground group itself */
    return;
  }
  if (forwarding && launcher_pid > 0) kill((pid_t)launcher_pid, sig);
}

static void set_forwarding(int on) {
  forwarding = on;
  struct sigaction sa = {0};
  sa.sa_handler = on ? on_forward : SIG_DFL;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < NFORWARD; i++) sigaction(FORWARD_SIGS[i], &sa, NULL);
}

static void spawn_executor(const unsigned char *p, uint32_t len) {
  if (len < 4 || launcher_pid > 0) {
    int32_t e = EBUSY;
    send_frame(F_SPAWN_FAILED, &e, 4, "corral-oci client: bad or second spawn request", 46);
    return;
  }
  uint32_t n;
  memcpy(&n, p, 4);
  const char *exe = getenv("CORRAL_EXECUTOR");
  if (!exe || !*exe) exe = cfg.executor;
  int planp[2], sv[2], errp[2];
  if (n > (uint32_t)nfds_preserved || pipe2(planp, O_CLOEXEC) < 0) {
    int32_t e = n > (uint32_t)nfds_preserved ? EBADF : errno;
    send_frame(F_SPAWN_FAILED, &e, 4, "pipe", 4);
    return;
  }
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
    int32_t e = errno;
    send_frame(F_SPAWN_FAILED, &e, 4, "socketpair", 10);
    return;
  }
  int plan_idx = 3 + (int)n, sync_idx = plan_idx + 1;
  pid_t pid = fork();
  if (pid == 0) {
    struct sigaction sa = {0};
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < NFORWARD; i++) sigaction(FORWARD_SIGS[i], &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    int pr = fcntl(planp[0], F_DUPFD, sync_idx + 1);
    int sr = fcntl(sv[1], F_DUPFD, sync_idx + 1);
    int er = fcntl(errp[1], F_DUPFD_CLOEXEC, sync_idx + 1);
    int32_t e = errno;
    if (pr < 0 || sr < 0 || er < 0 || dup2(pr, plan_idx) < 0 || dup2(sr, sync_idx) < 0) goto fail;
    for (int fd = 3; fd < plan_idx; fd++) { /* the caller's fds, as they are */
      int fl = fcntl(fd, F_GETFD);
      if (fl < 0 || fcntl(fd, F_SETFD, fl & ~FD_CLOEXEC) < 0) goto fail;
    }
    if (er != sync_idx + 1) {
      if (dup2(er, sync_idx + 1) < 0) goto fail;
      fcntl(sync_idx + 1, F_SETFD, FD_CLOEXEC);
    }
    close_from(sync_idx + 2);
    er = sync_idx + 1;
    char a1[16], a2[16];
    snprintf(a1, sizeof a1, "%d", plan_idx);
    snprintf(a2, sizeof a2, "%d", sync_idx);
    char *av[] = {(char *)exe, a1, a2, NULL};
    char *envp[] = {NULL};
    execve(exe, av, envp);
  fail:
    e = errno;
    if (write(er >= 0 ? er : errp[1], &e, 4) < 0) {
    }
    _exit(127);
  }
  close(planp[0]);
  close(sv[1]);
  close(errp[1]);
  if (pid < 0) {
    int32_t e = errno;
    close(planp[1]);
    close(sv[0]);
    close(errp[0]);
    send_frame(F_SPAWN_FAILED, &e, 4, "fork", 4);
    return;
  }
  int32_t child_errno = 0;
  ssize_t r;
  while ((r = read(errp[0], &child_errno, 4)) < 0 && errno == EINTR) {
  }
  close(errp[0]);
  if (r == 4) {
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    close(planp[1]);
    close(sv[0]);
    char msg[PATH_MAX + 64];
    int ml = snprintf(msg, sizeof msg, "%s: %s", exe, strerror(child_errno));
    send_frame(F_SPAWN_FAILED, &child_errno, 4, msg, (size_t)ml);
    return;
  }
  launcher_pid = pid;
  uint32_t up = (uint32_t)pid;
  send_frame(F_SPAWNED, &up, 4, NULL, 0);
  write_all(planp[1], p + 4, len - 4); /* EPIPE if it died early: its exit status tells why */
  close(planp[1]);
  sync_fd = sv[0];
}

static void reap(void) {
  char buf[64];
  while (read(chld_pipe[0], buf, sizeof buf) > 0) {
  }
  int st;
  pid_t r;
  while ((r = waitpid(-1, &st, WNOHANG)) > 0) {
    if (r != (pid_t)launcher_pid || launcher_reaped) continue;
    launcher_reaped = 1;
    int32_t v[2] = {WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? WTERMSIG(st) : 0};
    send_frame(F_EXITED, v, 8, NULL, 0);
  }
}

/* ---- the console of `run` with a terminal: receive the pty master, relay it to our stdio ---- */

static char console_dir[64];
static char console_sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static int console_listen = -1;
static volatile sig_atomic_t console_master = -1;
static struct termios saved_tty;
static int tty_saved;

static void console_restore(void) {
  if (tty_saved) tcsetattr(0, TCSANOW, &saved_tty);
  tty_saved = 0;
  if (console_listen >= 0) close(console_listen);
  console_listen = -1;
  if (console_sock_path[0]) unlink(console_sock_path);
  if (console_dir[0]) rmdir(console_dir);
  console_sock_path[0] = console_dir[0] = 0;
}

static void copy_winsize(void) {
  struct winsize ws;
  /* A caller without a sized terminal keeps the config's consoleSize. */
  if (console_master >= 0 && ioctl(0, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col) ioctl(console_master, TIOCSWINSZ, &ws);
}

/* Server asks for a console socket: listen in a fresh private dir and say where. */
static void console_offer(void) {
  atexit(console_restore);
  snprintf(console_dir, sizeof console_dir, "/tmp/corral-oci-console-XXXXXX");
  int fd = -1;
  if (console_listen < 0 && mkdtemp(console_dir) && (fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(console_sock_path, sizeof console_sock_path, "%s/console.sock", console_dir);
    copy(a.sun_path, sizeof a.sun_path, console_sock_path);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 1) == 0) {
      console_listen = fd;
      send_frame(F_CONSOLE_PATH, console_sock_path, strlen(console_sock_path), NULL, 0);
      return;
    }
    close(fd);
  }
  console_restore();
  send_frame(F_CONSOLE_PATH, NULL, 0, NULL, 0);
}

/* The executor connected: take the master fd it sent, put our terminal in raw mode. */
static void console_accept(void) {
  int c = accept4(console_listen, NULL, NULL, SOCK_CLOEXEC);
  if (c < 0) return;
  char data[16];
  char ctl[CMSG_SPACE(sizeof(int))];
  struct iovec iov = {.iov_base = data, .iov_len = sizeof data};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
  ssize_t n = recvmsg(c, &m, MSG_CMSG_CLOEXEC);
  close(c);
  struct cmsghdr *h = n >= 0 ? CMSG_FIRSTHDR(&m) : NULL;
  if (!h || h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) return;
  int master;
  memcpy(&master, CMSG_DATA(h), sizeof master);
  console_restore(); /* the socket is done with */
  console_master = master;
  if (isatty(0) && tcgetattr(0, &saved_tty) == 0) {
    struct termios raw = saved_tty;
    cfmakeraw(&raw);
    if (tcsetattr(0, TCSANOW, &raw) == 0) tty_saved = 1;
  }
  copy_winsize();
}

/* Copy what the container wrote; at EOF/EIO (the last slave closed) stop. Returns 0 when done. */
static int console_pump(void) {
  char b[65536];
  ssize_t n = read(console_master, b, sizeof b);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return 1;
  if (n <= 0) {
    close(console_master);
    console_master = -1;
    return 0;
  }
  write_all(1, b, (size_t)n);
  return 1;
}

/* ---- the request loop ---- */

/* Returns the exit status from EXIT; -1 if the server closed before ACCEPT (the caller may retry). */
static int run_request(void) {
  unsigned char *buf = NULL;
  size_t len = 0, cap = 0;
  int accepted = 0, stdin_on = 0, console_stdin = 1;
  for (;;) {
    struct pollfd pf[8];
    int np = 0;
    pf[np++] = (struct pollfd){.fd = conn, .events = POLLIN};
    int i_sync = -1, i_in = -1, i_cl = -1, i_cm = -1, i_cin = -1;
    if (sync_fd >= 0) i_sync = np, pf[np++] = (struct pollfd){.fd = sync_fd, .events = POLLIN};
    if (stdin_on) i_in = np, pf[np++] = (struct pollfd){.fd = 0, .events = POLLIN};
    if (console_listen >= 0) i_cl = np, pf[np++] = (struct pollfd){.fd = console_listen, .events = POLLIN};
    if (console_master >= 0) {
      i_cm = np, pf[np++] = (struct pollfd){.fd = console_master, .events = POLLIN};
      if (console_stdin) i_cin = np, pf[np++] = (struct pollfd){.fd = 0, .events = POLLIN};
    }
    int i_chld = np;
    pf[np++] = (struct pollfd){.fd = chld_pipe[0], .events = POLLIN};
    if (poll(pf, (nfds_t)np, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll failed");
    }
    if (pf[i_chld].revents) reap();
    if (i_cl >= 0 && pf[i_cl].revents) console_accept();
    if (i_cm >= 0 && pf[i_cm].revents) console_pump();
    if (i_cin >= 0 && pf[i_cin].revents && console_master >= 0) {
      char b[4096];
      ssize_t n = read(0, b, sizeof b);
      if (n > 0) write_all(console_master, b, (size_t)n);
      else if (n == 0 || errno != EINTR) console_stdin = 0;
    }
    if (i_sync >= 0 && pf[i_sync].revents) {
      char b[65536];
      ssize_t n = read(sync_fd, b, sizeof b);
      if (n < 0 && errno == EINTR) continue;
      if (n > 0) send_frame(F_SYNC, b, (size_t)n, NULL, 0);
      else {
        close(sync_fd);
        sync_fd = -1;
        send_frame(F_SYNC_EOF, NULL, 0, NULL, 0);
      }
    }
    if (i_in >= 0 && pf[i_in].revents) {
      char b[65536];
      ssize_t n = read(0, b, sizeof b);
      if (n < 0 && errno == EINTR) continue;
      if (n > 0) send_frame(F_STDIN, b, (size_t)n, NULL, 0);
      else {
        stdin_on = 0;
        send_frame(F_STDIN, NULL, 0, NULL, 0);
      }
    }
    if (!pf[0].revents) continue;
    if (cap - len < 65536) {
      cap = cap ? cap * 2 : 131072;
      buf = realloc(buf, cap);
      if (!buf) die("out of memory");
    }
    ssize_t n = read(conn, buf + len, cap - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (!accepted) return -1;
      fprintf(stderr, "corral-oci: lost the connection to the corral-oci server (its log: %s)\n", log_path);
      exit(1);
    }
    len += (size_t)n;
    size_t off = 0;
    while (len - off >= 5) {
      uint32_t fl;
      memcpy(&fl, buf + off, 4);
      if (fl > MAX_FRAME) die("corral-oci server sent an oversized frame");
      if (len - off < 5 + (size_t)fl) {
        if (cap < 5 + (size_t)fl) {
          cap = 5 + (size_t)fl + 65536;
          buf = realloc(buf, cap);
          if (!buf) die("out of memory");
        }
        break;
      }
      uint8_t type = buf[off + 4];
      unsigned char *p = buf + off + 5;
      off += 5 + fl;
      switch (type) {
      case F_ACCEPT: accepted = 1; break;
      case F_STDOUT: write_all(1, p, fl); break;
      case F_STDERR: write_all(2, p, fl); break;
      case F_STDIN_REQ: stdin_on = 1; break;
      case F_SPAWN: spawn_executor(p, fl); break;
      case F_SYNC_WRITE:
        if (sync_fd >= 0) write_all(sync_fd, p, fl);
        break;
      case F_SYNC_CLOSE:
        if (sync_fd >= 0) close(sync_fd);
        sync_fd = -1;
        break;
      case F_KILL:
        if (fl >= 4 && launcher_pid > 0 && !launcher_reaped) {
          uint32_t sig;
          memcpy(&sig, p, 4);
          kill((pid_t)launcher_pid, (int)sig);
        }
        break;
      case F_FORWARD: set_forwarding(fl >= 1 && p[0]); break;
      case F_EXIT: {
        int32_t code = 1;
        if (fl >= 4) memcpy(&code, p, 4);
        /* What the container wrote last is still in the pty: drain it before going. */
        while (console_master >= 0) {
          struct pollfd cp = {.fd = console_master, .events = POLLIN};
          if (poll(&cp, 1, 200) <= 0 || !console_pump()) break;
        }
        console_restore();
        exit(code & 0xff);
      }
      case F_CONSOLE: console_offer(); break;
      default: die("corral-oci server sent an unknown frame");
      }
    }
    memmove(buf, buf + off, len - off);
    len -= off;
  }
}

int main(int argc, char **argv) {
  g_argc = argc;
  g_argv = argv;
  load_config();
  const char *no = getenv("CORRAL_OCI_NO_SERVER");
  if (no && !strcmp(no, "1")) exec_direct();
  nfds_preserved = count_preserved();
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd) || setup_paths() < 0) exec_direct();
  signal(SIGPIPE, SIG_IGN);
  if (pipe2(chld_pipe, O_CLOEXEC | O_NONBLOCK) < 0) exec_direct();
  struct sigaction sa = {0};
  sa.sa_handler = on_chld;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGCHLD, &sa, NULL);
  for (int attempt = 0; attempt < 2; attempt++) {
    conn = server_connect();
    if (conn < 0) break;
    send_request(cwd);
    int code = run_request();
    if (code >= 0) return code;
    close(conn); /* closed before accepting (an idle server exiting): try once more */
    conn = -1;
  }
  exec_direct();
  return 1;
}
