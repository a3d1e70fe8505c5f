/* norm: CPU references and dispatchers for layer norm and group norm (see norm.h). */
#include "norm.h"

#include <math.h>

#include "nn_simd.h"

#ifdef CMDS_CUDA
#include "nn_cuda.h"
#endif

/* Normalises n values of x that share one mean/variance; channel c of value i is
 * i / per_channel, so one routine serves both norms. */
NN_SIMD_CLONES static void norm_segment(float *y, const float *x, int64_t n, int64_t per_channel, int64_t c0,
                                        const float *g, const float *b, float eps) {
  /* mean and variance in double, in 4 lanes (so that the sums vectorise; a serial double chain
   * and an integer division per value made the LayerNorm 9x slower than PyTorch's) */
  double s[4] = {0, 0, 0, 0}, q[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int l = 0; l < 4; l++) s[l] += x[i + l];
  for (; i < n; i++) s[0] += x[i];
  double mean = ((s[0] + s[1]) + (s[2] + s[3])) / (double)n;
  for (i = 0; i + 4 <= n; i += 4)
    for (int l = 0; l < 4; l++) q[l] += ((double)x[i + l] - mean) * ((double)x[i + l] - mean);
  for (; i < n; i++) q[0] += ((double)x[i] - mean) * ((double)x[i] - mean);
  double rstd = 1.0 / sqrt(((q[0] + q[1]) + (q[2] + q[3])) / (double)n + (double)eps);
  if (per_channel == 1) { /* LayerNorm: one channel per value */
    for (int64_t k = 0; k < n; k++) {
      double t = ((double)x[k] - mean) * rstd;
      y[k] = g ? (float)(t * g[c0 + k] + b[c0 + k]) : (float)t;
    }
    return;
  }
  for (int64_t c = 0; c * per_channel < n; c++) { /* GroupNorm: channel by channel, no division */
    const float *xc = x + c * per_channel;
    float *yc = y + c * per_channel;
    int64_t m = n - c * per_channel < per_channel ? n - c * per_channel : per_channel;
    double gc = g ? g[c0 + c] : 1.0, bc = g ? b[c0 + c] : 0.0;
    for (int64_t k = 0; k < m; k++) {
      double t = ((double)xc[k] - mean) * rstd;
      yc[k] = g ? (float)(t * gc + bc) : (float)t;
    }
  }
}

static int norm_affine_check(nn_ctx *ctx, const char *op, const nn_tensor *gamma,
                             const nn_tensor *beta, int64_t C, cmds_error *err) {
  if (!gamma != !beta) return CMDS_FAIL(err, CMDS_EINPUT, "%s: gamma and beta must be both given or both NULL", op);
  if (!gamma) return CMDS_OK;
  int rc = nn_tensor_expect(gamma, op, "gamma", ctx->device, 1, &C, err);
  return rc ? rc : nn_tensor_expect(beta, op, "beta", ctx->device, 1, &C, err);
}

int nn_layernorm_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, const nn_tensor *gamma,
                         const nn_tensor *beta, float eps, cmds_error *err) {
  const char *op = "nn_layernorm_forward";
  if (!x || x->ndim < 1) return CMDS_FAIL(err, CMDS_EINPUT, "%s: x missing", op);
  int64_t C = x->shape[x->ndim - 1], rows = C ? nn_tensor_numel(x) / C : 0;
  int rc = nn_tensor_expect(x, op, "x", ctx->device, x->ndim, x->shape, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, x->ndim, x->shape, err);
  if (!rc) rc = norm_affine_check(ctx, op, gamma, beta, C, err);
  if (rc) return rc;
  const float *g = gamma ? gamma->data : NULL, *b = beta ? beta->data : NULL;
  if (ctx->device == NN_CPU) {
    const float *xd = x->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) norm_segment(yd + r * C, xd + r * C, C, 1, 0, g, b, eps);
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_layernorm_cuda(ctx, y->data, x->data, g, b, rows, C, eps, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}

int nn_groupnorm_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, int64_t groups,
                         const nn_tensor *gamma, const nn_tensor *beta, float eps, cmds_error *err) {
  const char *op = "nn_groupnorm_forward";
  if (!x || x->ndim != 4) return CMDS_FAIL(err, CMDS_EINPUT, "%s: x must be (B, C, H, W)", op);
  int64_t B = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
  if (groups < 1 || C % groups)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %lld groups do not divide %lld channels", op,
                     (long long)groups, (long long)C);
  int rc = nn_tensor_expect(x, op, "x", ctx->device, 4, x->shape, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, 4, x->shape, err);
  if (!rc) rc = norm_affine_check(ctx, op, gamma, beta, C, err);
  if (rc) return rc;
  const float *g = gamma ? gamma->data : NULL, *b = beta ? beta->data : NULL;
  int64_t cpg = C / groups, n = cpg * HW;
  if (ctx->device == NN_CPU) {
    const float *xd = x->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static)
    for (int64_t s = 0; s < B * groups; s++) {
      int64_t c0 = (s % groups) * cpg;
      norm_segment(yd + s * n, xd + s * n, n, HW, c0, g, b, eps);
    }
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_groupnorm_cuda(ctx, y->data, x->data, g, b, B, C, HW, groups, eps, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}
