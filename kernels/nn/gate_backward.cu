// gate_backward.cu: SiLU and GEGLU backward, one thread per element.
//   silu:  dx = dy * s * (1 + x (1 - s)), s = sigmoid(x)   (dx may be dy)
//   geglu: x = [h | a] (rows, 2F): dh = dy * gelu(a), da = dy * h * (Phi(a) + a phi(a))
#include "nn_cuda_train.h"

__global__ static void silu_bwd(float *dx, const float *dy, const float *x, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float v = x[i], s = 1.0f / (1.0f + expf(-v));
  dx[i] = dy[i] * (s * (1.0f + v * (1.0f - s)));
}

__global__ static void geglu_bwd(float *dx, const float *dy, const float *x, int64_t rows, int64_t F) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= rows * F) return;
  int64_t r = i / F, f = i % F;
  const float *xr = x + r * 2 * F;
  float h = xr[f], a = xr[F + f], d = dy[i];
  float cdf = 0.5f * (1.0f + erff(a * 0.70710678118654752f));
  float pdf = 0.39894228040143268f * expf(-0.5f * a * a);
  dx[r * 2 * F + f] = d * (a * cdf);
  dx[r * 2 * F + F + f] = d * h * (cdf + a * pdf);
}

extern "C" int nn_silu_backward_cuda(nn_ctx *c, float *dx, const float *dy, const float *x, int64_t n,
                                     cmds_error *err) {
  if (n == 0) return CMDS_OK;
  silu_bwd<<<nn_grid(n, 256), 256, 0, nn_stream(c)>>>(dx, dy, x, n);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}

extern "C" int nn_geglu_backward_cuda(nn_ctx *c, float *dx, const float *dy, const float *x, int64_t rows, int64_t F,
                                      cmds_error *err) {
  if (rows * F == 0) return CMDS_OK;
  geglu_bwd<<<nn_grid(rows * F, 256), 256, 0, nn_stream(c)>>>(dx, dy, x, rows, F);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}
