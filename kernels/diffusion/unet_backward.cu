// unet_backward.cu: the one backward piece of the UNet's training path without an nn op: the
// nearest 2x upsampler's backward (each input pixel gets the sum of its 2x2 output block), as
// unet_backward.c's CPU loop (same summation order).
#include "nn/nn_cuda.h"

__global__ static void unet_up2x_bw_kernel(float *dx, const float *dy, int64_t P, int64_t H, int64_t W) {
  int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= P * H * W) return;
  int64_t j = idx % W, i = (idx / W) % H, p = idx / (H * W);
  const float *r0 = dy + (p * 2 * H + 2 * i) * 2 * W + 2 * j, *r1 = r0 + 2 * W;
  dx[idx] = (r0[0] + r0[1]) + (r1[0] + r1[1]);
}

extern "C" int unet_up2x_backward_cuda(nn_ctx *c, float *dx, const float *dy, int64_t P, int64_t H, int64_t W,
                                       cmds_error *err) {
  int64_t n = P * H * W;
  if (n == 0) return CMDS_OK;
  unet_up2x_bw_kernel<<<nn_grid(n, 256), 256, 0, nn_stream(c)>>>(dx, dy, P, H, W);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}
