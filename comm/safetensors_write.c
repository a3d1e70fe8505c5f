/* safetensors_write: see safetensors_write.h. */
#include "safetensors_write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct sbuf {
  char *p;
  size_t n, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    b->cap = (b->n + n + 1) * 2;
    b->p = cmds_xrealloc(b->p, b->cap);
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
/* A JSON string literal with the characters JSON requires escaped. */
static void sb_json(sbuf *b, const char *s) {
  sb_put(b, "\"", 1);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char tmp[8];
    if (c == '"' || c == '\\') {
      tmp[0] = '\\';
      tmp[1] = (char)c;
      sb_put(b, tmp, 2);
    } else if (c < 0x20) {
      snprintf(tmp, sizeof tmp, "\\u%04x", c);
      sb_put(b, tmp, 6);
    } else {
      sb_put(b, (const char *)&c, 1);
    }
  }
  sb_put(b, "\"", 1);
}

int cmds_st_write(const char *path, const cmds_st_out *t, int n, const char *const *meta_kv,
                  int n_meta, cmds_error *err) {
  sbuf h = {0};
  char num[64];
  uint64_t off = 0;
  sb_str(&h, "{");
  if (n_meta > 0) {
    sb_str(&h, "\"__metadata__\":{");
    for (int i = 0; i < n_meta; i++) {
      if (i) sb_str(&h, ",");
      sb_json(&h, meta_kv[2 * i]);
      sb_str(&h, ":");
      sb_json(&h, meta_kv[2 * i + 1]);
    }
    sb_str(&h, "}");
  }
  for (int i = 0; i < n; i++) {
    if (t[i].ndim < 0 || t[i].ndim > CMDS_ST_MAX_DIMS || (int)t[i].dtype < 0 ||
        t[i].dtype >= CMDS_ST_NDTYPES) {
      free(h.p);
      return CMDS_FAIL(err, CMDS_EINTERNAL, "%s: tensor %s: bad dtype or rank", path, t[i].name);
    }
    uint64_t bytes = cmds_st_dtype_size(t[i].dtype);
    if (n_meta > 0 || i) sb_str(&h, ",");
    sb_json(&h, t[i].name);
    sb_str(&h, ":{\"dtype\":\"");
    sb_str(&h, cmds_st_dtype_name(t[i].dtype));
    sb_str(&h, "\",\"shape\":[");
    for (int d = 0; d < t[i].ndim; d++) {
      snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
      sb_str(&h, num);
      bytes *= (uint64_t)t[i].shape[d];
    }
    snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
             (unsigned long long)(off + bytes));
    sb_str(&h, num);
    off += bytes;
  }
  sb_str(&h, "}");
  while (h.n % 8) sb_str(&h, " ");

  size_t plen = strlen(path) + 5;
  char *tmp = cmds_xmalloc(plen);
  snprintf(tmp, plen, "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  int rc = CMDS_OK;
  if (!f) {
    rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    goto done;
  }
  unsigned char len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(((uint64_t)h.n >> (8 * i)) & 0xff);
  int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h.p, 1, h.n, f) == h.n;
  for (int i = 0; ok && i < n; i++) {
    size_t bytes = cmds_st_dtype_size(t[i].dtype);
    for (int d = 0; d < t[i].ndim; d++) bytes *= (size_t)t[i].shape[d];
    if (bytes && fwrite(t[i].data, 1, bytes, f) != bytes) ok = 0;
  }
  /* durable before it gets its final name: a crash leaves the old file or the new one */
  if (fflush(f) != 0 || fsync(fileno(f)) != 0) ok = 0;
  if (fclose(f) != 0) ok = 0;
  if (!ok) {
    rc = CMDS_FAIL(err, CMDS_EIO, "%s: write failed: %s", tmp, strerror(errno));
    remove(tmp);
    goto done;
  }
  if (rename(tmp, path) != 0) {
    rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    remove(tmp);
  }
done:
  free(tmp);
  free(h.p);
  return rc;
}
