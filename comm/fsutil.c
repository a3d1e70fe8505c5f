/* fsutil: see fsutil.h. */
#define _GNU_SOURCE
#include "fsutil.h"
#include "hash.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cmds_is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int cmds_is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int cmds_mkdir_p(const char *path, cmds_error *err) {
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: path too long", path);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
      return CMDS_FAIL(err, CMDS_EIO, "%s: cannot create folder: %s", tmp, strerror(errno));
    *p = '/';
  }
  if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
    return CMDS_FAIL(err, CMDS_EIO, "%s: cannot create folder: %s", tmp, strerror(errno));
  if (!cmds_is_dir(tmp)) return CMDS_FAIL(err, CMDS_EIO, "%s: exists and is not a folder", tmp);
  return CMDS_OK;
}

int cmds_write_file_atomic(const char *path, const void *data, size_t len, cmds_error *err) {
  char partial[4200];
  snprintf(partial, sizeof partial, "%s.partial", path);
  int fd = open(partial, O_WRONLY | O_CREAT | O_TRUNC, 0666);
  if (fd < 0) return CMDS_FAIL(err, CMDS_EIO, "%s: cannot create: %s", partial, strerror(errno));
  const char *p = data;
  size_t left = len;
  while (left > 0) {
    ssize_t w = write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int e = errno;
      close(fd);
      unlink(partial);
      return CMDS_FAIL(err, CMDS_EIO, "%s: write failed: %s", partial, strerror(e));
    }
    p += w;
    left -= (size_t)w;
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    unlink(partial);
    return CMDS_FAIL(err, CMDS_EIO, "%s: cannot flush: %s", partial, strerror(errno));
  }
  if (rename(partial, path) != 0) {
    int e = errno;
    unlink(partial);
    return CMDS_FAIL(err, CMDS_EIO, "%s: cannot rename into place: %s", path, strerror(e));
  }
  return CMDS_OK;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int cmds_list_dir(const char *dir, const char *suffix, int want, char ***names, cmds_error *err) {
  *names = NULL;
  DIR *d = opendir(dir);
  if (!d) {
    CMDS_FAIL(err, CMDS_EINPUT, "%s: cannot open folder: %s", dir, strerror(errno));
    return -1;
  }
  int n = 0, cap = 0;
  char **v = NULL;
  size_t sl = suffix ? strlen(suffix) : 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    size_t l = strlen(e->d_name);
    if (sl && (l < sl || strcmp(e->d_name + l - sl, suffix) != 0)) continue;
    if (want) {
      char full[4096];
      snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
      if (want == 1 && !cmds_is_file(full)) continue;
      if (want == 2 && !cmds_is_dir(full)) continue;
    }
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      v = cmds_xrealloc(v, (size_t)cap * sizeof *v);
    }
    v[n++] = cmds_xstrdup(e->d_name);
  }
  closedir(d);
  if (n) qsort(v, (size_t)n, sizeof *v, cmp_str);
  *names = v;
  return n;
}

void cmds_free_list(char **names, int n) {
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
}

char *cmds_path_join(char *out, size_t cap, const char *a, const char *b, const char *c,
                     const char *d) {
  const char *parts[4] = {a, b, c, d};
  size_t len = 0;
  out[0] = 0;
  for (int i = 0; i < 4; i++) {
    if (!parts[i] || !parts[i][0]) continue;
    int w = snprintf(out + len, cap - len, "%s%s", len && out[len - 1] != '/' ? "/" : "", parts[i]);
    if (w < 0 || (size_t)w >= cap - len) CMDS_PANIC("path too long joining %s", parts[i]);
    len += (size_t)w;
  }
  return out;
}

int cmds_split_commas(const char *list, char ***items) {
  char *copy = cmds_xstrdup(list), *save = NULL;
  int n = 0;
  *items = NULL;
  for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    *items = cmds_xrealloc(*items, sizeof(char *) * (size_t)(n + 1));
    (*items)[n++] = cmds_xstrdup(t);
  }
  free(copy);
  return n;
}

int cmds_file_identity(const char *path, char *out, size_t cap, cmds_error *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return CMDS_FAIL(err, CMDS_EINPUT, "%s: cannot open: %s", path, strerror(errno));
  uint64_t h = 0x9E3779B97F4A7C15ull, n = 0;
  unsigned char buf[1 << 16];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
    h = cmds_fnv64(h, buf, got);
    n += got;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) return CMDS_FAIL(err, CMDS_EIO, "%s: read error", path);
  snprintf(out, cap, "fnv64:%016llx:%llu", (unsigned long long)h, (unsigned long long)n);
  return CMDS_OK;
}

int cmds_copy_file_atomic(const char *src, const char *dst, cmds_error *err) {
  char tmp[4400];
  snprintf(tmp, sizeof tmp, "%s.copy", dst);
  FILE *in = fopen(src, "rb");
  if (!in) return CMDS_FAIL(err, CMDS_EIO, "%s: cannot open for copying", src);
  FILE *out = fopen(tmp, "wb");
  if (!out) {
    fclose(in);
    return CMDS_FAIL(err, CMDS_EIO, "%s: cannot create (is the cache folder writable?)", tmp);
  }
  char *buf = cmds_xmalloc(1 << 20);
  size_t k;
  int rc = CMDS_OK;
  while ((k = fread(buf, 1, 1 << 20, in)) > 0)
    if (fwrite(buf, 1, k, out) != k) {
      rc = CMDS_FAIL(err, CMDS_EIO, "%s: write failed (disk full?)", tmp);
      break;
    }
  if (!rc && ferror(in)) rc = CMDS_FAIL(err, CMDS_EIO, "%s: read failed", src);
  free(buf);
  fclose(in);
  if (fflush(out) || fsync(fileno(out))) rc = rc ? rc : CMDS_FAIL(err, CMDS_EIO, "%s: flush failed", tmp);
  fclose(out);
  if (!rc && rename(tmp, dst) != 0) rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot rename to %s", tmp, dst);
  if (rc) unlink(tmp);
  return rc;
}
