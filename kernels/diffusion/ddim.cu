// ddim.cu: the one elementwise op DDIM needs that the nn set lacks: x clamped to [lo, hi] in
// place (clip_sample), one thread per element.
#include "nn/nn_cuda.h"

__global__ static void clamp_kernel(float *x, int64_t n, float lo, float hi) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = fminf(fmaxf(x[i], lo), hi);
}

extern "C" int ddim_clamp_cuda(nn_ctx *c, float *x, int64_t n, float lo, float hi, cmds_error *err) {
  if (n == 0) return CMDS_OK;
  clamp_kernel<<<nn_grid(n, 256), 256, 0, nn_stream(c)>>>(x, n, lo, hi);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}
