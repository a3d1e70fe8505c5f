/* safetensors: header validation and memory-mapped tensor access (see safetensors.h).
 * The JSON parser accepts exactly what a safetensors header may hold: one object whose
 * values are tensor records {dtype, shape, data_offsets} or, under "__metadata__", an
 * object of strings. Anything else is rejected with the byte offset where it went wrong. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The reference implementation refuses headers above 100 MB; so do we (a corrupt length
 * would otherwise make us parse the weights as JSON). */
#define ST_MAX_HEADER_BYTES (100u * 1000u * 1000u)

static const struct { const char *name; size_t size; } st_dtypes[CMDS_ST_NDTYPES] = {
  [CMDS_ST_BOOL] = {"BOOL", 1}, [CMDS_ST_U8] = {"U8", 1}, [CMDS_ST_I8] = {"I8", 1},
  [CMDS_ST_F8_E4M3] = {"F8_E4M3", 1}, [CMDS_ST_F8_E5M2] = {"F8_E5M2", 1},
  [CMDS_ST_I16] = {"I16", 2}, [CMDS_ST_U16] = {"U16", 2}, [CMDS_ST_F16] = {"F16", 2},
  [CMDS_ST_BF16] = {"BF16", 2}, [CMDS_ST_I32] = {"I32", 4}, [CMDS_ST_U32] = {"U32", 4},
  [CMDS_ST_F32] = {"F32", 4}, [CMDS_ST_I64] = {"I64", 8}, [CMDS_ST_U64] = {"U64", 8},
  [CMDS_ST_F64] = {"F64", 8},
};

size_t cmds_st_dtype_size(cmds_st_dtype t) { return (unsigned)t < CMDS_ST_NDTYPES ? st_dtypes[t].size : 0; }
const char *cmds_st_dtype_name(cmds_st_dtype t) { return (unsigned)t < CMDS_ST_NDTYPES ? st_dtypes[t].name : "?"; }

/* ---- JSON ---- */
typedef struct st_parser {
  const char *s;
  size_t n, i;
  const char *what;
  cmds_error *err;
} st_parser;

static int st_bad(st_parser *p, const char *expected) {
  if (p->i >= p->n)
    return CMDS_FAIL(p->err, CMDS_EINPUT, "%s: header JSON ends early, %s expected", p->what, expected);
  return CMDS_FAIL(p->err, CMDS_EINPUT, "%s: invalid header JSON at byte %zu ('%c'): %s expected",
                   p->what, p->i, (p->s[p->i] >= 32 && p->s[p->i] < 127) ? p->s[p->i] : '?', expected);
}

static void st_ws(st_parser *p) {
  while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r')) p->i++;
}

static int st_expect_char(st_parser *p, char c, const char *what) {
  st_ws(p);
  if (p->i >= p->n || p->s[p->i] != c) return st_bad(p, what);
  p->i++;
  return 0;
}

static int st_hex4(st_parser *p, unsigned *v) {
  *v = 0;
  for (int k = 0; k < 4; k++, p->i++) {
    if (p->i >= p->n) return st_bad(p, "4 hex digits");
    char c = p->s[p->i];
    unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0') : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
               : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16u;
    if (d == 16) return st_bad(p, "a hex digit");
    *v = *v * 16 + d;
  }
  return 0;
}

/* A JSON string into a new malloc'd UTF-8 buffer. */
static int st_string(st_parser *p, char **out) {
  *out = NULL;
  if (st_expect_char(p, '"', "a string")) return p->err->code;
  size_t cap = 32, len = 0;
  char *b = cmds_xmalloc(cap);
  for (;;) {
    if (p->i >= p->n) { free(b); return st_bad(p, "a closing '\"'"); }
    unsigned char c = (unsigned char)p->s[p->i++];
    unsigned cp;
    if (c == '"') break;
    if (c < 0x20) { p->i--; free(b); return st_bad(p, "no control characters in a string"); }
    if (len + 5 > cap) b = cmds_xrealloc(b, cap *= 2);
    if (c != '\\') { b[len++] = (char)c; continue; }
    if (p->i >= p->n) { free(b); return st_bad(p, "an escape"); }
    char e = p->s[p->i++];
    switch (e) {
      case '"': case '\\': case '/': b[len++] = e; continue;
      case 'b': b[len++] = '\b'; continue;
      case 'f': b[len++] = '\f'; continue;
      case 'n': b[len++] = '\n'; continue;
      case 'r': b[len++] = '\r'; continue;
      case 't': b[len++] = '\t'; continue;
      case 'u': break;
      default: p->i--; free(b); return st_bad(p, "a valid escape");
    }
    if (st_hex4(p, &cp)) { free(b); return p->err->code; }
    if (cp >= 0xd800 && cp < 0xdc00) { /* surrogate pair */
      unsigned lo;
      if (p->i + 2 > p->n || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u') { free(b); return st_bad(p, "a low surrogate"); }
      p->i += 2;
      if (st_hex4(p, &lo)) { free(b); return p->err->code; }
      if (lo < 0xdc00 || lo > 0xdfff) { free(b); return st_bad(p, "a low surrogate"); }
      cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    if (cp < 0x80) b[len++] = (char)cp;
    else if (cp < 0x800) { b[len++] = (char)(0xc0 | (cp >> 6)); b[len++] = (char)(0x80 | (cp & 0x3f)); }
    else if (cp < 0x10000) {
      b[len++] = (char)(0xe0 | (cp >> 12)); b[len++] = (char)(0x80 | ((cp >> 6) & 0x3f));
      b[len++] = (char)(0x80 | (cp & 0x3f));
    } else {
      b[len++] = (char)(0xf0 | (cp >> 18)); b[len++] = (char)(0x80 | ((cp >> 12) & 0x3f));
      b[len++] = (char)(0x80 | ((cp >> 6) & 0x3f)); b[len++] = (char)(0x80 | (cp & 0x3f));
    }
  }
  b[len] = 0;
  *out = b;
  return 0;
}

/* A non-negative integer (no sign, fraction or exponent: shapes and offsets). */
static int st_uint(st_parser *p, uint64_t *v) {
  st_ws(p);
  if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') return st_bad(p, "a non-negative integer");
  *v = 0;
  while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
    unsigned d = (unsigned)(p->s[p->i] - '0');
    if (*v > (UINT64_MAX - d) / 10) return st_bad(p, "an integer below 2^64");
    *v = *v * 10 + d;
    p->i++;
  }
  if (p->i < p->n && (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E')) return st_bad(p, "an integer");
  return 0;
}

/* [u, u, ...] into v (at most max values); *count gets how many. */
static int st_uint_array(st_parser *p, uint64_t *v, int max, int *count, const char *what) {
  *count = 0;
  if (st_expect_char(p, '[', what)) return p->err->code;
  st_ws(p);
  if (p->i < p->n && p->s[p->i] == ']') { p->i++; return 0; }
  for (;;) {
    if (*count == max) return st_bad(p, what);
    if (st_uint(p, &v[(*count)++])) return p->err->code;
    st_ws(p);
    if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
    return st_expect_char(p, ']', "',' or ']'");
  }
}

/* Iterates "key": value pairs of an object: returns 1 with *key set, 0 at '}', <0 on error. */
static int st_object_next(st_parser *p, int first, char **key) {
  st_ws(p);
  if (p->i < p->n && p->s[p->i] == '}') { p->i++; return 0; }
  if (!first && st_expect_char(p, ',', "',' or '}'")) return -1;
  if (st_string(p, key)) return -1;
  if (st_expect_char(p, ':', "':'")) { free(*key); *key = NULL; return -1; }
  return 1;
}

static int st_tensor_record(st_parser *p, cmds_st_tensor *t) {
  int have_dtype = 0, have_shape = 0, have_offsets = 0, r;
  char *key = NULL;
  if (st_expect_char(p, '{', "a tensor record {dtype, shape, data_offsets}")) return p->err->code;
  for (int first = 1; (r = st_object_next(p, first, &key)) == 1; first = 0) {
    int rc = 0;
    if (!strcmp(key, "dtype")) {
      char *d;
      size_t at = p->i;
      if ((rc = st_string(p, &d)) == 0) {
        int k;
        for (k = 0; k < CMDS_ST_NDTYPES && strcmp(d, st_dtypes[k].name); k++) {}
        if (k == CMDS_ST_NDTYPES)
          rc = CMDS_FAIL(p->err, CMDS_EINPUT, "%s: tensor '%s': unknown dtype \"%s\" (at byte %zu)", p->what,
                         t->name, d, at);
        t->dtype = (cmds_st_dtype)k;
        free(d);
      }
      have_dtype = 1;
    } else if (!strcmp(key, "shape")) {
      uint64_t v[CMDS_ST_MAX_DIMS];
      rc = st_uint_array(p, v, CMDS_ST_MAX_DIMS, &t->ndim, "a shape of at most 8 dims");
      for (int k = 0; !rc && k < t->ndim; k++) {
        if (v[k] > (uint64_t)INT64_MAX) rc = st_bad(p, "a dim below 2^63");
        t->shape[k] = (int64_t)v[k];
      }
      have_shape = 1;
    } else if (!strcmp(key, "data_offsets")) {
      uint64_t v[2];
      int cnt;
      rc = st_uint_array(p, v, 2, &cnt, "data_offsets [begin, end]");
      if (!rc && cnt != 2) rc = st_bad(p, "data_offsets with 2 values");
      t->begin = v[0];
      t->end = v[1];
      have_offsets = 1;
    } else {
      rc = CMDS_FAIL(p->err, CMDS_EINPUT, "%s: tensor '%s': unexpected field \"%s\"", p->what, t->name, key);
    }
    free(key);
    key = NULL;
    if (rc) return rc;
  }
  if (r < 0) return p->err->code;
  if (!have_dtype || !have_shape || !have_offsets)
    return CMDS_FAIL(p->err, CMDS_EINPUT, "%s: tensor '%s' lacks %s", p->what, t->name,
                     !have_dtype ? "\"dtype\"" : !have_shape ? "\"shape\"" : "\"data_offsets\"");
  return 0;
}

static int st_metadata(st_parser *p, cmds_st_file *f) {
  char *key = NULL;
  int r;
  if (st_expect_char(p, '{', "__metadata__ as an object of strings")) return p->err->code;
  for (int first = 1; (r = st_object_next(p, first, &key)) == 1; first = 0) {
    char *val;
    if (st_string(p, &val)) {
      free(key);
      return cmds_error_wrap(p->err, "__metadata__ values must be strings");
    }
    f->meta_keys = cmds_xrealloc(f->meta_keys, (size_t)(f->n_meta + 1) * sizeof(char *));
    f->meta_values = cmds_xrealloc(f->meta_values, (size_t)(f->n_meta + 1) * sizeof(char *));
    f->meta_keys[f->n_meta] = key;
    f->meta_values[f->n_meta++] = val;
  }
  return r < 0 ? p->err->code : 0;
}

static int st_cmp_begin(const void *a, const void *b) {
  const cmds_st_tensor *x = a, *y = b;
  return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

static int st_cmp_name(const void *a, const void *b) {
  return strcmp((*(const cmds_st_tensor *const *)a)->name, (*(const cmds_st_tensor *const *)b)->name);
}

/* Shape x dtype size must equal end - begin, inside the data area; no overlaps. */
static int st_validate(cmds_st_file *f, const char *what, uint64_t data_bytes, cmds_error *err) {
  for (int i = 0; i < f->n_tensors; i++) {
    cmds_st_tensor *t = &f->tensors[i];
    if (t->begin > t->end)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: tensor '%s': data_offsets [%llu, %llu) run backwards", what,
                       t->name, (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > data_bytes)
      return CMDS_FAIL(err, CMDS_EINPUT,
                       "%s: tensor '%s': data_offsets [%llu, %llu) end past the data area of %llu bytes "
                       "(file truncated?)", what, t->name, (unsigned long long)t->begin,
                       (unsigned long long)t->end, (unsigned long long)data_bytes);
    unsigned __int128 bytes = cmds_st_dtype_size(t->dtype);
    for (int k = 0; k < t->ndim; k++) bytes *= (uint64_t)t->shape[k];
    if (bytes != (unsigned __int128)(t->end - t->begin))
      return CMDS_FAIL(err, CMDS_EINPUT,
                       "%s: tensor '%s': shape and dtype %s give %llu bytes but data_offsets [%llu, %llu) "
                       "hold %llu", what, t->name, cmds_st_dtype_name(t->dtype),
                       bytes > UINT64_MAX ? (unsigned long long)UINT64_MAX : (unsigned long long)bytes,
                       (unsigned long long)t->begin, (unsigned long long)t->end,
                       (unsigned long long)(t->end - t->begin));
  }
  qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, st_cmp_begin);
  for (int i = 1; i < f->n_tensors; i++) {
    const cmds_st_tensor *a = &f->tensors[i - 1], *b = &f->tensors[i];
    if (b->begin < a->end && b->end > b->begin)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap", what,
                       a->name, (unsigned long long)a->begin, (unsigned long long)a->end, b->name,
                       (unsigned long long)b->begin, (unsigned long long)b->end);
  }
  /* duplicate names: JSON allows them, a weight file must not */
  const cmds_st_tensor **byname = cmds_xmalloc((size_t)(f->n_tensors + 1) * sizeof *byname);
  for (int i = 0; i < f->n_tensors; i++) byname[i] = &f->tensors[i];
  qsort(byname, (size_t)f->n_tensors, sizeof *byname, st_cmp_name);
  int rc = 0;
  for (int i = 1; i < f->n_tensors && !rc; i++)
    if (!strcmp(byname[i]->name, byname[i - 1]->name))
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: tensor '%s' appears twice in the header", what, byname[i]->name);
  free(byname);
  return rc;
}

int cmds_st_parse_header(cmds_st_file *f, const char *what, const char *json, size_t n,
                         uint64_t data_bytes, cmds_error *err) {
  st_parser p = {json, n, 0, what, err};
  int r, rc = 0;
  char *key = NULL;
  if (st_expect_char(&p, '{', "the header object '{'")) return err->code;
  for (int first = 1; (r = st_object_next(&p, first, &key)) == 1; first = 0) {
    if (!strcmp(key, "__metadata__")) {
      free(key);
      if ((rc = st_metadata(&p, f))) return rc;
      continue;
    }
    f->tensors = cmds_xrealloc(f->tensors, (size_t)(f->n_tensors + 1) * sizeof *f->tensors);
    cmds_st_tensor *t = &f->tensors[f->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = key;
    if ((rc = st_tensor_record(&p, t))) return rc;
  }
  if (r < 0) return err->code;
  st_ws(&p);
  if (p.i != p.n) return st_bad(&p, "only spaces after the header object");
  return st_validate(f, what, data_bytes, err);
}

int cmds_st_open(cmds_st_file *f, const char *path, cmds_error *err) {
  memset(f, 0, sizeof *f);
  f->path = cmds_xstrdup(path);
  int fd = open(path, O_RDONLY);
  if (fd < 0) {
    CMDS_FAIL(err, CMDS_EIO, "%s: cannot open: %s", path, strerror(errno));
    cmds_st_close(f);
    return CMDS_EIO;
  }
  struct stat st;
  int rc = 0;
  if (fstat(fd, &st) != 0) rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot stat: %s", path, strerror(errno));
  else if (st.st_size < 8)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: %lld bytes, too short for the 8-byte header length (truncated?)",
                   path, (long long)st.st_size);
  if (!rc) {
    f->map_bytes = (size_t)st.st_size;
    f->map = mmap(NULL, f->map_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (f->map == MAP_FAILED) {
      f->map = NULL;
      rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot map: %s", path, strerror(errno));
    }
  }
  close(fd);
  if (!rc) {
    const unsigned char *b = f->map;
    uint64_t n = 0;
    for (int k = 7; k >= 0; k--) n = n << 8 | b[k];
    f->header_bytes = n;
    if (n > f->map_bytes - 8)
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: header length %llu runs past the end of the file (%zu bytes)",
                     path, (unsigned long long)n, f->map_bytes);
    else if (n > ST_MAX_HEADER_BYTES)
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: header length %llu above the 100 MB limit", path, (unsigned long long)n);
    else if (n < 2)
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: header length %llu, a JSON object expected", path, (unsigned long long)n);
  }
  if (!rc) {
    f->data_bytes = f->map_bytes - 8 - f->header_bytes;
    rc = cmds_st_parse_header(f, path, (const char *)f->map + 8, f->header_bytes, f->data_bytes, err);
  }
  if (rc) {
    cmds_st_close(f);
    return rc;
  }
  const char *data = (const char *)f->map + 8 + f->header_bytes;
  for (int i = 0; i < f->n_tensors; i++) f->tensors[i].data = data + f->tensors[i].begin;
  return 0;
}

void cmds_st_close(cmds_st_file *f) {
  if (f->map) munmap(f->map, f->map_bytes);
  for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
  for (int i = 0; i < f->n_meta; i++) {
    free(f->meta_keys[i]);
    free(f->meta_values[i]);
  }
  free(f->tensors);
  free(f->meta_keys);
  free(f->meta_values);
  free(f->path);
  memset(f, 0, sizeof *f);
}

const cmds_st_tensor *cmds_st_find(const cmds_st_file *f, const char *name) {
  for (int i = 0; i < f->n_tensors; i++)
    if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
  return NULL;
}

const char *cmds_st_meta(const cmds_st_file *f, const char *key) {
  for (int i = 0; i < f->n_meta; i++)
    if (!strcmp(f->meta_keys[i], key)) return f->meta_values[i];
  return NULL;
}

static void st_shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
  size_t k = (size_t)snprintf(buf, n, "(");
  for (int i = 0; i < ndim && k < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (k < n) snprintf(buf + k, n - k, ")");
}

static int st_shape_eq(const cmds_st_tensor *t, int ndim, const int64_t *shape) {
  if (ndim < 0) return 1;
  if (t->ndim != ndim) return 0;
  for (int i = 0; i < ndim; i++)
    if (t->shape[i] != shape[i]) return 0;
  return 1;
}

int cmds_st_get(const cmds_st_file *f, const char *name, cmds_st_dtype dtype, int ndim,
                const int64_t *shape, const cmds_st_tensor **out, cmds_error *err) {
  const cmds_st_tensor *t = cmds_st_find(f, name);
  char got[160], want[160];
  *out = NULL;
  if (!t) return CMDS_FAIL(err, CMDS_EINPUT, "%s: no tensor '%s'", f->path, name);
  if (t->dtype != dtype)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: tensor '%s' is %s, %s expected", f->path, name,
                     cmds_st_dtype_name(t->dtype), cmds_st_dtype_name(dtype));
  if (!st_shape_eq(t, ndim, shape)) {
    st_shape_str(got, sizeof got, t->ndim, t->shape);
    st_shape_str(want, sizeof want, ndim, shape);
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: tensor '%s' has shape %s, %s expected", f->path, name, got, want);
  }
  *out = t;
  return 0;
}

int cmds_st_check_names(const cmds_st_file *f, const cmds_st_expect *table, int n, cmds_error *err) {
  char msg[sizeof err->msg], got[160], want[160];
  size_t len = 0, room = sizeof msg - 48; /* keep space for the "... and N more" tail */
  int missing = 0, wrong = 0, listed = 0;
  msg[0] = 0;
  for (int i = 0; i < n; i++) {
    const cmds_st_tensor *t = cmds_st_find(f, table[i].name);
    char item[512];
    if (!t) {
      missing++;
      snprintf(item, sizeof item, "; missing '%s'", table[i].name);
    } else if (!st_shape_eq(t, table[i].ndim, table[i].shape)) {
      wrong++;
      st_shape_str(got, sizeof got, t->ndim, t->shape);
      st_shape_str(want, sizeof want, table[i].ndim, table[i].shape);
      snprintf(item, sizeof item, "; '%s' has shape %s, %s expected", table[i].name, got, want);
    } else {
      continue;
    }
    size_t k = strlen(item);
    if (len + k < room) {
      memcpy(msg + len, item, k + 1);
      len += k;
      listed++;
    }
  }
  if (!missing && !wrong) return 0;
  if (listed < missing + wrong) snprintf(msg + len, sizeof msg - len, "; ... and %d more", missing + wrong - listed);
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: %d of %d expected tensors missing, %d with a wrong shape%s", f->path,
                   missing, n, wrong, msg);
}
