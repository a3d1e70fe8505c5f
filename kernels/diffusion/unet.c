/* unet: diffusers' UNet2DConditionModel inference (see unet.h for the structure).
 *
 * The forward pass runs twice over the same code: a "dry" walk that only counts the bytes
 * it would take from the scratch arena (its own activations plus each op's scratch), which
 * is unet_workspace_bytes and the up-front room check, then the real pass. Both follow the
 * same allocation order, so the count is exact.
 *
 * Scratch layout of one forward (a stack): time embedding, two ping-pong state buffers
 * and a concat buffer for the mid / up path (sized by the largest state they hold), then
 * the skip tensors pushed by the down path (each down state is a skip, so nothing there is
 * copied), then per-module temporaries that every module rewinds. */
#include "unet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "rng.h"
#include "unet_internal.h"
#include "nn/activation.h"
#include "nn/attention.h"
#include "nn/conv.h"
#include "nn/elementwise.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "nn/resize.h"
#ifdef CMDS_CUDA
/* unet.cu: the nearest upsampling to a size that is not 2x (odd latent sizes) */
int unet_nearest_cuda(nn_ctx *ctx, float *y, const float *x, int64_t P, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                      cmds_error *err);
/* unet.cu: memset 0 of device memory (blocking) */
int unet_cuda_zero(void *p, size_t bytes);
#endif


/* ------------------------------------------------------------------ weights */

/* Loading runs twice: once counting the bytes (the arena is sized by what the config asks
 * for, so a wrong config still reports every missing tensor by name), once loading. */
typedef struct wload {
  dfs_loader *L;
  int count;
  size_t bytes;
  int64_t params;
} wload;

static void wl_tensor(wload *W, nn_tensor *t, int ndim, const int64_t *shape, const char *name) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= shape[d];
  W->params += n;
  if (W->count) {
    W->bytes += (((size_t)n * sizeof(float)) + 255) & ~(size_t)255;
    memset(t, 0, sizeof *t);
    return;
  }
  dfs_load(W->L, t, ndim, shape, "%s", name);
}

static void wl_proj(wload *W, unet_proj *p, int64_t in, int64_t out, int64_t k, int bias /* 1, 0 none, -1 optional */,
                    const char *name) {
  char nm[256];
  p->in = in, p->out = out, p->k = k;
  snprintf(nm, sizeof nm, "%s.weight", name);
  if (k == 0) wl_tensor(W, &p->w, 2, (int64_t[]){out, in}, nm);
  else wl_tensor(W, &p->w, 4, (int64_t[]){out, in, k, k}, nm);
  memset(&p->b, 0, sizeof p->b);
  if (bias == 1 || (bias == -1 && dfs_has(W->L, "%s.bias", name))) {
    snprintf(nm, sizeof nm, "%s.bias", name);
    wl_tensor(W, &p->b, 1, (int64_t[]){out}, nm);
  }
}

static void wl_norm(wload *W, unet_norm *n, int64_t C, const char *name) {
  char nm[256];
  snprintf(nm, sizeof nm, "%s.weight", name);
  wl_tensor(W, &n->w, 1, &C, nm);
  snprintf(nm, sizeof nm, "%s.bias", name);
  wl_tensor(W, &n->b, 1, &C, nm);
}

static void wl_resnet(wload *W, unet_resnet *r, int64_t cin, int64_t cout, int64_t temb, const char *name) {
  char nm[256];
  r->cin = cin, r->cout = cout;
  snprintf(nm, sizeof nm, "%s.norm1", name), wl_norm(W, &r->norm1, cin, nm);
  snprintf(nm, sizeof nm, "%s.conv1", name), wl_proj(W, &r->conv1, cin, cout, 3, 1, nm);
  snprintf(nm, sizeof nm, "%s.time_emb_proj", name), wl_proj(W, &r->time_emb_proj, temb, cout, 0, 1, nm);
  snprintf(nm, sizeof nm, "%s.norm2", name), wl_norm(W, &r->norm2, cout, nm);
  snprintf(nm, sizeof nm, "%s.conv2", name), wl_proj(W, &r->conv2, cout, cout, 3, 1, nm);
  r->has_shortcut = cin != cout;
  if (r->has_shortcut) snprintf(nm, sizeof nm, "%s.conv_shortcut", name), wl_proj(W, &r->conv_shortcut, cin, cout, 1, 1, nm);
}

static void wl_attention(wload *W, unet_attention *a, int64_t dim, int64_t kv_dim, int64_t heads, int64_t dim_head,
                         const char *name) {
  char nm[256];
  int64_t inner = heads * dim_head;
  a->heads = heads, a->dim_head = dim_head;
  snprintf(nm, sizeof nm, "%s.to_q", name), wl_proj(W, &a->to_q, dim, inner, 0, -1, nm);
  snprintf(nm, sizeof nm, "%s.to_k", name), wl_proj(W, &a->to_k, kv_dim, inner, 0, -1, nm);
  snprintf(nm, sizeof nm, "%s.to_v", name), wl_proj(W, &a->to_v, kv_dim, inner, 0, -1, nm);
  snprintf(nm, sizeof nm, "%s.to_out.0", name), wl_proj(W, &a->to_out, inner, dim, 0, 1, nm);
}

static void wl_transformer(wload *W, unet_transformer *T, int64_t C, int64_t heads, int n_layers, int linear,
                           int64_t cross, const char *name) {
  char nm[256];
  int64_t dh = C / heads, inner = heads * dh;
  T->channels = C, T->inner = inner, T->heads = heads, T->n_layers = n_layers;
  snprintf(nm, sizeof nm, "%s.norm", name), wl_norm(W, &T->norm, C, nm);
  snprintf(nm, sizeof nm, "%s.proj_in", name), wl_proj(W, &T->proj_in, C, inner, linear ? 0 : 1, 1, nm);
  if (!W->count && !T->blocks) T->blocks = cmds_xcalloc((size_t)n_layers, sizeof *T->blocks);
  for (int l = 0; l < n_layers; l++) {
    unet_transformer_block *b = W->count ? &(unet_transformer_block){0} : &T->blocks[l];
    char bn[200];
    snprintf(bn, sizeof bn, "%s.transformer_blocks.%d", name, l);
    snprintf(nm, sizeof nm, "%s.norm1", bn), wl_norm(W, &b->norm1, inner, nm);
    snprintf(nm, sizeof nm, "%s.attn1", bn), wl_attention(W, &b->attn1, inner, inner, heads, dh, nm);
    snprintf(nm, sizeof nm, "%s.norm2", bn), wl_norm(W, &b->norm2, inner, nm);
    snprintf(nm, sizeof nm, "%s.attn2", bn), wl_attention(W, &b->attn2, inner, cross, heads, dh, nm);
    snprintf(nm, sizeof nm, "%s.norm3", bn), wl_norm(W, &b->norm3, inner, nm);
    snprintf(nm, sizeof nm, "%s.ff.net.0.proj", bn), wl_proj(W, &b->ff_in, inner, 2 * 4 * inner, 0, 1, nm);
    snprintf(nm, sizeof nm, "%s.ff.net.2", bn), wl_proj(W, &b->ff_out, 4 * inner, inner, 0, 1, nm);
  }
  snprintf(nm, sizeof nm, "%s.proj_out", name), wl_proj(W, &T->proj_out, inner, C, linear ? 0 : 1, 1, nm);
}

static void block_alloc(unet_block *b, int n_layers, int has_attn, int count) {
  if (count || b->resnets) return;
  b->n_layers = n_layers, b->has_attn = has_attn;
  b->resnets = cmds_xcalloc((size_t)n_layers, sizeof *b->resnets);
  if (has_attn) b->attns = cmds_xcalloc((size_t)n_layers, sizeof *b->attns);
}

/* Every tensor of the model, in diffusers' names, with the channel plumbing of
 * UNet2DConditionModel.__init__ (up blocks: layers_per_block + 1 resnets, the last one
 * taking the skip of the previous level's width). */
static void wl_model(wload *W, unet_model *m) {
  const unet_config *c = &m->cfg;
  int nb = (int)c->n_blocks, lin = c->use_linear_projection;
  int64_t T = c->time_embed_dim, X = c->cross_attention_dim;
  const int64_t *ch = c->block_out_channels;
  char nm[256];
  unet_resnet rdummy;
  unet_transformer tdummy;
  wl_proj(W, &m->conv_in, c->in_channels, ch[0], 3, 1, "conv_in");
  wl_proj(W, &m->time_linear_1, ch[0], T, 0, 1, "time_embedding.linear_1");
  wl_proj(W, &m->time_linear_2, T, T, 0, 1, "time_embedding.linear_2");
  for (int i = 0; i < nb; i++) {
    unet_block *b = &m->down[i];
    int nl = (int)c->layers_per_block[i];
    block_alloc(b, nl, c->down_attn[i], W->count);
    for (int j = 0; j < nl; j++) {
      int64_t cin = j == 0 ? ch[i > 0 ? i - 1 : 0] : ch[i];
      snprintf(nm, sizeof nm, "down_blocks.%d.resnets.%d", i, j);
      wl_resnet(W, W->count ? &rdummy : &b->resnets[j], cin, ch[i], T, nm);
      if (c->down_attn[i]) {
        snprintf(nm, sizeof nm, "down_blocks.%d.attentions.%d", i, j);
        memset(&tdummy, 0, sizeof tdummy);
        wl_transformer(W, W->count ? &tdummy : &b->attns[j], ch[i], c->heads[i], (int)c->transformer_layers[i], lin,
                       X, nm);
      }
    }
    b->has_sampler = i < nb - 1;
    if (b->has_sampler) {
      snprintf(nm, sizeof nm, "down_blocks.%d.downsamplers.0.conv", i);
      wl_proj(W, &b->sampler, ch[i], ch[i], 3, 1, nm);
    }
  }
  int64_t cm = ch[nb - 1];
  wl_resnet(W, &m->mid_resnets[0], cm, cm, T, "mid_block.resnets.0");
  wl_transformer(W, W->count ? &tdummy : &m->mid_attn, cm, c->heads[nb - 1], (int)c->transformer_layers[nb - 1], lin,
                 X, "mid_block.attentions.0");
  wl_resnet(W, &m->mid_resnets[1], cm, cm, T, "mid_block.resnets.1");
  int64_t out_ch = ch[nb - 1];
  for (int i = 0; i < nb; i++) {
    int r = nb - 1 - i; /* the down block this up block mirrors */
    unet_block *b = &m->up[i];
    int nl = (int)c->layers_per_block[r] + 1;
    int64_t prev = out_ch, in_ch = ch[r > 0 ? r - 1 : 0];
    out_ch = ch[r];
    block_alloc(b, nl, c->up_attn[i], W->count);
    for (int j = 0; j < nl; j++) {
      int64_t skip = j == nl - 1 ? in_ch : out_ch, rin = j == 0 ? prev : out_ch;
      snprintf(nm, sizeof nm, "up_blocks.%d.resnets.%d", i, j);
      wl_resnet(W, W->count ? &rdummy : &b->resnets[j], rin + skip, out_ch, T, nm);
      if (c->up_attn[i]) {
        snprintf(nm, sizeof nm, "up_blocks.%d.attentions.%d", i, j);
        memset(&tdummy, 0, sizeof tdummy);
        wl_transformer(W, W->count ? &tdummy : &b->attns[j], out_ch, c->heads[r], (int)c->transformer_layers[r], lin,
                       X, nm);
      }
    }
    b->has_sampler = i < nb - 1;
    if (b->has_sampler) {
      snprintf(nm, sizeof nm, "up_blocks.%d.upsamplers.0.conv", i);
      wl_proj(W, &b->sampler, out_ch, out_ch, 3, 1, nm);
    }
  }
  wl_norm(W, &m->conv_norm_out, ch[0], "conv_norm_out");
  wl_proj(W, &m->conv_out, ch[0], c->out_channels, 3, 1, "conv_out");
}

static void free_transformer(unet_transformer *T) {
  free(T->blocks);
  T->blocks = NULL;
}

void unet_free(unet_model *m) {
  if (!m) return;
  unet_lora_detach(m);
  for (int i = 0; i < UNET_MAX_BLOCKS; i++) {
    unet_block *bs[2] = {&m->down[i], &m->up[i]};
    for (int k = 0; k < 2; k++) {
      if (bs[k]->attns)
        for (int j = 0; j < bs[k]->n_layers; j++) free_transformer(&bs[k]->attns[j]);
      free(bs[k]->attns);
      free(bs[k]->resnets);
    }
  }
  free_transformer(&m->mid_attn);
  nn_arena_free(&m->params);
  free(m->source);
  memset(m, 0, sizeof *m);
}

int unet_load(unet_model *m, const char *root, const char *subfolder, nn_device dev, cmds_error *err) {
  memset(m, 0, sizeof *m);
  if (!subfolder) subfolder = "unet";
  dfs_component c;
  int rc = dfs_component_open(&c, root, subfolder, NULL, 1, err);
  if (rc) return rc;
  if ((rc = unet_parse_config(&m->cfg, &c.config, c.config_path, err))) {
    dfs_component_close(&c);
    return rc;
  }
  m->device = dev;
  dfs_loader L;
  dfs_loader_init(&L, &c, NULL);
  wload W = {&L, 1, 0, 0};
  wl_model(&W, m);
  if ((rc = nn_arena_init(&m->params, dev, W.bytes + 256, err))) {
    cmds_error_wrap(err, "UNet weights from %s", c.weights_path);
    dfs_component_close(&c);
    unet_free(m);
    return rc;
  }
  dfs_loader_init(&L, &c, &m->params);
  W = (wload){&L, 0, 0, 0};
  wl_model(&W, m);
  m->n_params = W.params;
  rc = dfs_loader_finish(&L, 1, err);
  if (!rc) m->source = cmds_xstrdup(c.weights_path);
  dfs_component_close(&c);
  if (rc) {
    unet_free(m);
    return rc;
  }
  return 0;
}

int unet_in_channels(const unet_model *m) { return (int)m->cfg.in_channels; }

/* ------------------------------------------------------------------ forward */


/* y = x W^T + b, plus scale * (x A^T) B^T when the layer carries a LoRA adapter (peft's
 * base_layer(x) + lora_B(lora_A(x)) * scaling). */
int unet_i_linear(ustate *S, nn_tensor *y, const nn_tensor *x, const unet_proj *p) {
  OP(nn_linear_forward(S->ctx, y, x, &p->w, opt(&p->b), S->err));
  if (!p->lora) return 0;
  const unet_lora *L = p->lora;
  size_t mk = u_mark(S);
  nn_tensor u = u_lead(x, L->A.shape[0]), z = u_lead(x, p->out);
  int rc;
  if ((rc = u_alloc_like(S, &u, &u)) || (rc = u_alloc_like(S, &z, &z))) return rc;
  OP(nn_linear_forward(S->ctx, &u, x, &L->A, NULL, S->err));
  OP(nn_linear_forward(S->ctx, &z, &u, &L->B, NULL, S->err));
  OP(nn_axpby_forward(S->ctx, y, 1.0f, y, L->scale, &z, S->err));
  u_rewind(S, mk);
  return 0;
}

/* k x k convolution, stride s, symmetric padding pad (x, y NCHW). */
int unet_i_conv(ustate *S, nn_tensor *y, const nn_tensor *x, const unet_proj *p, int stride, int pad) {
  u_need(S, nn_conv2d_ex_scratch_bytes(S->dev, p->in, p->k, y->shape[2], y->shape[3]));
  OP(nn_conv2d_ex_forward(S->ctx, y, x, &p->w, opt(&p->b), stride, pad, pad, pad, pad, S->err));
  return 0;
}

/* F.interpolate(mode="nearest", size=(Ho, Wo)): source index floor(dst * (in / out)) in
 * float, clamped (PyTorch's nearest_neighbor_compute_source_index); 2x is the plain op. */
static void nearest_cpu(float *y, const float *x, int64_t P, int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
  float sh = (float)H / (float)Ho, sw = (float)W / (float)Wo;
  for (int64_t p = 0; p < P; p++)
    for (int64_t i = 0; i < Ho; i++) {
      int64_t si = (int64_t)floorf((float)i * sh);
      if (si > H - 1) si = H - 1;
      const float *xr = x + (p * H + si) * W;
      float *yr = y + (p * Ho + i) * Wo;
      for (int64_t j = 0; j < Wo; j++) {
        int64_t sj = (int64_t)floorf((float)j * sw);
        yr[j] = xr[sj < W - 1 ? sj : W - 1];
      }
    }
}

int unet_i_upsample(ustate *S, nn_tensor *y, const nn_tensor *x) {
  if (S->dry) return 0;
  int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], Ho = y->shape[2], Wo = y->shape[3];
  if (Ho == 2 * H && Wo == 2 * W) return nn_upsample_nearest2x_forward(S->ctx, y, x, S->err);
  if (S->dev == NN_CPU) {
    nearest_cpu(y->data, x->data, B * C, H, W, Ho, Wo);
    return 0;
  }
#ifdef CMDS_CUDA
  return unet_nearest_cuda(S->ctx, y->data, x->data, B * C, H, W, Ho, Wo, S->err);
#else
  return CMDS_FAIL(S->err, CMDS_EINTERNAL, "UNet upsampler: tensors on %s in a build without CUDA",
                   nn_device_name(S->dev));
#endif
}

/* ResnetBlock2D's second half, shared by the inference and the taped forward: out = conv2(SiLU(
 * GroupNorm(h1))) + shortcut(x); h1 (B,cout,H,W) is conv1's output plus the time projection.
 * Its scratch stays allocated (the caller rewinds). */
int unet_i_resnet_out(ustate *S, nn_tensor *out, const nn_tensor *h1, const nn_tensor *x, const unet_resnet *r,
                      int64_t groups, float eps) {
  int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3];
  nn_tensor t2;
  int rc;
  if ((rc = u_alloc(S, &t2, 4, B, r->cout, H, W))) return rc;
  OP(nn_groupnorm_forward(S->ctx, &t2, h1, groups, &r->norm2.w, &r->norm2.b, eps, S->err));
  OP(nn_silu_forward(S->ctx, &t2, &t2, S->err));
  if ((rc = unet_i_conv(S, out, &t2, &r->conv2, 1, 1))) return rc;
  if (r->has_shortcut) {
    nn_tensor sc;
    if ((rc = u_alloc(S, &sc, 4, B, r->cout, H, W)) || (rc = unet_i_conv(S, &sc, x, &r->conv_shortcut, 1, 0))) return rc;
    OP(nn_add_forward(S->ctx, out, out, &sc, S->err));
  } else {
    OP(nn_add_forward(S->ctx, out, out, x, S->err));
  }
  return 0;
}

/* ResnetBlock2D: out (B,cout,H,W) from x (B,cin,H,W); emb_act = SiLU(emb) (B,T). out must
 * not alias x. */
int unet_i_resnet(ustate *S, nn_tensor *out, const nn_tensor *x, const unet_resnet *r,
                          const nn_tensor *emb_act, int64_t groups, float eps) {
  int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3];
  size_t mk = u_mark(S);
  nn_tensor t, h1, tp;
  int rc;
  if ((rc = u_alloc(S, &t, 4, B, r->cin, H, W))) return rc;
  OP(nn_groupnorm_forward(S->ctx, &t, x, groups, &r->norm1.w, &r->norm1.b, eps, S->err));
  OP(nn_silu_forward(S->ctx, &t, &t, S->err));
  if ((rc = u_alloc(S, &h1, 4, B, r->cout, H, W)) || (rc = unet_i_conv(S, &h1, &t, &r->conv1, 1, 1))) return rc;
  if ((rc = u_alloc(S, &tp, 2, B, r->cout, 0, 0)) || (rc = unet_i_linear(S, &tp, emb_act, &r->time_emb_proj))) return rc;
  OP(nn_add_channel_forward(S->ctx, &h1, &h1, &tp, S->err));
  if ((rc = unet_i_resnet_out(S, out, &h1, x, r, groups, eps))) return rc;
  u_rewind(S, mk);
  return 0;
}

/* Attention: out (B,N,dim) = to_out(MHA(to_q(xq), to_k(xkv), to_v(xkv))). */
static int attention_forward(ustate *S, nn_tensor *out, const nn_tensor *xq, const nn_tensor *xkv,
                             const unet_attention *a) {
  int64_t B = xq->shape[0], N = xq->shape[1], M = xkv->shape[1], inner = a->heads * a->dim_head;
  size_t mk = u_mark(S);
  nn_tensor q, k, v, o;
  int rc;
  if ((rc = u_alloc(S, &q, 3, B, N, inner, 0)) || (rc = u_alloc(S, &k, 3, B, M, inner, 0)) ||
      (rc = u_alloc(S, &v, 3, B, M, inner, 0)) || (rc = u_alloc(S, &o, 3, B, N, inner, 0)))
    return rc;
  if ((rc = unet_i_linear(S, &q, xq, &a->to_q)) || (rc = unet_i_linear(S, &k, xkv, &a->to_k)) ||
      (rc = unet_i_linear(S, &v, xkv, &a->to_v)))
    return rc;
  u_need(S, nn_attention_ex_scratch_bytes(S->dev, N, M, a->heads, a->dim_head));
  OP(nn_attention_ex_forward(S->ctx, &o, &q, &k, &v, a->heads, 0, S->err));
  if ((rc = unet_i_linear(S, out, &o, &a->to_out))) return rc;
  u_rewind(S, mk);
  return 0;
}

/* BasicTransformerBlock, in place on x (B,N,D); enc (B,S,cross). */
int unet_i_tblock(ustate *S, nn_tensor *x, const nn_tensor *enc, const unet_transformer_block *b) {
  int64_t B = x->shape[0], N = x->shape[1], D = x->shape[2], F = b->ff_out.in;
  size_t mk = u_mark(S);
  nn_tensor n, a, g, f;
  int rc;
  if ((rc = u_alloc(S, &n, 3, B, N, D, 0)) || (rc = u_alloc(S, &a, 3, B, N, D, 0))) return rc;
  OP(nn_layernorm_forward(S->ctx, &n, x, &b->norm1.w, &b->norm1.b, UNET_LN_EPS, S->err));
  if ((rc = attention_forward(S, &a, &n, &n, &b->attn1))) return rc;
  OP(nn_add_forward(S->ctx, x, x, &a, S->err));
  OP(nn_layernorm_forward(S->ctx, &n, x, &b->norm2.w, &b->norm2.b, UNET_LN_EPS, S->err));
  if ((rc = attention_forward(S, &a, &n, enc, &b->attn2))) return rc;
  OP(nn_add_forward(S->ctx, x, x, &a, S->err));
  OP(nn_layernorm_forward(S->ctx, &n, x, &b->norm3.w, &b->norm3.b, UNET_LN_EPS, S->err));
  if ((rc = u_alloc(S, &g, 3, B, N, 2 * F, 0)) || (rc = unet_i_linear(S, &g, &n, &b->ff_in))) return rc;
  if ((rc = u_alloc(S, &f, 3, B, N, F, 0))) return rc;
  OP(nn_geglu_forward(S->ctx, &f, &g, S->err));
  if ((rc = unet_i_linear(S, &a, &f, &b->ff_out))) return rc;
  OP(nn_add_forward(S->ctx, x, x, &a, S->err));
  u_rewind(S, mk);
  return 0;
}

/* Transformer2DModel's input side: x (B, N, I) = proj_in(GroupNorm(h)) as tokens (the linear
 * on tokens, or the 1x1 conv then tokens). Its scratch stays allocated: the caller rewinds. */
int unet_i_transformer_in(ustate *S, nn_tensor *x, const nn_tensor *h, const unet_transformer *T, int64_t groups) {
  int64_t B = h->shape[0], C = h->shape[1], H = h->shape[2], W = h->shape[3], N = H * W, I = T->inner;
  nn_tensor gn;
  int rc;
  if ((rc = u_alloc(S, &gn, 4, B, C, H, W))) return rc;
  OP(nn_groupnorm_forward(S->ctx, &gn, h, groups, &T->norm.w, &T->norm.b, UNET_TGN_EPS, S->err));
  if (T->proj_in.k == 0) { /* tokens, then the linear */
    nn_tensor tok, gv = u_view(&gn, 3, B, C, N, 0);
    if ((rc = u_alloc(S, &tok, 3, B, N, C, 0))) return rc;
    OP(nn_transpose12_forward(S->ctx, &tok, &gv, S->err));
    return unet_i_linear(S, x, &tok, &T->proj_in);
  }
  nn_tensor p, pv; /* 1x1 conv, then tokens */
  if ((rc = u_alloc(S, &p, 4, B, I, H, W)) || (rc = unet_i_conv(S, &p, &gn, &T->proj_in, 1, 0))) return rc;
  pv = u_view(&p, 3, B, I, N, 0);
  OP(nn_transpose12_forward(S->ctx, x, &pv, S->err));
  return 0;
}

/* Its output side: out = h + proj_out(x) back in (B, C, H, W); out may be h. Scratch as above. */
int unet_i_transformer_out(ustate *S, nn_tensor *out, const nn_tensor *h, const nn_tensor *x,
                           const unet_transformer *T) {
  int64_t B = h->shape[0], C = h->shape[1], H = h->shape[2], W = h->shape[3], N = H * W, I = T->inner;
  nn_tensor y;
  int rc;
  if ((rc = u_alloc(S, &y, 4, B, C, H, W))) return rc;
  if (T->proj_in.k == 0) {
    nn_tensor yt, yv = u_view(&y, 3, B, C, N, 0);
    if ((rc = u_alloc(S, &yt, 3, B, N, C, 0)) || (rc = unet_i_linear(S, &yt, x, &T->proj_out))) return rc;
    OP(nn_transpose12_forward(S->ctx, &yv, &yt, S->err));
  } else {
    nn_tensor xt;
    if ((rc = u_alloc(S, &xt, 3, B, I, N, 0))) return rc;
    OP(nn_transpose12_forward(S->ctx, &xt, x, S->err));
    nn_tensor xv = u_view(&xt, 4, B, I, H, W);
    if ((rc = unet_i_conv(S, &y, &xv, &T->proj_out, 1, 0))) return rc;
  }
  OP(nn_add_forward(S->ctx, out, h, &y, S->err));
  return 0;
}

/* Transformer2DModel: out = h + T(h) (B,C,H,W); out may be h. */
int unet_i_transformer(ustate *S, nn_tensor *out, const nn_tensor *h, const nn_tensor *enc,
                       const unet_transformer *T, int64_t groups) {
  size_t mk = u_mark(S);
  nn_tensor x;
  int rc;
  if ((rc = u_alloc(S, &x, 3, h->shape[0], h->shape[2] * h->shape[3], T->inner, 0)) ||
      (rc = unet_i_transformer_in(S, &x, h, T, groups)))
    return rc;
  for (int l = 0; l < T->n_layers; l++)
    if ((rc = unet_i_tblock(S, &x, enc, &T->blocks[l]))) return rc;
  if ((rc = unet_i_transformer_out(S, out, h, &x, T))) return rc;
  u_rewind(S, mk);
  return 0;
}

/* diffusers' get_timestep_embedding in float32: exponent = -ln(10000) * i / (half - shift),
 * freq = exp(exponent), arg = t * freq, [sin, cos] (flipped: [cos, sin]). exp / sin / cos
 * are taken in double and rounded once (the correctly rounded float result). */
static void timestep_embedding(float *e, int64_t dim, double t, int flip, double shift) {
  int64_t half = dim / 2;
  float tf = (float)t, nl = (float)(-log(10000.0)), den = (float)((double)half - shift);
  for (int64_t i = 0; i < half; i++) {
    float ex = (nl * (float)i) / den;
    float fr = (float)exp((double)ex);
    float arg = tf * fr;
    float s = (float)sin((double)arg), c = (float)cos((double)arg);
    e[flip ? half + i : i] = s;
    e[flip ? i : half + i] = c;
  }
  if (dim % 2) e[dim - 1] = 0;
}

/* Spatial size at each level: stride-2, pad-1, 3x3 downsamplers (Ho = (H - 1) / 2 + 1). */
void unet_i_level_sizes(const unet_config *c, int64_t h, int64_t w, int64_t *Hs, int64_t *Ws) {
  Hs[0] = h, Ws[0] = w;
  for (int l = 1; l < c->n_blocks; l++) Hs[l] = (Hs[l - 1] - 1) / 2 + 1, Ws[l] = (Ws[l - 1] - 1) / 2 + 1;
}

typedef struct skip_plan {
  int n;
  int64_t C[UNET_MAX_SKIPS];
  int L[UNET_MAX_SKIPS];
} skip_plan;

static void plan_skips(const unet_config *c, skip_plan *p) {
  p->n = 0;
  p->C[p->n] = c->block_out_channels[0], p->L[p->n++] = 0;
  for (int i = 0; i < c->n_blocks; i++) {
    for (int j = 0; j < c->layers_per_block[i]; j++) p->C[p->n] = c->block_out_channels[i], p->L[p->n++] = i;
    if (i < c->n_blocks - 1) p->C[p->n] = c->block_out_channels[i], p->L[p->n++] = i + 1;
  }
}

/* Largest mid / up state and concat (elements per image) for the ping-pong buffers. */
static void plan_buffers(const unet_config *c, const int64_t *Hs, const int64_t *Ws, int64_t *state, int64_t *cat) {
  skip_plan p;
  plan_skips(c, &p);
  int nb = (int)c->n_blocks, top = p.n, L = nb - 1;
  int64_t C = c->block_out_channels[nb - 1];
  *state = C * Hs[L] * Ws[L], *cat = 0;
  for (int i = 0; i < nb; i++) {
    int r = nb - 1 - i;
    for (int j = 0; j < c->layers_per_block[r] + 1; j++) {
      top--;
      int64_t n = (C + p.C[top]) * Hs[L] * Ws[L];
      if (n > *cat) *cat = n;
      C = c->block_out_channels[r];
      if (C * Hs[L] * Ws[L] > *state) *state = C * Hs[L] * Ws[L];
    }
    if (i < nb - 1) {
      L = p.L[top - 1];
      if (C * Hs[L] * Ws[L] > *state) *state = C * Hs[L] * Ws[L];
    }
  }
}

int unet_i_time_embedding(ustate *S, const unet_model *m, const double *t, nn_tensor *emb) {
  const unet_config *c = &m->cfg;
  int64_t B = emb->shape[0], C0 = c->block_out_channels[0], T = c->time_embed_dim;
  size_t mk = u_mark(S);
  nn_tensor ts, e1;
  int rc;
  if ((rc = u_alloc(S, &ts, 2, B, C0, 0, 0)) || (rc = u_alloc(S, &e1, 2, B, T, 0, 0))) return rc;
  if (!S->dry) {
    float *host = cmds_xmalloc((size_t)(B * C0) * sizeof(float));
    for (int64_t b = 0; b < B; b++) timestep_embedding(host + b * C0, C0, t[b], c->flip_sin_to_cos, c->freq_shift);
    nn_tensor hv = nn_tensor_view(host, NN_F32, NN_CPU, B, C0, -1, -1);
    rc = nn_tensor_copy(&ts, &hv, S->err);
    free(host);
    if (rc) return rc;
  }
  if ((rc = unet_i_linear(S, &e1, &ts, &m->time_linear_1))) return rc;
  OP(nn_silu_forward(S->ctx, &e1, &e1, S->err));
  if ((rc = unet_i_linear(S, emb, &e1, &m->time_linear_2))) return rc;
  OP(nn_silu_forward(S->ctx, emb, emb, S->err));
  u_rewind(S, mk);
  return 0;
}

static int run(ustate *S, const unet_model *m, nn_tensor *out, const nn_tensor *x, const double *t,
               const nn_tensor *enc) {
  const unet_config *c = &m->cfg;
  int nb = (int)c->n_blocks, rc;
  int64_t B = x->shape[0], h = x->shape[2], w = x->shape[3], C0 = c->block_out_channels[0], T = c->time_embed_dim;
  int64_t G = c->norm_num_groups;
  float eps = (float)c->norm_eps;
  int64_t Hs[UNET_MAX_BLOCKS], Ws[UNET_MAX_BLOCKS];
  unet_i_level_sizes(c, h, w, Hs, Ws);
  size_t mk0 = u_mark(S);

  /* time embedding: emb_act = SiLU(linear_2(SiLU(linear_1(sinusoid(t))))), the SiLU every
   * resnet applies to emb before its time_emb_proj, taken once */
  nn_tensor emb;
  if ((rc = u_alloc(S, &emb, 2, B, T, 0, 0)) || (rc = unet_i_time_embedding(S, m, t, &emb))) return rc;

  /* mid / up working buffers */
  int64_t nstate, ncat;
  plan_buffers(c, Hs, Ws, &nstate, &ncat);
  nn_tensor buf[2], bcat;
  if ((rc = u_alloc(S, &buf[0], 1, B * nstate, 0, 0, 0)) || (rc = u_alloc(S, &buf[1], 1, B * nstate, 0, 0, 0)) ||
      (rc = u_alloc(S, &bcat, 1, B * ncat, 0, 0, 0)))
    return rc;

  /* down: every state is a skip */
  nn_tensor skips[UNET_MAX_SKIPS];
  int ns = 0;
  if ((rc = u_alloc(S, &skips[ns], 4, B, C0, h, w)) || (rc = unet_i_conv(S, &skips[ns], x, &m->conv_in, 1, 1))) return rc;
  nn_tensor *cur = &skips[ns++];
  for (int i = 0; i < nb; i++) {
    const unet_block *b = &m->down[i];
    int64_t Ci = c->block_out_channels[i];
    for (int j = 0; j < b->n_layers; j++) {
      nn_tensor *o = &skips[ns];
      if ((rc = u_alloc(S, o, 4, B, Ci, Hs[i], Ws[i])) ||
          (rc = unet_i_resnet(S, o, cur, &b->resnets[j], &emb, G, eps)))
        return rc;
      if (b->has_attn && (rc = unet_i_transformer(S, o, o, enc, &b->attns[j], G))) return rc;
      cur = &skips[ns++];
    }
    if (b->has_sampler) {
      nn_tensor *o = &skips[ns];
      if ((rc = u_alloc(S, o, 4, B, Ci, Hs[i + 1], Ws[i + 1])) || (rc = unet_i_conv(S, o, cur, &b->sampler, 2, 1)))
        return rc;
      cur = &skips[ns++];
    }
  }

  /* mid */
  int64_t Cm = c->block_out_channels[nb - 1], L = nb - 1;
  nn_tensor st[2];
  st[0] = u_view(&buf[0], 4, B, Cm, Hs[L], Ws[L]);
  st[1] = u_view(&buf[1], 4, B, Cm, Hs[L], Ws[L]);
  if ((rc = unet_i_resnet(S, &st[0], cur, &m->mid_resnets[0], &emb, G, eps)) ||
      (rc = unet_i_transformer(S, &st[0], &st[0], enc, &m->mid_attn, G)) ||
      (rc = unet_i_resnet(S, &st[1], &st[0], &m->mid_resnets[1], &emb, G, eps)))
    return rc;
  int ci = 1; /* the buffer holding the current state */

  /* up: concat the popped skip, resnet (+ transformer); upsample to the next skip's size */
  for (int i = 0; i < nb; i++) {
    const unet_block *b = &m->up[i];
    int64_t Co = c->block_out_channels[nb - 1 - i];
    for (int j = 0; j < b->n_layers; j++) {
      const nn_tensor *sk = &skips[--ns];
      int64_t Cc = st[ci].shape[1] + sk->shape[1];
      if (Cc != b->resnets[j].cin || sk->shape[2] != Hs[L] || sk->shape[3] != Ws[L])
        return CMDS_FAIL(S->err, CMDS_EINTERNAL, "UNet up block %d layer %d: %lld channels for a resnet of %lld", i, j,
                         (long long)Cc, (long long)b->resnets[j].cin);
      nn_tensor cat = u_view(&bcat, 4, B, Cc, Hs[L], Ws[L]);
      OP(nn_concat_channels_forward(S->ctx, &cat, &st[ci], sk, S->err));
      st[1 - ci] = u_view(&buf[1 - ci], 4, B, Co, Hs[L], Ws[L]);
      if ((rc = unet_i_resnet(S, &st[1 - ci], &cat, &b->resnets[j], &emb, G, eps))) return rc;
      ci = 1 - ci;
      if (b->has_attn && (rc = unet_i_transformer(S, &st[ci], &st[ci], enc, &b->attns[j], G))) return rc;
    }
    if (b->has_sampler) {
      int64_t Ho = skips[ns - 1].shape[2], Wo = skips[ns - 1].shape[3];
      size_t mk = u_mark(S);
      nn_tensor up;
      if ((rc = u_alloc(S, &up, 4, B, Co, Ho, Wo)) || (rc = unet_i_upsample(S, &up, &st[ci]))) return rc;
      st[1 - ci] = u_view(&buf[1 - ci], 4, B, Co, Ho, Wo);
      if ((rc = unet_i_conv(S, &st[1 - ci], &up, &b->sampler, 1, 1))) return rc;
      ci = 1 - ci;
      u_rewind(S, mk);
      L--;
    }
  }

  /* out */
  nn_tensor gn;
  if ((rc = u_alloc(S, &gn, 4, B, C0, h, w))) return rc;
  OP(nn_groupnorm_forward(S->ctx, &gn, &st[ci], G, &m->conv_norm_out.w, &m->conv_norm_out.b, eps, S->err));
  OP(nn_silu_forward(S->ctx, &gn, &gn, S->err));
  if ((rc = unet_i_conv(S, out, &gn, &m->conv_out, 1, 1))) return rc;
  u_rewind(S, mk0);
  return 0;
}

static size_t dry_peak(const unet_model *m, int64_t B, int64_t h, int64_t w, int64_t S_tokens) {
  ustate S = {0};
  S.dev = m->device;
  S.dry = 1;
  cmds_error e;
  S.err = &e;
  nn_tensor x = {0}, out = {0}, enc = {0};
  x.ndim = 4, x.shape[0] = B, x.shape[1] = m->cfg.in_channels, x.shape[2] = h, x.shape[3] = w;
  out = x, out.shape[1] = m->cfg.out_channels;
  enc.ndim = 3, enc.shape[0] = B, enc.shape[1] = S_tokens, enc.shape[2] = m->cfg.cross_attention_dim;
  double t0 = 0; /* not read in a dry walk */
  run(&S, m, &out, &x, &t0, &enc);
  return S.peak;
}

size_t unet_workspace_bytes(const unet_model *m, int64_t B, int64_t h, int64_t w, int64_t S) {
  return dry_peak(m, B, h, w, S) + 512;
}

int unet_forward(unet_model *m, nn_ctx *ctx, nn_tensor *out, const nn_tensor *x, double t, const nn_tensor *enc,
                 cmds_error *err) {
  const unet_config *c = &m->cfg;
  if (x->ndim != 4 || x->shape[1] != c->in_channels || x->shape[2] < 1 || x->shape[3] < 1)
    return CMDS_FAIL(err, CMDS_EINPUT, "unet_forward: x must be (B, %lld, h, w), got ndim %d channels %lld",
                     (long long)c->in_channels, x->ndim, (long long)(x->ndim > 1 ? x->shape[1] : 0));
  int64_t B = x->shape[0], h = x->shape[2], w = x->shape[3];
  int rc;
  if ((rc = nn_tensor_expect(x, "unet_forward", "x", m->device, 4, x->shape, err)) ||
      (rc = nn_tensor_expect(enc, "unet_forward", "enc (B, S, cross_attention_dim)", m->device, 3,
                             (int64_t[]){B, enc->ndim == 3 ? enc->shape[1] : 0, c->cross_attention_dim}, err)) ||
      (rc = nn_tensor_expect(out, "unet_forward", "out", m->device, 4, (int64_t[]){B, c->out_channels, h, w}, err)))
    return rc;
  if (enc->shape[1] < 1) return CMDS_FAIL(err, CMDS_EINPUT, "unet_forward: enc has no tokens");
  if (ctx->device != m->device || !ctx->scratch)
    return CMDS_FAIL(err, CMDS_EINPUT, "unet_forward: the context must be on %s with a scratch arena",
                     nn_device_name(m->device));
  size_t need = dry_peak(m, B, h, w, enc->shape[1]);
  size_t start = ALIGN256(ctx->scratch->used_bytes);
  if (start + need > ctx->scratch->size_bytes)
    return CMDS_FAIL(err, CMDS_ENOMEM, "unet_forward: the scratch arena has %zu bytes free, %zu needed for "
                     "(B %lld, %lld x %lld, %lld tokens): size it with unet_workspace_bytes",
                     ctx->scratch->size_bytes - (start < ctx->scratch->size_bytes ? start : ctx->scratch->size_bytes),
                     need, (long long)B, (long long)h, (long long)w, (long long)enc->shape[1]);
  ustate S = {0};
  S.ctx = ctx, S.dev = m->device, S.err = err;
  double *tb = cmds_xmalloc((size_t)B * sizeof(double));
  for (int64_t b = 0; b < B; b++) tb[b] = t;
  size_t mk = nn_arena_mark(ctx->scratch);
  rc = run(&S, m, out, x, tb, enc);
  nn_arena_rewind(ctx->scratch, mk);
  free(tb);
  return rc;
}

/* ------------------------------------------------------------------ LoRA */

/* Every transformer of the model in named_modules() order: down_blocks, up_blocks (the list
 * is registered before the mid block in UNet2DConditionModel.__init__), mid_block. */
typedef struct tr_ref {
  unet_transformer *T;
  char name[96];
} tr_ref;

static int list_transformers(unet_model *m, tr_ref *out, int cap) {
  int n = 0;
  for (int i = 0; i < m->cfg.n_blocks; i++)
    if (m->down[i].has_attn)
      for (int j = 0; j < m->down[i].n_layers && n < cap; j++, n++)
        out[n].T = &m->down[i].attns[j], snprintf(out[n].name, sizeof out[n].name, "down_blocks.%d.attentions.%d", i, j);
  for (int i = 0; i < m->cfg.n_blocks; i++)
    if (m->up[i].has_attn)
      for (int j = 0; j < m->up[i].n_layers && n < cap; j++, n++)
        out[n].T = &m->up[i].attns[j], snprintf(out[n].name, sizeof out[n].name, "up_blocks.%d.attentions.%d", i, j);
  if (n < cap) out[n].T = &m->mid_attn, snprintf(out[n].name, sizeof out[n].name, "mid_block.attentions.0"), n++;
  return n;
}

void unet_lora_detach(unet_model *m) {
  if (!m || !m->lora) return;
  tr_ref tr[2 * UNET_MAX_SKIPS];
  int nt = list_transformers(m, tr, 2 * UNET_MAX_SKIPS);
  for (int i = 0; i < nt; i++)
    for (int l = 0; l < tr[i].T->n_layers; l++) {
      unet_transformer_block *b = &tr[i].T->blocks[l];
      unet_attention *as[2] = {&b->attn1, &b->attn2};
      for (int a = 0; a < 2; a++)
        as[a]->to_q.lora = as[a]->to_k.lora = as[a]->to_v.lora = as[a]->to_out.lora = NULL;
    }
  nn_arena_free(&m->lora->store);
  free(m->lora->items);
  free(m->lora->names);
  free(m->lora);
  m->lora = NULL;
}

void unet_lora_zero_grad(unet_model *m) {
  if (!m || !m->lora || m->lora->n == 0) return;
  unet_lora_set *L = m->lora;
  char *lo = L->items[0].dA.data;
  char *hi = (char *)L->items[L->n - 1].dB.data + nn_tensor_bytes(&L->items[L->n - 1].dB);
  if (m->device == NN_CPU) memset(lo, 0, (size_t)(hi - lo));
#ifdef CMDS_CUDA
  else unet_cuda_zero(lo, (size_t)(hi - lo));
#endif
}

int unet_lora_find(const unet_model *m, const char *name) {
  if (!m || !m->lora || !name) return -1;
  for (int i = 0; i < m->lora->n; i++)
    if (strcmp(m->lora->names[i], name) == 0) return i;
  return -1;
}

int unet_lora_attach(unet_model *m, int rank, float alpha, uint64_t seed, cmds_error *err) {
  if (rank < 1 || rank > 4096 || !(alpha > 0) || !isfinite(alpha))
    return CMDS_FAIL(err, CMDS_EINPUT, "unet_lora_attach: rank %d must be in 1..4096 and alpha %g positive", rank,
                     (double)alpha);
  unet_lora_detach(m);
  tr_ref tr[2 * UNET_MAX_SKIPS];
  int nt = list_transformers(m, tr, 2 * UNET_MAX_SKIPS), n = 0;
  for (int i = 0; i < nt; i++) n += 8 * tr[i].T->n_layers;
  if (n == 0) return CMDS_FAIL(err, CMDS_EINPUT, "unet_lora_attach: the UNet (%s) has no attention layer", m->source);
  unet_lora_set *L = cmds_xcalloc(1, sizeof *L);
  L->rank = rank, L->alpha = alpha, L->n = n;
  L->items = cmds_xcalloc((size_t)n, sizeof *L->items);
  L->names = cmds_xcalloc((size_t)n, sizeof *L->names);
  unet_proj **projs = cmds_xcalloc((size_t)n, sizeof *projs);
  static const char *pn[4] = {"to_q", "to_k", "to_v", "to_out.0"};
  size_t bytes = 0;
  int k = 0;
  for (int i = 0; i < nt; i++)
    for (int l = 0; l < tr[i].T->n_layers; l++) {
      unet_transformer_block *b = &tr[i].T->blocks[l];
      unet_attention *as[2] = {&b->attn1, &b->attn2};
      for (int a = 0; a < 2; a++) {
        unet_proj *ps[4] = {&as[a]->to_q, &as[a]->to_k, &as[a]->to_v, &as[a]->to_out};
        for (int q = 0; q < 4; q++, k++) {
          projs[k] = ps[q];
          snprintf(L->names[k], sizeof L->names[k], "%s.transformer_blocks.%d.attn%d.%s", tr[i].name, l, a + 1, pn[q]);
          bytes += 2 * (ALIGN256((size_t)rank * (size_t)ps[q]->in * sizeof(float)) +
                        ALIGN256((size_t)ps[q]->out * (size_t)rank * sizeof(float)));
        }
      }
    }
  int rc = nn_arena_init(&L->store, m->device, bytes + 1024, err);
  if (rc) {
    free(projs), free(L->items), free(L->names), free(L);
    return cmds_error_wrap(err, "LoRA adapters of rank %d", rank);
  }
  /* A and B of every adapter, then every gradient (one contiguous block to zero) */
  for (int pass = 0; pass < 2 && !rc; pass++)
    for (int i = 0; i < n && !rc; i++) {
      unet_lora *it = &L->items[i];
      int64_t sa[2] = {rank, projs[i]->in}, sb[2] = {projs[i]->out, rank};
      if (!(rc = nn_tensor_alloc(pass ? &it->dA : &it->A, &L->store, NN_F32, 2, sa, err)))
        rc = nn_tensor_alloc(pass ? &it->dB : &it->B, &L->store, NN_F32, 2, sb, err);
      it->scale = alpha / (float)rank;
    }
  /* A ~ N(0, 1/rank) (std), B = 0, drawn on the host in the set's order */
  cmds_rng g;
  cmds_rng_seed(&g, seed);
  int64_t maxn = 0;
  for (int i = 0; i < n; i++) {
    int64_t na = nn_tensor_numel(&L->items[i].A), nb = nn_tensor_numel(&L->items[i].B);
    maxn = na > maxn ? na : maxn, maxn = nb > maxn ? nb : maxn;
  }
  float *host = cmds_xmalloc((size_t)maxn * sizeof(float));
  for (int i = 0; i < n && !rc; i++) {
    unet_lora *it = &L->items[i];
    int64_t na = nn_tensor_numel(&it->A);
    for (int64_t e = 0; e < na; e++) host[e] = (float)(cmds_rng_normal(&g) / (double)rank);
    nn_tensor hv = nn_tensor_view(host, NN_F32, NN_CPU, it->A.shape[0], it->A.shape[1], -1, -1);
    rc = nn_tensor_copy(&it->A, &hv, err);
  }
  memset(host, 0, (size_t)maxn * sizeof(float));
  for (int i = 0; i < n && !rc; i++) {
    unet_lora *it = &L->items[i];
    nn_tensor hv = nn_tensor_view(host, NN_F32, NN_CPU, it->B.shape[0], it->B.shape[1], -1, -1);
    rc = nn_tensor_copy(&it->B, &hv, err);
  }
  free(host);
  if (rc) {
    free(projs);
    nn_arena_free(&L->store), free(L->items), free(L->names), free(L);
    return cmds_error_wrap(err, "LoRA adapters of rank %d", rank);
  }
  for (int i = 0; i < n; i++) projs[i]->lora = &L->items[i];
  free(projs);
  m->lora = L;
  unet_lora_zero_grad(m);
  return 0;
}
