/* mapper_io: what crosses the mapper's boundary (see mapper.h): feature-cache rows into the
 * mapper's input (f16 (B, L, G, G, D) -> f32 (B, L*D, H, W), bicubic up-sampling), and the
 * weights files (safetensors, schemas/mapper_weights_v1.md) saved atomically and loaded
 * with every name, shape and dtype checked. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapper_internal.h"
#include "nn.h"
#include "safetensors.h"
#include "safetensors_write.h"

/* ---------------------------------------------------------------- input */

int mapper_input_from_f16(nn_ctx *ctx, nn_tensor *x, const uint16_t *f16, int64_t B, int64_t L,
                          int64_t G, int64_t D, cmds_error *err) {
  const char *op = "mapper_input_from_f16";
  if (!x || x->ndim != 4 || B < 1 || L < 1 || G < 1 || D < 1)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: x must be (B, L*D, H, W) and B, L, G, D >= 1", op);
  int64_t xs[4] = {B, L * D, x->shape[2], x->shape[3]};
  int rc = nn_tensor_expect(x, op, "x", ctx->device, 4, xs, err);
  if (rc) return rc;
  int direct = x->shape[2] == G && x->shape[3] == G;
  if ((!direct || ctx->device != NN_CPU) && !ctx->scratch) return mapper_no_scratch(op, err);
  size_t mark = ctx->scratch ? nn_arena_mark(ctx->scratch) : 0;
  int64_t gs[4] = {B, L * D, G, G};
  nn_tensor g = direct ? *x : (nn_tensor){0};
  if (!direct && (rc = nn_tensor_alloc(&g, ctx->scratch, NN_F32, 4, gs, err))) goto done;
  if (ctx->device == NN_CPU) {
    float *gd = g.data;
    /* (B, L, G, G, D) -> (B, L*D, G, G) */
#pragma omp parallel for schedule(static)
    for (int64_t q = 0; q < B * L * G * G; q++) {
      int64_t b = q / (L * G * G), l = (q / (G * G)) % L, pix = q % (G * G);
      const uint16_t *src = f16 + q * D;
      for (int64_t d = 0; d < D; d++) gd[((b * L + l) * D + d) * G * G + pix] = nn_f16_to_f32(src[d]);
    }
  } else {
#ifdef CMDS_CUDA
    int64_t n = B * L * G * G * D, rs[1] = {n};
    nn_tensor rows, hv = nn_tensor_view((void *)f16, NN_F16, NN_CPU, n, -1, -1, -1);
    if ((rc = nn_tensor_alloc(&rows, ctx->scratch, NN_F16, 1, rs, err))) goto done;
    rows.device = NN_CUDA;
    if ((rc = nn_tensor_copy(&rows, &hv, err))) goto done;
    if ((rc = mapper_cuda_f16_rows(ctx, g.data, rows.data, B, L, G, D, err))) goto done;
#else
    rc = MAPPER_NO_CUDA(err, op);
    goto done;
#endif
  }
  if (!direct) rc = nn_resize_forward(ctx, x, &g, NN_RESIZE_BICUBIC, err);
done:
  if (ctx->scratch) nn_arena_rewind(ctx->scratch, mark);
  return rc;
}

/* ---------------------------------------------------------------- files */

static const char *kind_name(mapper_kind k) { return k == MAPPER_MLP ? "mlp" : "cmds"; }

/* schemas/mapper_weights_v1.md: the metadata names the schema and the kind, then gives the
 * configuration's integer keys in this order (resolved: the defaults written out). Save and
 * load both go through this one table. */
#define MAPPER_SCHEMA "cmds.mapper_weights"
#define MAPPER_SCHEMA_VERSION "1"
static const struct {
  const char *key;
  size_t offset; /* of its int64_t field in mapper_config */
} int_keys[] = {
    {"mapper.width", offsetof(mapper_config, width)},
    {"mapper.layers", offsetof(mapper_config, layers)},
    {"mapper.adapt_groups", offsetof(mapper_config, adapt_groups)},
    {"mapper.ca_reduction", offsetof(mapper_config, ca_reduction)},
    {"mapper.ca_groups", offsetof(mapper_config, ca_groups)},
    {"mapper.sel_hidden", offsetof(mapper_config, sel_hidden)},
    {"mapper.proj_hidden", offsetof(mapper_config, proj_hidden)},
    {"mapper.mlp_hidden", offsetof(mapper_config, mlp_hidden)},
};
#define N_INT_KEYS ((int)(sizeof int_keys / sizeof *int_keys))
#define N_META (3 + N_INT_KEYS)

static int64_t *cfg_field(mapper_config *c, int i) { return (int64_t *)((char *)c + int_keys[i].offset); }

/* The metadata pairs keys[i] = vals[i] of c. */
static void cfg_to_kv(const mapper_config *c, char vals[N_META][32], const char *keys[N_META]) {
  mapper_config r = mapper_cfg_resolved(c);
  keys[0] = "cmds_schema", keys[1] = "cmds_schema_version", keys[2] = "mapper.kind";
  snprintf(vals[0], 32, "%s", MAPPER_SCHEMA);
  snprintf(vals[1], 32, "%s", MAPPER_SCHEMA_VERSION);
  snprintf(vals[2], 32, "%s", kind_name(c->kind));
  for (int i = 0; i < N_INT_KEYS; i++) {
    keys[3 + i] = int_keys[i].key;
    snprintf(vals[3 + i], 32, "%lld", (long long)*cfg_field(&r, i));
  }
}

int mapper_save(const mapper_model *const *models, const char *const *prefixes, int n,
                const char *const *extra_kv, int n_extra, const char *path, cmds_error *err) {
  if (n < 1) return CMDS_FAIL(err, CMDS_EINPUT, "mapper_save %s: no models", path);
  for (int k = 1; k < n; k++) {
    if (!mapper_cfg_same(&models[0]->cfg, &models[k]->cfg))
      return CMDS_FAIL(err, CMDS_EINPUT, "mapper_save %s: models %s and %s differ in configuration "
                       "(one file holds one configuration)", path, prefixes[0], prefixes[k]);
  }
  int total = 0;
  for (int k = 0; k < n; k++) total += models[k]->nparams;
  cmds_st_out *t = cmds_xcalloc((size_t)total, sizeof *t);
  char **names = cmds_xcalloc((size_t)total, sizeof *names);
  void **host = cmds_xcalloc((size_t)total, sizeof *host);
  int rc = CMDS_OK, i = 0;
  for (int k = 0; k < n && !rc; k++)
    for (int j = 0; j < models[k]->nparams && !rc; j++, i++) {
      const mapper_param *p = &models[k]->params[j];
      size_t len = strlen(prefixes[k]) + strlen(p->name) + 1;
      names[i] = cmds_xmalloc(len);
      snprintf(names[i], len, "%s%s", prefixes[k], p->name);
      t[i].name = names[i];
      t[i].dtype = CMDS_ST_F32;
      t[i].ndim = p->value.ndim;
      for (int d = 0; d < p->value.ndim; d++) t[i].shape[d] = p->value.shape[d];
      if (p->value.device == NN_CPU) {
        t[i].data = p->value.data;
      } else {
        host[i] = cmds_xmalloc(nn_tensor_bytes(&p->value));
        nn_tensor h = p->value;
        h.device = NN_CPU;
        h.data = host[i];
        rc = nn_tensor_copy(&h, &p->value, err);
        t[i].data = host[i];
      }
    }
  if (!rc) {
    char vals[N_META][32];
    const char *keys[N_META];
    cfg_to_kv(&models[0]->cfg, vals, keys);
    const char **kv = cmds_xcalloc((size_t)(2 * (N_META + n_extra)), sizeof *kv);
    for (int q = 0; q < N_META; q++) kv[2 * q] = keys[q], kv[2 * q + 1] = vals[q];
    for (int q = 0; q < 2 * n_extra; q++) kv[2 * N_META + q] = extra_kv[q];
    rc = cmds_st_write(path, t, total, kv, N_META + n_extra, err);
    free(kv);
  }
  for (int q = 0; q < total; q++) {
    free(names[q]);
    free(host[q]);
  }
  free(names);
  free(host);
  free(t);
  return rc ? cmds_error_wrap(err, "mapper_save") : CMDS_OK;
}

static int meta_int(const cmds_st_file *f, const char *key, int64_t *out, cmds_error *err) {
  const char *s = cmds_st_meta(f, key);
  if (!s) return CMDS_FAIL(err, CMDS_EINPUT, "%s: metadata key %s missing (not a mapper file?)", f->path, key);
  char *end;
  long long v = strtoll(s, &end, 10);
  if (end == s || *end)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: metadata %s = '%s' is not an integer", f->path, key, s);
  *out = v;
  return CMDS_OK;
}

int mapper_load(mapper_model *m, const char *path, const char *prefix, nn_device device,
                cmds_error *err) {
  cmds_st_file f;
  int rc = cmds_st_open(&f, path, err);
  if (rc) return rc;
  mapper_config c;
  memset(&c, 0, sizeof c);
  const char *kind = cmds_st_meta(&f, "mapper.kind"), *schema = cmds_st_meta(&f, "cmds_schema"),
             *version = cmds_st_meta(&f, "cmds_schema_version");
  if (!schema || strcmp(schema, MAPPER_SCHEMA) || !version || strcmp(version, MAPPER_SCHEMA_VERSION)) {
    rc = CMDS_FAIL(err, CMDS_ESCHEMA, "%s: metadata cmds_schema = '%s' version '%s', expected %s version %s",
                   path, schema ? schema : "(missing)", version ? version : "(missing)", MAPPER_SCHEMA,
                   MAPPER_SCHEMA_VERSION);
  } else if (!kind) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: metadata key mapper.kind missing (not a mapper file?)", path);
  } else if (!strcmp(kind, "cmds") || !strcmp(kind, "mlp")) {
    c.kind = strcmp(kind, "mlp") ? MAPPER_CMDS : MAPPER_MLP;
  } else {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: metadata mapper.kind = '%s', expected cmds or mlp", path, kind);
  }
  for (int i = 0; i < N_INT_KEYS && !rc; i++) rc = meta_int(&f, int_keys[i].key, cfg_field(&c, i), err);
  if (!rc && (rc = mapper_config_check(&c, err))) cmds_error_wrap(err, "%s: metadata", path);
  mapper_pspec s[MAPPER_MAX_PARAMS];
  cmds_st_expect table[MAPPER_MAX_PARAMS];
  char names[MAPPER_MAX_PARAMS][2 * MAPPER_NAME_MAX + 64];
  int np = 0;
  if (!rc) {
    np = mapper_param_specs(&c, s);
    for (int i = 0; i < np; i++) {
      snprintf(names[i], sizeof names[i], "%s%s", prefix, s[i].name);
      table[i].name = names[i];
      table[i].ndim = s[i].ndim;
      for (int d = 0; d < s[i].ndim; d++) table[i].shape[d] = s[i].shape[d];
    }
    rc = cmds_st_check_names(&f, table, np, err);
  }
  for (int i = 0; !rc && i < np; i++) {
    const cmds_st_tensor *t = cmds_st_find(&f, names[i]);
    if (t->dtype != CMDS_ST_F32)
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: tensor %s is %s, expected F32", path, names[i],
                     cmds_st_dtype_name(t->dtype));
  }
  if (!rc) rc = mapper_model_alloc(m, &c, device, err);
  for (int i = 0; !rc && i < np; i++) {
    const cmds_st_tensor *t = cmds_st_find(&f, names[i]);
    nn_tensor h = m->params[i].value;
    h.device = NN_CPU;
    h.data = (void *)t->data;
    rc = nn_tensor_copy(&m->params[i].value, &h, err);
    if (rc) mapper_free(m);
  }
  if (!rc && (rc = mapper_grads_zero_any(m, err))) mapper_free(m);
  cmds_st_close(&f);
  return rc;
}
