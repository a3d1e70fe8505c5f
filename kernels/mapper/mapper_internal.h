/* mapper_internal: what the mapper's files share, included by them only.
 *   mapper_model.c  configuration rules, the parameter table, a model's life (init, copy, free)
 *   mapper.c        the tape and mapper_forward / mapper_backward on the nn ops
 *   mapper_ops.c    the mapper's own element-wise and reduction ops (CPU reference; the CUDA
 *                   versions are mapper_cuda.cu's, chosen by ctx->device)
 *   mapper_train.c  the loss, AdamW and the cosine schedule
 *   mapper_io.c     what crosses the boundary: feature-cache rows in, safetensors files */
#ifndef CMDS_MAPPER_INTERNAL_H
#define CMDS_MAPPER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mapper.h"

#ifdef CMDS_CUDA
#include "mapper_cuda.h"
#endif

/* The error of a call that meets cuda tensors in a CPU-only build. */
#define MAPPER_NO_CUDA(err, op) CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op)
/* In an op, after the CPU branch is excluded: the CUDA version's result. */
#ifdef CMDS_CUDA
#define ON_CUDA(call) return (call)
#else
#define ON_CUDA(call) return MAPPER_NO_CUDA(err, "mapper")
#endif

#define GN_EPS 1e-5f /* every GroupNorm (PyTorch's default) */

/* ---- configuration (mapper_model.c) */
/* M = max(8, L*D / ca_reduction): the coordinate attention's width. */
static inline int64_t cfg_M(const mapper_config *c) {
  int64_t m = c->layers * c->width / (c->ca_reduction > 0 ? c->ca_reduction : 1);
  return m < 8 ? 8 : m;
}
/* proj_hidden and mlp_hidden with their defaults (0: 2*D, L*D). */
static inline int64_t cfg_proj(const mapper_config *c) {
  return c->proj_hidden > 0 ? c->proj_hidden : 2 * c->width;
}
static inline int64_t cfg_mlp(const mapper_config *c) {
  return c->mlp_hidden > 0 ? c->mlp_hidden : c->layers * c->width;
}
/* A copy with the defaults (0) resolved and the other kind's keys cleared; two
 * configurations build the same model when their resolved copies are equal. */
mapper_config mapper_cfg_resolved(const mapper_config *c);
int mapper_cfg_same(const mapper_config *a, const mapper_config *b);

/* Arena sizes: every tensor starts on a 256-byte boundary. */
static inline size_t round256(size_t n) { return (n + 255) & ~(size_t)255; }

/* ---- parameter table and model storage (mapper_model.c) */
typedef struct mapper_pspec {
  char name[MAPPER_NAME_MAX];
  int ndim;
  int64_t shape[4];
  int init;       /* 0 uniform +-1/sqrt(fan_in), 1 ones, 2 zeros */
  int64_t fan_in;
} mapper_pspec;
/* The reference module's named_parameters() in order; returns their count. */
int mapper_param_specs(const mapper_config *c, mapper_pspec *s);
/* Index of the first parameter of each module in that order (kind cmds):
 * adapt.l: conv w,b norm w,b; coord: conv1 w,b norm w,b conv_h w,b conv_w w,b;
 * selector: conv1 w,b conv2 w,b; proj: proj.0 w,b proj.2 w,b. */
static inline int p_adapt(int64_t l) { return (int)(4 * l); }
static inline int p_coord(const mapper_config *c) { return (int)(4 * c->layers); }
static inline int p_sel(const mapper_config *c) { return (int)(4 * c->layers) + 8; }
static inline int p_proj(const mapper_config *c) { return (int)(4 * c->layers) + 12; }
/* Checks c, then allocates every value and grad (contents undefined). */
int mapper_model_alloc(mapper_model *m, const mapper_config *c, nn_device device, cmds_error *err);
/* Clears grads on any device without a context (a one-off, not in the step loop). */
int mapper_grads_zero_any(mapper_model *m, cmds_error *err);
/* Sets t to zeros on ctx's device. */
int mapper_dev_zero(nn_ctx *ctx, nn_tensor *t, cmds_error *err);

/* The error of a call that needs ctx->scratch and has none. */
static inline int mapper_no_scratch(const char *op, cmds_error *err) {
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: needs a scratch arena in the context", op);
}

/* ---- the mapper's own ops (mapper_ops.c), on ctx's device. Shapes as in mapper_cuda.h:
 * BC = B*C planes of H x W; Y (BC, H+W); ah (BC, H), aw (BC, W); Zn (BM, H+W). */
/* Y[bc, i] = mean_j F[bc, i, j] (i < H), Y[bc, H + j] = mean_i F[bc, i, j]. */
int mapper_op_pool(nn_ctx *ctx, float *y, const float *f, int64_t BC, int64_t H, int64_t W, cmds_error *err);
/* dF[bc, i, j] += dY[bc, i] / W + dY[bc, H + j] / H. */
int mapper_op_pool_bwd(nn_ctx *ctx, float *df, const float *dy, int64_t BC, int64_t H, int64_t W, cmds_error *err);
/* zn (BM, H+W) -> zh (BM, H), zw (BM, W): h-swish and the split in one pass. */
int mapper_op_hswish_split(nn_ctx *ctx, float *zh, float *zw, const float *zn, int64_t BM, int64_t H, int64_t W,
                           cmds_error *err);
int mapper_op_hswish_bwd(nn_ctx *ctx, float *dz, const float *dzh, const float *dzw, const float *zn, int64_t BM,
                         int64_t H, int64_t W, cmds_error *err);
int mapper_op_sigmoid(nn_ctx *ctx, nn_tensor *t, cmds_error *err); /* in place */
/* Ft = F * ah * aw (broadcast over W and H). */
int mapper_op_ca_apply(nn_ctx *ctx, float *ft, const float *f, const float *ah, const float *aw, int64_t BC,
                       int64_t H, int64_t W, cmds_error *err);
/* dF += dFt ah aw; dah, daw: the gradients before the sigmoids (set). */
int mapper_op_ca_apply_bwd(nn_ctx *ctx, float *df, float *dah, float *daw, const float *dft, const float *f,
                           const float *ah, const float *aw, int64_t BC, int64_t H, int64_t W, cmds_error *err);
int mapper_op_relu(nn_ctx *ctx, nn_tensor *t, cmds_error *err); /* in place */
int mapper_op_relu_bwd(nn_ctx *ctx, nn_tensor *dy, const nn_tensor *y, cmds_error *err); /* in place in dy */
/* Softmax over the L channels of every pixel, in place: w (B, L, HW); backward in place in dw. */
int mapper_op_softmax_ch(nn_ctx *ctx, float *w, int64_t B, int64_t L, int64_t HW, cmds_error *err);
int mapper_op_softmax_ch_bwd(nn_ctx *ctx, float *dw, const float *w, int64_t B, int64_t L, int64_t HW,
                             cmds_error *err);
/* S[b, c, p] = sum_l w[b, l, p] F[b, l*D + c, p]; backward sets dF and dw. */
int mapper_op_fuse(nn_ctx *ctx, float *s, const float *w, const float *f, int64_t B, int64_t L, int64_t D,
                   int64_t HW, cmds_error *err);
int mapper_op_fuse_bwd(nn_ctx *ctx, float *df, float *dw, const float *ds, const float *w, const float *f,
                       int64_t B, int64_t L, int64_t D, int64_t HW, cmds_error *err);

#endif
