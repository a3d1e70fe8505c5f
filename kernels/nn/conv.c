/* conv: CPU reference (im2col + nn_sgemm) and the dispatcher (see conv.h). */
#include "conv.h"
#include "conv_internal.h"

#include "nn_blas.h"
#include <stdlib.h>
#include <string.h>

#ifdef CMDS_CUDA
#include "nn_cuda.h"
#endif

/* cols (Cin*9, H*W): row (c, ky, kx) holds x[c, y+ky-1, x+kx-1], zero outside. */
static void conv_im2col3x3(float *cols, const float *x, int64_t Cin, int64_t H, int64_t W) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < Cin * 9; r++) {
    int64_t c = r / 9, ky = (r % 9) / 3 - 1, kx = r % 3 - 1;
    const float *xc = x + c * H * W;
    float *row = cols + r * H * W;
    for (int64_t i = 0; i < H; i++) {
      int64_t si = i + ky;
      for (int64_t j = 0; j < W; j++) {
        int64_t sj = j + kx;
        row[i * W + j] = (si >= 0 && si < H && sj >= 0 && sj < W) ? xc[si * W + sj] : 0.0f;
      }
    }
  }
}

static void conv_gemm_bias(float *y, const float *w, const float *cols, const float *b,
                           int64_t Cout, int64_t K, int64_t HW) {
  float beta = 0.0f;
  if (b) {
    for (int64_t o = 0; o < Cout; o++)
      for (int64_t p = 0; p < HW; p++) y[o * HW + p] = b[o];
    beta = 1.0f;
  }
  nn_sgemm(CblasNoTrans, CblasNoTrans, Cout, HW, K, 1.0f, w, K, cols, HW, beta, y, HW);
}

int nn_conv2d_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, const nn_tensor *w,
                      const nn_tensor *b, cmds_error *err) {
  const char *op = "nn_conv2d_forward";
  if (!x || x->ndim != 4 || !w || w->ndim != 4)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: x must be (B, Cin, H, W) and W (Cout, Cin, k, k)", op);
  int64_t B = x->shape[0], Cin = x->shape[1], H = x->shape[2], Wd = x->shape[3];
  int64_t Cout = w->shape[0], k = w->shape[2];
  if (k != 1 && k != 3)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: kernel size %lld, only 1 and 3 are supported", op, (long long)k);
  int64_t wshape[4] = {Cout, Cin, k, k}, yshape[4] = {B, Cout, H, Wd};
  int rc = nn_tensor_expect(x, op, "x", ctx->device, 4, x->shape, err);
  if (!rc) rc = nn_tensor_expect(w, op, "W", ctx->device, 4, wshape, err);
  if (!rc && b) rc = nn_tensor_expect(b, op, "b", ctx->device, 1, &Cout, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, 4, yshape, err);
  if (rc) return rc;
  const float *bias = b ? (const float *)b->data : NULL;
  int64_t HW = H * Wd, K = Cin * k * k;
  float *cols = NULL;
  size_t mark = ctx->scratch ? nn_arena_mark(ctx->scratch) : 0;
  if (k == 3) {
    if (!ctx->scratch) return CMDS_FAIL(err, CMDS_EINPUT, "%s: 3x3 needs a scratch arena in the context", op);
    size_t n = (size_t)K * (size_t)HW * (ctx->device == NN_CPU ? 1 : (size_t)B);
    cols = nn_arena_alloc(ctx->scratch, n * sizeof(float), err);
    if (!cols) return cmds_error_wrap(err, "%s im2col", op);
  }
  if (ctx->device == NN_CPU) {
    const float *xd = x->data, *wd = w->data;
    float *yd = y->data;
    for (int64_t bi = 0; bi < B; bi++) {
      const float *xb = xd + bi * Cin * HW;
      if (k == 3) conv_im2col3x3(cols, xb, Cin, H, Wd);
      conv_gemm_bias(yd + bi * Cout * HW, wd, k == 3 ? cols : xb, bias, Cout, K, HW);
    }
  } else {
#ifdef CMDS_CUDA
    rc = nn_conv2d_cuda(ctx, y->data, x->data, w->data, bias, B, Cin, Cout, H, Wd, (int)k, cols, err);
#else
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
  }
  if (ctx->scratch) nn_arena_rewind(ctx->scratch, mark);
  return rc;
}

/* --- general square kernel, stride, asymmetric zero padding (see conv.h) --- */

/* Columns per im2col band at most (floats): bounds the scratch whatever the image. */
#define CONV_EX_CPU_COLS_FLOATS ((size_t)8 << 20)
#define CONV_EX_CUDA_COLS_FLOATS ((size_t)32 << 20)

/* conv_internal.h */
int64_t nn_conv_ex_band_rows(nn_device device, int64_t K, int64_t Ho, int64_t Wo) {
  size_t cap = device == NN_CPU ? CONV_EX_CPU_COLS_FLOATS : CONV_EX_CUDA_COLS_FLOATS;
  const char *env = getenv("CMDS_NN_CONV_BAND_FLOATS");
  if (env && atoll(env) > 0) cap = (size_t)atoll(env);
  size_t per_row = (size_t)K * (size_t)Wo;
  int64_t rows = per_row ? (int64_t)(cap / per_row) : Ho;
  if (rows < 1) rows = 1;
  return rows < Ho ? rows : Ho;
}

size_t nn_conv2d_ex_scratch_bytes(nn_device device, int64_t Cin, int64_t k, int64_t Ho, int64_t Wo) {
  int64_t K = Cin * k * k;
  return (size_t)K * (size_t)Wo * (size_t)nn_conv_ex_band_rows(device, K, Ho, Wo) * sizeof(float);
}

/* conv_internal.h */
void nn_conv_ex_im2col(float *cols, const float *x, int64_t Cin, int64_t H, int64_t W, int64_t k,
                       int64_t s, int64_t pt, int64_t pl, int64_t r0, int64_t rows, int64_t Wo) {
  int64_t K = Cin * k * k, nc = rows * Wo;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < K; r++) {
    int64_t c = r / (k * k), ky = (r / k) % k, kx = r % k;
    const float *xc = x + c * H * W;
    float *row = cols + r * nc;
    for (int64_t i = 0; i < rows; i++) {
      int64_t si = (r0 + i) * s - pt + ky;
      float *dst = row + i * Wo;
      if (si < 0 || si >= H) {
        memset(dst, 0, (size_t)Wo * sizeof(float));
        continue;
      }
      const float *src = xc + si * W;
      for (int64_t j = 0; j < Wo; j++) {
        int64_t sj = j * s - pl + kx;
        dst[j] = (sj >= 0 && sj < W) ? src[sj] : 0.0f;
      }
    }
  }
}

int nn_conv2d_ex_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, const nn_tensor *w,
                         const nn_tensor *b, int stride, int pad_top, int pad_bottom, int pad_left,
                         int pad_right, cmds_error *err) {
  const char *op = "nn_conv2d_ex_forward";
  if (!x || x->ndim != 4 || !w || w->ndim != 4)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: x must be (B, Cin, H, W) and W (Cout, Cin, k, k)", op);
  if (stride < 1 || pad_top < 0 || pad_bottom < 0 || pad_left < 0 || pad_right < 0)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: stride %d must be >= 1 and paddings (%d, %d, %d, %d) >= 0", op,
                     stride, pad_top, pad_bottom, pad_left, pad_right);
  int64_t B = x->shape[0], Cin = x->shape[1], H = x->shape[2], Wd = x->shape[3];
  int64_t Cout = w->shape[0], k = w->shape[2];
  if (k < 1 || w->shape[3] != k)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: W must be (Cout, Cin, k, k) with a square kernel, got (%lld, %lld, %lld, %lld)",
                     op, (long long)w->shape[0], (long long)w->shape[1], (long long)w->shape[2], (long long)w->shape[3]);
  int64_t Hp = H + pad_top + pad_bottom, Wp = Wd + pad_left + pad_right;
  if (Hp < k || Wp < k)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: padded input %lld x %lld is smaller than the %lld x %lld kernel", op,
                     (long long)Hp, (long long)Wp, (long long)k, (long long)k);
  int64_t Ho = (Hp - k) / stride + 1, Wo = (Wp - k) / stride + 1;
  int64_t wshape[4] = {Cout, Cin, k, k}, yshape[4] = {B, Cout, Ho, Wo};
  int rc = nn_tensor_expect(x, op, "x", ctx->device, 4, x->shape, err);
  if (!rc) rc = nn_tensor_expect(w, op, "W", ctx->device, 4, wshape, err);
  if (!rc && b) rc = nn_tensor_expect(b, op, "b", ctx->device, 1, &Cout, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, 4, yshape, err);
  if (rc) return rc;
  if (y->data == x->data) return CMDS_FAIL(err, CMDS_EINPUT, "%s: y must not alias x", op);
  const float *bias = b ? (const float *)b->data : NULL;
  int64_t K = Cin * k * k, P = Ho * Wo;
  int direct = k == 1 && stride == 1 && pad_top + pad_bottom + pad_left + pad_right == 0;
  int64_t band = direct ? Ho : nn_conv_ex_band_rows(ctx->device, K, Ho, Wo);
  float *cols = NULL;
  size_t mark = ctx->scratch ? nn_arena_mark(ctx->scratch) : 0;
  if (!direct && B * P > 0) {
    if (!ctx->scratch) return CMDS_FAIL(err, CMDS_EINPUT, "%s: k = %lld needs a scratch arena in the context", op, (long long)k);
    cols = nn_arena_alloc(ctx->scratch, (size_t)K * (size_t)(band * Wo) * sizeof(float), err);
    if (!cols) return cmds_error_wrap(err, "%s im2col band of %lld rows", op, (long long)band);
  }
  if (ctx->device == NN_CPU) {
    const float *xd = x->data, *wd = w->data;
    float *yd = y->data;
    for (int64_t bi = 0; bi < B && P > 0; bi++) {
      const float *xb = xd + bi * Cin * H * Wd;
      float *yb = yd + bi * Cout * P;
      for (int64_t r0 = 0; r0 < Ho; r0 += band) {
        int64_t rows = Ho - r0 < band ? Ho - r0 : band, nc = rows * Wo;
        float *yc = yb + r0 * Wo;
        float beta = 0.0f;
        if (bias) {
          for (int64_t o = 0; o < Cout; o++)
            for (int64_t p = 0; p < nc; p++) yc[o * P + p] = bias[o];
          beta = 1.0f;
        }
        const float *a = xb;
        if (!direct) {
          nn_conv_ex_im2col(cols, xb, Cin, H, Wd, k, stride, pad_top, pad_left, r0, rows, Wo);
          a = cols;
        }
        nn_sgemm(CblasNoTrans, CblasNoTrans, Cout, nc, K, 1.0f, wd, K, a, direct ? P : nc, beta, yc, P);
      }
    }
  } else {
#ifdef CMDS_CUDA
    rc = nn_conv2d_ex_cuda(ctx, y->data, x->data, w->data, bias, B, Cin, Cout, H, Wd, (int)k, stride,
                           pad_top, pad_left, Ho, Wo, band, cols, err);
#else
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
  }
  if (ctx->scratch) nn_arena_rewind(ctx->scratch, mark);
  return rc;
}
