/*
 * Test helper: load a seccomp BPF program from a file, then run a command or one raw syscall.
 *
 *   load-bpf PROGRAM FLAGS exec PATH [ARG...]     execv(PATH, ARGS) under the filter
 *   load-bpf PROGRAM FLAGS syscall NR [ARG...]    syscall(NR, ARGS...); prints "ret=R errno=E"
 *
 * Exits 125 if the filter cannot be loaded (the kernel rejected the bytes).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s PROGRAM FLAGS exec|syscall ...\n", argv[0]);
    return 125;
  }
  FILE *f = fopen(argv[1], "rb");
  if (!f) { perror("load-bpf: open program"); return 125; }
  static struct sock_filter insns[4096 + 1];
  size_t n = fread(insns, sizeof(struct sock_filter), 4096 + 1, f);
  fclose(f);
  if (n == 0 || n > 4096) { fprintf(stderr, "load-bpf: bad program length %zu\n", n); return 125; }
  struct sock_fprog prog = { .len = (unsigned short)n, .filter = insns };
  unsigned long flags = strtoul(argv[2], NULL, 0);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) { perror("load-bpf: PR_SET_NO_NEW_PRIVS"); return 125; }
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog) != 0) {
    fprintf(stderr, "load-bpf: seccomp(SECCOMP_SET_MODE_FILTER): %s\n", strerror(errno));
    return 125;
  }
  if (strcmp(argv[3], "exec") == 0) {
    execv(argv[4], &argv[4]);
    fprintf(stderr, "load-bpf: execv %s: %s\n", argv[4], strerror(errno));
    return 126;
  }
  if (strcmp(argv[3], "syscall") == 0) {
    long a[6] = {0};
    for (int i = 0; i < 6 && 5 + i < argc; i++) a[i] = strtol(argv[5 + i], NULL, 0);
    errno = 0;
    long r = syscall(strtol(argv[4], NULL, 0), a[0], a[1], a[2], a[3], a[4], a[5]);
    int e = r < 0 ? errno : 0;
    dprintf(1, "ret=%ld errno=%d\n", r, e);
    return 0;
  }
  fprintf(stderr, "load-bpf: unknown mode %s\n", argv[3]);
  return 125;
}
