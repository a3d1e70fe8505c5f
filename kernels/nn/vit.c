/* vit: see vit.h. */
#include "vit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "activation.h"
#include "attention.h"
#include "linear.h"
#include "nn_blas.h"
#include "norm.h"
#include "rng.h"
#include "safetensors.h"

#ifdef CMDS_CUDA
#include "vit_bf16.h"
#endif


void vit_config_b8(vit_config *c) {
  c->image = 224;
  c->patch = 8;
  c->width = 768;
  c->depth = 12;
  c->heads = 12;
  c->mlp = 3072;
  c->eps = 1e-6f;
}

const char *vit_layout_name(vit_layout l) {
  return l == VIT_TIMM ? "timm" : l == VIT_HF ? "transformers" : "transformers-5";
}

/* ---- names -------------------------------------------------------------------------- */

/* The parameter names of one layout. Block names take the block index. */
typedef struct names {
  const char *cls, *pos, *patch_w, *patch_b, *norm_w, *norm_b;
  const char *blk[12]; /* ln1 w,b; q/qkv w,b; proj w,b; ln2 w,b; fc1 w,b; fc2 w,b */
  const char *k_w, *k_b, *v_w, *v_b; /* separate key/value (transformers); NULL for timm */
} names;

static const names timm_names = {
    "cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias",
    {"blocks.%d.norm1.weight", "blocks.%d.norm1.bias", "blocks.%d.attn.qkv.weight", "blocks.%d.attn.qkv.bias",
     "blocks.%d.attn.proj.weight", "blocks.%d.attn.proj.bias", "blocks.%d.norm2.weight", "blocks.%d.norm2.bias",
     "blocks.%d.mlp.fc1.weight", "blocks.%d.mlp.fc1.bias", "blocks.%d.mlp.fc2.weight", "blocks.%d.mlp.fc2.bias"},
    NULL, NULL, NULL, NULL};

static const names hf_names = {
    "embeddings.cls_token", "embeddings.position_embeddings", "embeddings.patch_embeddings.projection.weight",
    "embeddings.patch_embeddings.projection.bias", "layernorm.weight", "layernorm.bias",
    {"encoder.layer.%d.layernorm_before.weight", "encoder.layer.%d.layernorm_before.bias",
     "encoder.layer.%d.attention.attention.query.weight", "encoder.layer.%d.attention.attention.query.bias",
     "encoder.layer.%d.attention.output.dense.weight", "encoder.layer.%d.attention.output.dense.bias",
     "encoder.layer.%d.layernorm_after.weight", "encoder.layer.%d.layernorm_after.bias",
     "encoder.layer.%d.intermediate.dense.weight", "encoder.layer.%d.intermediate.dense.bias",
     "encoder.layer.%d.output.dense.weight", "encoder.layer.%d.output.dense.bias"},
    "encoder.layer.%d.attention.attention.key.weight", "encoder.layer.%d.attention.attention.key.bias",
    "encoder.layer.%d.attention.attention.value.weight", "encoder.layer.%d.attention.attention.value.bias"};

static const names hf5_names = {
    "embeddings.cls_token", "embeddings.position_embeddings", "embeddings.patch_embeddings.projection.weight",
    "embeddings.patch_embeddings.projection.bias", "layernorm.weight", "layernorm.bias",
    {"layers.%d.layernorm_before.weight", "layers.%d.layernorm_before.bias", "layers.%d.attention.q_proj.weight",
     "layers.%d.attention.q_proj.bias", "layers.%d.attention.o_proj.weight", "layers.%d.attention.o_proj.bias",
     "layers.%d.layernorm_after.weight", "layers.%d.layernorm_after.bias", "layers.%d.mlp.fc1.weight",
     "layers.%d.mlp.fc1.bias", "layers.%d.mlp.fc2.weight", "layers.%d.mlp.fc2.bias"},
    "layers.%d.attention.k_proj.weight", "layers.%d.attention.k_proj.bias", "layers.%d.attention.v_proj.weight",
    "layers.%d.attention.v_proj.bias"};

static const names *layout_names(vit_layout l) {
  return l == VIT_TIMM ? &timm_names : l == VIT_HF ? &hf_names : &hf5_names;
}

/* prefix + name with the block index substituted. */
static const char *nm(char *buf, size_t cap, const char *prefix, const char *fmt, int i) {
  char tmp[192];
  snprintf(tmp, sizeof tmp, fmt, i);
  snprintf(buf, cap, "%s%s", prefix, tmp);
  return buf;
}

/* ---- weights ------------------------------------------------------------------------ */

static size_t param_count(const vit_config *c) {
  int64_t D = c->width, G = c->image / c->patch, in = 3 * c->patch * c->patch;
  int64_t per_block = 4 * D + 3 * D * D + 3 * D + D * D + D + c->mlp * D + c->mlp + D * c->mlp + D;
  return (size_t)(D + (1 + G * G) * D + D * in + D + 2 * D + c->depth * per_block);
}

/* Carves every parameter tensor from the arena (f32, on the arena's device). */
static int alloc_params(vit_model *m, cmds_error *err) {
  const vit_config *c = &m->cfg;
  int64_t D = c->width, G = c->image / c->patch, T = 1 + G * G, in = 3 * c->patch * c->patch;
  size_t bytes = param_count(c) * sizeof(float) + (size_t)(16 + 12 * c->depth) * 256;
  int rc = nn_arena_init(&m->weights, m->device, bytes, err);
  if (rc) return rc;
#define ALLOC(t, nd, ...)                                                          \
  do {                                                                             \
    int64_t shp_[] = {__VA_ARGS__};                                                \
    if (!rc) rc = nn_tensor_alloc(&(t), &m->weights, NN_F32, nd, shp_, err);       \
  } while (0)
  ALLOC(m->cls, 1, D);
  ALLOC(m->pos, 2, T, D);
  ALLOC(m->patch_w, 2, D, in);
  ALLOC(m->patch_b, 1, D);
  ALLOC(m->norm_w, 1, D);
  ALLOC(m->norm_b, 1, D);
  m->blocks = cmds_xcalloc((size_t)c->depth, sizeof *m->blocks);
  for (int64_t i = 0; i < c->depth; i++) {
    vit_block *b = &m->blocks[i];
    ALLOC(b->ln1_w, 1, D);
    ALLOC(b->ln1_b, 1, D);
    ALLOC(b->qkv_w, 2, 3 * D, D);
    ALLOC(b->qkv_b, 1, 3 * D);
    ALLOC(b->proj_w, 2, D, D);
    ALLOC(b->proj_b, 1, D);
    ALLOC(b->ln2_w, 1, D);
    ALLOC(b->ln2_b, 1, D);
    ALLOC(b->fc1_w, 2, c->mlp, D);
    ALLOC(b->fc1_b, 1, c->mlp);
    ALLOC(b->fc2_w, 2, D, c->mlp);
    ALLOC(b->fc2_b, 1, D);
  }
#undef ALLOC
  return rc;
}

/* Copies n floats from host memory into t at element offset `at`. */
static int upload(nn_tensor *t, int64_t at, const float *src, int64_t n, cmds_error *err) {
  nn_tensor dst = nn_tensor_view((float *)t->data + at, NN_F32, t->device, n, -1, -1, -1);
  nn_tensor s = nn_tensor_view((void *)src, NN_F32, NN_CPU, n, -1, -1, -1);
  return nn_tensor_copy(&dst, &s, err);
}

/* A file tensor as f32 host memory (converted from F16/BF16); caller frees. */
static float *as_f32(const cmds_st_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  float *out = cmds_xmalloc(sizeof(float) * (size_t)(n ? n : 1));
  if (t->dtype == CMDS_ST_F32) memcpy(out, t->data, sizeof(float) * (size_t)n);
  else nn_half_to_f32_n(out, t->data, n, t->dtype == CMDS_ST_F16 ? NN_F16 : NN_BF16);
  return out;
}

static int load_into(const cmds_st_file *f, const char *name, nn_tensor *t, int64_t at, cmds_error *err) {
  const cmds_st_tensor *st = cmds_st_find(f, name);
  if (!st) return CMDS_FAIL(err, CMDS_EINPUT, "%s: tensor '%s' is missing", f->path, name);
  if (st->dtype != CMDS_ST_F32 && st->dtype != CMDS_ST_F16 && st->dtype != CMDS_ST_BF16)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: tensor '%s' is %s, expected F32, F16 or BF16", f->path, name,
                     cmds_st_dtype_name(st->dtype));
  int64_t n = 1;
  for (int i = 0; i < st->ndim; i++) n *= st->shape[i];
  float *h = as_f32(st);
  int rc = upload(t, at, h, n, err);
  free(h);
  return rc;
}

static void set_shape(cmds_st_expect *e, const char *name, int nd, int64_t a, int64_t b, int64_t c, int64_t d) {
  e->name = cmds_xstrdup(name);
  e->ndim = nd;
  int64_t s[4] = {a, b, c, d};
  for (int i = 0; i < nd; i++) e->shape[i] = s[i];
}

int vit_load(vit_model *m, const char *path, nn_device device, int64_t heads, float eps, cmds_error *err) {
  memset(m, 0, sizeof *m);
  m->device = device;
  cmds_st_file f;
  int rc = cmds_st_open(&f, path, err);
  if (rc) return rc;
  /* Layout and prefix from the patch embedding's name. */
  static const char *const prefixes[] = {"", "vit.", "model."};
  const char *prefix = NULL;
  for (int p = 0; p < 3 && !prefix; p++)
    for (int l = 0; l < 3 && !prefix; l++) {
      char b[256];
      snprintf(b, sizeof b, "%s%s", prefixes[p], layout_names((vit_layout)l)->patch_w);
      char blk[256];
      nm(blk, sizeof blk, prefixes[p], layout_names((vit_layout)l)->blk[2], 0);
      if (cmds_st_find(&f, b) && cmds_st_find(&f, blk)) {
        prefix = prefixes[p];
        m->layout = (vit_layout)l;
      }
    }
  if (!prefix) {
    cmds_st_close(&f);
    return CMDS_FAIL(err, CMDS_EINPUT,
                     "%s: not a ViT checkpoint in a known layout (looked for timm 'patch_embed.proj.weight' + "
                     "'blocks.0.attn.qkv.weight', transformers 'embeddings.patch_embeddings.projection.weight' + "
                     "'encoder.layer.0.attention.attention.query.weight' or 'layers.0.attention.q_proj.weight')",
                     path);
  }
  const names *N = layout_names(m->layout);
  char b[256];
  const cmds_st_tensor *pw = cmds_st_find(&f, nm(b, sizeof b, prefix, N->patch_w, 0));
  const cmds_st_tensor *pos = cmds_st_find(&f, nm(b, sizeof b, prefix, N->pos, 0));
  if (pw->ndim != 4 || pw->shape[1] != 3 || pw->shape[2] != pw->shape[3] || !pos || pos->ndim != 3) {
    cmds_st_close(&f);
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: '%s' should be (D, 3, P, P) and the position embedding (1, 1+G*G, D)",
                     path, pw->name);
  }
  vit_config *c = &m->cfg;
  c->width = pw->shape[0];
  c->patch = pw->shape[2];
  int64_t G = (int64_t)llround(sqrt((double)(pos->shape[1] - 1)));
  c->image = G * c->patch;
  c->depth = 0;
  while (cmds_st_find(&f, nm(b, sizeof b, prefix, N->blk[2], (int)c->depth))) c->depth++;
  const cmds_st_tensor *fc1 = cmds_st_find(&f, nm(b, sizeof b, prefix, N->blk[8], 0));
  c->mlp = fc1 && fc1->ndim == 2 ? fc1->shape[0] : 4 * c->width;
  c->heads = heads > 0 ? heads : (c->width >= 64 ? c->width / 64 : 1);
  c->eps = eps > 0 ? eps : (m->layout == VIT_TIMM ? 1e-6f : 1e-12f);
  if (c->width % c->heads) {
    cmds_st_close(&f);
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %lld heads do not divide the width %lld", path, (long long)c->heads,
                     (long long)c->width);
  }
  /* The full name table, checked at once: every missing or mis-shaped tensor is named. */
  int64_t D = c->width, T = 1 + G * G;
  int ne = 0, cap = 8 + 16 * (int)c->depth;
  cmds_st_expect *tab = cmds_xcalloc((size_t)cap, sizeof *tab);
  set_shape(&tab[ne++], nm(b, sizeof b, prefix, N->cls, 0), 3, 1, 1, D, 0);
  set_shape(&tab[ne++], nm(b, sizeof b, prefix, N->pos, 0), 3, 1, T, D, 0);
  set_shape(&tab[ne++], nm(b, sizeof b, prefix, N->patch_w, 0), 4, D, 3, c->patch, c->patch);
  set_shape(&tab[ne++], nm(b, sizeof b, prefix, N->patch_b, 0), 1, D, 0, 0, 0);
  set_shape(&tab[ne++], nm(b, sizeof b, prefix, N->norm_w, 0), 1, D, 0, 0, 0);
  set_shape(&tab[ne++], nm(b, sizeof b, prefix, N->norm_b, 0), 1, D, 0, 0, 0);
  int fused = m->layout == VIT_TIMM;
  for (int i = 0; i < (int)c->depth; i++) {
    int64_t rows[12][2] = {{D, 0}, {D, 0}, {fused ? 3 * D : D, D}, {fused ? 3 * D : D, 0}, {D, D}, {D, 0},
                           {D, 0}, {D, 0}, {c->mlp, D},           {c->mlp, 0},          {D, c->mlp}, {D, 0}};
    for (int k = 0; k < 12; k++)
      set_shape(&tab[ne++], nm(b, sizeof b, prefix, N->blk[k], i), rows[k][1] ? 2 : 1, rows[k][0], rows[k][1], 0, 0);
    if (!fused) {
      set_shape(&tab[ne++], nm(b, sizeof b, prefix, N->k_w, i), 2, D, D, 0, 0);
      set_shape(&tab[ne++], nm(b, sizeof b, prefix, N->k_b, i), 1, D, 0, 0, 0);
      set_shape(&tab[ne++], nm(b, sizeof b, prefix, N->v_w, i), 2, D, D, 0, 0);
      set_shape(&tab[ne++], nm(b, sizeof b, prefix, N->v_b, i), 1, D, 0, 0, 0);
    }
  }
  rc = cmds_st_check_names(&f, tab, ne, err);
  for (int i = 0; i < ne; i++) free((char *)tab[i].name);
  free(tab);
  if (!rc) rc = alloc_params(m, err);
  /* Parameters, in the model's own (timm-like) arrangement: q, k and v stacked. */
  if (!rc) rc = load_into(&f, nm(b, sizeof b, prefix, N->cls, 0), &m->cls, 0, err);
  if (!rc) rc = load_into(&f, nm(b, sizeof b, prefix, N->pos, 0), &m->pos, 0, err);
  if (!rc) rc = load_into(&f, nm(b, sizeof b, prefix, N->patch_w, 0), &m->patch_w, 0, err);
  if (!rc) rc = load_into(&f, nm(b, sizeof b, prefix, N->patch_b, 0), &m->patch_b, 0, err);
  if (!rc) rc = load_into(&f, nm(b, sizeof b, prefix, N->norm_w, 0), &m->norm_w, 0, err);
  if (!rc) rc = load_into(&f, nm(b, sizeof b, prefix, N->norm_b, 0), &m->norm_b, 0, err);
  for (int i = 0; i < (int)c->depth && !rc; i++) {
    vit_block *k = &m->blocks[i];
    nn_tensor *dst[12] = {&k->ln1_w, &k->ln1_b, &k->qkv_w, &k->qkv_b, &k->proj_w, &k->proj_b,
                          &k->ln2_w, &k->ln2_b, &k->fc1_w, &k->fc1_b, &k->fc2_w, &k->fc2_b};
    for (int j = 0; j < 12 && !rc; j++) rc = load_into(&f, nm(b, sizeof b, prefix, N->blk[j], i), dst[j], 0, err);
    if (!fused && !rc) {
      rc = load_into(&f, nm(b, sizeof b, prefix, N->k_w, i), &k->qkv_w, D * D, err);
      if (!rc) rc = load_into(&f, nm(b, sizeof b, prefix, N->v_w, i), &k->qkv_w, 2 * D * D, err);
      if (!rc) rc = load_into(&f, nm(b, sizeof b, prefix, N->k_b, i), &k->qkv_b, D, err);
      if (!rc) rc = load_into(&f, nm(b, sizeof b, prefix, N->v_b, i), &k->qkv_b, 2 * D, err);
    }
  }
  cmds_st_close(&f);
  if (rc) vit_free(m);
  return rc;
}

int vit_init_random(vit_model *m, const vit_config *c, uint64_t seed, nn_device device, cmds_error *err) {
  memset(m, 0, sizeof *m);
  m->device = device;
  m->cfg = *c;
  m->layout = VIT_TIMM;
  int rc = alloc_params(m, err);
  if (rc) return rc;
  cmds_rng rng;
  cmds_rng_seed(&rng, seed);
  /* Fill each tensor: norms' weights 1 and biases 0, everything else N(0, 0.02) clipped at 2 std. */
  nn_tensor *all[6] = {&m->cls, &m->pos, &m->patch_w, &m->patch_b, &m->norm_w, &m->norm_b};
  int kinds[6] = {0, 0, 0, 2, 1, 2}; /* 0 random, 1 ones, 2 zeros */
  for (int64_t i = -1; i < c->depth && !rc; i++) {
    nn_tensor *list[12];
    int kind[12], n;
    if (i < 0) {
      n = 6;
      for (int k = 0; k < 6; k++) {
        list[k] = all[k];
        kind[k] = kinds[k];
      }
    } else {
      vit_block *b = &m->blocks[i];
      nn_tensor *l[12] = {&b->ln1_w, &b->ln1_b, &b->qkv_w, &b->qkv_b, &b->proj_w, &b->proj_b,
                          &b->ln2_w, &b->ln2_b, &b->fc1_w, &b->fc1_b, &b->fc2_w, &b->fc2_b};
      int kd[12] = {1, 2, 0, 2, 0, 2, 1, 2, 0, 2, 0, 2};
      n = 12;
      memcpy(list, l, sizeof l);
      memcpy(kind, kd, sizeof kd);
    }
    for (int k = 0; k < n && !rc; k++) {
      int64_t cnt = nn_tensor_numel(list[k]);
      float *h = cmds_xmalloc(sizeof(float) * (size_t)cnt);
      for (int64_t j = 0; j < cnt; j++) {
        double v = kind[k] == 1 ? 1 : 0;
        if (kind[k] == 0) {
          v = cmds_rng_normal(&rng);
          v = v > 2 ? 2 : v < -2 ? -2 : v;
          v *= 0.02;
        }
        h[j] = (float)v;
      }
      rc = upload(list[k], 0, h, cnt, err);
      free(h);
    }
  }
  if (rc) vit_free(m);
  return rc;
}

void vit_free(vit_model *m) {
  nn_arena_free(&m->weights);
  nn_arena_free(&m->weights16);
  free(m->blocks);
  free(m->blocks16);
  m->blocks = m->blocks16 = NULL;
}

void vit_patchify_cpu(const float *images, int64_t B, int64_t H, int64_t W, int64_t P, float *patches) {
  int64_t gh = H / P, gw = W / P, in = 3 * P * P;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; b++)
    for (int64_t g = 0; g < gh * gw; g++) {
      int64_t gy = g / gw, gx = g % gw;
      float *dst = patches + (b * gh * gw + g) * in;
      for (int64_t ch = 0; ch < 3; ch++)
        for (int64_t ky = 0; ky < P; ky++)
          memcpy(dst + (ch * P + ky) * P, images + ((b * 3 + ch) * H + gy * P + ky) * W + gx * P,
                 sizeof(float) * (size_t)P);
    }
}

size_t vit_scratch_bytes(const vit_config *c, int64_t B) {
  int64_t G = c->image / c->patch, T = 1 + G * G, D = c->width;
  /* x, h, qkv (3), att, patch rows: 7 B T D floats, the MLP hidden B T mlp (the bf16 path
   * needs less); the CPU attention's score blocks; 32 MB of headroom (cuBLASLt's workspace was
   * taken from here; it is the context's own now: drop the headroom once a GPU run shows no op
   * of the CUDA forward needs it). */
  size_t acts = (size_t)(7 * B * T * D + B * T * c->mlp) * sizeof(float);
  return acts + nn_attention_cpu_scratch_floats(T, c->heads, D / c->heads) * sizeof(float) + ((size_t)32 << 20) +
         64 * 256;
}

/* bf16 copies of the block GEMM weights and of the biases added to bf16 outputs (qkv, fc1),
 * made on the first bf16 forward and kept with the model. */
static int ensure_bf16(vit_model *m, nn_ctx *ctx, cmds_error *err) {
#ifdef CMDS_CUDA
  if (m->blocks16) return CMDS_OK;
  const vit_config *c = &m->cfg;
  int64_t D = c->width, F = c->mlp;
  size_t per_block = (size_t)(3 * D * D + 3 * D + D * D + F * D + F + D * F) * 2 + 6 * 256;
  int rc = nn_arena_init(&m->weights16, NN_CUDA, per_block * (size_t)c->depth, err);
  if (rc) return cmds_error_wrap(err, "vit bf16 weights");
  m->blocks16 = cmds_xcalloc((size_t)c->depth, sizeof *m->blocks16);
  for (int64_t i = 0; i < c->depth && !rc; i++) {
    vit_block *f = &m->blocks[i], *h = &m->blocks16[i];
    nn_tensor *src[6] = {&f->qkv_w, &f->qkv_b, &f->proj_w, &f->fc1_w, &f->fc1_b, &f->fc2_w};
    nn_tensor *dst[6] = {&h->qkv_w, &h->qkv_b, &h->proj_w, &h->fc1_w, &h->fc1_b, &h->fc2_w};
    for (int k = 0; k < 6 && !rc; k++) {
      rc = nn_tensor_alloc(dst[k], &m->weights16, NN_BF16, src[k]->ndim, src[k]->shape, err);
      if (!rc) rc = nn_f32_to_bf16_cuda(ctx, dst[k]->data, src[k]->data, nn_tensor_numel(src[k]), err);
    }
  }
  if (!rc) rc = nn_ctx_sync(ctx, err);
  if (rc) {
    nn_arena_free(&m->weights16);
    free(m->blocks16);
    m->blocks16 = NULL;
  }
  return rc;
#else
  (void)m;
  (void)ctx;
  return CMDS_FAIL(err, CMDS_EINPUT, "vit_forward: bf16 needs the CUDA backend");
#endif
}

/* ---- forward ------------------------------------------------------------------------ */

/* CPU: x (M, N) += in (M, K) W^T + b: the residual connection folded into the GEMM (beta 1). */
static void linear_residual_cpu(float *x, const float *in, const float *w, const float *b, int64_t M, int64_t K,
                                int64_t N) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) x[i * N + j] += b[j];
  nn_sgemm(CblasNoTrans, CblasTrans, M, N, K, 1.0f, in, K, w, K, 1.0f, x, N);
}

/* x (B, T, D) = [cls; plin] + pos. */
static int embed(nn_ctx *ctx, float *x, const float *plin, const vit_model *m, int64_t B, int64_t NP, int64_t D,
                 cmds_error *err) {
  const float *cls = m->cls.data, *pos = m->pos.data;
  if (ctx->device == NN_CPU) {
    int64_t T = NP + 1;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; b++)
      for (int64_t t = 0; t < T; t++) {
        const float *src = t ? plin + (b * NP + t - 1) * D : cls;
        float *dst = x + (b * T + t) * D;
        for (int64_t d = 0; d < D; d++) dst[d] = src[d] + pos[t * D + d];
      }
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_vit_embed_cuda(ctx, x, plin, cls, pos, B, NP, D, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "vit_forward: cuda tensors in a build without CUDA");
#endif
}

/* out[:, l] = the patch tokens of src (B, T, D). */
static int gather(nn_ctx *ctx, nn_tensor *out, int l, const float *src, int64_t B, int64_t T, int64_t D,
                  cmds_error *err) {
  int64_t nb = out->shape[1], NP = T - 1;
  float *o = (float *)out->data + l * NP * D;
  if (ctx->device == NN_CPU) {
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < B; b++)
      memcpy(o + b * nb * NP * D, src + (b * T + 1) * D, sizeof(float) * (size_t)(NP * D));
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_vit_gather_cuda(ctx, o, nb * NP * D, src, B, T, D, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "vit_forward: cuda tensors in a build without CUDA");
#endif
}

typedef struct vit_acts {
  nn_tensor x, h, qkv, att, mm, plin; /* f32 (B, T, D), (B, T, D), (B, T, 3D), (B, T, D), (B, T, mlp), (B, NP, D) */
  void *h16, *qkv16, *att16, *mm16;   /* bf16 path: (B T, D), (B T, 3D), (B T, D), (B T, mlp) */
} vit_acts;

/* One block, f32 (CPU, or CUDA with fp32 / TF32 GEMMs). */
static int block_f32(nn_ctx *ctx, const vit_config *c, vit_block *bk, vit_acts *A, int64_t B, int64_t T,
                     float *attn_scratch, cmds_error *err) {
  int64_t D = c->width, H = c->heads, hd = D / H, M = B * T;
  float *x = A->x.data, *qkv = A->qkv.data, *att = A->att.data, *mm = A->mm.data;
  int rc = nn_layernorm_forward(ctx, &A->h, &A->x, &bk->ln1_w, &bk->ln1_b, c->eps, err);
  if (!rc) rc = nn_linear_forward(ctx, &A->qkv, &A->h, &bk->qkv_w, &bk->qkv_b, err);
  if (rc) return rc;
  if (ctx->device == NN_CPU) {
    nn_attention_cpu(att, qkv, qkv + D, qkv + 2 * D, B, T, H, hd, 3 * D, 3 * D, 3 * D, D, attn_scratch);
    linear_residual_cpu(x, att, bk->proj_w.data, bk->proj_b.data, M, D, D);
    rc = nn_layernorm_forward(ctx, &A->h, &A->x, &bk->ln2_w, &bk->ln2_b, c->eps, err);
    if (!rc) rc = nn_linear_forward(ctx, &A->mm, &A->h, &bk->fc1_w, &bk->fc1_b, err);
    if (!rc) rc = nn_gelu_forward(ctx, &A->mm, &A->mm, err);
    if (!rc) linear_residual_cpu(x, mm, bk->fc2_w.data, bk->fc2_b.data, M, c->mlp, D);
    return rc;
  }
#ifdef CMDS_CUDA
  (void)attn_scratch;
  rc = nn_attention_cuda(ctx, att, qkv, qkv + D, qkv + 2 * D, B, T, H, hd, 3 * D, 3 * D, 3 * D, D, err);
  if (!rc) rc = nn_lt_gemm_cuda(ctx, x, NN_F32, att, bk->proj_w.data, NN_F32, bk->proj_b.data, M, D, D, 1.0f, err);
  if (!rc) rc = nn_layernorm_forward(ctx, &A->h, &A->x, &bk->ln2_w, &bk->ln2_b, c->eps, err);
  if (!rc) rc = nn_linear_forward(ctx, &A->mm, &A->h, &bk->fc1_w, &bk->fc1_b, err);
  if (!rc) rc = nn_gelu_forward(ctx, &A->mm, &A->mm, err);
  if (!rc) rc = nn_lt_gemm_cuda(ctx, x, NN_F32, mm, bk->fc2_w.data, NN_F32, bk->fc2_b.data, M, c->mlp, D, 1.0f, err);
  return rc;
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "vit_forward: cuda tensors in a build without CUDA");
#endif
}

/* One block on CUDA in bf16: the residual stream x stays f32; LayerNorm reads it and writes
 * bf16; the GEMMs take bf16 operands (fp32 accumulate) with the bias in the epilogue, and the
 * projections add onto x in f32 (beta 1). */
static int block_bf16(nn_ctx *ctx, const vit_config *c, vit_block *bk, vit_block *b16, vit_acts *A, int64_t B,
                      int64_t T, cmds_error *err) {
#ifdef CMDS_CUDA
  int64_t D = c->width, H = c->heads, hd = D / H, M = B * T, F = c->mlp;
  float *x = A->x.data;
  uint16_t *h = A->h16, *qkv = A->qkv16, *att = A->att16, *mm = A->mm16;
  int rc = nn_layernorm_bf16_cuda(ctx, h, x, bk->ln1_w.data, bk->ln1_b.data, M, D, c->eps, err);
  if (!rc) rc = nn_lt_gemm_cuda(ctx, qkv, NN_BF16, h, b16->qkv_w.data, NN_BF16, b16->qkv_b.data, M, D, 3 * D, 0.0f, err);
  if (!rc)
    rc = nn_flash_attention_bf16_cuda(ctx, att, qkv, qkv + D, qkv + 2 * D, B, T, H, hd, 3 * D, 3 * D, 3 * D, D, err);
  if (!rc) rc = nn_lt_gemm_cuda(ctx, x, NN_F32, att, b16->proj_w.data, NN_BF16, bk->proj_b.data, M, D, D, 1.0f, err);
  if (!rc) rc = nn_layernorm_bf16_cuda(ctx, h, x, bk->ln2_w.data, bk->ln2_b.data, M, D, c->eps, err);
  if (!rc) rc = nn_lt_gemm_cuda(ctx, mm, NN_BF16, h, b16->fc1_w.data, NN_BF16, b16->fc1_b.data, M, D, F, 0.0f, err);
  if (!rc) rc = nn_gelu_bf16_cuda(ctx, mm, M * F, err);
  if (!rc) rc = nn_lt_gemm_cuda(ctx, x, NN_F32, mm, b16->fc2_w.data, NN_BF16, bk->fc2_b.data, M, F, D, 1.0f, err);
  return rc;
#else
  (void)ctx, (void)c, (void)bk, (void)b16, (void)A, (void)B, (void)T;
  return CMDS_FAIL(err, CMDS_EINPUT, "vit_forward: bf16 needs the CUDA backend");
#endif
}

int vit_forward(vit_model *m, nn_ctx *ctx, const nn_tensor *patches, const int *blocks, int nblocks,
                int final_norm, nn_tensor *out, cmds_error *err) {
  const vit_config *c = &m->cfg;
  int64_t D = c->width, G = c->image / c->patch, NP = G * G, T = 1 + NP, in = 3 * c->patch * c->patch;
  if (!patches || patches->ndim != 3 || patches->shape[1] != NP || patches->shape[2] != in)
    return CMDS_FAIL(err, CMDS_EINPUT, "vit_forward: patches must be (B, %lld, %lld)", (long long)NP, (long long)in);
  int64_t B = patches->shape[0];
  int64_t oshape[4] = {B, nblocks, NP, D};
  int rc = nn_tensor_expect(out, "vit_forward", "out", ctx->device, 4, oshape, err);
  int64_t last = 0; /* the blocks after the last one asked for are not run */
  for (int l = 0; l < nblocks && !rc; l++) {
    if (blocks[l] < 1 || blocks[l] > c->depth)
      rc = CMDS_FAIL(err, CMDS_EINPUT, "vit_forward: block %d outside 1..%lld", blocks[l], (long long)c->depth);
    else if (blocks[l] > last)
      last = blocks[l];
  }
  if (rc) return rc;
  int bf16 = ctx->act_dtype == NN_BF16;
  if (bf16 && ctx->device != NN_CUDA)
    return CMDS_FAIL(err, CMDS_EINPUT, "vit_forward: bf16 runs on CUDA only; the CPU path is f32");
  if (ctx->act_dtype != NN_F32 && !bf16)
    return CMDS_FAIL(err, CMDS_EINPUT, "vit_forward: activations %s, f32 or bf16 supported",
                     nn_dtype_name(ctx->act_dtype));
  if (bf16 && (rc = ensure_bf16(m, ctx, err))) return rc;
  nn_arena *a = ctx->scratch;
  size_t mark = nn_arena_mark(a);
  vit_acts A;
  memset(&A, 0, sizeof A);
  int64_t sx[3] = {B, T, D}, sq[3] = {B, T, 3 * D}, sm[3] = {B, T, c->mlp}, sp[3] = {B, NP, D};
  float *attn_scratch = NULL;
  rc = nn_tensor_alloc(&A.x, a, NN_F32, 3, sx, err);
  if (!rc) rc = nn_tensor_alloc(&A.h, a, NN_F32, 3, sx, err);
  if (!rc) rc = nn_tensor_alloc(&A.plin, a, NN_F32, 3, sp, err);
  if (!rc && !bf16) {
    rc = nn_tensor_alloc(&A.qkv, a, NN_F32, 3, sq, err);
    if (!rc) rc = nn_tensor_alloc(&A.att, a, NN_F32, 3, sx, err);
    if (!rc) rc = nn_tensor_alloc(&A.mm, a, NN_F32, 3, sm, err);
    if (!rc && ctx->device == NN_CPU &&
        !(attn_scratch =
              nn_arena_alloc(a, nn_attention_cpu_scratch_floats(T, c->heads, D / c->heads) * sizeof(float), err)))
      rc = err->code;
  } else if (!rc) {
    size_t bt = (size_t)(B * T) * 2;
    if (!(A.h16 = nn_arena_alloc(a, bt * (size_t)D, err)) || !(A.qkv16 = nn_arena_alloc(a, bt * 3 * (size_t)D, err)) ||
        !(A.att16 = nn_arena_alloc(a, bt * (size_t)D, err)) || !(A.mm16 = nn_arena_alloc(a, bt * (size_t)c->mlp, err)))
      rc = err->code;
  }
  if (rc) {
    nn_arena_rewind(a, mark);
    return cmds_error_wrap(err, "vit_forward activations for a batch of %lld", (long long)B);
  }
  /* Embeddings: [cls; patches W^T + b] + pos (f32 on every path: 1% of the FLOPs). */
  rc = nn_linear_forward(ctx, &A.plin, patches, &m->patch_w, &m->patch_b, err);
  if (!rc) rc = embed(ctx, A.x.data, A.plin.data, m, B, NP, D, err);
  for (int64_t i = 0; i < last && !rc; i++) {
    rc = bf16 ? block_bf16(ctx, c, &m->blocks[i], &m->blocks16[i], &A, B, T, err)
              : block_f32(ctx, c, &m->blocks[i], &A, B, T, attn_scratch, err);
    for (int l = 0; l < nblocks && !rc; l++) {
      if (blocks[l] != i + 1) continue;
      const nn_tensor *src = &A.x;
      if (final_norm) {
        rc = nn_layernorm_forward(ctx, &A.h, &A.x, &m->norm_w, &m->norm_b, c->eps, err);
        src = &A.h;
      }
      if (!rc) rc = gather(ctx, out, l, src->data, B, T, D, err);
    }
  }
  nn_arena_rewind(a, mark);
  return rc;
}
