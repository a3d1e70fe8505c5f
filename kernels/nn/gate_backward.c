/* gate_backward: CPU references and dispatchers of nn_silu_backward and nn_geglu_backward
 * (see backward.h).
 *   silu:  y = x s, s = sigmoid(x)        ->  dx = dy * s * (1 + x (1 - s))   (exp: nn_fast_exp)
 *   geglu: y = h * gelu(a), x = [h | a]   ->  dh = dy * gelu(a),  da = dy * h * GELU'(a),
 *          GELU'(a) = Phi(a) + a phi(a) (exact erf form; Phi and phi: nn_fast_phi, nn_fast_gauss). */
#include <math.h>

#include "backward.h"
#include "nn_fastexp.h"

#ifdef CMDS_CUDA
#include "nn_cuda_train.h"
#endif

/* A plain loop per chunk (the compiler vectorises it; not the OpenMP loop's body itself). */
static void silu_bwd_chunk(float *dx, const float *dy, const float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float v = x[i], s = 1.0f / (1.0f + nn_fast_exp(-v));
    dx[i] = dy[i] * (s * (1.0f + v * (1.0f - s)));
  }
}

int nn_silu_backward(nn_ctx *ctx, nn_tensor *dx, const nn_tensor *dy, const nn_tensor *x, cmds_error *err) {
  const char *op = "nn_silu_backward";
  if (!x || !dy || !dx) return CMDS_FAIL(err, CMDS_EINPUT, "%s: dx, dy and x must be given", op);
  int rc = nn_tensor_expect(x, op, "x", ctx->device, x->ndim, x->shape, err);
  if (!rc) rc = nn_tensor_expect(dy, op, "dy", ctx->device, x->ndim, x->shape, err);
  if (!rc) rc = nn_tensor_expect(dx, op, "dx", ctx->device, x->ndim, x->shape, err);
  if (rc) return rc;
  int64_t n = nn_tensor_numel(x);
  const float *xd = x->data, *dyd = dy->data;
  float *dxd = dx->data;
  if (ctx->device == NN_CPU) {
#pragma omp parallel for schedule(static)
    for (int64_t i0 = 0; i0 < n; i0 += 4096)
      silu_bwd_chunk(dxd + i0, dyd + i0, xd + i0, n - i0 < 4096 ? n - i0 : 4096);
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_silu_backward_cuda(ctx, dxd, dyd, xd, n, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}

int nn_geglu_backward(nn_ctx *ctx, nn_tensor *dx, const nn_tensor *dy, const nn_tensor *x, cmds_error *err) {
  const char *op = "nn_geglu_backward";
  if (!x || x->ndim < 1 || !dy || !dx) return CMDS_FAIL(err, CMDS_EINPUT, "%s: dx, dy and x must be given", op);
  int64_t C = x->shape[x->ndim - 1];
  if (C % 2)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: last dim of x is %lld, an even 2F expected", op, (long long)C);
  int64_t F = C / 2, yshape[NN_MAX_DIMS];
  for (int i = 0; i < x->ndim; i++) yshape[i] = x->shape[i];
  yshape[x->ndim - 1] = F;
  int rc = nn_tensor_expect(x, op, "x", ctx->device, x->ndim, x->shape, err);
  if (!rc) rc = nn_tensor_expect(dy, op, "dy", ctx->device, x->ndim, yshape, err);
  if (!rc) rc = nn_tensor_expect(dx, op, "dx", ctx->device, x->ndim, x->shape, err);
  if (rc) return rc;
  if (dx->data == dy->data || dx->data == x->data)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: dx must not alias dy or x", op);
  int64_t rows = C ? nn_tensor_numel(x) / C : 0;
  const float *xd = x->data, *dyd = dy->data;
  float *dxd = dx->data;
  if (ctx->device == NN_CPU) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      const float *h = xd + r * C, *a = h + F, *d = dyd + r * F;
      float *dh = dxd + r * C, *da = dh + F;
      for (int64_t f = 0; f < F; f++) {
        float v = a[f];
        float cdf = nn_fast_phi(v), pdf = 0.39894228040143268f * nn_fast_gauss(v);
        dh[f] = d[f] * (v * cdf);
        da[f] = d[f] * h[f] * (cdf + v * pdf);
      }
    }
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_geglu_backward_cuda(ctx, dxd, dyd, xd, rows, F, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}
