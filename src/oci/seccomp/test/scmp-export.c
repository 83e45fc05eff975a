/*
 * Test helper: build a filter with libseccomp from a line-based description on stdin and write
 * libseccomp's BPF (seccomp_export_bpf) to stdout, to compare our compiler's semantics with it.
 *
 *   D <default action>                       (hex SCMP_ACT_* value)
 *   A <arch name>                            ("x86", "x32", ...)
 *   R <action> <syscall name> <n> { <arg> <op> <datum_a> <datum_b> }*n
 */
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
  char tag[4];
  scmp_filter_ctx ctx = NULL;
  while (scanf("%3s", tag) == 1) {
    if (strcmp(tag, "D") == 0) {
      unsigned int act;
      if (scanf("%x", &act) != 1) return 2;
      ctx = seccomp_init(act);
      if (!ctx) { fprintf(stderr, "seccomp_init failed\n"); return 2; }
      seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
      seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
    } else if (strcmp(tag, "A") == 0) {
      char name[32];
      if (scanf("%31s", name) != 1) return 2;
      uint32_t arch = seccomp_arch_resolve_name(name);
      int rc = seccomp_arch_add(ctx, arch);
      if (rc != 0 && rc != -EEXIST) { fprintf(stderr, "arch_add %s: %d\n", name, rc); return 2; }
    } else if (strcmp(tag, "R") == 0) {
      unsigned int act;
      char name[64];
      int n;
      struct scmp_arg_cmp conds[6];
      if (scanf("%x %63s %d", &act, name, &n) != 3 || n < 0 || n > 6) return 2;
      for (int i = 0; i < n; i++) {
        unsigned int arg, op;
        unsigned long long a, b;
        if (scanf("%u %u %llu %llu", &arg, &op, &a, &b) != 4) return 2;
        conds[i] = (struct scmp_arg_cmp){ .arg = arg, .op = (enum scmp_compare)op, .datum_a = a, .datum_b = b };
      }
      int nr = seccomp_syscall_resolve_name(name);
      if (nr == __NR_SCMP_ERROR) continue;
      int rc = seccomp_rule_add_array(ctx, act, nr, (unsigned int)n, conds);
      if (rc != 0) { fprintf(stderr, "rule_add %s: %d\n", name, rc); return 3; }
    }
  }
  if (!ctx) return 2;
  int rc = seccomp_export_bpf(ctx, 1);
  if (rc != 0) { fprintf(stderr, "export: %d\n", rc); return 2; }
  return 0;
}
