/* conv_ex_backward: CPU reference (im2col / col2im around nn_sgemm) and the dispatcher of
 * nn_conv2d_ex_backward (see backward.h). The forward's geometry and bands: per image and per
 * band of output rows, with cols (K = Cin*k*k, rows*Wo) the band's input columns,
 *   dW (Cout, K) += dY_band cols^T,   cols' = W^T dY_band,   dx += col2im(cols'),
 * db += row sums of dY. k = 1, stride 1, no padding needs no columns (dW += dY_b X_b^T,
 * dX_b = W^T dY_b). With dW not wanted (frozen weights) the input columns are never built.
 * col2im runs in parallel over input channels (each thread owns its channels' pixels), so
 * every sum has a fixed order. */
#include "nn_blas.h"
#include <stdlib.h>
#include <string.h>

#include "backward.h"
#include "conv.h"
#include "conv_internal.h"

#ifdef CMDS_CUDA
#include "nn_cuda_train.h"
#endif

/* Output size of the geometry, 0 when it is not valid. */
static int convb_geometry(const nn_tensor *x, const nn_tensor *w, int s, int pt, int pb, int pl, int pr, int64_t *Ho,
                          int64_t *Wo) {
  if (!x || x->ndim != 4 || !w || w->ndim != 4 || s < 1 || pt < 0 || pb < 0 || pl < 0 || pr < 0) return 0;
  int64_t k = w->shape[2], Hp = x->shape[2] + pt + pb, Wp = x->shape[3] + pl + pr;
  if (k < 1 || w->shape[3] != k || Hp < k || Wp < k) return 0;
  *Ho = (Hp - k) / s + 1;
  *Wo = (Wp - k) / s + 1;
  return 1;
}

static int convb_direct(const nn_tensor *w, int s, int pt, int pb, int pl, int pr) {
  return w->shape[2] == 1 && s == 1 && pt + pb + pl + pr == 0;
}

size_t nn_conv2d_ex_backward_scratch_bytes(const nn_tensor *x, const nn_tensor *w, int stride, int pad_top,
                                           int pad_bottom, int pad_left, int pad_right) {
  int64_t Ho, Wo;
  if (!convb_geometry(x, w, stride, pad_top, pad_bottom, pad_left, pad_right, &Ho, &Wo)) return 0;
  if (convb_direct(w, stride, pad_top, pad_bottom, pad_left, pad_right)) return 0;
  return nn_conv2d_ex_scratch_bytes(x->device, x->shape[1], w->shape[2], Ho, Wo); /* the forward's band */
}

/* dx += the adjoint of nn_conv_ex_im2col for the band (padding taps dropped). */
static void convb_col2im(float *dx, const float *cols, int64_t Cin, int64_t H, int64_t W, int64_t k, int64_t s,
                         int64_t pt, int64_t pl, int64_t r0, int64_t rows, int64_t Wo) {
  int64_t nc = rows * Wo;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < Cin; c++) {
    float *xc = dx + c * H * W;
    for (int64_t t = 0; t < k * k; t++) {
      int64_t ky = t / k, kx = t % k;
      const float *row = cols + (c * k * k + t) * nc;
      for (int64_t i = 0; i < rows; i++) {
        int64_t si = (r0 + i) * s - pt + ky;
        if (si < 0 || si >= H) continue;
        float *dst = xc + si * W;
        const float *src = row + i * Wo;
        for (int64_t j = 0; j < Wo; j++) {
          int64_t sj = j * s - pl + kx;
          if (sj >= 0 && sj < W) dst[sj] += src[j];
        }
      }
    }
  }
}

int nn_conv2d_ex_backward(nn_ctx *ctx, nn_tensor *dx, nn_tensor *dw, nn_tensor *db, const nn_tensor *dy,
                          const nn_tensor *x, const nn_tensor *w, int stride, int pad_top, int pad_bottom,
                          int pad_left, int pad_right, cmds_error *err) {
  const char *op = "nn_conv2d_ex_backward";
  if (!x || x->ndim != 4 || !w || w->ndim != 4 || !dy)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: x (B, Cin, H, W), W (Cout, Cin, k, k) and dy must be given", op);
  if (stride < 1 || pad_top < 0 || pad_bottom < 0 || pad_left < 0 || pad_right < 0)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: stride %d must be >= 1 and paddings (%d, %d, %d, %d) >= 0", op, stride,
                     pad_top, pad_bottom, pad_left, pad_right);
  int64_t B = x->shape[0], Cin = x->shape[1], H = x->shape[2], Wd = x->shape[3];
  int64_t Cout = w->shape[0], k = w->shape[2], Ho, Wo;
  if (k < 1 || w->shape[3] != k)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: W must be (Cout, Cin, k, k) with a square kernel, got (%lld, %lld, %lld, %lld)",
                     op, (long long)w->shape[0], (long long)w->shape[1], (long long)w->shape[2], (long long)w->shape[3]);
  if (!convb_geometry(x, w, stride, pad_top, pad_bottom, pad_left, pad_right, &Ho, &Wo))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: padded input %lld x %lld is smaller than the %lld x %lld kernel", op,
                     (long long)(H + pad_top + pad_bottom), (long long)(Wd + pad_left + pad_right), (long long)k,
                     (long long)k);
  int64_t wshape[4] = {Cout, Cin, k, k}, yshape[4] = {B, Cout, Ho, Wo};
  int rc = nn_tensor_expect(x, op, "x", ctx->device, 4, x->shape, err);
  if (!rc) rc = nn_tensor_expect(w, op, "W", ctx->device, 4, wshape, err);
  if (!rc) rc = nn_tensor_expect(dy, op, "dy", ctx->device, 4, yshape, err);
  if (!rc && dx) rc = nn_tensor_expect(dx, op, "dx", ctx->device, 4, x->shape, err);
  if (!rc && dw) rc = nn_tensor_expect(dw, op, "dW", ctx->device, 4, wshape, err);
  if (!rc && db) rc = nn_tensor_expect(db, op, "db", ctx->device, 1, &Cout, err);
  if (rc) return rc;
  if (dx && (dx->data == dy->data || dx->data == x->data || dx->data == w->data))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: dx must not alias dy, x or W", op);
  int64_t K = Cin * k * k, P = Ho * Wo;
  int direct = convb_direct(w, stride, pad_top, pad_bottom, pad_left, pad_right);
  int64_t band = direct ? Ho : nn_conv_ex_band_rows(ctx->device, K, Ho, Wo);
  float *dxd = dx ? dx->data : NULL, *dwd = dw ? dw->data : NULL, *dbd = db ? db->data : NULL;
  const float *dyd = dy->data, *xd = x->data, *wd = w->data;
  float *cols = NULL;
  size_t mark = ctx->scratch ? nn_arena_mark(ctx->scratch) : 0;
  if (!direct && (dxd || dwd) && B * P > 0 && K > 0) {
    if (!ctx->scratch)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: k = %lld stride %d needs a scratch arena in the context", op,
                       (long long)k, stride);
    cols = nn_arena_alloc(ctx->scratch, (size_t)K * (size_t)(band * Wo) * sizeof(float), err);
    if (!cols) return cmds_error_wrap(err, "%s columns of a band of %lld rows", op, (long long)band);
  }
  if (ctx->device != NN_CPU) {
#ifdef CMDS_CUDA
    rc = nn_conv2d_ex_backward_cuda(ctx, dxd, dwd, dbd, dyd, xd, wd, B, Cin, Cout, H, Wd, (int)k, stride, pad_top,
                                    pad_left, Ho, Wo, band, cols, err);
#else
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
    if (ctx->scratch) nn_arena_rewind(ctx->scratch, mark);
    return rc;
  }
  if (dbd) {
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < Cout; o++) {
      double s = 0.0;
      for (int64_t b = 0; b < B; b++) {
        const float *row = dyd + (b * Cout + o) * P;
        for (int64_t p = 0; p < P; p++) s += row[p];
      }
      dbd[o] += (float)s;
    }
  }
  for (int64_t b = 0; b < B && (dxd || dwd); b++) {
    const float *xb = xd + b * Cin * H * Wd, *dyb = dyd + b * Cout * P;
    float *dxb = dxd ? dxd + b * Cin * H * Wd : NULL;
    if (direct) {
      if (dwd && P > 0)
        nn_sgemm(CblasNoTrans, CblasTrans, Cout, Cin, P, 1.0f, dyb, P, xb, P, 1.0f, dwd, Cin);
      if (dxb && P > 0) {
        if (Cout > 0)
          nn_sgemm(CblasTrans, CblasNoTrans, Cin, P, Cout, 1.0f, wd, Cin, dyb, P, 0.0f, dxb, P);
        else
          memset(dxb, 0, (size_t)(Cin * P) * sizeof(float));
      }
      continue;
    }
    if (dxb) memset(dxb, 0, (size_t)(Cin * H * Wd) * sizeof(float));
    for (int64_t r0 = 0; r0 < Ho && K > 0; r0 += band) {
      int64_t rows = Ho - r0 < band ? Ho - r0 : band, nc = rows * Wo;
      const float *dyc = dyb + r0 * Wo;
      if (dwd) {
        nn_conv_ex_im2col(cols, xb, Cin, H, Wd, k, stride, pad_top, pad_left, r0, rows, Wo);
        nn_sgemm(CblasNoTrans, CblasTrans, Cout, K, nc, 1.0f, dyc, P, cols, nc, 1.0f, dwd, K);
      }
      if (dxb && Cout > 0) {
        nn_sgemm(CblasTrans, CblasNoTrans, K, nc, Cout, 1.0f, wd, K, dyc, P, 0.0f, cols, nc);
        convb_col2im(dxb, cols, Cin, H, Wd, k, stride, pad_top, pad_left, r0, rows, Wo);
      }
    }
  }
  if (ctx->scratch) nn_arena_rewind(ctx->scratch, mark);
  return CMDS_OK;
}
