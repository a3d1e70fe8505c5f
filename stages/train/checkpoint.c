/* checkpoint: see checkpoint.h. */
#define _GNU_SOURCE
#include "checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "safetensors_write.h"

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
  int ne = collect(models, opts, prefixes, n, &e), rc = CMDS_OK;
  cmds_st_out *out = cmds_xcalloc((size_t)(ne ? ne : 1), sizeof *out);
  float **host = cmds_xcalloc((size_t)(ne ? ne : 1), sizeof *host); /* copies of GPU tensors */
  for (int i = 0; i < ne && !rc; i++) {
    const nn_tensor *t = e[i].t;
    out[i].name = e[i].name;
    out[i].dtype = CMDS_ST_F32;
    out[i].ndim = t->ndim;
    for (int d = 0; d < t->ndim; d++) out[i].shape[d] = t->shape[d];
    out[i].data = t->data;
    if (t->device != NN_CPU) {
      host[i] = cmds_xmalloc(nn_tensor_bytes(t));
      nn_tensor hv = *t;
      hv.device = NN_CPU;
      hv.data = host[i];
      rc = nn_tensor_copy(&hv, t, err);
      out[i].data = host[i];
    }
  }
  if (!rc) rc = cmds_st_write(path, out, ne, kv, nkv, err);
  for (int i = 0; i < ne; i++) free(host[i]);
  free(host);
  free(out);
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
