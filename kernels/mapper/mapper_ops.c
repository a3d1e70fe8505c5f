/* mapper_ops: the mapper's own element-wise and reduction steps (coordinate attention
 * pooling and gating, h-swish, ReLU, sigmoid, per-pixel softmax over L, the fusion sum) and
 * their backward, as plain C + OpenMP; on a CUDA context each hands over to its kernel in
 * mapper_cuda.cu. Declared, with their shapes, in mapper_internal.h. */
#include <math.h>

#include "mapper_internal.h"

/* Y[bc, i] = mean_j F[bc, i, j] (i < H), Y[bc, H + j] = mean_i F[bc, i, j]. */
int mapper_op_pool(nn_ctx *ctx, float *y, const float *f, int64_t BC, int64_t H, int64_t W, cmds_error *err) {
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
int mapper_op_pool_bwd(nn_ctx *ctx, float *df, const float *dy, int64_t BC, int64_t H, int64_t W, cmds_error *err) {
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
int mapper_op_hswish_split(nn_ctx *ctx, float *zh, float *zw, const float *zn, int64_t BM, int64_t H,
                           int64_t W, cmds_error *err) {
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_hswish_split(ctx, zh, zw, zn, BM, H, W, err));
  for (int64_t q = 0; q < BM; q++) {
    for (int64_t i = 0; i < H; i++) zh[q * H + i] = hswish(zn[q * (H + W) + i]);
    for (int64_t j = 0; j < W; j++) zw[q * W + j] = hswish(zn[q * (H + W) + H + j]);
  }
  return CMDS_OK;
}

int mapper_op_hswish_bwd(nn_ctx *ctx, float *dz, const float *dzh, const float *dzw, const float *zn,
                         int64_t BM, int64_t H, int64_t W, cmds_error *err) {
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_hswish_bwd(ctx, dz, dzh, dzw, zn, BM, H, W, err));
  for (int64_t q = 0; q < BM; q++) {
    for (int64_t i = 0; i < H; i++) dz[q * (H + W) + i] = dzh[q * H + i] * hswish_grad(zn[q * (H + W) + i]);
    for (int64_t j = 0; j < W; j++)
      dz[q * (H + W) + H + j] = dzw[q * W + j] * hswish_grad(zn[q * (H + W) + H + j]);
  }
  return CMDS_OK;
}

int mapper_op_sigmoid(nn_ctx *ctx, nn_tensor *t, cmds_error *err) {
  int64_t n = nn_tensor_numel(t);
  float *y = t->data;
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_sigmoid(ctx, y, n, err));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-y[i]));
  return CMDS_OK;
}

int mapper_op_ca_apply(nn_ctx *ctx, float *ft, const float *f, const float *ah, const float *aw,
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
int mapper_op_ca_apply_bwd(nn_ctx *ctx, float *df, float *dah, float *daw, const float *dft,
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

int mapper_op_relu(nn_ctx *ctx, nn_tensor *t, cmds_error *err) {
  int64_t n = nn_tensor_numel(t);
  float *y = t->data;
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_relu(ctx, y, n, err));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
  return CMDS_OK;
}

int mapper_op_relu_bwd(nn_ctx *ctx, nn_tensor *dy, const nn_tensor *y, cmds_error *err) {
  int64_t n = nn_tensor_numel(y);
  float *d = dy->data;
  const float *v = y->data;
  if (ctx->device != NN_CPU) ON_CUDA(mapper_cuda_relu_bwd(ctx, d, v, n, err));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) d[i] = v[i] > 0.0f ? d[i] : 0.0f;
  return CMDS_OK;
}

/* Softmax over the L channels of every pixel, in place: w (B, L, HW). */
int mapper_op_softmax_ch(nn_ctx *ctx, float *w, int64_t B, int64_t L, int64_t HW, cmds_error *err) {
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
int mapper_op_softmax_ch_bwd(nn_ctx *ctx, float *dw, const float *w, int64_t B, int64_t L, int64_t HW,
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
int mapper_op_fuse(nn_ctx *ctx, float *s, const float *w, const float *f, int64_t B, int64_t L,
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
int mapper_op_fuse_bwd(nn_ctx *ctx, float *df, float *dw, const float *ds, const float *w,
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
