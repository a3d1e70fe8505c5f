/* resize: CPU reference and dispatcher (see resize.h). */
#include "resize.h"

#include <math.h>
#include <string.h>

#ifdef CMDS_CUDA
#include "nn_cuda.h"
#endif

static inline float resize_cubic1(float x, float A) { return ((A + 2) * x - (A + 3)) * x * x + 1; }
static inline float resize_cubic2(float x, float A) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; }

/* The 4 weights for neighbours floor(s)-1 .. floor(s)+2 at fraction t. */
static void resize_cubic_weights(float w[4], float t) {
  const float A = -0.75f;
  w[0] = resize_cubic2(t + 1.0f, A);
  w[1] = resize_cubic1(t, A);
  w[2] = resize_cubic1(1.0f - t, A);
  w[3] = resize_cubic2(2.0f - t, A);
}

static inline int64_t resize_clamp(int64_t i, int64_t n) { return i < 0 ? 0 : i >= n ? n - 1 : i; }

static void resize_plane(float *y, const float *x, int64_t Hi, int64_t Wi, int64_t Ho, int64_t Wo,
                         nn_resize_mode mode) {
  float sh = (float)Hi / (float)Ho, sw = (float)Wi / (float)Wo;
  for (int64_t i = 0; i < Ho; i++) {
    float ry = sh * ((float)i + 0.5f) - 0.5f;
    for (int64_t j = 0; j < Wo; j++) {
      float rx = sw * ((float)j + 0.5f) - 0.5f;
      if (mode == NN_RESIZE_BILINEAR) {
        float cy = ry < 0 ? 0 : ry, cx = rx < 0 ? 0 : rx;
        int64_t y0 = (int64_t)cy, x0 = (int64_t)cx;
        int64_t y1 = y0 + (y0 < Hi - 1), x1 = x0 + (x0 < Wi - 1);
        float ly = cy - (float)y0, lx = cx - (float)x0;
        y[i * Wo + j] = (1 - ly) * ((1 - lx) * x[y0 * Wi + x0] + lx * x[y0 * Wi + x1]) +
                        ly * ((1 - lx) * x[y1 * Wi + x0] + lx * x[y1 * Wi + x1]);
      } else {
        float fy = floorf(ry), fx = floorf(rx), wy[4], wx[4], rows[4];
        resize_cubic_weights(wy, ry - fy);
        resize_cubic_weights(wx, rx - fx);
        for (int a = 0; a < 4; a++) {
          const float *row = x + resize_clamp((int64_t)fy - 1 + a, Hi) * Wi;
          rows[a] = 0;
          for (int c = 0; c < 4; c++) rows[a] += row[resize_clamp((int64_t)fx - 1 + c, Wi)] * wx[c];
        }
        y[i * Wo + j] = rows[0] * wy[0] + rows[1] * wy[1] + rows[2] * wy[2] + rows[3] * wy[3];
      }
    }
  }
}

int nn_resize_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, nn_resize_mode mode,
                      cmds_error *err) {
  const char *op = "nn_resize_forward";
  if (!x || x->ndim != 4 || !y || y->ndim != 4)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: x and y must be (B, C, H, W)", op);
  if (mode != NN_RESIZE_BILINEAR && mode != NN_RESIZE_BICUBIC)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: unknown mode %d", op, (int)mode);
  int64_t B = x->shape[0], C = x->shape[1], Hi = x->shape[2], Wi = x->shape[3];
  int64_t Ho = y->shape[2], Wo = y->shape[3], yshape[4] = {B, C, Ho, Wo};
  if (Hi < 1 || Wi < 1 || Ho < 1 || Wo < 1)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: empty spatial size", op);
  int rc = nn_tensor_expect(x, op, "x", ctx->device, 4, x->shape, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, 4, yshape, err);
  if (rc) return rc;
  if (ctx->device == NN_CPU) {
    const float *xd = x->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < B * C; p++)
      resize_plane(yd + p * Ho * Wo, xd + p * Hi * Wi, Hi, Wi, Ho, Wo, mode);
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_resize_cuda(ctx, y->data, x->data, B * C, Hi, Wi, Ho, Wo, (int)mode, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}

int nn_upsample_nearest2x_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err) {
  const char *op = "nn_upsample_nearest2x_forward";
  if (!x || x->ndim != 4) return CMDS_FAIL(err, CMDS_EINPUT, "%s: x must be (B, C, H, W)", op);
  int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  int64_t yshape[4] = {B, C, 2 * H, 2 * W};
  int rc = nn_tensor_expect(x, op, "x", ctx->device, 4, x->shape, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, 4, yshape, err);
  if (rc) return rc;
  if (y->data == x->data) return CMDS_FAIL(err, CMDS_EINPUT, "%s: y must not alias x", op);
  if (ctx->device == NN_CPU) {
    const float *xd = x->data;
    float *yd = y->data;
    int64_t Wo = 2 * W;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < B * C * H; r++) { /* one input row -> two output rows */
      const float *src = xd + r * W;
      float *d0 = yd + 2 * r * Wo, *d1 = d0 + Wo;
      for (int64_t j = 0; j < W; j++) d0[2 * j] = d0[2 * j + 1] = src[j];
      memcpy(d1, d0, (size_t)Wo * sizeof(float));
    }
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_upsample_nearest2x_cuda(ctx, y->data, x->data, B * C, H, W, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}
