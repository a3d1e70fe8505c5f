/* safetensors: header validation and memory-mapped tensor access (see safetensors.h).
 * The header is parsed by comm/jsonread (syntax errors name the byte offset; duplicate
 * names are rejected there), then must hold exactly one object whose values are tensor
 * records {dtype, shape, data_offsets} or, under "__metadata__", an object of strings. */
#include "safetensors.h"

#include "jsonread.h"

#include <errno.h>
#include <math.h>
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

/* ---- header ---- */
/* The header is read with comm/jsonread into a tree, then checked field by field. */

/* A non-negative integer JSON value (exact: below 2^53). */
static int st_uint(const cmds_jv *v, const char *what, const char *name, const char *field, uint64_t *out,
                   cmds_error *err) {
  if (v->type != CMDS_JV_NUM || v->num < 0 || v->num != floor(v->num) || v->num > 9007199254740992.0)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: tensor '%s': \"%s\" must hold non-negative integers below 2^53", what,
                     name, field);
  *out = (uint64_t)v->num;
  return 0;
}

static int st_tensor_record(const cmds_jv *rec, const char *what, cmds_st_tensor *t, cmds_error *err) {
  if (rec->type != CMDS_JV_OBJ)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: tensor '%s': a record {dtype, shape, data_offsets} expected, got %s", what,
                     t->name, cmds_jv_type_name(rec->type));
  int have_dtype = 0, have_shape = 0, have_offsets = 0;
  for (int64_t m = 0; m < rec->n; m++) {
    const char *key = rec->keys[m];
    const cmds_jv *v = &rec->items[m];
    if (!strcmp(key, "dtype")) {
      if (v->type != CMDS_JV_STR)
        return CMDS_FAIL(err, CMDS_EINPUT, "%s: tensor '%s': \"dtype\" must be a string", what, t->name);
      int k;
      for (k = 0; k < CMDS_ST_NDTYPES && strcmp(v->str, st_dtypes[k].name); k++) {}
      if (k == CMDS_ST_NDTYPES)
        return CMDS_FAIL(err, CMDS_EINPUT, "%s: tensor '%s': unknown dtype \"%s\"", what, t->name, v->str);
      t->dtype = (cmds_st_dtype)k;
      have_dtype = 1;
    } else if (!strcmp(key, "shape")) {
      if (v->type != CMDS_JV_ARR || v->n > CMDS_ST_MAX_DIMS)
        return CMDS_FAIL(err, CMDS_EINPUT, "%s: tensor '%s': \"shape\" must be a list of at most 8 dims", what,
                         t->name);
      t->ndim = (int)v->n;
      for (int k = 0; k < t->ndim; k++) {
        uint64_t d = 0;
        int rc = st_uint(&v->items[k], what, t->name, "shape", &d, err);
        if (rc) return rc;
        t->shape[k] = (int64_t)d;
      }
      have_shape = 1;
    } else if (!strcmp(key, "data_offsets")) {
      if (v->type != CMDS_JV_ARR || v->n != 2)
        return CMDS_FAIL(err, CMDS_EINPUT, "%s: tensor '%s': \"data_offsets\" must be [begin, end]", what, t->name);
      int rc = st_uint(&v->items[0], what, t->name, "data_offsets", &t->begin, err);
      if (!rc) rc = st_uint(&v->items[1], what, t->name, "data_offsets", &t->end, err);
      if (rc) return rc;
      have_offsets = 1;
    } else {
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: tensor '%s': unexpected field \"%s\"", what, t->name, key);
    }
  }
  if (!have_dtype || !have_shape || !have_offsets)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: tensor '%s' lacks %s", what, t->name,
                     !have_dtype ? "\"dtype\"" : !have_shape ? "\"shape\"" : "\"data_offsets\"");
  return 0;
}

static int st_metadata(const cmds_jv *meta, const char *what, cmds_st_file *f, cmds_error *err) {
  if (meta->type != CMDS_JV_OBJ)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: __metadata__ must be an object of strings", what);
  f->meta_keys = cmds_xcalloc((size_t)meta->n + 1, sizeof(char *));
  f->meta_values = cmds_xcalloc((size_t)meta->n + 1, sizeof(char *));
  for (int64_t m = 0; m < meta->n; m++) {
    if (meta->items[m].type != CMDS_JV_STR)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: __metadata__ values must be strings ('%s' is %s)", what, meta->keys[m],
                       cmds_jv_type_name(meta->items[m].type));
    f->meta_keys[f->n_meta] = cmds_xstrdup(meta->keys[m]);
    f->meta_values[f->n_meta++] = cmds_xstrdup(meta->items[m].str);
  }
  return 0;
}

static int st_cmp_begin(const void *a, const void *b) {
  const cmds_st_tensor *x = a, *y = b;
  return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
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
  return 0;
}

int cmds_st_parse_header(cmds_st_file *f, const char *what, const char *json, size_t n,
                         uint64_t data_bytes, cmds_error *err) {
  size_t i = 0;
  while (i < n && (json[i] == ' ' || json[i] == '\t' || json[i] == '\n' || json[i] == '\r')) i++;
  if (i == n || json[i] != '{')
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: the header object '{' expected at byte %zu", what, i);
  cmds_jv root;
  int rc = cmds_jv_parse(json, n, what, &root, err);
  if (rc) return rc; /* also a tensor name that appears twice (jsonread rejects duplicate keys) */
  int n_rec = 0;
  for (int64_t m = 0; m < root.n; m++) n_rec += strcmp(root.keys[m], "__metadata__") != 0;
  f->tensors = cmds_xcalloc((size_t)n_rec + 1, sizeof *f->tensors);
  for (int64_t m = 0; m < root.n && !rc; m++) {
    if (!strcmp(root.keys[m], "__metadata__")) {
      rc = st_metadata(&root.items[m], what, f, err);
      continue;
    }
    cmds_st_tensor *t = &f->tensors[f->n_tensors++];
    t->name = cmds_xstrdup(root.keys[m]);
    rc = st_tensor_record(&root.items[m], what, t, err);
  }
  cmds_jv_free(&root);
  return rc ? rc : st_validate(f, what, data_bytes, err);
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
