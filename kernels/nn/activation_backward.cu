// activation_backward.cu: dx = dy * GELU'(x) = dy * (Phi(x) + x phi(x)), exact erf form.
#include "nn_cuda_backward.h"

__global__ static void gelu_bwd(float *dx, const float *dy, const float *x, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float v = x[i];
  float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
  float pdf = 0.39894228040143268f * expf(-0.5f * v * v);
  dx[i] = dy[i] * (cdf + v * pdf);
}

extern "C" int nn_gelu_backward_cuda(nn_ctx *c, float *dx, const float *dy, const float *x, int64_t n,
                                     cmds_error *err) {
  if (n == 0) return CMDS_OK;
  gelu_bwd<<<nn_grid(n, 256), 256, 0, nn_stream(c)>>>(dx, dy, x, n);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}
