/* safetensors: reads weight files in the safetensors format (METHOD.md section 3) by
 * mapping them into memory, after validating the whole header:
 *   8 bytes little-endian header length N (within the file), N bytes of JSON (an object
 *   mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end)} relative
 *   to the first byte after the header, plus an optional "__metadata__" object of
 *   strings; may be padded with spaces), known dtypes, shape product x dtype size ==
 *   end - begin, offsets inside the data area, no two tensors overlapping.
 * Every failure is CMDS_EINPUT (CMDS_EIO when the file cannot be opened or mapped) with
 * a message that starts with the file name and says what is wrong.
 *
 *   cmds_st_file f;
 *   if (cmds_st_open(&f, "vit.safetensors", &err)) ...;
 *   if (cmds_st_check_names(&f, table, n, &err)) ...;   // every missing / wrong tensor at once
 *   const cmds_st_tensor *t = cmds_st_find(&f, "blocks.0.attn.qkv.weight");
 *   ... t->data (t->end - t->begin bytes, little-endian, row-major) ...
 *   cmds_st_close(&f); */
#ifndef CMDS_SAFETENSORS_H
#define CMDS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "cmds_error.h"

#define CMDS_ST_MAX_DIMS 8

typedef enum {
  CMDS_ST_BOOL, CMDS_ST_U8, CMDS_ST_I8, CMDS_ST_F8_E4M3, CMDS_ST_F8_E5M2,
  CMDS_ST_I16, CMDS_ST_U16, CMDS_ST_F16, CMDS_ST_BF16,
  CMDS_ST_I32, CMDS_ST_U32, CMDS_ST_F32,
  CMDS_ST_I64, CMDS_ST_U64, CMDS_ST_F64,
  CMDS_ST_NDTYPES
} cmds_st_dtype;

typedef struct cmds_st_tensor {
  char *name;
  cmds_st_dtype dtype;
  int ndim;                         /* 0 for a scalar */
  int64_t shape[CMDS_ST_MAX_DIMS];
  uint64_t begin, end;              /* byte offsets in the data area */
  const void *data;                 /* mapped bytes of this tensor */
} cmds_st_tensor;

typedef struct cmds_st_file {
  char *path;
  void *map;
  size_t map_bytes;
  uint64_t header_bytes;            /* N */
  uint64_t data_bytes;              /* file size - 8 - N */
  int n_tensors;
  cmds_st_tensor *tensors;          /* sorted by begin */
  int n_meta;
  char **meta_keys, **meta_values;
} cmds_st_file;

/* One expected tensor of a name table; ndim -1 means "any shape". */
typedef struct cmds_st_expect {
  const char *name;
  int ndim;
  int64_t shape[CMDS_ST_MAX_DIMS];
} cmds_st_expect;

int cmds_st_open(cmds_st_file *f, const char *path, cmds_error *err);
void cmds_st_close(cmds_st_file *f);

/* Validates a header held in memory (the bytes after the 8-byte length) against a data
 * area of data_bytes; fills f->tensors / f->meta_* (data pointers relative to NULL).
 * cmds_st_open uses it; `what` names the source in messages. */
int cmds_st_parse_header(cmds_st_file *f, const char *what, const char *json, size_t n,
                         uint64_t data_bytes, cmds_error *err);

const cmds_st_tensor *cmds_st_find(const cmds_st_file *f, const char *name);
/* The tensor `name` with exactly this dtype and shape, or CMDS_EINPUT saying why not. */
int cmds_st_get(const cmds_st_file *f, const char *name, cmds_st_dtype dtype, int ndim,
                const int64_t *shape, const cmds_st_tensor **out, cmds_error *err);
/* Checks every entry of the table; on failure one message lists every missing tensor and
 * every wrong shape (as many as fit, then how many more). */
int cmds_st_check_names(const cmds_st_file *f, const cmds_st_expect *table, int n, cmds_error *err);
const char *cmds_st_meta(const cmds_st_file *f, const char *key);

size_t cmds_st_dtype_size(cmds_st_dtype t);
const char *cmds_st_dtype_name(cmds_st_dtype t);

#endif
