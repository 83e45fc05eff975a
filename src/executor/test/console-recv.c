/*
 * console-recv: test helper for the executor's setupConsole op (Node cannot receive SCM_RIGHTS).
 *
 *   console-recv <socket-path> [input]
 *
 * Listens on <socket-path>, prints "ready\n", accepts one connection, receives one fd with
 * SCM_RIGHTS, prints "payload <payload>\n", writes [input] to the received pty master, then
 * copies everything read from the master to stdout until the slave side is closed (EIO/EOF).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: console-recv <socket-path> [input]\n");
    return 2;
  }
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(argv[1]) >= sizeof sa.sun_path) return 2;
  strcpy(sa.sun_path, argv[1]);
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 1) < 0) {
    perror("console-recv: listen");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
  if (c < 0) {
    perror("console-recv: accept");
    return 1;
  }
  char payload[64] = {0}, cbuf[CMSG_SPACE(sizeof(int))];
  struct iovec iov = {.iov_base = payload, .iov_len = sizeof payload - 1};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
  ssize_t n = recvmsg(c, &msg, MSG_CMSG_CLOEXEC);
  struct cmsghdr *cm = n > 0 ? CMSG_FIRSTHDR(&msg) : NULL;
  if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) {
    fprintf(stderr, "console-recv: no fd received\n");
    return 1;
  }
  int master;
  memcpy(&master, CMSG_DATA(cm), sizeof master);
  close(c);
  close(l);
  printf("payload %s\n", payload);
  fflush(stdout);
  if (argc == 3 && write(master, argv[2], strlen(argv[2])) < 0) perror("console-recv: write");
  char buf[4096];
  for (;;) {
    ssize_t r = read(master, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    if (write(1, buf, (size_t)r) < 0) return 1;
  }
  return 0;
}
