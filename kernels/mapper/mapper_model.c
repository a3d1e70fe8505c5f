/* mapper_model: a mapper's configuration rules, its parameter table (names, shapes and
 * initialisation as the PyTorch reference module has them) and a model's life: init from a
 * seed, find, count, zero the grads, copy, free (mapper.h; shared internals in
 * mapper_internal.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapper_internal.h"
#include "rng.h"

void mapper_config_default(mapper_config *c, int64_t width, int64_t layers) {
  memset(c, 0, sizeof *c);
  c->kind = MAPPER_CMDS;
  c->width = width;
  c->layers = layers;
  c->adapt_groups = 32;
  c->ca_reduction = 32;
  c->ca_groups = 8;
  c->sel_hidden = 128;
  c->proj_hidden = 2 * width;
  c->mlp_hidden = layers * width;
}

int mapper_config_check(const mapper_config *c, cmds_error *err) {
  if (c->kind != MAPPER_CMDS && c->kind != MAPPER_MLP)
    return CMDS_FAIL(err, CMDS_EINPUT, "mapper.kind: %d is neither cmds nor mlp", (int)c->kind);
  if (c->width < 1) return CMDS_FAIL(err, CMDS_EINPUT, "mapper.width: %lld, must be >= 1", (long long)c->width);
  if (c->layers < 1 || 4 * c->layers + 16 > MAPPER_MAX_PARAMS)
    return CMDS_FAIL(err, CMDS_EINPUT, "mapper.layers: %lld, must be 1..%d", (long long)c->layers,
                     (MAPPER_MAX_PARAMS - 16) / 4);
  if (c->proj_hidden < 0) return CMDS_FAIL(err, CMDS_EINPUT, "mapper.proj_hidden: %lld < 0", (long long)c->proj_hidden);
  if (c->mlp_hidden < 0) return CMDS_FAIL(err, CMDS_EINPUT, "mapper.mlp_hidden: %lld < 0", (long long)c->mlp_hidden);
  if (c->kind == MAPPER_MLP) return CMDS_OK;
  if (c->adapt_groups < 1 || c->width % c->adapt_groups)
    return CMDS_FAIL(err, CMDS_EINPUT, "mapper.adapt_groups: %lld does not divide the width %lld",
                     (long long)c->adapt_groups, (long long)c->width);
  if (c->ca_reduction < 1)
    return CMDS_FAIL(err, CMDS_EINPUT, "mapper.ca_reduction: %lld, must be >= 1", (long long)c->ca_reduction);
  int64_t M = cfg_M(c);
  if (c->ca_groups < 1 || M % c->ca_groups)
    return CMDS_FAIL(err, CMDS_EINPUT,
                     "mapper.ca_groups: %lld does not divide M = max(8, L*D / mapper.ca_reduction) = %lld",
                     (long long)c->ca_groups, (long long)M);
  if (c->sel_hidden < 1)
    return CMDS_FAIL(err, CMDS_EINPUT, "mapper.sel_hidden: %lld, must be >= 1", (long long)c->sel_hidden);
  return CMDS_OK;
}

/* Resolved copies compare equal (memcmp) when two configurations build the same model. */
mapper_config mapper_cfg_resolved(const mapper_config *c) {
  mapper_config r;
  memset(&r, 0, sizeof r); /* padding too */
  r.kind = c->kind;
  r.width = c->width;
  r.layers = c->layers;
  r.adapt_groups = c->adapt_groups;
  r.ca_reduction = c->ca_reduction;
  r.ca_groups = c->ca_groups;
  r.sel_hidden = c->sel_hidden;
  r.proj_hidden = cfg_proj(c);
  r.mlp_hidden = cfg_mlp(c);
  if (r.kind == MAPPER_MLP) {
    r.adapt_groups = r.ca_reduction = r.ca_groups = r.sel_hidden = r.proj_hidden = 0;
  } else {
    r.mlp_hidden = 0;
  }
  return r;
}

int mapper_cfg_same(const mapper_config *a, const mapper_config *b) {
  mapper_config ra = mapper_cfg_resolved(a), rb = mapper_cfg_resolved(b);
  return !memcmp(&ra, &rb, sizeof ra);
}

/* ---------------------------------------------------------------- parameter table */

static void spec_conv(mapper_pspec *s, int *n, const char *name, int64_t cout, int64_t cin, int64_t k) {
  mapper_pspec *w = &s[(*n)++], *b = &s[(*n)++];
  snprintf(w->name, sizeof w->name, "%s.weight", name);
  snprintf(b->name, sizeof b->name, "%s.bias", name);
  w->ndim = 4;
  w->shape[0] = cout, w->shape[1] = cin, w->shape[2] = k, w->shape[3] = k;
  b->ndim = 1;
  b->shape[0] = cout;
  w->init = b->init = 0;
  w->fan_in = b->fan_in = cin * k * k;
}

static void spec_norm(mapper_pspec *s, int *n, const char *name, int64_t c) {
  mapper_pspec *w = &s[(*n)++], *b = &s[(*n)++];
  snprintf(w->name, sizeof w->name, "%s.weight", name);
  snprintf(b->name, sizeof b->name, "%s.bias", name);
  w->ndim = b->ndim = 1;
  w->shape[0] = b->shape[0] = c;
  w->fan_in = b->fan_in = 0; /* not drawn: ones and zeros */
  w->init = 1;
  b->init = 2;
}

/* The reference module's named_parameters() order. */
int mapper_param_specs(const mapper_config *c, mapper_pspec *s) {
  int n = 0;
  int64_t D = c->width, L = c->layers, C = D * L;
  char name[MAPPER_NAME_MAX];
  if (c->kind == MAPPER_MLP) {
    spec_conv(s, &n, "mlp.0", cfg_mlp(c), C, 1);
    spec_conv(s, &n, "mlp.2", C, cfg_mlp(c), 1);
    return n;
  }
  for (int64_t l = 0; l < L; l++) {
    snprintf(name, sizeof name, "adapt.%lld.conv", (long long)l);
    spec_conv(s, &n, name, D, D, 1);
    snprintf(name, sizeof name, "adapt.%lld.norm", (long long)l);
    spec_norm(s, &n, name, D);
  }
  int64_t M = cfg_M(c);
  spec_conv(s, &n, "coord.conv1", M, C, 1);
  spec_norm(s, &n, "coord.norm", M);
  spec_conv(s, &n, "coord.conv_h", C, M, 1);
  spec_conv(s, &n, "coord.conv_w", C, M, 1);
  spec_conv(s, &n, "selector.conv1", c->sel_hidden, C, 3);
  spec_conv(s, &n, "selector.conv2", L, c->sel_hidden, 1);
  spec_conv(s, &n, "proj.0", cfg_proj(c), D, 1);
  spec_conv(s, &n, "proj.2", C, cfg_proj(c), 1);
  return n;
}

static int64_t spec_numel(const mapper_pspec *s) {
  int64_t n = 1;
  for (int d = 0; d < s->ndim; d++) n *= s->shape[d];
  return n;
}

int mapper_dev_zero(nn_ctx *ctx, nn_tensor *t, cmds_error *err) {
  if (t->device == NN_CPU) {
    memset(t->data, 0, nn_tensor_bytes(t));
    return CMDS_OK;
  }
  ON_CUDA(mapper_cuda_zero(ctx, t->data, nn_tensor_numel(t), err));
}

int mapper_model_alloc(mapper_model *m, const mapper_config *c, nn_device device, cmds_error *err) {
  int rc = mapper_config_check(c, err);
  if (rc) return rc;
  memset(m, 0, sizeof *m);
  m->cfg = *c;
  m->device = device;
  mapper_pspec s[MAPPER_MAX_PARAMS];
  m->nparams = mapper_param_specs(c, s);
  size_t bytes = 256;
  for (int i = 0; i < m->nparams; i++) bytes += 2 * round256((size_t)spec_numel(&s[i]) * sizeof(float));
  if ((rc = nn_arena_init(&m->store, device, bytes, err))) return cmds_error_wrap(err, "mapper parameters");
  for (int i = 0; i < m->nparams; i++) {
    mapper_param *p = &m->params[i];
    memcpy(p->name, s[i].name, sizeof p->name);
    if ((rc = nn_tensor_alloc(&p->value, &m->store, NN_F32, s[i].ndim, s[i].shape, err)) ||
        (rc = nn_tensor_alloc(&p->grad, &m->store, NN_F32, s[i].ndim, s[i].shape, err))) {
      nn_arena_free(&m->store);
      return rc;
    }
  }
  return CMDS_OK;
}

int mapper_grads_zero_any(mapper_model *m, cmds_error *err) {
  nn_ctx c = {0};
  c.device = m->device;
  for (int i = 0; i < m->nparams; i++) {
    int rc = mapper_dev_zero(&c, &m->params[i].grad, err);
    if (rc) return rc;
  }
  return CMDS_OK;
}

int mapper_init(mapper_model *m, const mapper_config *c, uint64_t seed, nn_device device,
                cmds_error *err) {
  int rc = mapper_model_alloc(m, c, device, err);
  if (rc) return rc;
  mapper_pspec s[MAPPER_MAX_PARAMS];
  mapper_param_specs(c, s);
  for (int i = 0; i < m->nparams && !rc; i++) {
    int64_t n = spec_numel(&s[i]);
    float *h = cmds_xmalloc((size_t)n * sizeof(float));
    /* one stream per parameter, keyed by its name: adding a module never changes the others */
    cmds_rng r;
    uint64_t k = seed;
    cmds_rng_seed(&r, cmds_splitmix64(&k) ^ cmds_hash_str(s[i].name));
    double bound = s[i].fan_in > 0 ? 1.0 / sqrt((double)s[i].fan_in) : 0.0;
    for (int64_t j = 0; j < n; j++)
      h[j] = s[i].init == 0 ? (float)((2.0 * cmds_rng_uniform(&r) - 1.0) * bound) : s[i].init == 1 ? 1.0f : 0.0f;
    nn_tensor ht = nn_tensor_view(h, NN_F32, NN_CPU, n, -1, -1, -1);
    nn_tensor dv = m->params[i].value;
    dv.ndim = 1;
    dv.shape[0] = n;
    rc = nn_tensor_copy(&dv, &ht, err);
    free(h);
  }
  if (!rc) rc = mapper_grads_zero_any(m, err);
  if (rc) mapper_free(m);
  return rc;
}

void mapper_free(mapper_model *m) {
  if (!m) return;
  nn_arena_free(&m->store);
  memset(m, 0, sizeof *m);
}

mapper_param *mapper_find(mapper_model *m, const char *name) {
  for (int i = 0; i < m->nparams; i++)
    if (!strcmp(m->params[i].name, name)) return &m->params[i];
  return NULL;
}

int64_t mapper_numel(const mapper_model *m) {
  int64_t n = 0;
  for (int i = 0; i < m->nparams; i++) n += nn_tensor_numel(&m->params[i].value);
  return n;
}

void mapper_zero_grad(mapper_model *m) {
  cmds_error err = {0};
  if (mapper_grads_zero_any(m, &err)) fprintf(stderr, "mapper_zero_grad: %s\n", err.msg);
}

int mapper_copy(mapper_model *dst, const mapper_model *src, cmds_error *err) {
  if (!mapper_cfg_same(&dst->cfg, &src->cfg) || dst->nparams != src->nparams)
    return CMDS_FAIL(err, CMDS_EINPUT, "mapper_copy: the two models have different configurations");
  for (int i = 0; i < src->nparams; i++) {
    int rc = nn_tensor_copy(&dst->params[i].value, &src->params[i].value, err);
    if (rc) return cmds_error_wrap(err, "mapper_copy %s", src->params[i].name);
  }
  return CMDS_OK;
}
