// blur.cu: separable Gaussian blur, a pass along H into the scratch buffer then a pass
// along W, one thread per output value. The taps travel by value in the kernel
// parameters (2 KiB), so concurrent blurs with different sigmas on different streams
// cannot overwrite each other's taps as a __constant__ array could.
#include "nn_cuda.h"
extern "C" {
#include "blur.h"
}

struct blur_taps { float t[2 * NN_BLUR_MAX_RADIUS + 1]; };

__device__ static inline int64_t blur_reflect_dev(int64_t i, int64_t n) {
  int64_t p = 2 * n;
  i %= p;
  if (i < 0) i += p;
  return i < n ? i : p - 1 - i;
}

// step = W: along H; step = 1: along W. len is the length along that axis.
__global__ static void blur_pass_kernel(float *y, const float *x, int64_t total, int64_t H,
                                        int64_t W, int along_h, blur_taps taps, int r) {
  int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  int64_t j = idx % W, i = (idx / W) % H, base = idx - i * W - j;
  float acc = 0.0f;
  if (along_h)
    for (int t = -r; t <= r; t++) acc += taps.t[t + r] * x[base + blur_reflect_dev(i + t, H) * W + j];
  else
    for (int t = -r; t <= r; t++) acc += taps.t[t + r] * x[base + i * W + blur_reflect_dev(j + t, W)];
  y[idx] = acc;
}

extern "C" int nn_blur_cuda(nn_ctx *c, float *y, const float *x, int64_t BC, int64_t H, int64_t W,
                            const float *taps_host, int radius, float *tmp, cmds_error *err) {
  int64_t n = BC * H * W;
  if (n == 0) return CMDS_OK;
  blur_taps taps;
  for (int t = 0; t <= 2 * radius; t++) taps.t[t] = taps_host[t];
  blur_pass_kernel<<<nn_grid(n, 256), 256, 0, nn_stream(c)>>>(tmp, x, n, H, W, 1, taps, radius);
  CUDA_CHECK_LAUNCH();
  blur_pass_kernel<<<nn_grid(n, 256), 256, 0, nn_stream(c)>>>(y, tmp, n, H, W, 0, taps, radius);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}
