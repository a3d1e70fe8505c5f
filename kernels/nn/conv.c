/* conv: CPU reference (im2col + cblas_sgemm) and the dispatcher (see conv.h). */
#include "conv.h"

#include <cblas.h>
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
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)Cout, (int)HW, (int)K, 1.0f, w,
              (int)K, cols, (int)HW, beta, y, (int)HW);
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
