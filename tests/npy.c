/* npy: see npy.h. */
#include "npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int npy_load(const char *path, npy_array *a) {
  memset(a, 0, sizeof *a);
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "npy: cannot open %s\n", path);
    return -1;
  }
  unsigned char magic[8];
  if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "\x93NUMPY", 6) != 0) {
    fprintf(stderr, "npy: %s is not a .npy file\n", path);
    fclose(f);
    return -1;
  }
  uint32_t hlen = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    if (fread(b, 1, 2, f) != 2) goto bad;
    hlen = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    if (fread(b, 1, 4, f) != 4) goto bad;
    hlen = b[0] | (b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
  }
  char *h = calloc(hlen + 1, 1);
  if (fread(h, 1, hlen, f) != hlen) {
    free(h);
    goto bad;
  }
  char *d = strstr(h, "'descr':");
  char *o = strstr(h, "'fortran_order':");
  char *s = strstr(h, "'shape':");
  if (!d || !o || !s || strstr(o, "True") == o + 17) {
    fprintf(stderr, "npy: %s: unsupported header %s\n", path, h);
    free(h);
    fclose(f);
    return -1;
  }
  d = strchr(d + 8, '\'');
  if (!d || (d[1] != '<' && d[1] != '|')) {
    fprintf(stderr, "npy: %s: only little-endian dtypes\n", path);
    free(h);
    fclose(f);
    return -1;
  }
  size_t k = 0;
  for (d += 2; *d && *d != '\'' && k < sizeof a->dtype - 1; d++) a->dtype[k++] = *d;
  a->itemsize = (size_t)atoi(a->dtype + 1);
  s = strchr(s, '(');
  a->count = 1;
  for (char *p = s + 1; *p && *p != ')';) {
    while (*p == ' ' || *p == ',') p++;
    if (*p == ')') break;
    a->shape[a->ndim++] = strtoll(p, &p, 10);
    a->count *= a->shape[a->ndim - 1];
  }
  free(h);
  size_t bytes = (size_t)a->count * a->itemsize;
  a->data = malloc(bytes ? bytes : 1);
  if (fread(a->data, 1, bytes, f) != bytes) {
    free(a->data);
    a->data = NULL;
    goto bad;
  }
  fclose(f);
  return 0;
bad:
  fprintf(stderr, "npy: %s is truncated\n", path);
  fclose(f);
  return -1;
}

void npy_free(npy_array *a) {
  free(a->data);
  memset(a, 0, sizeof *a);
}

double npy_get(const npy_array *a, int64_t i) {
  const char *t = a->dtype;
  if (!strcmp(t, "f4")) return ((const float *)a->data)[i];
  if (!strcmp(t, "f8")) return ((const double *)a->data)[i];
  if (!strcmp(t, "u1") || !strcmp(t, "b1")) return ((const uint8_t *)a->data)[i];
  if (!strcmp(t, "u2")) return ((const uint16_t *)a->data)[i];
  if (!strcmp(t, "i4")) return ((const int32_t *)a->data)[i];
  if (!strcmp(t, "i8")) return (double)((const int64_t *)a->data)[i];
  if (!strcmp(t, "u4")) return ((const uint32_t *)a->data)[i];
  fprintf(stderr, "npy: unsupported dtype %s\n", t);
  abort();
}
