/* conv_backward: CPU reference (nn_sgemm, im2col / col2im) and the dispatcher of
 * nn_conv2d_backward (see backward.h). Per image b, with X_b the input columns
 * (Cin*k*k, HW) (the image itself when k = 1):
 *   dW += dY_b X_b^T      db += rowsum(dY_b)      dX_b = col2im(W^T dY_b) */
#include "nn_blas.h"
#include <string.h>

#include "backward.h"

#ifdef CMDS_CUDA
#include "nn_cuda_backward.h"
#endif

/* cols (Cin*9, H*W): row (c, ky, kx) holds x[c, y+ky-1, x+kx-1], zero outside. */
static void convb_im2col3x3(float *cols, const float *x, int64_t Cin, int64_t H, int64_t W) {
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

/* The adjoint of im2col: dx[c, y, x] = sum over the 9 taps of the columns that read it.
 * Parallel over input channels, so no two threads write the same dx. */
static void convb_col2im3x3(float *dx, const float *cols, int64_t Cin, int64_t H, int64_t W) {
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < Cin; c++) {
    float *xc = dx + c * H * W;
    memset(xc, 0, (size_t)(H * W) * sizeof(float));
    for (int64_t t = 0; t < 9; t++) {
      int64_t ky = t / 3 - 1, kx = t % 3 - 1;
      const float *row = cols + (c * 9 + t) * H * W;
      for (int64_t i = 0; i < H; i++) {
        int64_t si = i + ky;
        if (si < 0 || si >= H) continue;
        for (int64_t j = 0; j < W; j++) {
          int64_t sj = j + kx;
          if (sj >= 0 && sj < W) xc[si * W + sj] += row[i * W + j];
        }
      }
    }
  }
}

int nn_conv2d_backward(nn_ctx *ctx, nn_tensor *dx, nn_tensor *dw, nn_tensor *db, const nn_tensor *dy,
                       const nn_tensor *x, const nn_tensor *w, cmds_error *err) {
  const char *op = "nn_conv2d_backward";
  if (!x || x->ndim != 4 || !w || w->ndim != 4 || !dw || !dy)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: x must be (B, Cin, H, W), W (Cout, Cin, k, k), dW and dy given", op);
  int64_t B = x->shape[0], Cin = x->shape[1], H = x->shape[2], Wd = x->shape[3];
  int64_t Cout = w->shape[0], k = w->shape[2];
  if (k != 1 && k != 3)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: kernel size %lld, only 1 and 3 are supported", op, (long long)k);
  int64_t wshape[4] = {Cout, Cin, k, k}, yshape[4] = {B, Cout, H, Wd};
  int rc = nn_tensor_expect(x, op, "x", ctx->device, 4, x->shape, err);
  if (!rc) rc = nn_tensor_expect(w, op, "W", ctx->device, 4, wshape, err);
  if (!rc) rc = nn_tensor_expect(dw, op, "dW", ctx->device, 4, wshape, err);
  if (!rc && db) rc = nn_tensor_expect(db, op, "db", ctx->device, 1, &Cout, err);
  if (!rc) rc = nn_tensor_expect(dy, op, "dy", ctx->device, 4, yshape, err);
  if (!rc && dx) rc = nn_tensor_expect(dx, op, "dx", ctx->device, 4, x->shape, err);
  if (rc) return rc;
  int64_t HW = H * Wd, K = Cin * k * k;
  float *cols = NULL;
  size_t mark = ctx->scratch ? nn_arena_mark(ctx->scratch) : 0;
  if (k == 3) {
    if (!ctx->scratch) return CMDS_FAIL(err, CMDS_EINPUT, "%s: 3x3 needs a scratch arena in the context", op);
    cols = nn_arena_alloc(ctx->scratch, (size_t)K * (size_t)HW * sizeof(float), err);
    if (!cols) return cmds_error_wrap(err, "%s im2col", op);
  }
  float *dxd = dx ? dx->data : NULL, *dwd = dw->data, *dbd = db ? db->data : NULL;
  const float *dyd = dy->data, *xd = x->data, *wd = w->data;
  if (ctx->device == NN_CPU) {
    for (int64_t b = 0; b < B; b++) {
      const float *dyb = dyd + b * Cout * HW, *xb = xd + b * Cin * HW;
      if (dbd) {
#pragma omp parallel for schedule(static)
        for (int64_t o = 0; o < Cout; o++) {
          double s = 0.0;
          for (int64_t p = 0; p < HW; p++) s += dyb[p + o * HW];
          dbd[o] += (float)s;
        }
      }
      const float *xcols = xb;
      if (k == 3) {
        convb_im2col3x3(cols, xb, Cin, H, Wd);
        xcols = cols;
      }
      nn_sgemm(CblasNoTrans, CblasTrans, Cout, K, HW, 1.0f, dyb, HW, xcols, HW, 1.0f, dwd, K);
      if (!dxd) continue;
      float *dxb = dxd + b * Cin * HW;
      /* k = 3: the columns are no longer needed, so W^T dY lands in the same buffer */
      nn_sgemm(CblasTrans, CblasNoTrans, K, HW, Cout, 1.0f, wd, K, dyb, HW, 0.0f, k == 3 ? cols : dxb, HW);
      if (k == 3) convb_col2im3x3(dxb, cols, Cin, H, Wd);
    }
  } else {
#ifdef CMDS_CUDA
    rc = nn_conv2d_backward_cuda(ctx, dxd, dwd, dbd, dyd, xd, wd, B, Cin, Cout, H, Wd, (int)k, cols, err);
#else
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
  }
  if (ctx->scratch) nn_arena_rewind(ctx->scratch, mark);
  return rc;
}
