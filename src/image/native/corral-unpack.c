/*
 * corral-unpack: the two file operations Node cannot do, for the layer unpacker.
 *
 *   corral-unpack <root-dir>
 *
 * Reads one request per line on stdin and answers each with one line on stdout:
 *   mknod <hex path> <octal mode incl. file type> <major> <minor>   -> mknodat
 *   xattr <hex path> <hex name> <hex value>                          -> lsetxattr (no follow)
 *   getxattr <hex path> <hex name>                                   -> "ok <hex value>" (lgetxattr)
 *   ping
 * Answers: "ok" or "err <errno> <text>". Paths are relative to <root-dir> and hex
 * encoded (any byte may occur in a tar name). The parent directory is opened with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS): no request
 * can reach outside the root or through a symlink. It makes no policy decisions.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

static int rootfd = -1;

static int unhex(const char *s, unsigned char *out, size_t max, size_t *len) {
  size_t n = strlen(s);
  if (n % 2 || n / 2 > max) return -1;
  for (size_t i = 0; i < n / 2; i++) {
    unsigned v;
    if (sscanf(s + 2 * i, "%2x", &v) != 1) return -1;
    out[i] = (unsigned char)v;
  }
  *len = n / 2;
  return 0;
}

/* Open the parent of rel (NUL-terminated) beneath the root; *base points into rel. */
static int open_parent(char *rel, char **base) {
  char *slash = strrchr(rel, '/');
  const char *dir = ".";
  if (slash) {
    *slash = 0;
    dir = rel;
    *base = slash + 1;
  } else {
    *base = rel;
  }
  if (**base == 0 || strcmp(*base, ".") == 0 || strcmp(*base, "..") == 0) {
    errno = EINVAL;
    return -1;
  }
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  return (int)syscall(SYS_openat2, rootfd, dir, &how, sizeof how);
}

static void reply_err(int e, const char *what) {
  printf("err %d %s: %s\n", e, what, strerror(e));
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: corral-unpack <root-dir>\n");
    return 2;
  }
  rootfd = open(argv[1], O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) {
    perror("open root");
    return 1;
  }
  size_t cap = 0;
  char *line = NULL;
  ssize_t n;
  static unsigned char path[8192], name[1024], value[65536];
  while ((n = getline(&line, &cap, stdin)) > 0) {
    if (line[n - 1] == '\n') line[n - 1] = 0;
    char *save = NULL;
    char *op = strtok_r(line, " ", &save);
    if (!op) { reply_err(EINVAL, "empty request"); continue; }
    if (strcmp(op, "ping") == 0) { printf("ok\n"); fflush(stdout); continue; }
    char *hpath = strtok_r(NULL, " ", &save);
    size_t plen;
    if (!hpath || unhex(hpath, path, sizeof path - 1, &plen) || plen == 0 || memchr(path, 0, plen)) {
      reply_err(EINVAL, "bad path"); continue;
    }
    path[plen] = 0;
    char *base;
    int pfd = open_parent((char *)path, &base);
    if (pfd < 0) { reply_err(errno, "open parent"); continue; }
    if (strcmp(op, "mknod") == 0) {
      char *m = strtok_r(NULL, " ", &save), *ma = strtok_r(NULL, " ", &save), *mi = strtok_r(NULL, " ", &save);
      if (!m || !ma || !mi) { close(pfd); reply_err(EINVAL, "mknod needs mode major minor"); continue; }
      mode_t mode = (mode_t)strtoul(m, NULL, 8);
      dev_t dev = makedev(strtoul(ma, NULL, 10), strtoul(mi, NULL, 10));
      mode_t type = mode & S_IFMT;
      if (type != S_IFCHR && type != S_IFBLK && type != S_IFIFO) { close(pfd); reply_err(EINVAL, "mknod type"); continue; }
      if (mknodat(pfd, base, mode, dev) < 0) { int e = errno; close(pfd); reply_err(e, "mknod"); continue; }
    } else if (strcmp(op, "xattr") == 0) {
      char *hn = strtok_r(NULL, " ", &save), *hv = strtok_r(NULL, " ", &save);
      size_t nlen, vlen = 0;
      if (!hn || unhex(hn, name, sizeof name - 1, &nlen) || nlen == 0 || memchr(name, 0, nlen)) {
        close(pfd); reply_err(EINVAL, "bad xattr name"); continue;
      }
      name[nlen] = 0;
      if (hv && unhex(hv, value, sizeof value, &vlen)) { close(pfd); reply_err(EINVAL, "bad xattr value"); continue; }
      char proc[64 + sizeof path];
      snprintf(proc, sizeof proc, "/proc/self/fd/%d/%s", pfd, base);
      if (lsetxattr(proc, (char *)name, value, vlen, 0) < 0) { int e = errno; close(pfd); reply_err(e, "lsetxattr"); continue; }
    } else if (strcmp(op, "getxattr") == 0) {
      char *hn = strtok_r(NULL, " ", &save);
      size_t nlen;
      if (!hn || unhex(hn, name, sizeof name - 1, &nlen) || nlen == 0) { close(pfd); reply_err(EINVAL, "bad xattr name"); continue; }
      name[nlen] = 0;
      char proc[64 + sizeof path];
      snprintf(proc, sizeof proc, "/proc/self/fd/%d/%s", pfd, base);
      ssize_t got = lgetxattr(proc, (char *)name, value, sizeof value);
      int e = errno;
      close(pfd);
      if (got < 0) { reply_err(e, "lgetxattr"); continue; }
      printf("ok ");
      for (ssize_t i = 0; i < got; i++) printf("%02x", value[i]);
      printf("\n");
      fflush(stdout);
      continue;
    } else {
      close(pfd); reply_err(EINVAL, "unknown op"); continue;
    }
    close(pfd);
    printf("ok\n");
    fflush(stdout);
  }
  free(line);
  return 0;
}
