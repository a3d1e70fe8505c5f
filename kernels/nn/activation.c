/* activation: CPU references and dispatchers for GELU and softmax (see activation.h). GELU and
 * GEGLU are x Phi(x) with nn_fast_phi (nn_fastexp.h: vectorised, within a few ulps; libm's erff
 * is a call per element). SiLU keeps libm's expf: with nn_fast_exp (2 ulps, not 0.5) the UNet
 * LoRA gradients of diffusion.unet_lora moved past twice PyTorch's own float32 error. */
#include "activation.h"

#include <math.h>

#include "nn_fastexp.h"
#include "nn_simd.h"

#ifdef CMDS_CUDA
#include "nn_cuda.h"
#endif

void nn_softmax_row_cpu(float *y, const float *x, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) {
    y[i] = expf(x[i] - m);
    s += y[i];
  }
  float inv = (float)(1.0 / s);
  for (int64_t i = 0; i < n; i++) y[i] *= inv;
}

/* y = x Phi(x) over n values (y may be x). */
NN_SIMD_CLONES static void gelu_span(float *y, const float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = x[i] * nn_fast_phi(x[i]);
}

int nn_gelu_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err) {
  const char *op = "nn_gelu_forward";
  if (!x) return CMDS_FAIL(err, CMDS_EINPUT, "%s: x missing", op);
  int rc = nn_tensor_expect(x, op, "x", ctx->device, x->ndim, x->shape, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, x->ndim, x->shape, err);
  if (rc) return rc;
  int64_t n = nn_tensor_numel(x);
  if (ctx->device == NN_CPU) {
    const float *xd = x->data;
    float *yd = y->data;
    const int64_t chunk = 16384, nc = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < nc; c++)
      gelu_span(yd + c * chunk, xd + c * chunk, n - c * chunk < chunk ? n - c * chunk : chunk);
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_gelu_cuda(ctx, y->data, x->data, n, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}

int nn_softmax_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err) {
  const char *op = "nn_softmax_forward";
  if (!x || x->ndim < 1) return CMDS_FAIL(err, CMDS_EINPUT, "%s: x missing", op);
  int rc = nn_tensor_expect(x, op, "x", ctx->device, x->ndim, x->shape, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, x->ndim, x->shape, err);
  if (rc) return rc;
  int64_t C = x->shape[x->ndim - 1], rows = C ? nn_tensor_numel(x) / C : 0;
  if (ctx->device == NN_CPU) {
    const float *xd = x->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) nn_softmax_row_cpu(yd + r * C, xd + r * C, C);
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_softmax_cuda(ctx, y->data, x->data, rows, C, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}

/* y = x * sigmoid(beta x): SiLU (beta 1) and quick GELU (beta 1.702). */
static int activation_sigmoid_gate(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, float beta,
                                   const char *op, cmds_error *err) {
  if (!x) return CMDS_FAIL(err, CMDS_EINPUT, "%s: x missing", op);
  int rc = nn_tensor_expect(x, op, "x", ctx->device, x->ndim, x->shape, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, x->ndim, x->shape, err);
  if (rc) return rc;
  int64_t n = nn_tensor_numel(x);
  if (ctx->device == NN_CPU) {
    const float *xd = x->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) yd[i] = xd[i] / (1.0f + expf(-beta * xd[i]));
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_silu_cuda(ctx, y->data, x->data, n, beta, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}

int nn_silu_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err) {
  return activation_sigmoid_gate(ctx, y, x, 1.0f, "nn_silu_forward", err);
}

int nn_quick_gelu_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err) {
  return activation_sigmoid_gate(ctx, y, x, 1.702f, "nn_quick_gelu_forward", err);
}

int nn_geglu_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err) {
  const char *op = "nn_geglu_forward";
  if (!x || x->ndim < 1) return CMDS_FAIL(err, CMDS_EINPUT, "%s: x missing", op);
  int64_t C = x->shape[x->ndim - 1];
  if (C % 2)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: last dim of x is %lld, an even 2F expected", op, (long long)C);
  int64_t F = C / 2, yshape[NN_MAX_DIMS];
  for (int i = 0; i < x->ndim; i++) yshape[i] = x->shape[i];
  yshape[x->ndim - 1] = F;
  int rc = nn_tensor_expect(x, op, "x", ctx->device, x->ndim, x->shape, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, x->ndim, yshape, err);
  if (rc) return rc;
  if (y->data == x->data) return CMDS_FAIL(err, CMDS_EINPUT, "%s: y must not alias x", op);
  int64_t rows = C ? nn_tensor_numel(x) / C : 0;
  if (ctx->device == NN_CPU) {
    const float *xd = x->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      const float *h = xd + r * C, *g = h + F;
      float *yr = yd + r * F;
      for (int64_t f = 0; f < F; f++) yr[f] = h[f] * (g[f] * nn_fast_phi(g[f]));
    }
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_geglu_cuda(ctx, y->data, x->data, rows, F, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}
