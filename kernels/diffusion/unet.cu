// unet.cu: the one UNet piece without an nn op: nearest upsampling to an arbitrary size
// (diffusers passes the skip's size when the latent does not halve evenly), with PyTorch's
// source index floor(dst * (in / out)) in float, clamped, as unet.c's CPU loop.
#include "nn/nn_cuda.h"

__global__ static void unet_nearest_kernel(float *y, const float *x, int64_t P, int64_t H, int64_t W, int64_t Ho,
                                           int64_t Wo, float sh, float sw) {
  int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= P * Ho * Wo) return;
  int64_t j = idx % Wo, i = (idx / Wo) % Ho, p = idx / (Ho * Wo);
  int64_t si = (int64_t)floorf((float)i * sh), sj = (int64_t)floorf((float)j * sw);
  if (si > H - 1) si = H - 1;
  if (sj > W - 1) sj = W - 1;
  y[idx] = x[(p * H + si) * W + sj];
}

extern "C" int unet_nearest_cuda(nn_ctx *c, float *y, const float *x, int64_t P, int64_t H, int64_t W, int64_t Ho,
                                 int64_t Wo, cmds_error *err) {
  int64_t n = P * Ho * Wo;
  if (n == 0) return CMDS_OK;
  unet_nearest_kernel<<<nn_grid(n, 256), 256, 0, nn_stream(c)>>>(y, x, P, H, W, Ho, Wo, (float)H / (float)Ho,
                                                                  (float)W / (float)Wo);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}

extern "C" int unet_cuda_zero(void *p, size_t bytes) { return cudaMemset(p, 0, bytes) == cudaSuccess ? 0 : -1; }
