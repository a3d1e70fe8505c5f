/* norm: CPU references and dispatchers for layer norm and group norm (see norm.h). */
#include "norm.h"

#include <math.h>

#ifdef CMDS_CUDA
#include "nn_cuda.h"
#endif

/* Normalises n values of x that share one mean/variance; channel c of value i is
 * i / per_channel, so one routine serves both norms. */
static void norm_segment(float *y, const float *x, int64_t n, int64_t per_channel, int64_t c0,
                         const float *g, const float *b, float eps) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += x[i];
  double mean = s / (double)n, v = 0.0;
  for (int64_t i = 0; i < n; i++) v += ((double)x[i] - mean) * ((double)x[i] - mean);
  double rstd = 1.0 / sqrt(v / (double)n + (double)eps);
  for (int64_t i = 0; i < n; i++) {
    int64_t c = c0 + i / per_channel;
    double t = ((double)x[i] - mean) * rstd;
    y[i] = g ? (float)(t * g[c] + b[c]) : (float)t;
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
