/* mapper: the feature mapper, its backward, loss, AdamW, input preparation and files (see
 * mapper.h). The convolutions, group norms and GELUs are the nn ops (kernels/nn, forward
 * and backward.h); the mapper's own element-wise and reduction steps (coordinate
 * attention pooling and gating, h-swish, per-pixel softmax over L, the fusion sum, the
 * loss, AdamW) are here as plain C + OpenMP, with the CUDA versions in mapper_cuda.cu
 * chosen by ctx->device. Symbols as in METHOD.md section 4 with C = L*D:
 *   A_l = conv(x_l), N_l = GN(A_l), F = concat GELU(N_l)           (B, C, H, W)
 *   Y = [mean_W F | mean_H F] (B, C, H+W), Z = conv1(Y), Zn = GN(Z), Zh = hswish(Zn)
 *   ah = sigmoid(conv_h(Zh[:H])) (B, C, H), aw = sigmoid(conv_w(Zh[H:])) (B, C, W)
 *   Ft = F * ah * aw, R = relu(conv3x3(Ft)), wgt = softmax_L(conv(R))   (B, L, H, W)
 *   S = sum_l wgt_l F_l (B, D, H, W), Q = proj.0(S), G = GELU(Q), P = proj.2(G) */
#include "mapper.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn.h"
#include "rng.h"
#include "safetensors.h"
#include "safetensors_write.h"

#ifdef CMDS_CUDA
#include "mapper_cuda.h"
#define ON_CUDA(call) return (call)
#else
#define ON_CUDA(call) return CMDS_FAIL(err, CMDS_EINPUT, "mapper: cuda tensors in a build without CUDA")
#endif

#define GN_EPS 1e-5f

/* ---------------------------------------------------------------- configuration */

static int64_t cfg_M(const mapper_config *c) {
  int64_t m = c->layers * c->width / (c->ca_reduction > 0 ? c->ca_reduction : 1);
  return m < 8 ? 8 : m;
}
static int64_t cfg_proj(const mapper_config *c) { return c->proj_hidden > 0 ? c->proj_hidden : 2 * c->width; }
static int64_t cfg_mlp(const mapper_config *c) { return c->mlp_hidden > 0 ? c->mlp_hidden : c->layers * c->width; }

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
static mapper_config cfg_resolved(const mapper_config *c) {
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

/* ---------------------------------------------------------------- parameter table */

typedef struct pspec {
  char name[MAPPER_NAME_MAX];
  int ndim;
  int64_t shape[4];
  int init;       /* 0 uniform +-1/sqrt(fan_in), 1 ones, 2 zeros */
  int64_t fan_in;
} pspec;

static void spec_conv(pspec *s, int *n, const char *name, int64_t cout, int64_t cin, int64_t k) {
  pspec *w = &s[(*n)++], *b = &s[(*n)++];
  snprintf(w->name, sizeof w->name, "%s.weight", name);
  snprintf(b->name, sizeof b->name, "%s.bias", name);
  w->ndim = 4;
  w->shape[0] = cout, w->shape[1] = cin, w->shape[2] = k, w->shape[3] = k;
  b->ndim = 1;
  b->shape[0] = cout;
  w->init = b->init = 0;
  w->fan_in = b->fan_in = cin * k * k;
}

static void spec_norm(pspec *s, int *n, const char *name, int64_t c) {
  pspec *w = &s[(*n)++], *b = &s[(*n)++];
  snprintf(w->name, sizeof w->name, "%s.weight", name);
  snprintf(b->name, sizeof b->name, "%s.bias", name);
  w->ndim = b->ndim = 1;
  w->shape[0] = b->shape[0] = c;
  w->init = 1;
  b->init = 2;
}

/* The reference module's named_parameters() order. */
static int mapper_specs(const mapper_config *c, pspec *s) {
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

static size_t round256(size_t n) { return (n + 255) & ~(size_t)255; }

static int64_t spec_numel(const pspec *s) {
  int64_t n = 1;
  for (int d = 0; d < s->ndim; d++) n *= s->shape[d];
  return n;
}

/* Index of the first parameter of each module (kind cmds). */
enum { P_CONV_W = 0, P_CONV_B = 1 };
static int p_adapt(int64_t l) { return (int)(4 * l); }
static int p_coord(const mapper_config *c) { return (int)(4 * c->layers); }     /* conv1 w,b norm w,b conv_h w,b conv_w w,b */
static int p_sel(const mapper_config *c) { return (int)(4 * c->layers) + 8; }   /* conv1 w,b conv2 w,b */
static int p_proj(const mapper_config *c) { return (int)(4 * c->layers) + 12; } /* proj.0 w,b proj.2 w,b */

static int dev_zero(nn_ctx *ctx, nn_tensor *t, cmds_error *err) {
  if (t->device == NN_CPU) {
    memset(t->data, 0, nn_tensor_bytes(t));
    return CMDS_OK;
  }
  ON_CUDA(mapper_cuda_zero(ctx, t->data, nn_tensor_numel(t), err));
}

static int model_alloc(mapper_model *m, const mapper_config *c, nn_device device, cmds_error *err) {
  int rc = mapper_config_check(c, err);
  if (rc) return rc;
  memset(m, 0, sizeof *m);
  m->cfg = *c;
  m->device = device;
  pspec s[MAPPER_MAX_PARAMS];
  m->nparams = mapper_specs(c, s);
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

/* Clears grads on any device without a context (a one-off, not in the step loop). */
static int grads_zero_any(mapper_model *m, cmds_error *err) {
  nn_ctx c = {0};
  c.device = m->device;
  for (int i = 0; i < m->nparams; i++) {
    int rc = dev_zero(&c, &m->params[i].grad, err);
    if (rc) return rc;
  }
  return CMDS_OK;
}

int mapper_init(mapper_model *m, const mapper_config *c, uint64_t seed, nn_device device,
                cmds_error *err) {
  int rc = model_alloc(m, c, device, err);
  if (rc) return rc;
  pspec s[MAPPER_MAX_PARAMS];
  mapper_specs(c, s);
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
  if (!rc) rc = grads_zero_any(m, err);
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
  if (grads_zero_any(m, &err)) fprintf(stderr, "mapper_zero_grad: %s\n", err.msg);
}

int mapper_copy(mapper_model *dst, const mapper_model *src, cmds_error *err) {
  mapper_config a = cfg_resolved(&dst->cfg), b = cfg_resolved(&src->cfg);
  if (memcmp(&a, &b, sizeof a) || dst->nparams != src->nparams)
    return CMDS_FAIL(err, CMDS_EINPUT, "mapper_copy: the two models have different configurations");
  for (int i = 0; i < src->nparams; i++) {
    int rc = nn_tensor_copy(&dst->params[i].value, &src->params[i].value, err);
    if (rc) return cmds_error_wrap(err, "mapper_copy %s", src->params[i].name);
  }
  return CMDS_OK;
}

/* ---------------------------------------------------------------- activations */

typedef struct mapper_acts {
  nn_tensor A, N, F, Y, Z, Zn, Zhh, Zhw, ah, aw, Ft, R, wgt, S, Q, G;
} mapper_acts;

struct mapper_tape {
  mapper_config cfg;
  int64_t B, H, W;
  nn_device device;
  nn_arena store;
  mapper_acts a;
};

/* Carves the activations of one forward from `a` (NULL: only counts the bytes). */
static int acts_layout(const mapper_config *c, int64_t B, int64_t H, int64_t W, mapper_acts *t,
                       nn_arena *a, size_t *bytes, cmds_error *err) {
  int64_t D = c->width, L = c->layers, C = D * L, M = cfg_M(c);
  struct {
    nn_tensor *t;
    int64_t s[4];
  } list[16];
  int n = 0;
#define ACT(field, d0, d1, d2, d3) \
  (list[n].t = &t->field, list[n].s[0] = d0, list[n].s[1] = d1, list[n].s[2] = d2, list[n].s[3] = d3, n++)
  if (c->kind == MAPPER_MLP) {
    ACT(Q, B, cfg_mlp(c), H, W);
    ACT(G, B, cfg_mlp(c), H, W);
  } else {
    ACT(A, B, C, H, W);
    ACT(N, B, C, H, W);
    ACT(F, B, C, H, W);
    ACT(Y, B, C, 1, H + W);
    ACT(Z, B, M, 1, H + W);
    ACT(Zn, B, M, 1, H + W);
    ACT(Zhh, B, M, 1, H);
    ACT(Zhw, B, M, 1, W);
    ACT(ah, B, C, 1, H);
    ACT(aw, B, C, 1, W);
    ACT(Ft, B, C, H, W);
    ACT(R, B, c->sel_hidden, H, W);
    ACT(wgt, B, L, H, W);
    ACT(S, B, D, H, W);
    ACT(Q, B, cfg_proj(c), H, W);
    ACT(G, B, cfg_proj(c), H, W);
  }
#undef ACT
  size_t total = 256;
  for (int i = 0; i < n; i++) {
    size_t e = 1;
    for (int d = 0; d < 4; d++) e *= (size_t)list[i].s[d];
    total += round256(e * sizeof(float));
    if (a) {
      int rc = nn_tensor_alloc(list[i].t, a, NN_F32, 4, list[i].s, err);
      if (rc) return rc;
    }
  }
  if (bytes) *bytes = total;
  return CMDS_OK;
}

size_t mapper_tape_bytes(const mapper_config *c, int64_t B, int64_t H, int64_t W) {
  mapper_acts t;
  size_t n = 0;
  acts_layout(c, B, H, W, &t, NULL, &n, NULL);
  return n;
}

/* Backward's temporaries (cmds: dG, dS, dF, dFt, dR, dwgt, dah, daw, dZhh, dZhw, dZ, dY;
 * mlp: dG) plus the largest op scratch (3x3 columns, or group-norm statistics). */
size_t mapper_scratch_bytes_train(const mapper_config *c, int64_t B, int64_t H, int64_t W) {
  int64_t D = c->width, L = c->layers, C = D * L, M = cfg_M(c), HW = H * W;
  int64_t e[12];
  int n = 0;
  size_t cols;
  if (c->kind == MAPPER_MLP) {
    e[n++] = B * cfg_mlp(c) * HW;
    cols = 0;
  } else {
    e[n++] = B * cfg_proj(c) * HW;
    e[n++] = B * D * HW;
    e[n++] = B * C * HW;
    e[n++] = B * C * HW;
    e[n++] = B * c->sel_hidden * HW;
    e[n++] = B * L * HW;
    e[n++] = B * C * H;
    e[n++] = B * C * W;
    e[n++] = B * M * H;
    e[n++] = B * M * W;
    e[n++] = B * M * (H + W);
    e[n++] = B * C * (H + W);
    cols = (size_t)C * 9 * (size_t)HW * sizeof(float);
  }
  size_t total = 1024;
  for (int i = 0; i < n; i++) total += round256((size_t)e[i] * sizeof(float));
  size_t small = round256((size_t)(2 * B * (c->adapt_groups + c->ca_groups + 1)) * sizeof(float)) +
                 round256((size_t)(B * HW + 4) * sizeof(float));
  return total + (cols > small ? cols : small);
}

size_t mapper_scratch_bytes(const mapper_config *c, int64_t B, int64_t H, int64_t W) {
  size_t train = mapper_scratch_bytes_train(c, B, H, W);
  size_t infer = mapper_tape_bytes(c, B, H, W) + 1024 +
                 (c->kind == MAPPER_MLP ? 0 : (size_t)c->layers * c->width * 9 * (size_t)(H * W) * sizeof(float));
  return train > infer ? train : infer;
}

mapper_tape *mapper_tape_new(const mapper_config *c, int64_t B, int64_t H, int64_t W,
                             nn_device device, cmds_error *err) {
  if (mapper_config_check(c, err)) return NULL;
  if (B < 1 || H < 1 || W < 1) {
    CMDS_FAIL(err, CMDS_EINPUT, "mapper_tape_new: batch %lld of %lld x %lld", (long long)B,
              (long long)H, (long long)W);
    return NULL;
  }
  mapper_tape *t = cmds_xcalloc(1, sizeof *t);
  t->cfg = *c;
  t->B = B, t->H = H, t->W = W;
  t->device = device;
  if (nn_arena_init(&t->store, device, mapper_tape_bytes(c, B, H, W), err) ||
      acts_layout(c, B, H, W, &t->a, &t->store, NULL, err)) {
    cmds_error_wrap(err, "mapper tape");
    nn_arena_free(&t->store);
    free(t);
    return NULL;
  }
  return t;
}

void mapper_tape_free(mapper_tape *t) {
  if (!t) return;
  nn_arena_free(&t->store);
  free(t);
}

/* ---------------------------------------------------------------- mapper's own ops */

/* Y[bc, i] = mean_j F[bc, i, j] (i < H), Y[bc, H + j] = mean_i F[bc, i, j]. */
static int op_pool(nn_ctx *ctx, float *y, const float *f, int64_t BC, int64_t H, int64_t W, cmds_error *err) {
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_pool(ctx, y, f, BC, H, W, err));
#pragma omp parallel for schedule(static)
  for (int64_t q = 0; q < BC; q++) {
    const float *fq = f + q * H * W;
    float *yq = y + q * (H + W);
    for (int64_t j = 0; j < W; j++) yq[H + j] = 0.0f;
    for (int64_t i = 0; i < H; i++) {
      float s = 0.0f;
      for (int64_t j = 0; j < W; j++) {
        s += fq[i * W + j];
        yq[H + j] += fq[i * W + j];
      }
      yq[i] = s / (float)W;
    }
    for (int64_t j = 0; j < W; j++) yq[H + j] /= (float)H;
  }
  return CMDS_OK;
}

/* dF[bc, i, j] += dY[bc, i] / W + dY[bc, H + j] / H. */
static int op_pool_bwd(nn_ctx *ctx, float *df, const float *dy, int64_t BC, int64_t H, int64_t W, cmds_error *err) {
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_pool_bwd(ctx, df, dy, BC, H, W, err));
#pragma omp parallel for schedule(static)
  for (int64_t q = 0; q < BC; q++) {
    const float *dq = dy + q * (H + W);
    float *fq = df + q * H * W;
    for (int64_t i = 0; i < H; i++)
      for (int64_t j = 0; j < W; j++) fq[i * W + j] += dq[i] / (float)W + dq[H + j] / (float)H;
  }
  return CMDS_OK;
}

static inline float hswish(float v) { return v * fminf(fmaxf(v + 3.0f, 0.0f), 6.0f) / 6.0f; }
/* PyTorch's hardswish_backward: 0 below -3, x/3 + 1/2 up to 3, 1 above. */
static inline float hswish_grad(float v) { return v < -3.0f ? 0.0f : v <= 3.0f ? v / 3.0f + 0.5f : 1.0f; }

/* zn (BM, H+W) -> zh (BM, H), zw (BM, W): h-swish and the split in one pass. */
static int op_hswish_split(nn_ctx *ctx, float *zh, float *zw, const float *zn, int64_t BM, int64_t H,
                           int64_t W, cmds_error *err) {
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_hswish_split(ctx, zh, zw, zn, BM, H, W, err));
  for (int64_t q = 0; q < BM; q++) {
    for (int64_t i = 0; i < H; i++) zh[q * H + i] = hswish(zn[q * (H + W) + i]);
    for (int64_t j = 0; j < W; j++) zw[q * W + j] = hswish(zn[q * (H + W) + H + j]);
  }
  return CMDS_OK;
}

static int op_hswish_bwd(nn_ctx *ctx, float *dz, const float *dzh, const float *dzw, const float *zn,
                         int64_t BM, int64_t H, int64_t W, cmds_error *err) {
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_hswish_bwd(ctx, dz, dzh, dzw, zn, BM, H, W, err));
  for (int64_t q = 0; q < BM; q++) {
    for (int64_t i = 0; i < H; i++) dz[q * (H + W) + i] = dzh[q * H + i] * hswish_grad(zn[q * (H + W) + i]);
    for (int64_t j = 0; j < W; j++)
      dz[q * (H + W) + H + j] = dzw[q * W + j] * hswish_grad(zn[q * (H + W) + H + j]);
  }
  return CMDS_OK;
}

static int op_sigmoid(nn_ctx *ctx, nn_tensor *t, cmds_error *err) {
  int64_t n = nn_tensor_numel(t);
  float *y = t->data;
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_sigmoid(ctx, y, n, err));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-y[i]));
  return CMDS_OK;
}

static int op_ca_apply(nn_ctx *ctx, float *ft, const float *f, const float *ah, const float *aw,
                       int64_t BC, int64_t H, int64_t W, cmds_error *err) {
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_ca_apply(ctx, ft, f, ah, aw, BC, H, W, err));
#pragma omp parallel for schedule(static)
  for (int64_t q = 0; q < BC; q++)
    for (int64_t i = 0; i < H; i++)
      for (int64_t j = 0; j < W; j++) {
        int64_t k = (q * H + i) * W + j;
        ft[k] = f[k] * ah[q * H + i] * aw[q * W + j];
      }
  return CMDS_OK;
}

/* Ft = F ah aw: dF += dFt ah aw; dah = (sum_j dFt F aw) * ah (1 - ah) (the gradient of the
 * conv_h output before the sigmoid), daw likewise over i. */
static int op_ca_apply_bwd(nn_ctx *ctx, float *df, float *dah, float *daw, const float *dft,
                           const float *f, const float *ah, const float *aw, int64_t BC, int64_t H,
                           int64_t W, cmds_error *err) {
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_ca_apply_bwd(ctx, df, dah, daw, dft, f, ah, aw, BC, H, W, err));
#pragma omp parallel for schedule(static)
  for (int64_t q = 0; q < BC; q++) {
    const float *ahq = ah + q * H, *awq = aw + q * W;
    float *dwq = daw + q * W;
    for (int64_t j = 0; j < W; j++) dwq[j] = 0.0f;
    for (int64_t i = 0; i < H; i++) {
      float sh = 0.0f;
      for (int64_t j = 0; j < W; j++) {
        int64_t k = (q * H + i) * W + j;
        float g = dft[k], gf = g * f[k];
        df[k] += g * ahq[i] * awq[j];
        sh += gf * awq[j];
        dwq[j] += gf * ahq[i];
      }
      dah[q * H + i] = sh * ahq[i] * (1.0f - ahq[i]);
    }
    for (int64_t j = 0; j < W; j++) dwq[j] *= awq[j] * (1.0f - awq[j]);
  }
  return CMDS_OK;
}

static int op_relu(nn_ctx *ctx, nn_tensor *t, cmds_error *err) {
  int64_t n = nn_tensor_numel(t);
  float *y = t->data;
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_relu(ctx, y, n, err));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
  return CMDS_OK;
}

static int op_relu_bwd(nn_ctx *ctx, nn_tensor *dy, const nn_tensor *y, cmds_error *err) {
  int64_t n = nn_tensor_numel(y);
  float *d = dy->data;
  const float *v = y->data;
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_relu_bwd(ctx, d, v, n, err));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) d[i] = v[i] > 0.0f ? d[i] : 0.0f;
  return CMDS_OK;
}

/* Softmax over the L channels of every pixel, in place: w (B, L, HW). */
static int op_softmax_ch(nn_ctx *ctx, float *w, int64_t B, int64_t L, int64_t HW, cmds_error *err) {
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_softmax_ch(ctx, w, B, L, HW, err));
#pragma omp parallel for schedule(static)
  for (int64_t q = 0; q < B * HW; q++) {
    float *wb = w + (q / HW) * L * HW + q % HW;
    float mx = wb[0], s = 0.0f;
    for (int64_t l = 1; l < L; l++) mx = fmaxf(mx, wb[l * HW]);
    for (int64_t l = 0; l < L; l++) s += (wb[l * HW] = expf(wb[l * HW] - mx));
    for (int64_t l = 0; l < L; l++) wb[l * HW] /= s;
  }
  return CMDS_OK;
}

/* dz = w (dw - sum_l w dw), in place in dw. */
static int op_softmax_ch_bwd(nn_ctx *ctx, float *dw, const float *w, int64_t B, int64_t L, int64_t HW,
                             cmds_error *err) {
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_softmax_ch_bwd(ctx, dw, w, B, L, HW, err));
#pragma omp parallel for schedule(static)
  for (int64_t q = 0; q < B * HW; q++) {
    int64_t o = (q / HW) * L * HW + q % HW;
    float s = 0.0f;
    for (int64_t l = 0; l < L; l++) s += w[o + l * HW] * dw[o + l * HW];
    for (int64_t l = 0; l < L; l++) dw[o + l * HW] = w[o + l * HW] * (dw[o + l * HW] - s);
  }
  return CMDS_OK;
}

/* S[b, c, p] = sum_l w[b, l, p] F[b, l*D + c, p]. */
static int op_fuse(nn_ctx *ctx, float *s, const float *w, const float *f, int64_t B, int64_t L,
                   int64_t D, int64_t HW, cmds_error *err) {
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_fuse(ctx, s, w, f, B, L, D, HW, err));
#pragma omp parallel for schedule(static)
  for (int64_t q = 0; q < B * D; q++) {
    int64_t b = q / D, c = q % D;
    float *sq = s + q * HW;
    for (int64_t p = 0; p < HW; p++) sq[p] = 0.0f;
    for (int64_t l = 0; l < L; l++) {
      const float *fl = f + (b * L * D + l * D + c) * HW, *wl = w + (b * L + l) * HW;
      for (int64_t p = 0; p < HW; p++) sq[p] += wl[p] * fl[p];
    }
  }
  return CMDS_OK;
}

/* dF[b, l*D + c, p] = w[b, l, p] dS[b, c, p] (set); dw[b, l, p] = sum_c dS F (set). */
static int op_fuse_bwd(nn_ctx *ctx, float *df, float *dw, const float *ds, const float *w,
                       const float *f, int64_t B, int64_t L, int64_t D, int64_t HW, cmds_error *err) {
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_fuse_bwd(ctx, df, dw, ds, w, f, B, L, D, HW, err));
#pragma omp parallel for schedule(static)
  for (int64_t q = 0; q < B * L; q++) {
    int64_t b = q / L;
    const float *wl = w + q * HW;
    float *dwl = dw + q * HW;
    for (int64_t p = 0; p < HW; p++) dwl[p] = 0.0f;
    for (int64_t c = 0; c < D; c++) {
      const float *dsc = ds + (b * D + c) * HW, *fc = f + (q * D + c) * HW;
      float *dfc = df + (q * D + c) * HW;
      for (int64_t p = 0; p < HW; p++) {
        dfc[p] = wl[p] * dsc[p];
        dwl[p] += dsc[p] * fc[p];
      }
    }
  }
  return CMDS_OK;
}

/* ---------------------------------------------------------------- forward / backward */

static nn_tensor view4(const nn_tensor *t, int64_t offset, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
  return nn_tensor_view((float *)t->data + offset, NN_F32, t->device, d0, d1, d2, d3);
}

#define TRY(call)          \
  do {                     \
    rc = (call);           \
    if (rc) goto done;     \
  } while (0)

static int check_io(const mapper_model *m, nn_ctx *ctx, const char *op, const nn_tensor *x,
                    const char *argname, int64_t *B, int64_t *H, int64_t *W, cmds_error *err) {
  if (ctx->device != m->device)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: model on %s, context on %s", op, nn_device_name(m->device),
                     nn_device_name(ctx->device));
  if (!x || x->ndim != 4 || x->shape[1] != m->cfg.layers * m->cfg.width)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s must be (B, L*D = %lld, H, W)", op, argname,
                     (long long)(m->cfg.layers * m->cfg.width));
  *B = x->shape[0], *H = x->shape[2], *W = x->shape[3];
  return nn_tensor_expect(x, op, argname, ctx->device, 4, x->shape, err);
}

static int tape_matches(const mapper_tape *t, const mapper_model *m, int64_t B, int64_t H, int64_t W,
                        const char *op, cmds_error *err) {
  mapper_config a = cfg_resolved(&t->cfg), b = cfg_resolved(&m->cfg);
  if (memcmp(&a, &b, sizeof a) || t->B != B || t->H != H || t->W != W || t->device != m->device)
    return CMDS_FAIL(err, CMDS_EINPUT,
                     "%s: the tape was made for another configuration, batch (%lld, %lld x %lld) or "
                     "device; this call has (%lld, %lld x %lld)",
                     op, (long long)t->B, (long long)t->H, (long long)t->W, (long long)B, (long long)H,
                     (long long)W);
  return CMDS_OK;
}

int mapper_forward(mapper_model *m, nn_ctx *ctx, const nn_tensor *x, nn_tensor *p,
                   mapper_tape *tape, cmds_error *err) {
  const char *op = "mapper_forward";
  int64_t B = 0, H = 0, W = 0;
  int rc = check_io(m, ctx, op, x, "x", &B, &H, &W, err);
  if (!rc) rc = nn_tensor_expect(p, op, "P", ctx->device, 4, x->shape, err);
  if (!rc && tape) rc = tape_matches(tape, m, B, H, W, op, err);
  if (rc) return rc;
  if (!ctx->scratch) return CMDS_FAIL(err, CMDS_EINPUT, "%s: needs a scratch arena in the context", op);
  const mapper_config *c = &m->cfg;
  int64_t D = c->width, L = c->layers, C = L * D, HW = H * W, M = cfg_M(c);
  mapper_param *P = m->params;
  size_t mark = nn_arena_mark(ctx->scratch);
  mapper_acts tmp, *a = tape ? &tape->a : &tmp;
  if (!tape) TRY(acts_layout(c, B, H, W, &tmp, ctx->scratch, NULL, err));

  if (c->kind == MAPPER_MLP) {
    TRY(nn_conv2d_forward(ctx, &a->Q, x, &P[0].value, &P[1].value, err));
    TRY(nn_gelu_forward(ctx, &a->G, &a->Q, err));
    TRY(nn_conv2d_forward(ctx, p, &a->G, &P[2].value, &P[3].value, err));
    goto done;
  }
  /* 1. local adaptation, one (image, block) slice at a time (x's blocks are channel slices) */
  for (int64_t l = 0; l < L; l++) {
    mapper_param *pa = &P[p_adapt(l)];
    for (int64_t b = 0; b < B; b++) {
      int64_t off = (b * C + l * D) * HW;
      nn_tensor xs = view4(x, off, 1, D, H, W), as = view4(&a->A, off, 1, D, H, W),
                ns = view4(&a->N, off, 1, D, H, W);
      TRY(nn_conv2d_forward(ctx, &as, &xs, &pa[0].value, &pa[1].value, err));
      TRY(nn_groupnorm_forward(ctx, &ns, &as, c->adapt_groups, &pa[2].value, &pa[3].value, GN_EPS, err));
    }
  }
  TRY(nn_gelu_forward(ctx, &a->F, &a->N, err));
  /* 3. coordinate attention */
  mapper_param *pc = &P[p_coord(c)];
  TRY(op_pool(ctx, a->Y.data, a->F.data, B * C, H, W, err));
  TRY(nn_conv2d_forward(ctx, &a->Z, &a->Y, &pc[0].value, &pc[1].value, err));
  TRY(nn_groupnorm_forward(ctx, &a->Zn, &a->Z, c->ca_groups, &pc[2].value, &pc[3].value, GN_EPS, err));
  TRY(op_hswish_split(ctx, a->Zhh.data, a->Zhw.data, a->Zn.data, B * M, H, W, err));
  TRY(nn_conv2d_forward(ctx, &a->ah, &a->Zhh, &pc[4].value, &pc[5].value, err));
  TRY(nn_conv2d_forward(ctx, &a->aw, &a->Zhw, &pc[6].value, &pc[7].value, err));
  TRY(op_sigmoid(ctx, &a->ah, err));
  TRY(op_sigmoid(ctx, &a->aw, err));
  TRY(op_ca_apply(ctx, a->Ft.data, a->F.data, a->ah.data, a->aw.data, B * C, H, W, err));
  /* 4. spatial selector; the 3x3 conv one image at a time keeps its columns at C*9*HW */
  mapper_param *ps = &P[p_sel(c)];
  for (int64_t b = 0; b < B; b++) {
    nn_tensor fs = view4(&a->Ft, b * C * HW, 1, C, H, W),
              rs = view4(&a->R, b * c->sel_hidden * HW, 1, c->sel_hidden, H, W);
    TRY(nn_conv2d_forward(ctx, &rs, &fs, &ps[0].value, &ps[1].value, err));
  }
  TRY(op_relu(ctx, &a->R, err));
  TRY(nn_conv2d_forward(ctx, &a->wgt, &a->R, &ps[2].value, &ps[3].value, err));
  TRY(op_softmax_ch(ctx, a->wgt.data, B, L, HW, err));
  /* 5. fusion and projection */
  TRY(op_fuse(ctx, a->S.data, a->wgt.data, a->F.data, B, L, D, HW, err));
  mapper_param *pp = &P[p_proj(c)];
  TRY(nn_conv2d_forward(ctx, &a->Q, &a->S, &pp[0].value, &pp[1].value, err));
  TRY(nn_gelu_forward(ctx, &a->G, &a->Q, err));
  TRY(nn_conv2d_forward(ctx, p, &a->G, &pp[2].value, &pp[3].value, err));
done:
  nn_arena_rewind(ctx->scratch, mark);
  return rc ? cmds_error_wrap(err, "%s", op) : CMDS_OK;
}

static int scratch_tensor(nn_ctx *ctx, nn_tensor *t, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                          cmds_error *err) {
  int64_t s[4] = {d0, d1, d2, d3};
  return nn_tensor_alloc(t, ctx->scratch, NN_F32, 4, s, err);
}

int mapper_backward(mapper_model *m, nn_ctx *ctx, const nn_tensor *x, const nn_tensor *dp,
                    mapper_tape *tape, cmds_error *err) {
  const char *op = "mapper_backward";
  int64_t B = 0, H = 0, W = 0;
  int rc = check_io(m, ctx, op, x, "x", &B, &H, &W, err);
  if (!rc) rc = nn_tensor_expect(dp, op, "dP", ctx->device, 4, x->shape, err);
  if (!rc && !tape) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: needs the tape of the forward", op);
  if (!rc) rc = tape_matches(tape, m, B, H, W, op, err);
  if (rc) return rc;
  if (!ctx->scratch) return CMDS_FAIL(err, CMDS_EINPUT, "%s: needs a scratch arena in the context", op);
  const mapper_config *c = &m->cfg;
  int64_t D = c->width, L = c->layers, C = L * D, HW = H * W, M = cfg_M(c);
  mapper_param *P = m->params;
  mapper_acts *a = &tape->a;
  size_t mark = nn_arena_mark(ctx->scratch);
  nn_tensor dG, dS, dF, dFt, dR, dwgt, dah, daw, dZhh, dZhw, dZ, dY;

  if (c->kind == MAPPER_MLP) {
    TRY(scratch_tensor(ctx, &dG, B, cfg_mlp(c), H, W, err));
    TRY(nn_conv2d_backward(ctx, &dG, &P[2].grad, &P[3].grad, dp, &a->G, &P[2].value, err));
    TRY(nn_gelu_backward(ctx, &dG, &dG, &a->Q, err));
    TRY(nn_conv2d_backward(ctx, NULL, &P[0].grad, &P[1].grad, &dG, x, &P[0].value, err));
    goto done;
  }
  TRY(scratch_tensor(ctx, &dG, B, cfg_proj(c), H, W, err));
  TRY(scratch_tensor(ctx, &dS, B, D, H, W, err));
  TRY(scratch_tensor(ctx, &dF, B, C, H, W, err));
  TRY(scratch_tensor(ctx, &dFt, B, C, H, W, err));
  TRY(scratch_tensor(ctx, &dR, B, c->sel_hidden, H, W, err));
  TRY(scratch_tensor(ctx, &dwgt, B, L, H, W, err));
  TRY(scratch_tensor(ctx, &dah, B, C, 1, H, err));
  TRY(scratch_tensor(ctx, &daw, B, C, 1, W, err));
  TRY(scratch_tensor(ctx, &dZhh, B, M, 1, H, err));
  TRY(scratch_tensor(ctx, &dZhw, B, M, 1, W, err));
  TRY(scratch_tensor(ctx, &dZ, B, M, 1, H + W, err));
  TRY(scratch_tensor(ctx, &dY, B, C, 1, H + W, err));
  /* 5. projection and fusion */
  mapper_param *pp = &P[p_proj(c)];
  TRY(nn_conv2d_backward(ctx, &dG, &pp[2].grad, &pp[3].grad, dp, &a->G, &pp[2].value, err));
  TRY(nn_gelu_backward(ctx, &dG, &dG, &a->Q, err));
  TRY(nn_conv2d_backward(ctx, &dS, &pp[0].grad, &pp[1].grad, &dG, &a->S, &pp[0].value, err));
  TRY(op_fuse_bwd(ctx, dF.data, dwgt.data, dS.data, a->wgt.data, a->F.data, B, L, D, HW, err));
  /* 4. selector */
  mapper_param *ps = &P[p_sel(c)];
  TRY(op_softmax_ch_bwd(ctx, dwgt.data, a->wgt.data, B, L, HW, err));
  TRY(nn_conv2d_backward(ctx, &dR, &ps[2].grad, &ps[3].grad, &dwgt, &a->R, &ps[2].value, err));
  TRY(op_relu_bwd(ctx, &dR, &a->R, err));
  TRY(nn_conv2d_backward(ctx, &dFt, &ps[0].grad, &ps[1].grad, &dR, &a->Ft, &ps[0].value, err));
  /* 3. coordinate attention */
  mapper_param *pc = &P[p_coord(c)];
  TRY(op_ca_apply_bwd(ctx, dF.data, dah.data, daw.data, dFt.data, a->F.data, a->ah.data, a->aw.data,
                      B * C, H, W, err));
  TRY(nn_conv2d_backward(ctx, &dZhh, &pc[4].grad, &pc[5].grad, &dah, &a->Zhh, &pc[4].value, err));
  TRY(nn_conv2d_backward(ctx, &dZhw, &pc[6].grad, &pc[7].grad, &daw, &a->Zhw, &pc[6].value, err));
  TRY(op_hswish_bwd(ctx, dZ.data, dZhh.data, dZhw.data, a->Zn.data, B * M, H, W, err));
  TRY(nn_groupnorm_backward(ctx, &dZ, &pc[2].grad, &pc[3].grad, &dZ, &a->Z, c->ca_groups, &pc[2].value,
                            GN_EPS, err));
  TRY(nn_conv2d_backward(ctx, &dY, &pc[0].grad, &pc[1].grad, &dZ, &a->Y, &pc[0].value, err));
  TRY(op_pool_bwd(ctx, dF.data, dY.data, B * C, H, W, err));
  /* 1. local adaptation */
  TRY(nn_gelu_backward(ctx, &dF, &dF, &a->N, err));
  for (int64_t l = 0; l < L; l++) {
    mapper_param *pa = &P[p_adapt(l)];
    for (int64_t b = 0; b < B; b++) {
      int64_t off = (b * C + l * D) * HW;
      nn_tensor xs = view4(x, off, 1, D, H, W), as = view4(&a->A, off, 1, D, H, W),
                ds = view4(&dF, off, 1, D, H, W);
      TRY(nn_groupnorm_backward(ctx, &ds, &pa[2].grad, &pa[3].grad, &ds, &as, c->adapt_groups,
                                &pa[2].value, GN_EPS, err));
      TRY(nn_conv2d_backward(ctx, NULL, &pa[0].grad, &pa[1].grad, &ds, &xs, &pa[0].value, err));
    }
  }
done:
  nn_arena_rewind(ctx->scratch, mark);
  return rc ? cmds_error_wrap(err, "%s", op) : CMDS_OK;
}

/* ---------------------------------------------------------------- loss */

int mapper_loss(nn_ctx *ctx, const nn_tensor *P, const nn_tensor *T, const nn_tensor *mask,
                int64_t layers, const float *layer_w, double denom, double *loss, nn_tensor *dp,
                cmds_error *err) {
  const char *op = "mapper_loss";
  if (!P || P->ndim != 4 || layers < 1 || P->shape[1] % layers)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: P must be (B, L*D, H, W) with L = %lld", op, (long long)layers);
  if (!(denom > 0.0)) return CMDS_FAIL(err, CMDS_EINPUT, "%s: denominator %g must be > 0", op, denom);
  int64_t B = P->shape[0], C = P->shape[1], H = P->shape[2], W = P->shape[3], HW = H * W, D = C / layers;
  int64_t ms[3] = {B, H, W};
  int rc = nn_tensor_expect(P, op, "P", ctx->device, 4, P->shape, err);
  if (!rc) rc = nn_tensor_expect(T, op, "T", ctx->device, 4, P->shape, err);
  if (!rc && mask) rc = nn_tensor_expect(mask, op, "mask", ctx->device, 3, ms, err);
  if (!rc && dp) rc = nn_tensor_expect(dp, op, "dP", ctx->device, 4, P->shape, err);
  if (rc) return rc;
  const float *pd = P->data, *td = T->data, *md = mask ? mask->data : NULL;
  float *dd = dp ? dp->data : NULL;
  if (ctx->device != NN_CPU) {
#ifdef CMDS_CUDA
    if (!ctx->scratch) return CMDS_FAIL(err, CMDS_EINPUT, "%s: needs a scratch arena in the context", op);
    size_t mark = nn_arena_mark(ctx->scratch);
    float *tmp = nn_arena_alloc(ctx->scratch, (size_t)(B * HW + 4) * sizeof(float), err);
    if (!tmp) return cmds_error_wrap(err, "%s", op);
    rc = mapper_cuda_loss(ctx, loss, dd, pd, td, md, layer_w, B, layers, D, HW, denom, tmp, err);
    nn_arena_rewind(ctx->scratch, mark);
    return rc;
#else
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
  }
  const double eps = NN_COSINE_EPS;
  double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (int64_t q = 0; q < B * HW; q++) {
    int64_t b = q / HW, px = q % HW;
    double m = md ? md[q] : 1.0;
    for (int64_t l = 0; l < layers; l++) {
      const float *pl = pd + (b * C + l * D) * HW + px, *tl = td + (b * C + l * D) * HW + px;
      double dot = 0.0, pp = 0.0, tt = 0.0;
      for (int64_t k = 0; k < D; k++) {
        double u = pl[k * HW], v = tl[k * HW];
        dot += u * v;
        pp += u * u;
        tt += v * v;
      }
      double np = fmax(sqrt(pp), eps), nt = fmax(sqrt(tt), eps), cosv = dot / (np * nt);
      double wgt = (double)layer_w[l] * m / denom;
      total += wgt * (1.0 - cosv);
      if (!dd) continue;
      float *dl = dd + (b * C + l * D) * HW + px;
      /* d(1 - cos)/dP = -(T / (|P||T|) - cos P / |P|^2) (norm clamp as a constant) */
      double a1 = -wgt / (np * nt), a2 = sqrt(pp) > eps ? wgt * cosv / (np * np) : 0.0;
      for (int64_t k = 0; k < D; k++) dl[k * HW] = (float)(a1 * tl[k * HW] + a2 * pl[k * HW]);
    }
  }
  *loss = total;
  return CMDS_OK;
}

/* ---------------------------------------------------------------- AdamW, schedule */

int mapper_adamw_init(mapper_adamw *o, const mapper_model *m, float weight_decay, cmds_error *err) {
  memset(o, 0, sizeof *o);
  o->beta1 = 0.9f;
  o->beta2 = 0.999f;
  o->eps = 1e-8f;
  o->weight_decay = weight_decay;
  size_t bytes = 256;
  for (int i = 0; i < m->nparams; i++) bytes += 2 * round256(nn_tensor_bytes(&m->params[i].value));
  int rc = nn_arena_init(&o->store, m->device, bytes, err);
  if (rc) return cmds_error_wrap(err, "AdamW state");
  nn_ctx c = {0};
  c.device = m->device;
  for (int i = 0; i < m->nparams && !rc; i++) {
    const nn_tensor *v = &m->params[i].value;
    rc = nn_tensor_alloc(&o->m[i], &o->store, NN_F32, v->ndim, v->shape, err);
    if (!rc) rc = nn_tensor_alloc(&o->v[i], &o->store, NN_F32, v->ndim, v->shape, err);
    if (!rc) rc = dev_zero(&c, &o->m[i], err);
    if (!rc) rc = dev_zero(&c, &o->v[i], err);
  }
  if (rc) mapper_adamw_free(o);
  return rc;
}

void mapper_adamw_free(mapper_adamw *o) {
  if (!o) return;
  nn_arena_free(&o->store);
  memset(o, 0, sizeof *o);
}

int mapper_adamw_step(mapper_adamw *o, mapper_model *m, nn_ctx *ctx, float lr, cmds_error *err) {
  if (ctx->device != m->device || o->store.device != m->device)
    return CMDS_FAIL(err, CMDS_EINPUT, "mapper_adamw_step: model, optimiser state and context on different devices");
  o->step++;
  float bc1 = (float)(1.0 - pow((double)o->beta1, (double)o->step));
  float bc2s = (float)sqrt(1.0 - pow((double)o->beta2, (double)o->step));
  float b1 = o->beta1, b2 = o->beta2, eps = o->eps, wd = o->weight_decay;
  for (int i = 0; i < m->nparams; i++) {
    int64_t n = nn_tensor_numel(&m->params[i].value);
    float *p = m->params[i].value.data, *mm = o->m[i].data, *vv = o->v[i].data;
    const float *g = m->params[i].grad.data;
    if (ctx->device != NN_CPU) {
#ifdef CMDS_CUDA
      int rc = mapper_cuda_adamw(ctx, p, g, mm, vv, n, lr, b1, b2, eps, wd, bc1, bc2s, err);
      if (rc) return rc;
      continue;
#else
      return CMDS_FAIL(err, CMDS_EINPUT, "mapper_adamw_step: cuda tensors in a build without CUDA");
#endif
    }
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < n; j++) {
      float pv = p[j] * (1.0f - lr * wd);
      mm[j] = b1 * mm[j] + (1.0f - b1) * g[j];
      vv[j] = b2 * vv[j] + (1.0f - b2) * g[j] * g[j];
      p[j] = pv - (lr / bc1) * mm[j] / (sqrtf(vv[j]) / bc2s + eps);
    }
  }
  return CMDS_OK;
}

double mapper_cosine_lr(int64_t step, int64_t total, double lr_max, double lr_min) {
  if (total <= 0 || step <= 0) return lr_max;
  if (step >= total) return lr_min;
  return lr_min + (lr_max - lr_min) * 0.5 * (1.0 + cos(3.14159265358979323846 * (double)step / (double)total));
}

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
  if ((!direct || ctx->device != NN_CPU) && !ctx->scratch)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: needs a scratch arena in the context", op);
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
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
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

/* schemas/mapper_weights_v1.md */
#define MAPPER_SCHEMA "cmds.mapper_weights"
#define MAPPER_SCHEMA_VERSION "1"
#define N_CFG_KEYS 11
static void cfg_to_kv(const mapper_config *c, char vals[N_CFG_KEYS][32], const char *keys[N_CFG_KEYS]) {
  mapper_config r = cfg_resolved(c);
  const int64_t v[N_CFG_KEYS] = {0, 0, 0, r.width, r.layers, r.adapt_groups, r.ca_reduction,
                                 r.ca_groups, r.sel_hidden, r.proj_hidden, r.mlp_hidden};
  static const char *names[N_CFG_KEYS] = {"cmds_schema", "cmds_schema_version", "mapper.kind",
                                          "mapper.width", "mapper.layers",
                                          "mapper.adapt_groups", "mapper.ca_reduction", "mapper.ca_groups",
                                          "mapper.sel_hidden", "mapper.proj_hidden", "mapper.mlp_hidden"};
  for (int i = 0; i < N_CFG_KEYS; i++) {
    keys[i] = names[i];
    if (i == 0)
      snprintf(vals[i], 32, "%s", MAPPER_SCHEMA);
    else if (i == 1)
      snprintf(vals[i], 32, "%s", MAPPER_SCHEMA_VERSION);
    else if (i == 2)
      snprintf(vals[i], 32, "%s", kind_name(c->kind));
    else
      snprintf(vals[i], 32, "%lld", (long long)v[i]);
  }
}

int mapper_save(const mapper_model *const *models, const char *const *prefixes, int n,
                const char *const *extra_kv, int n_extra, const char *path, cmds_error *err) {
  if (n < 1) return CMDS_FAIL(err, CMDS_EINPUT, "mapper_save %s: no models", path);
  for (int k = 1; k < n; k++) {
    mapper_config a = cfg_resolved(&models[0]->cfg), b = cfg_resolved(&models[k]->cfg);
    if (memcmp(&a, &b, sizeof a))
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
    char vals[N_CFG_KEYS][32];
    const char *keys[N_CFG_KEYS];
    cfg_to_kv(&models[0]->cfg, vals, keys);
    const char **kv = cmds_xcalloc((size_t)(2 * (N_CFG_KEYS + n_extra)), sizeof *kv);
    for (int q = 0; q < N_CFG_KEYS; q++) kv[2 * q] = keys[q], kv[2 * q + 1] = vals[q];
    for (int q = 0; q < 2 * n_extra; q++) kv[2 * N_CFG_KEYS + q] = extra_kv[q];
    rc = cmds_st_write(path, t, total, kv, N_CFG_KEYS + n_extra, err);
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
  if (!rc) rc = meta_int(&f, "mapper.width", &c.width, err);
  if (!rc) rc = meta_int(&f, "mapper.layers", &c.layers, err);
  if (!rc) rc = meta_int(&f, "mapper.adapt_groups", &c.adapt_groups, err);
  if (!rc) rc = meta_int(&f, "mapper.ca_reduction", &c.ca_reduction, err);
  if (!rc) rc = meta_int(&f, "mapper.ca_groups", &c.ca_groups, err);
  if (!rc) rc = meta_int(&f, "mapper.sel_hidden", &c.sel_hidden, err);
  if (!rc) rc = meta_int(&f, "mapper.proj_hidden", &c.proj_hidden, err);
  if (!rc) rc = meta_int(&f, "mapper.mlp_hidden", &c.mlp_hidden, err);
  if (!rc && (rc = mapper_config_check(&c, err))) cmds_error_wrap(err, "%s: metadata", path);
  pspec s[MAPPER_MAX_PARAMS];
  cmds_st_expect table[MAPPER_MAX_PARAMS];
  char names[MAPPER_MAX_PARAMS][2 * MAPPER_NAME_MAX + 64];
  int np = 0;
  if (!rc) {
    np = mapper_specs(&c, s);
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
  if (!rc) rc = model_alloc(m, &c, device, err);
  for (int i = 0; !rc && i < np; i++) {
    const cmds_st_tensor *t = cmds_st_find(&f, names[i]);
    nn_tensor h = m->params[i].value;
    h.device = NN_CPU;
    h.data = (void *)t->data;
    rc = nn_tensor_copy(&m->params[i].value, &h, err);
    if (rc) mapper_free(m);
  }
  if (!rc && (rc = grads_zero_any(m, err))) mapper_free(m);
  cmds_st_close(&f);
  return rc;
}
