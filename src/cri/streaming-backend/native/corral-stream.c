/*
 * corral-stream: byte relays for corrald's streaming backend (src/cri/streaming-backend/), for the
 * three things Node cannot do itself. Single-threaded, poll(2) based; no policy, only plumbing.
 *
 *   corral-stream console [--stdin] SOCKET -- RUNTIME ARG...
 *       Listen on unix socket SOCKET, run RUNTIME ARG... (e.g. `corral-oci exec -t --console-socket
 *       SOCKET ID cmd`), receive the pty master it sends (SCM_RIGHTS) and relay: fd 0 -> master,
 *       master -> fd 1. fd 3 (optional) carries resize lines "WIDTH HEIGHT\n" (TIOCSWINSZ on the
 *       master). With --stdin, the end of fd 0 is passed on as the terminal's EOF character (^D);
 *       without it fd 0 is not read. RUNTIME's stdout/stderr go to fd 2. Exits with RUNTIME's status
 *       (128+signal if it was killed) once RUNTIME exited and the terminal's output is drained.
 *
 *   corral-stream attach [--stdin] DIR
 *       Connect to conmon's attach socket DIR/attach (SOCK_SEQPACKET; connected through
 *       /proc/self/fd so long paths work). Every message from conmon starts with one byte naming
 *       the stream (2 stdout, 3 stderr): the rest goes to fd 1, or to fd 3 (fd 2 when fd 3 is not
 *       open; fd 2 otherwise carries only this helper's own messages). With --stdin, fd 0 is sent
 *       to conmon as is and its end becomes shutdown(SHUT_WR) (conmon then closes the container's
 *       stdin unless it runs with --leave-stdin-open). Exits 0 when conmon closes the socket (the
 *       container exited).
 *
 *   corral-stream netns NSPATH PORT
 *       setns(2) into the network namespace file NSPATH, connect to 127.0.0.1:PORT (then [::1]:PORT)
 *       and relay fd 0 <-> the connection with half-close both ways. Once connected, writes "c" to
 *       fd 3 (if open) and closes it. Exit status 2 (with a message on fd 2) when the connection
 *       cannot be made, 3 when the namespace cannot be entered.
 *
 * Exit status 1 = usage or I/O failure, with a message on fd 2 starting "corral-stream: ".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define BUFSZ 32768
/* conmon reads at most CONN_SOCK_BUF_SIZE - 1 (32767) bytes per attach message; stay well below. */
#define ATTACH_CHUNK 8192
/* conmon's stream prefixes (enum pipe_type in conmon's utils.h). */
#define PIPE_STDOUT 2
#define PIPE_STDERR 3

static void msg(const char *fmt, ...) {
  char b[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(b, sizeof b - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n > sizeof b - 2) n = (int)sizeof b - 2;
  b[n++] = '\n';
  ssize_t w = write(2, b, (size_t)n);
  (void)w;
}

static int die(int code, const char *fmt, ...) {
  char b[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b, sizeof b, fmt, ap);
  va_end(ap);
  msg("corral-stream: %s", b);
  exit(code);
}

/* Write everything; returns -1 on error (EPIPE included: SIGPIPE is ignored). */
static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        poll(&pf, 1, -1);
        continue;
      }
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int status_code(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return 1;
}

static int fd_is_open(int fd) { return fcntl(fd, F_GETFD) >= 0; }

/* ---- console ------------------------------------------------------------------------------ */

/* Parse complete "W H" lines from the control fd and apply them to the master. */
static void apply_resizes(int master, char *ctl, size_t *ctl_len) {
  char *start = ctl;
  char *nl;
  while ((nl = memchr(start, '\n', *ctl_len - (size_t)(start - ctl))) != NULL) {
    *nl = '\0';
    unsigned w, h;
    if (sscanf(start, "%u %u", &w, &h) == 2 && w <= 65535 && h <= 65535) {
      struct winsize ws = {.ws_row = (unsigned short)h, .ws_col = (unsigned short)w};
      if (ioctl(master, TIOCSWINSZ, &ws) < 0) msg("corral-stream: TIOCSWINSZ: %s", strerror(errno));
    }
    start = nl + 1;
  }
  size_t rest = *ctl_len - (size_t)(start - ctl);
  memmove(ctl, start, rest);
  *ctl_len = rest;
  if (*ctl_len >= 255) *ctl_len = 0; /* a line that long is garbage */
}

static int receive_fd(int conn) {
  char payload[256];
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } cbuf;
  struct iovec iov = {.iov_base = payload, .iov_len = sizeof payload};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf, .msg_controllen = sizeof cbuf.buf};
  ssize_t n;
  do n = recvmsg(conn, &m, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  struct cmsghdr *cm = n >= 0 ? CMSG_FIRSTHDR(&m) : NULL;
  if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) return -1;
  int fd;
  memcpy(&fd, CMSG_DATA(cm), sizeof fd);
  return fd;
}

static int cmd_console(int argc, char **argv) {
  int want_stdin = 0, i = 0;
  if (i < argc && strcmp(argv[i], "--stdin") == 0) want_stdin = 1, i++;
  if (argc - i < 3 || strcmp(argv[i + 1], "--") != 0) die(1, "usage: console [--stdin] SOCKET -- RUNTIME ARG...");
  const char *path = argv[i];
  char **rt = &argv[i + 2];

  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) die(1, "console socket path too long (max %zu): %s", sizeof sa.sun_path - 1, path);
  strcpy(sa.sun_path, path);
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (l < 0) die(1, "socket: %s", strerror(errno));
  unlink(path);
  if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0) die(1, "bind %s: %s", path, strerror(errno));
  chmod(path, 0600);
  if (listen(l, 1) < 0) die(1, "listen %s: %s", path, strerror(errno));

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) die(1, "signalfd: %s", strerror(errno));

  pid_t child = fork();
  if (child < 0) die(1, "fork: %s", strerror(errno));
  if (child == 0) {
    sigprocmask(SIG_UNBLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_DFL);
    int nul = open("/dev/null", O_RDONLY);
    if (nul < 0 || dup2(nul, 0) < 0 || dup2(2, 1) < 0) _exit(127);
    if (nul > 2) close(nul);
    close(3);
    execvp(rt[0], rt);
    msg("corral-stream: exec %s: %s", rt[0], strerror(errno));
    _exit(127);
  }

  int child_status = -1;
  int master = -1;
  /* wait for the runtime to hand over the master, or to fail */
  while (master < 0 && child_status < 0) {
    struct pollfd pf[2] = {{.fd = l, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
    if (poll(pf, 2, -1) < 0 && errno != EINTR) die(1, "poll: %s", strerror(errno));
    if (pf[1].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGCHLD) {
          int st;
          if (waitpid(child, &st, WNOHANG) == child) child_status = st;
        } else {
          kill(child, (int)si.ssi_signo);
        }
      }
    }
    if (pf[0].revents & POLLIN) {
      int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
      if (c >= 0) {
        master = receive_fd(c);
        if (master < 0) msg("corral-stream: a connection to %s sent no file descriptor", path);
        close(c);
      }
    }
  }
  close(l);
  unlink(path);
  if (master < 0) {
    /* the runtime exited without sending a terminal: it failed; its status says how */
    return status_code(child_status);
  }
  fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);

  int stdin_open = want_stdin;
  int ctl_open = fd_is_open(3);
  int out_ok = 1, master_eof = 0;
  char in[BUFSZ];
  size_t in_len = 0, in_off = 0;
  char ctl[256];
  size_t ctl_len = 0;
  char buf[BUFSZ];
  long long deadline = -1; /* ms, set when the runtime exits */

  for (;;) {
    if (child_status >= 0 && master_eof) break;
    int timeout = -1;
    if (child_status >= 0) {
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      long long now = ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
      if (deadline < 0) deadline = now + 2000;
      if (now >= deadline) break;
      timeout = (int)(deadline - now);
    }
    struct pollfd pf[4];
    int n = 0, i_in = -1, i_master, i_ctl = -1, i_sig;
    if (stdin_open && in_len == 0) pf[i_in = n++] = (struct pollfd){.fd = 0, .events = POLLIN};
    pf[i_master = n++] = (struct pollfd){.fd = master_eof ? -1 : master, .events = (short)(POLLIN | (in_len ? POLLOUT : 0))};
    if (ctl_open) pf[i_ctl = n++] = (struct pollfd){.fd = 3, .events = POLLIN};
    pf[i_sig = n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
    /* once the runtime is gone, processes that still hold the terminal get 2 s to finish writing */
    int r = poll(pf, (nfds_t)n, timeout);
    if (r < 0) {
      if (errno == EINTR) continue;
      die(1, "poll: %s", strerror(errno));
    }
    if (r == 0) break;
    if (pf[i_sig].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGCHLD) {
          int st;
          if (child_status < 0 && waitpid(child, &st, WNOHANG) == child) child_status = st;
        } else if (child_status < 0) {
          kill(child, (int)si.ssi_signo);
        }
      }
    }
    if (i_ctl >= 0 && (pf[i_ctl].revents & (POLLIN | POLLHUP))) {
      ssize_t k = read(3, ctl + ctl_len, sizeof ctl - 1 - ctl_len);
      if (k <= 0) {
        if (k == 0 || (errno != EINTR && errno != EAGAIN)) ctl_open = 0;
      } else {
        ctl_len += (size_t)k;
        apply_resizes(master, ctl, &ctl_len);
      }
    }
    if (i_in >= 0 && (pf[i_in].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t k = read(0, in, sizeof in);
      if (k > 0) {
        in_len = (size_t)k;
        in_off = 0;
      } else if (k == 0 || (errno != EINTR && errno != EAGAIN)) {
        stdin_open = 0;
        /* the client closed its stdin: pass that on as the terminal's end-of-file character */
        struct termios t;
        in[0] = (tcgetattr(master, &t) == 0 && t.c_cc[VEOF]) ? (char)t.c_cc[VEOF] : 4;
        in_len = 1;
        in_off = 0;
      }
    }
    if (!master_eof && (pf[i_master].revents & POLLOUT) && in_len) {
      ssize_t w = write(master, in + in_off, in_len);
      if (w > 0) {
        in_off += (size_t)w;
        in_len -= (size_t)w;
      } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
        in_len = 0;
      }
    }
    if (!master_eof && (pf[i_master].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t k = read(master, buf, sizeof buf);
      if (k > 0) {
        if (out_ok && write_all(1, buf, (size_t)k) < 0) out_ok = 0;
      } else if (k == 0 || (errno != EAGAIN && errno != EINTR)) {
        master_eof = 1; /* EIO: every slave fd is closed */
        in_len = 0;
      }
    }
  }
  close(master);
  return status_code(child_status);
}

/* ---- attach ------------------------------------------------------------------------------- */

static int cmd_attach(int argc, char **argv) {
  int want_stdin = 0, i = 0;
  if (i < argc && strcmp(argv[i], "--stdin") == 0) want_stdin = 1, i++;
  if (argc - i != 1) die(1, "usage: attach [--stdin] DIR");
  const char *dir = argv[i];
  int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) die(2, "open attach directory %s: %s", dir, strerror(errno));
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "/proc/self/fd/%d/attach", dfd);
  int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (s < 0) die(1, "socket: %s", strerror(errno));
  if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) die(2, "connect to %s/attach: %s", dir, strerror(errno));
  close(dfd);

  int stdin_open = want_stdin;
  int out_ok = 1, err_ok = 1;
  int errfd = fd_is_open(3) ? 3 : 2;
  static char buf[BUFSZ + 2];
  for (;;) {
    struct pollfd pf[2] = {{.fd = s, .events = POLLIN}, {.fd = stdin_open ? 0 : -1, .events = POLLIN}};
    if (poll(pf, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die(1, "poll: %s", strerror(errno));
    }
    if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t k = recv(s, buf, sizeof buf, 0);
      if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (k <= 0) break; /* conmon closed the socket: the container exited */
      if (buf[0] == PIPE_STDOUT && out_ok && write_all(1, buf + 1, (size_t)k - 1) < 0) out_ok = 0;
      if (buf[0] == PIPE_STDERR && err_ok && write_all(errfd, buf + 1, (size_t)k - 1) < 0) err_ok = 0;
    }
    if (stdin_open && (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t k = read(0, buf, ATTACH_CHUNK);
      if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (k <= 0) {
        stdin_open = 0;
        shutdown(s, SHUT_WR);
      } else if (send(s, buf, (size_t)k, MSG_NOSIGNAL) < 0) {
        stdin_open = 0;
      }
    }
  }
  return 0;
}

/* ---- netns -------------------------------------------------------------------------------- */

static int cmd_netns(int argc, char **argv) {
  if (argc != 2) die(1, "usage: netns NSPATH PORT");
  char *end;
  long port = strtol(argv[1], &end, 10);
  if (*end || port < 1 || port > 65535) die(1, "invalid port %s", argv[1]);
  int ns = open(argv[0], O_RDONLY | O_CLOEXEC);
  if (ns < 0) die(3, "open network namespace %s: %s", argv[0], strerror(errno));
  if (setns(ns, CLONE_NEWNET) < 0) die(3, "enter network namespace %s: %s", argv[0], strerror(errno));
  close(ns);

  int s = -1, err4 = 0;
  struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr = {htonl(INADDR_LOOPBACK)}};
  s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s >= 0 && connect(s, (struct sockaddr *)&a4, sizeof a4) < 0) {
    err4 = errno;
    close(s);
    s = -1;
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int s6 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s6 >= 0 && connect(s6, (struct sockaddr *)&a6, sizeof a6) == 0) s = s6;
    else if (s6 >= 0) close(s6);
  }
  if (s < 0) die(2, "connect to localhost:%ld: %s", port, strerror(err4 ? err4 : errno));
  if (fd_is_open(3)) {
    if (write(3, "c", 1) < 0) msg("corral-stream: fd 3: %s", strerror(errno));
    close(3);
  }

  int in_open = 1, sock_open = 1;
  static char buf[BUFSZ];
  while (in_open || sock_open) {
    struct pollfd pf[2] = {{.fd = in_open ? 0 : -1, .events = POLLIN}, {.fd = sock_open ? s : -1, .events = POLLIN}};
    if (poll(pf, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die(1, "poll: %s", strerror(errno));
    }
    if (in_open && (pf[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t k = read(0, buf, sizeof buf);
      if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (k <= 0 || write_all(s, buf, (size_t)k) < 0) {
        in_open = 0;
        shutdown(s, SHUT_WR);
      }
    }
    if (sock_open && (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t k = read(s, buf, sizeof buf);
      if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (k <= 0 || write_all(1, buf, (size_t)k) < 0) {
        if (k < 0) msg("corral-stream: localhost:%ld: %s", port, strerror(errno));
        sock_open = 0;
        close(1);
        /* the port's side is done; what the client still sends has nowhere to go */
        if (k < 0) in_open = 0;
      }
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc >= 2 && strcmp(argv[1], "console") == 0) return cmd_console(argc - 2, argv + 2);
  if (argc >= 2 && strcmp(argv[1], "attach") == 0) return cmd_attach(argc - 2, argv + 2);
  if (argc >= 2 && strcmp(argv[1], "netns") == 0) return cmd_netns(argc - 2, argv + 2);
  die(1, "usage: corral-stream console|attach|netns ... (see the comment at the top of corral-stream.c)");
  return 1;
}
