/* safetensors_write: writes a safetensors file (the format comm/safetensors.h reads) from
 * host memory: the 8-byte header length, the JSON header (tensors in the given order, data
 * offsets packed, the header padded with spaces to a multiple of 8) and the raw
 * little-endian data. The file is written to `path.tmp` and renamed, so it appears whole
 * or not at all.
 *
 *   cmds_st_out t[2] = {{"a.weight", CMDS_ST_F32, 2, {3, 4}, wdata}, {"a.bias", ...}};
 *   const char *meta[] = {"mapper.width", "768"};
 *   cmds_st_write("m.safetensors", t, 2, meta, 1, &err); */
#ifndef CMDS_SAFETENSORS_WRITE_H
#define CMDS_SAFETENSORS_WRITE_H

#include "safetensors.h"

typedef struct cmds_st_out {
  const char *name;
  cmds_st_dtype dtype;
  int ndim;
  int64_t shape[CMDS_ST_MAX_DIMS];
  const void *data; /* product(shape) * dtype size bytes */
} cmds_st_out;

/* meta_kv: n_meta (key, value) string pairs, flattened: {k0, v0, k1, v1, ...}. */
int cmds_st_write(const char *path, const cmds_st_out *tensors, int n, const char *const *meta_kv,
                  int n_meta, cmds_error *err);

#endif
