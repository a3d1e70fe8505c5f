/* checkpoint: see checkpoint.h. */
#define _GNU_SOURCE
#include "checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "safetensors.h"

typedef struct entry {
  char name[MAPPER_NAME_MAX + 48];
  const nn_tensor *t;
} entry;

static int collect(mapper_model *const *models, mapper_adamw *const *opts, const char *const *prefixes, int n,
                   entry **out) {
  int cnt = 0;
  for (int i = 0; i < n; i++) cnt += models[i]->nparams * (opts && opts[i] ? 3 : 1);
  entry *e = cmds_xcalloc((size_t)(cnt ? cnt : 1), sizeof *e);
  int k = 0;
  for (int i = 0; i < n; i++)
    for (int p = 0; p < models[i]->nparams; p++) {
      const char *pn = models[i]->params[p].name;
      snprintf(e[k].name, sizeof e[k].name, "%s%s", prefixes[i], pn);
      e[k++].t = &models[i]->params[p].value;
      if (opts && opts[i]) {
        snprintf(e[k].name, sizeof e[k].name, "%s%s.adam_m", prefixes[i], pn);
        e[k++].t = &opts[i]->m[p];
        snprintf(e[k].name, sizeof e[k].name, "%s%s.adam_v", prefixes[i], pn);
        e[k++].t = &opts[i]->v[p];
      }
    }
  *out = e;
  return k;
}

int train_ckpt_save(const char *path, mapper_model *const *models, mapper_adamw *const *opts,
                    const char *const *prefixes, int n, const char *const *kv, int nkv, cmds_error *err) {
  entry *e = NULL;
  int ne = collect(models, opts, prefixes, n, &e);
  cmds_json j;
  cmds_json_init(&j, 0);
  cmds_json_object_begin(&j);
  cmds_json_key(&j, "__metadata__");
  cmds_json_object_begin(&j);
  for (int i = 0; i < nkv; i++) cmds_json_kv_str(&j, kv[2 * i], kv[2 * i + 1]);
  cmds_json_object_end(&j);
  uint64_t off = 0;
  for (int i = 0; i < ne; i++) {
    uint64_t bytes = (uint64_t)nn_tensor_bytes(e[i].t);
    cmds_json_key(&j, e[i].name);
    cmds_json_object_begin(&j);
    cmds_json_kv_str(&j, "dtype", "F32");
    cmds_json_key(&j, "shape");
    cmds_json_array_begin(&j);
    for (int d = 0; d < e[i].t->ndim; d++) cmds_json_int(&j, e[i].t->shape[d]);
    cmds_json_array_end(&j);
    cmds_json_key(&j, "data_offsets");
    cmds_json_array_begin(&j);
    cmds_json_int(&j, (int64_t)off);
    cmds_json_int(&j, (int64_t)(off + bytes));
    cmds_json_array_end(&j);
    cmds_json_object_end(&j);
    off += bytes;
  }
  cmds_json_object_end(&j);
  while (j.len % 8) cmds_json_raw(&j, " "); /* the data area starts 8-byte aligned */
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int rc = CMDS_OK;
  FILE *f = fopen(tmp, "wb");
  if (!f) rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot create", tmp);
  uint64_t hlen = (uint64_t)j.len;
  unsigned char len8[8];
  for (int b = 0; b < 8; b++) len8[b] = (unsigned char)(hlen >> (8 * b));
  if (!rc && (fwrite(len8, 1, 8, f) != 8 || fwrite(j.buf, 1, j.len, f) != j.len))
    rc = CMDS_FAIL(err, CMDS_EIO, "%s: write failed", tmp);
  float *host = NULL;
  size_t host_cap = 0;
  for (int i = 0; i < ne && !rc; i++) {
    size_t cnt = (size_t)nn_tensor_numel(e[i].t);
    const float *src = e[i].t->data;
    if (e[i].t->device != NN_CPU) {
      if (host_cap < cnt) {
        free(host);
        host = cmds_xmalloc(sizeof(float) * cnt);
        host_cap = cnt;
      }
      nn_tensor hv = *e[i].t;
      hv.device = NN_CPU;
      hv.data = host;
      rc = nn_tensor_copy(&hv, e[i].t, err);
      src = host;
    }
    if (!rc && fwrite(src, sizeof(float), cnt, f) != cnt) rc = CMDS_FAIL(err, CMDS_EIO, "%s: write failed", tmp);
  }
  free(host);
  if (f) {
    if (!rc && (fflush(f) || fsync(fileno(f)))) rc = CMDS_FAIL(err, CMDS_EIO, "%s: flush failed", tmp);
    if (fclose(f) && !rc) rc = CMDS_FAIL(err, CMDS_EIO, "%s: close failed", tmp);
  }
  if (!rc && rename(tmp, path)) rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot rename to %s", tmp, path);
  if (rc) remove(tmp);
  cmds_json_free(&j);
  free(e);
  return rc;
}

int train_ckpt_meta(const char *path, const char *key, char *out, size_t cap, cmds_error *err) {
  cmds_st_file f;
  int rc = cmds_st_open(&f, path, err);
  if (rc) return rc;
  const char *v = cmds_st_meta(&f, key);
  if (!v) rc = CMDS_FAIL(err, CMDS_ESCHEMA, "%s: no metadata key '%s'", path, key);
  else snprintf(out, cap, "%s", v);
  cmds_st_close(&f);
  return rc;
}

int train_ckpt_load(const char *path, mapper_model *const *models, mapper_adamw *const *opts,
                    const char *const *prefixes, int n, cmds_error *err) {
  cmds_st_file f;
  int rc = cmds_st_open(&f, path, err);
  if (rc) return rc;
  entry *e = NULL;
  int ne = collect(models, opts, prefixes, n, &e);
  for (int i = 0; i < ne && !rc; i++) {
    const cmds_st_tensor *t = NULL;
    rc = cmds_st_get(&f, e[i].name, CMDS_ST_F32, e[i].t->ndim, e[i].t->shape, &t, err);
    if (!rc) {
      nn_tensor src = *e[i].t, *dst = (nn_tensor *)e[i].t;
      src.device = NN_CPU;
      src.data = (void *)t->data;
      rc = nn_tensor_copy(dst, &src, err);
    }
  }
  free(e);
  cmds_st_close(&f);
  return rc;
}
