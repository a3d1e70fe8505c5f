/* vae: see vae.h. The forward passes are written once over a small runner that either runs
 * the nn ops on ctx->scratch or, in plan mode, only replays the scratch allocations (and
 * the ops' own scratch) to measure the peak: vae_workspace_bytes is that replay. */
#include "vae.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "nn/activation.h"
#include "nn/attention.h"
#include "nn/conv.h"
#include "nn/elementwise.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "nn/resize.h"

#define VAE_EPS 1e-6f /* every group norm of the VAE (resnet_eps, conv_norm_out, attention) */

/* ------------------------------------------------------------------ configuration */

static int cfg_blocks(const cmds_jv *cfg, const char *path, const char *key, const char *want, int n,
                      cmds_error *err) {
  const char *types[VAE_MAX_BLOCKS + 1];
  int nt = 0;
  int rc = cmds_jv_get_strs(cfg, path, key, 1, VAE_MAX_BLOCKS + 1, types, &nt, err);
  if (rc) return rc;
  if (nt != n)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s': %d block types for %d block_out_channels", path, key, nt, n);
  for (int i = 0; i < nt; i++)
    if (strcmp(types[i], want) != 0)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s'[%d]: block type '%s' is not supported (only %s)", path, key, i,
                       types[i], want);
  return 0;
}

static int cfg_positive(const char *path, const char *key, int64_t v, cmds_error *err) {
  if (v < 1) return CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s': %lld, a positive integer expected", path, key, (long long)v);
  return 0;
}

static int read_config(vae_model *m, const cmds_jv *cfg, const char *path, cmds_error *err) {
  int rc = 0;
  const cmds_jv *boc = cmds_jv_member(cfg, "block_out_channels");
  if (!boc || boc->type == CMDS_JV_NULL)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'block_out_channels' is missing", path);
  if (boc->type != CMDS_JV_ARR || boc->n < 1 || boc->n > VAE_MAX_BLOCKS)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'block_out_channels': a list of 1 to %d integers expected", path,
                     VAE_MAX_BLOCKS);
  m->n_blocks = (int)boc->n;
  if ((rc = cmds_jv_get_ints(cfg, path, "block_out_channels", 1, 0, m->n_blocks, m->block_out, err))) return rc;
  for (int i = 0; i < m->n_blocks; i++)
    if ((rc = cfg_positive(path, "block_out_channels", m->block_out[i], err))) return rc;
  if ((rc = cfg_blocks(cfg, path, "down_block_types", "DownEncoderBlock2D", m->n_blocks, err))) return rc;
  if ((rc = cfg_blocks(cfg, path, "up_block_types", "UpDecoderBlock2D", m->n_blocks, err))) return rc;
  const char *act = NULL;
  if ((rc = cmds_jv_get_str(cfg, path, "act_fn", 0, "silu", &act, err))) return rc;
  if (strcmp(act, "silu") != 0 && strcmp(act, "swish") != 0)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'act_fn': '%s' is not supported (only silu)", path, act);
  int64_t lpb = 0;
  if ((rc = cmds_jv_get_int(cfg, path, "in_channels", 0, 3, &m->in_channels, err)) ||
      (rc = cfg_positive(path, "in_channels", m->in_channels, err)) ||
      (rc = cmds_jv_get_int(cfg, path, "out_channels", 0, 3, &m->out_channels, err)) ||
      (rc = cfg_positive(path, "out_channels", m->out_channels, err)) ||
      (rc = cmds_jv_get_int(cfg, path, "latent_channels", 0, 4, &m->latent_channels, err)) ||
      (rc = cfg_positive(path, "latent_channels", m->latent_channels, err)) ||
      (rc = cmds_jv_get_int(cfg, path, "norm_num_groups", 0, 32, &m->groups, err)) ||
      (rc = cfg_positive(path, "norm_num_groups", m->groups, err)) ||
      (rc = cmds_jv_get_int(cfg, path, "layers_per_block", 0, 1, &lpb, err)) ||
      (rc = cfg_positive(path, "layers_per_block", lpb, err)) ||
      (rc = cmds_jv_get_num(cfg, path, "scaling_factor", 0, 0.18215, &m->scaling_factor, err)) ||
      (rc = cmds_jv_get_bool(cfg, path, "mid_block_add_attention", 0, 1, &m->mid_attention, err)) ||
      (rc = cmds_jv_get_bool(cfg, path, "use_quant_conv", 0, 1, &m->use_quant_conv, err)) ||
      (rc = cmds_jv_get_bool(cfg, path, "use_post_quant_conv", 0, 1, &m->use_post_quant_conv, err)))
    return rc;
  if (lpb > 64) return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'layers_per_block': %lld is too many", path, (long long)lpb);
  m->layers_per_block = (int)lpb;
  if (!(m->scaling_factor > 0) || !isfinite(m->scaling_factor))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'scaling_factor': %g, a positive number expected", path, m->scaling_factor);
  for (int i = 0; i < m->n_blocks; i++)
    if (m->block_out[i] % m->groups)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'norm_num_groups': %lld groups do not divide block_out_channels[%d] = %lld",
                       path, (long long)m->groups, i, (long long)m->block_out[i]);
  return 0;
}

/* ------------------------------------------------------------------ weights */

static void load_conv(dfs_loader *L, nn_tensor *w, nn_tensor *b, int64_t cout, int64_t cin, int64_t k,
                      const char *prefix) {
  dfs_load(L, w, 4, (int64_t[]){cout, cin, k, k}, "%s.weight", prefix);
  dfs_load(L, b, 1, &cout, "%s.bias", prefix);
}

static void load_vec(dfs_loader *L, nn_tensor *w, nn_tensor *b, int64_t c, const char *prefix) {
  dfs_load(L, w, 1, &c, "%s.weight", prefix);
  dfs_load(L, b, 1, &c, "%s.bias", prefix);
}

static void load_linear(dfs_loader *L, nn_tensor *w, nn_tensor *b, int64_t c, const char *prefix) {
  dfs_load(L, w, 2, (int64_t[]){c, c}, "%s.weight", prefix);
  dfs_load(L, b, 1, &c, "%s.bias", prefix);
}

static void load_resnet(dfs_loader *L, vae_resnet *r, int64_t cin, int64_t cout, const char *prefix) {
  char p[256];
  r->cin = cin;
  r->cout = cout;
  snprintf(p, sizeof p, "%s.norm1", prefix);
  load_vec(L, &r->norm1_w, &r->norm1_b, cin, p);
  snprintf(p, sizeof p, "%s.conv1", prefix);
  load_conv(L, &r->conv1_w, &r->conv1_b, cout, cin, 3, p);
  snprintf(p, sizeof p, "%s.norm2", prefix);
  load_vec(L, &r->norm2_w, &r->norm2_b, cout, p);
  snprintf(p, sizeof p, "%s.conv2", prefix);
  load_conv(L, &r->conv2_w, &r->conv2_b, cout, cout, 3, p);
  r->has_shortcut = cin != cout;
  if (r->has_shortcut) {
    snprintf(p, sizeof p, "%s.conv_shortcut", prefix);
    load_conv(L, &r->short_w, &r->short_b, cout, cin, 1, p);
  }
}

static void load_attn(dfs_loader *L, vae_attn *a, int64_t c, const char *prefix) {
  char p[256];
  a->c = c;
  snprintf(p, sizeof p, "%s.group_norm", prefix);
  load_vec(L, &a->norm_w, &a->norm_b, c, p);
  /* diffusers < 0.14 named them query / key / value / proj_attn */
  int old = !dfs_has(L, "%s.to_q.weight", prefix) && dfs_has(L, "%s.query.weight", prefix);
  const char *names[4] = {"to_q", "to_k", "to_v", "to_out.0"}, *old_names[4] = {"query", "key", "value", "proj_attn"};
  nn_tensor *ws[4] = {&a->q_w, &a->k_w, &a->v_w, &a->o_w}, *bs[4] = {&a->q_b, &a->k_b, &a->v_b, &a->o_b};
  for (int i = 0; i < 4; i++) {
    snprintf(p, sizeof p, "%s.%s", prefix, old ? old_names[i] : names[i]);
    load_linear(L, ws[i], bs[i], c, p);
  }
}

static void load_mid(dfs_loader *L, vae_mid *mid, int64_t c, int attention, const char *prefix) {
  char p[256];
  snprintf(p, sizeof p, "%s.resnets.0", prefix);
  load_resnet(L, &mid->res0, c, c, p);
  mid->has_attn = attention;
  if (attention) {
    snprintf(p, sizeof p, "%s.attentions.0", prefix);
    load_attn(L, &mid->attn, c, p);
  }
  snprintf(p, sizeof p, "%s.resnets.1", prefix);
  load_resnet(L, &mid->res1, c, c, p);
}

static void load_weights(vae_model *m, dfs_loader *L) {
  char p[256];
  int n = m->n_blocks;
  int64_t L2 = 2 * m->latent_channels, Lc = m->latent_channels, top = m->block_out[n - 1];
  /* encoder */
  load_conv(L, &m->enc_conv_in_w, &m->enc_conv_in_b, m->block_out[0], m->in_channels, 3, "encoder.conv_in");
  int64_t cprev = m->block_out[0];
  for (int i = 0; i < n; i++) {
    vae_level *lv = &m->enc[i];
    for (int j = 0; j < lv->n_resnets; j++) {
      snprintf(p, sizeof p, "encoder.down_blocks.%d.resnets.%d", i, j);
      load_resnet(L, &lv->resnets[j], j == 0 ? cprev : m->block_out[i], m->block_out[i], p);
    }
    lv->has_resample = i < n - 1;
    if (lv->has_resample) {
      snprintf(p, sizeof p, "encoder.down_blocks.%d.downsamplers.0.conv", i);
      load_conv(L, &lv->resample_w, &lv->resample_b, m->block_out[i], m->block_out[i], 3, p);
    }
    cprev = m->block_out[i];
  }
  load_mid(L, &m->enc_mid, top, m->mid_attention, "encoder.mid_block");
  load_vec(L, &m->enc_norm_w, &m->enc_norm_b, top, "encoder.conv_norm_out");
  load_conv(L, &m->enc_conv_out_w, &m->enc_conv_out_b, L2, top, 3, "encoder.conv_out");
  if (m->use_quant_conv) load_conv(L, &m->quant_w, &m->quant_b, L2, L2, 1, "quant_conv");
  /* decoder */
  if (m->use_post_quant_conv) load_conv(L, &m->post_quant_w, &m->post_quant_b, Lc, Lc, 1, "post_quant_conv");
  load_conv(L, &m->dec_conv_in_w, &m->dec_conv_in_b, top, Lc, 3, "decoder.conv_in");
  load_mid(L, &m->dec_mid, top, m->mid_attention, "decoder.mid_block");
  cprev = top;
  for (int i = 0; i < n; i++) {
    vae_level *lv = &m->dec[i];
    int64_t c = m->block_out[n - 1 - i];
    for (int j = 0; j < lv->n_resnets; j++) {
      snprintf(p, sizeof p, "decoder.up_blocks.%d.resnets.%d", i, j);
      load_resnet(L, &lv->resnets[j], j == 0 ? cprev : c, c, p);
    }
    lv->has_resample = i < n - 1;
    if (lv->has_resample) {
      snprintf(p, sizeof p, "decoder.up_blocks.%d.upsamplers.0.conv", i);
      load_conv(L, &lv->resample_w, &lv->resample_b, c, c, 3, p);
    }
    cprev = c;
  }
  load_vec(L, &m->dec_norm_w, &m->dec_norm_b, m->block_out[0], "decoder.conv_norm_out");
  load_conv(L, &m->dec_conv_out_w, &m->dec_conv_out_b, m->out_channels, m->block_out[0], 3, "decoder.conv_out");
}

void vae_free(vae_model *m) {
  if (!m) return;
  for (int i = 0; i < VAE_MAX_BLOCKS; i++) {
    free(m->enc[i].resnets);
    free(m->dec[i].resnets);
  }
  nn_arena_free(&m->params);
  memset(m, 0, sizeof *m);
}

int vae_load(vae_model *m, const char *root, const char *subfolder, nn_device dev, cmds_error *err) {
  memset(m, 0, sizeof *m);
  m->device = dev;
  dfs_component c;
  int rc = dfs_component_open(&c, root, subfolder ? subfolder : "vae", NULL, 1, err);
  if (rc) return rc;
  rc = read_config(m, &c.config, c.config_path, err);
  if (!rc) {
    for (int i = 0; i < m->n_blocks; i++) {
      m->enc[i].n_resnets = m->layers_per_block;
      m->dec[i].n_resnets = m->layers_per_block + 1;
      m->enc[i].resnets = cmds_xcalloc((size_t)m->layers_per_block, sizeof(vae_resnet));
      m->dec[i].resnets = cmds_xcalloc((size_t)m->layers_per_block + 1, sizeof(vae_resnet));
    }
    rc = nn_arena_init(&m->params, dev, dfs_component_param_bytes(&c) + 4096, err);
  }
  if (!rc) {
    dfs_loader L;
    dfs_loader_init(&L, &c, &m->params);
    load_weights(m, &L);
    rc = dfs_loader_finish(&L, 1, err);
    m->n_params = L.n_params;
  }
  dfs_component_close(&c);
  if (rc) {
    cmds_error_wrap(err, "vae_load(%s/%s)", root, subfolder ? subfolder : "vae");
    vae_free(m);
  }
  return rc;
}

int vae_scale_factor(const vae_model *m) { return 1 << (m->n_blocks - 1); }

/* The encoder's downsampler: pad (0, 1, 0, 1), 3x3, stride 2. */
static int64_t down_size(int64_t n) { return (n + 1 - 3) / 2 + 1; }

void vae_latent_size(const vae_model *m, int64_t H, int64_t W, int64_t *h, int64_t *w) {
  for (int i = 0; i < m->n_blocks - 1; i++) {
    H = H >= 2 ? down_size(H) : 0;
    W = W >= 2 ? down_size(W) : 0;
  }
  *h = H;
  *w = W;
}

/* ------------------------------------------------------------------ runner */

typedef struct vrun {
  nn_ctx *ctx;
  nn_device dev;
  int plan;           /* 1: only replay the scratch allocations */
  size_t used, peak;  /* plan mode: the replayed arena */
  cmds_error *err;
} vrun;

static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

static size_t r_mark(const vrun *r) { return r->plan ? r->used : nn_arena_mark(r->ctx->scratch); }
static void r_rewind(vrun *r, size_t mark) {
  if (r->plan)
    r->used = mark;
  else
    nn_arena_rewind(r->ctx->scratch, mark);
}
/* An op's own scratch (taken and handed back inside the op). */
static void r_need(vrun *r, size_t bytes) {
  if (r->plan && bytes) {
    size_t end = align256(r->used) + bytes;
    if (end > r->peak) r->peak = end;
  }
}

static nn_tensor shape4(void *data, nn_device dev, int64_t B, int64_t C, int64_t H, int64_t W) {
  return nn_tensor_view(data, NN_F32, dev, B, C, H, W);
}

static int r_alloc(vrun *r, nn_tensor *t, int64_t B, int64_t C, int64_t H, int64_t W) {
  *t = shape4(NULL, r->dev, B, C, H, W);
  size_t bytes = nn_tensor_bytes(t);
  if (r->plan) {
    r->used = align256(r->used) + bytes;
    if (r->used > r->peak) r->peak = r->used;
    return 0;
  }
  t->data = nn_arena_alloc(r->ctx->scratch, bytes, r->err);
  return t->data ? 0 : r->err->code;
}

/* A view of the same memory with another shape (same or fewer elements). */
static nn_tensor reshape(const nn_tensor *t, int64_t B, int64_t C, int64_t H, int64_t W) {
  return shape4(t->data, t->device, B, C, H, W);
}

static int r_conv(vrun *r, nn_tensor *y, const nn_tensor *x, const nn_tensor *w, const nn_tensor *b, int stride,
                  int pt, int pb, int pl, int pr) {
  int64_t k = w->shape[2];
  if (r->plan) {
    int direct = k == 1 && stride == 1 && pt + pb + pl + pr == 0;
    if (!direct) r_need(r, nn_conv2d_ex_scratch_bytes(r->dev, x->shape[1], k, y->shape[2], y->shape[3]));
    return 0;
  }
  return nn_conv2d_ex_forward(r->ctx, y, x, w, b, stride, pt, pb, pl, pr, r->err);
}
static int r_conv3(vrun *r, nn_tensor *y, const nn_tensor *x, const nn_tensor *w, const nn_tensor *b) {
  return r_conv(r, y, x, w, b, 1, 1, 1, 1, 1);
}
static int r_conv1(vrun *r, nn_tensor *y, const nn_tensor *x, const nn_tensor *w, const nn_tensor *b) {
  return r_conv(r, y, x, w, b, 1, 0, 0, 0, 0);
}
static int r_gn_silu(vrun *r, const vae_model *m, nn_tensor *y, const nn_tensor *x, const nn_tensor *g,
                     const nn_tensor *b, int silu) {
  if (r->plan) return 0;
  int rc = nn_groupnorm_forward(r->ctx, y, x, m->groups, g, b, VAE_EPS, r->err);
  if (!rc && silu) rc = nn_silu_forward(r->ctx, y, y, r->err);
  return rc;
}

/* ------------------------------------------------------------------ blocks */

/* x (B, cin, H, W) -> y (B, cout, H, W); y must not alias x. */
static int resnet_fwd(vrun *r, const vae_model *m, const vae_resnet *rs, nn_tensor *y, const nn_tensor *x) {
  int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3];
  int64_t cmax = rs->cin > rs->cout ? rs->cin : rs->cout;
  size_t mark = r_mark(r);
  nn_tensor t1, t2;
  int rc = r_alloc(r, &t1, B, cmax, H, W);
  if (!rc) rc = r_alloc(r, &t2, B, rs->cout, H, W);
  nn_tensor t1in = reshape(&t1, B, rs->cin, H, W), t1out = reshape(&t1, B, rs->cout, H, W);
  if (!rc) rc = r_gn_silu(r, m, &t1in, x, &rs->norm1_w, &rs->norm1_b, 1);
  if (!rc) rc = r_conv3(r, &t2, &t1in, &rs->conv1_w, &rs->conv1_b);
  if (!rc) rc = r_gn_silu(r, m, &t1out, &t2, &rs->norm2_w, &rs->norm2_b, 1);
  if (!rc) rc = r_conv3(r, y, &t1out, &rs->conv2_w, &rs->conv2_b);
  if (rs->has_shortcut) {
    if (!rc) rc = r_conv1(r, &t2, x, &rs->short_w, &rs->short_b);
    if (!rc && !r->plan) rc = nn_add_forward(r->ctx, y, y, &t2, r->err);
  } else if (!rc && !r->plan) {
    rc = nn_add_forward(r->ctx, y, y, x, r->err);
  }
  r_rewind(r, mark);
  return rc;
}

/* One head over all C channels, residual: x (B, C, H, W) -> y (B, C, H, W); y != x. */
static int attn_fwd(vrun *r, const vae_model *m, const vae_attn *a, nn_tensor *y, const nn_tensor *x) {
  int64_t B = x->shape[0], C = x->shape[1], N = x->shape[2] * x->shape[3];
  size_t mark = r_mark(r);
  nn_tensor g, tok, k, v;
  int rc = r_alloc(r, &g, B, C, x->shape[2], x->shape[3]);
  if (!rc) rc = r_alloc(r, &tok, B, N, C, 1);
  if (!rc) rc = r_alloc(r, &k, B, N, C, 1);
  if (!rc) rc = r_alloc(r, &v, B, N, C, 1);
  if (rc) goto out;
  tok.ndim = k.ndim = v.ndim = 3;
  nn_tensor q = nn_tensor_view(g.data, NN_F32, r->dev, B, N, C, -1); /* g's memory once g is used */
  nn_tensor g3 = nn_tensor_view(g.data, NN_F32, r->dev, B, C, N, -1);
  nn_tensor y3 = nn_tensor_view(y->data, NN_F32, r->dev, B, C, N, -1);
  if (r->plan) {
    r_need(r, nn_attention_ex_scratch_bytes(r->dev, N, N, 1, C));
    goto out;
  }
  nn_ctx *ctx = r->ctx;
  cmds_error *err = r->err;
  if ((rc = r_gn_silu(r, m, &g, x, &a->norm_w, &a->norm_b, 0))) goto out;
  if ((rc = nn_transpose12_forward(ctx, &tok, &g3, err))) goto out;           /* tokens (B, N, C) */
  if ((rc = nn_linear_forward(ctx, &q, &tok, &a->q_w, &a->q_b, err))) goto out;
  if ((rc = nn_linear_forward(ctx, &k, &tok, &a->k_w, &a->k_b, err))) goto out;
  if ((rc = nn_linear_forward(ctx, &v, &tok, &a->v_w, &a->v_b, err))) goto out;
  if ((rc = nn_attention_ex_forward(ctx, &tok, &q, &k, &v, 1, 0, err))) goto out; /* o into tok */
  if ((rc = nn_linear_forward(ctx, &k, &tok, &a->o_w, &a->o_b, err))) goto out;
  if ((rc = nn_transpose12_forward(ctx, &y3, &k, err))) goto out;             /* back to (B, C, N) */
  rc = nn_add_forward(ctx, y, y, x, err);
out:
  r_rewind(r, mark);
  return rc;
}

/* resnet, attention, resnet: x -> y (B, C, H, W), y != x. */
static int mid_fwd(vrun *r, const vae_model *m, const vae_mid *mid, nn_tensor *y, const nn_tensor *x) {
  size_t mark = r_mark(r);
  nn_tensor t, u;
  int rc = r_alloc(r, &t, x->shape[0], x->shape[1], x->shape[2], x->shape[3]);
  if (!rc) rc = resnet_fwd(r, m, &mid->res0, &t, x);
  if (!rc && mid->has_attn) {
    rc = r_alloc(r, &u, x->shape[0], x->shape[1], x->shape[2], x->shape[3]);
    if (!rc) rc = attn_fwd(r, m, &mid->attn, &u, &t);
    if (!rc) t = u;
  }
  if (!rc) rc = resnet_fwd(r, m, &mid->res1, y, &t);
  r_rewind(r, mark);
  return rc;
}

/* ------------------------------------------------------------------ encoder / decoder */

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* The largest activation the ping-pong buffers hold (elements). */
static int64_t enc_max_numel(const vae_model *m, int64_t B, int64_t H, int64_t W) {
  int64_t mx = m->block_out[0] * H * W;
  for (int i = 0; i < m->n_blocks; i++) {
    mx = max64(mx, m->block_out[i] * H * W);
    if (m->enc[i].has_resample) {
      H = down_size(H);
      W = down_size(W);
      mx = max64(mx, m->block_out[i] * H * W);
    }
  }
  mx = max64(mx, 2 * m->latent_channels * H * W);
  return B * mx;
}

static int64_t dec_max_numel(const vae_model *m, int64_t B, int64_t h, int64_t w) {
  int n = m->n_blocks;
  int64_t mx = max64(m->latent_channels, m->block_out[n - 1]) * h * w;
  for (int i = 0; i < n; i++) {
    int64_t c = m->block_out[n - 1 - i];
    mx = max64(mx, m->dec[i].resnets[0].cin * h * w);
    mx = max64(mx, c * h * w);
    if (m->dec[i].has_resample) {
      h *= 2;
      w *= 2;
      mx = max64(mx, c * h * w);
    }
  }
  return B * mx;
}

#define SWAP(a, b)  \
  do {              \
    nn_tensor t_ = a; \
    a = b;          \
    b = t_;         \
  } while (0)

/* x (B, in, H, W) -> moments (B, 2L, h, w) (encoder, quant_conv). */
static int enc_run(vrun *r, const vae_model *m, nn_tensor *moments, const nn_tensor *x) {
  int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3];
  size_t mark = r_mark(r);
  int64_t mx = enc_max_numel(m, B, H, W);
  nn_tensor P, Q;
  int rc = r_alloc(r, &P, mx, 1, 1, 1);
  if (!rc) rc = r_alloc(r, &Q, mx, 1, 1, 1);
  if (rc) goto out;
  nn_tensor cur = reshape(&P, B, m->block_out[0], H, W), nxt;
  if ((rc = r_conv3(r, &cur, x, &m->enc_conv_in_w, &m->enc_conv_in_b))) goto out;
  void *other = Q.data;
  for (int i = 0; i < m->n_blocks && !rc; i++) {
    const vae_level *lv = &m->enc[i];
    for (int j = 0; j < lv->n_resnets && !rc; j++) {
      nxt = shape4(other, r->dev, B, lv->resnets[j].cout, H, W);
      rc = resnet_fwd(r, m, &lv->resnets[j], &nxt, &cur);
      other = cur.data;
      cur = nxt;
    }
    if (!rc && lv->has_resample) {
      H = down_size(H);
      W = down_size(W);
      nxt = shape4(other, r->dev, B, cur.shape[1], H, W);
      rc = r_conv(r, &nxt, &cur, &lv->resample_w, &lv->resample_b, 2, 0, 1, 0, 1);
      other = cur.data;
      cur = nxt;
    }
  }
  if (rc) goto out;
  int64_t top = m->block_out[m->n_blocks - 1];
  nxt = shape4(other, r->dev, B, top, H, W);
  if ((rc = mid_fwd(r, m, &m->enc_mid, &nxt, &cur))) goto out;
  SWAP(cur, nxt);
  if ((rc = r_gn_silu(r, m, &nxt, &cur, &m->enc_norm_w, &m->enc_norm_b, 1))) goto out;
  SWAP(cur, nxt);
  if (m->use_quant_conv) {
    nxt = reshape(&nxt, B, 2 * m->latent_channels, H, W);
    if ((rc = r_conv3(r, &nxt, &cur, &m->enc_conv_out_w, &m->enc_conv_out_b))) goto out;
    rc = r_conv1(r, moments, &nxt, &m->quant_w, &m->quant_b);
  } else {
    rc = r_conv3(r, moments, &cur, &m->enc_conv_out_w, &m->enc_conv_out_b);
  }
out:
  r_rewind(r, mark);
  return rc;
}

/* latent (B, L, h, w) in the scaled space -> y (B, out, h f, w f). */
static int dec_run(vrun *r, const vae_model *m, nn_tensor *y, const nn_tensor *latent) {
  int64_t B = latent->shape[0], H = latent->shape[2], W = latent->shape[3];
  int n = m->n_blocks;
  size_t mark = r_mark(r);
  int64_t mx = dec_max_numel(m, B, H, W);
  nn_tensor P, Q;
  int rc = r_alloc(r, &P, mx, 1, 1, 1);
  if (!rc) rc = r_alloc(r, &Q, mx, 1, 1, 1);
  if (rc) goto out;
  nn_tensor cur = reshape(&P, B, m->latent_channels, H, W), nxt = reshape(&Q, B, m->latent_channels, H, W);
  if (!r->plan && (rc = nn_scale_forward(r->ctx, &cur, latent, (float)(1.0 / m->scaling_factor), r->err))) goto out;
  if (m->use_post_quant_conv) {
    if ((rc = r_conv1(r, &nxt, &cur, &m->post_quant_w, &m->post_quant_b))) goto out;
    SWAP(cur, nxt);
  }
  int64_t top = m->block_out[n - 1];
  nxt = reshape(&nxt, B, top, H, W);
  if ((rc = r_conv3(r, &nxt, &cur, &m->dec_conv_in_w, &m->dec_conv_in_b))) goto out;
  SWAP(cur, nxt);
  nxt = reshape(&nxt, B, top, H, W);
  if ((rc = mid_fwd(r, m, &m->dec_mid, &nxt, &cur))) goto out;
  SWAP(cur, nxt);
  for (int i = 0; i < n && !rc; i++) {
    const vae_level *lv = &m->dec[i];
    for (int j = 0; j < lv->n_resnets && !rc; j++) {
      nxt = reshape(&nxt, B, lv->resnets[j].cout, H, W);
      rc = resnet_fwd(r, m, &lv->resnets[j], &nxt, &cur);
      SWAP(cur, nxt);
    }
    if (!rc && lv->has_resample) {
      /* nearest 2x into the other buffer, then the conv back into this one */
      int64_t c = cur.shape[1];
      H *= 2;
      W *= 2;
      nxt = reshape(&nxt, B, c, H, W);
      if (!r->plan) rc = nn_upsample_nearest2x_forward(r->ctx, &nxt, &cur, r->err);
      cur = reshape(&cur, B, c, H, W);
      if (!rc) rc = r_conv3(r, &cur, &nxt, &lv->resample_w, &lv->resample_b);
    }
  }
  if (rc) goto out;
  nxt = reshape(&nxt, B, m->block_out[0], H, W);
  if ((rc = r_gn_silu(r, m, &nxt, &cur, &m->dec_norm_w, &m->dec_norm_b, 1))) goto out;
  rc = r_conv3(r, y, &nxt, &m->dec_conv_out_w, &m->dec_conv_out_b);
out:
  r_rewind(r, mark);
  return rc;
}

/* ------------------------------------------------------------------ public */

static int check_ctx(const vae_model *m, const nn_ctx *ctx, const char *op, cmds_error *err) {
  if (!m->n_blocks) return CMDS_FAIL(err, CMDS_EINPUT, "%s: the model is not loaded", op);
  if (ctx->device != m->device)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: the context is on %s, the model on %s", op, nn_device_name(ctx->device),
                     nn_device_name(m->device));
  if (!ctx->scratch) return CMDS_FAIL(err, CMDS_EINPUT, "%s: needs a scratch arena in the context", op);
  return 0;
}

static int check_image(const vae_model *m, const nn_tensor *x, const char *op, cmds_error *err) {
  if (!x || x->ndim != 4 || x->shape[1] != m->in_channels)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: x must be (B, %lld, H, W)", op, (long long)m->in_channels);
  int64_t h, w;
  vae_latent_size(m, x->shape[2], x->shape[3], &h, &w);
  if (h < 1 || w < 1)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: a %lld x %lld image is too small for %d downsampling steps", op,
                     (long long)x->shape[2], (long long)x->shape[3], m->n_blocks - 1);
  return nn_tensor_expect(x, op, "x", m->device, 4, x->shape, err);
}

static int wrap(int rc, cmds_error *err, const char *op) {
  if (rc) cmds_error_wrap(err, "%s", op);
  return rc;
}

int vae_encode(vae_model *m, nn_ctx *ctx, nn_tensor *moments, const nn_tensor *x, cmds_error *err) {
  const char *op = "vae_encode";
  int rc = check_ctx(m, ctx, op, err);
  if (!rc) rc = check_image(m, x, op, err);
  if (rc) return rc;
  int64_t h, w;
  vae_latent_size(m, x->shape[2], x->shape[3], &h, &w);
  if ((rc = nn_tensor_expect(moments, op, "moments", m->device, 4,
                             (int64_t[]){x->shape[0], 2 * m->latent_channels, h, w}, err)))
    return rc;
  vrun r = {ctx, m->device, 0, 0, 0, err};
  return wrap(enc_run(&r, m, moments, x), err, op);
}

/* latent[b] = sf * moments[b, :L] for every image: L*h*w contiguous floats each. */
static int encode_scaled_run(vrun *r, const vae_model *m, nn_tensor *latent, const nn_tensor *x) {
  int64_t B = latent->shape[0], Lc = m->latent_channels, h = latent->shape[2], w = latent->shape[3];
  size_t mark = r_mark(r);
  nn_tensor mom;
  int rc = r_alloc(r, &mom, B, 2 * Lc, h, w);
  if (!rc) rc = enc_run(r, m, &mom, x);
  for (int64_t b = 0; b < B && !rc && !r->plan; b++) {
    nn_tensor src = nn_tensor_view((float *)mom.data + b * 2 * Lc * h * w, NN_F32, r->dev, Lc * h * w, -1, -1, -1);
    nn_tensor dst = nn_tensor_view((float *)latent->data + b * Lc * h * w, NN_F32, r->dev, Lc * h * w, -1, -1, -1);
    rc = nn_scale_forward(r->ctx, &dst, &src, (float)m->scaling_factor, r->err);
  }
  r_rewind(r, mark);
  return rc;
}

int vae_encode_mean_scaled(vae_model *m, nn_ctx *ctx, nn_tensor *latent, const nn_tensor *x, cmds_error *err) {
  const char *op = "vae_encode_mean_scaled";
  int rc = check_ctx(m, ctx, op, err);
  if (!rc) rc = check_image(m, x, op, err);
  if (rc) return rc;
  int64_t h, w;
  vae_latent_size(m, x->shape[2], x->shape[3], &h, &w);
  if ((rc = nn_tensor_expect(latent, op, "latent", m->device, 4, (int64_t[]){x->shape[0], m->latent_channels, h, w},
                             err)))
    return rc;
  vrun r = {ctx, m->device, 0, 0, 0, err};
  return wrap(encode_scaled_run(&r, m, latent, x), err, op);
}

int vae_decode_scaled(vae_model *m, nn_ctx *ctx, nn_tensor *y, const nn_tensor *latent, cmds_error *err) {
  const char *op = "vae_decode_scaled";
  int rc = check_ctx(m, ctx, op, err);
  if (rc) return rc;
  if (!latent || latent->ndim != 4 || latent->shape[1] != m->latent_channels || latent->shape[2] < 1 ||
      latent->shape[3] < 1)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: latent must be (B, %lld, h, w)", op, (long long)m->latent_channels);
  if ((rc = nn_tensor_expect(latent, op, "latent", m->device, 4, latent->shape, err))) return rc;
  int f = vae_scale_factor(m);
  if ((rc = nn_tensor_expect(y, op, "y", m->device, 4,
                             (int64_t[]){latent->shape[0], m->out_channels, latent->shape[2] * f, latent->shape[3] * f},
                             err)))
    return rc;
  vrun r = {ctx, m->device, 0, 0, 0, err};
  return wrap(dec_run(&r, m, y, latent), err, op);
}

size_t vae_workspace_bytes(const vae_model *m, int64_t B, int64_t H, int64_t W) {
  if (!m->n_blocks) return 0;
  int64_t h, w;
  vae_latent_size(m, H, W, &h, &w);
  if (h < 1 || w < 1) return 0;
  cmds_error err = {0};
  nn_tensor x = shape4(NULL, m->device, B, m->in_channels, H, W);
  nn_tensor lat = shape4(NULL, m->device, B, m->latent_channels, h, w);
  int f = vae_scale_factor(m);
  nn_tensor y = shape4(NULL, m->device, B, m->out_channels, h * f, w * f);
  vrun r = {NULL, m->device, 1, 0, 0, &err};
  encode_scaled_run(&r, m, &lat, &x); /* >= vae_encode: the moments on top */
  size_t peak = r.peak;
  r.used = r.peak = 0;
  dec_run(&r, m, &y, &lat);
  if (r.peak > peak) peak = r.peak;
  return peak + 256; /* the arena's own alignment of its first allocation */
}
