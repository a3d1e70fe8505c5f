/* blur: CPU reference and dispatcher (see blur.h). */
#include "blur.h"

#include <math.h>
#include <string.h>

#ifdef CMDS_CUDA
#include "nn_cuda.h"
#endif

int nn_blur_taps(float sigma, double *taps, int *radius, cmds_error *err) {
  if (!(sigma >= 0.0f) || 4.0 * sigma + 0.5 > NN_BLUR_MAX_RADIUS)
    return CMDS_FAIL(err, CMDS_EINPUT, "nn_blur: sigma %g outside [0, %g]", (double)sigma,
                     (NN_BLUR_MAX_RADIUS - 0.5) / 4.0);
  int r = (int)(4.0 * (double)sigma + 0.5);
  double s = 0.0;
  for (int t = -r; t <= r; t++) {
    taps[t + r] = r ? exp(-0.5 * (double)t * t / ((double)sigma * sigma)) : 1.0;
    s += taps[t + r];
  }
  for (int t = 0; t <= 2 * r; t++) taps[t] /= s;
  *radius = r;
  return CMDS_OK;
}

/* scipy's 'reflect': period 2n, the second half mirrored. */
static inline int64_t blur_reflect(int64_t i, int64_t n) {
  int64_t p = 2 * n;
  i %= p;
  if (i < 0) i += p;
  return i < n ? i : p - 1 - i;
}

/* One 1-D pass over `len` samples spaced `step` apart, for `count` lines. */
static void blur_pass(float *y, const float *x, int64_t lines, int64_t len, int64_t step,
                      int64_t line_stride_outer, int64_t inner, const double *taps, int r) {
#pragma omp parallel for schedule(static)
  for (int64_t l = 0; l < lines; l++) {
    /* line l: outer index l / inner, inner offset l % inner */
    int64_t base = (l / inner) * line_stride_outer + (l % inner);
    for (int64_t i = 0; i < len; i++) {
      double acc = 0.0;
      for (int t = -r; t <= r; t++) acc += taps[t + r] * x[base + blur_reflect(i + t, len) * step];
      y[base + i * step] = (float)acc;
    }
  }
}

int nn_blur_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, float sigma, cmds_error *err) {
  const char *op = "nn_blur_forward";
  if (!x || x->ndim != 4) return CMDS_FAIL(err, CMDS_EINPUT, "%s: x must be (B, C, H, W)", op);
  int rc = nn_tensor_expect(x, op, "x", ctx->device, 4, x->shape, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, 4, x->shape, err);
  if (rc) return rc;
  double taps[2 * NN_BLUR_MAX_RADIUS + 1];
  int r;
  if ((rc = nn_blur_taps(sigma, taps, &r, err))) return rc;
  int64_t P = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
  if (!ctx->scratch) return CMDS_FAIL(err, CMDS_EINPUT, "%s: needs a scratch arena in the context", op);
  size_t mark = nn_arena_mark(ctx->scratch);
  float *tmp = nn_arena_alloc(ctx->scratch, (size_t)(P * H * W) * sizeof(float), err);
  if (!tmp) return cmds_error_wrap(err, "%s", op);
  if (ctx->device == NN_CPU) {
    blur_pass(tmp, x->data, P * W, H, W, H * W, W, taps, r);  /* along H: lines are (p, j) */
    blur_pass(y->data, tmp, P * H, W, 1, W, 1, taps, r);      /* along W: lines are rows */
  } else {
#ifdef CMDS_CUDA
    float ftaps[2 * NN_BLUR_MAX_RADIUS + 1];
    for (int t = 0; t <= 2 * r; t++) ftaps[t] = (float)taps[t];
    rc = nn_blur_cuda(ctx, y->data, x->data, P, H, W, ftaps, r, tmp, err);
#else
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
  }
  nn_arena_rewind(ctx->scratch, mark);
  return rc;
}
