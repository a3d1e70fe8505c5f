// resize.cu: bilinear / bicubic resize, one thread per output value, the same fp32
// arithmetic as resize.c (PyTorch's align_corners=False rules).
#include "nn_cuda.h"

__device__ static inline float rs_cubic1(float x, float A) { return ((A + 2) * x - (A + 3)) * x * x + 1; }
__device__ static inline float rs_cubic2(float x, float A) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; }
__device__ static inline int64_t rs_clamp(int64_t i, int64_t n) { return i < 0 ? 0 : i >= n ? n - 1 : i; }

__global__ static void resize_kernel(float *y, const float *x, int64_t P, int64_t Hi, int64_t Wi,
                                     int64_t Ho, int64_t Wo, int bicubic) {
  int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= P * Ho * Wo) return;
  int64_t j = idx % Wo, i = (idx / Wo) % Ho, p = idx / (Ho * Wo);
  const float *xp = x + p * Hi * Wi;
  float ry = ((float)Hi / (float)Ho) * ((float)i + 0.5f) - 0.5f;
  float rx = ((float)Wi / (float)Wo) * ((float)j + 0.5f) - 0.5f;
  if (!bicubic) {
    float cy = ry < 0 ? 0 : ry, cx = rx < 0 ? 0 : rx;
    int64_t y0 = (int64_t)cy, x0 = (int64_t)cx;
    int64_t y1 = y0 + (y0 < Hi - 1), x1 = x0 + (x0 < Wi - 1);
    float ly = cy - (float)y0, lx = cx - (float)x0;
    y[idx] = (1 - ly) * ((1 - lx) * xp[y0 * Wi + x0] + lx * xp[y0 * Wi + x1]) +
             ly * ((1 - lx) * xp[y1 * Wi + x0] + lx * xp[y1 * Wi + x1]);
    return;
  }
  const float A = -0.75f;
  float fy = floorf(ry), fx = floorf(rx), ty = ry - fy, tx = rx - fx;
  float wy[4] = {rs_cubic2(ty + 1, A), rs_cubic1(ty, A), rs_cubic1(1 - ty, A), rs_cubic2(2 - ty, A)};
  float wx[4] = {rs_cubic2(tx + 1, A), rs_cubic1(tx, A), rs_cubic1(1 - tx, A), rs_cubic2(2 - tx, A)};
  float out = 0.0f;
  for (int a = 0; a < 4; a++) {
    const float *row = xp + rs_clamp((int64_t)fy - 1 + a, Hi) * Wi;
    float r = 0.0f;
    for (int cc = 0; cc < 4; cc++) r += row[rs_clamp((int64_t)fx - 1 + cc, Wi)] * wx[cc];
    out += r * wy[a];
  }
  y[idx] = out;
}

extern "C" int nn_resize_cuda(nn_ctx *c, float *y, const float *x, int64_t BC, int64_t Hi, int64_t Wi,
                              int64_t Ho, int64_t Wo, int mode, cmds_error *err) {
  int64_t n = BC * Ho * Wo;
  if (n == 0) return CMDS_OK;
  resize_kernel<<<nn_grid(n, 256), 256, 0, nn_stream(c)>>>(y, x, BC, Hi, Wi, Ho, Wo, mode);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}

// Nearest 2x: one thread per output value, y[p, i, j] = x[p, i / 2, j / 2].
__global__ static void nearest2x_kernel(float *y, const float *x, int64_t P, int64_t H, int64_t W) {
  int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, Wo = 2 * W;
  if (idx >= P * 4 * H * W) return;
  int64_t j = idx % Wo, i = (idx / Wo) % (2 * H), p = idx / (4 * H * W);
  y[idx] = x[(p * H + i / 2) * W + j / 2];
}

extern "C" int nn_upsample_nearest2x_cuda(nn_ctx *c, float *y, const float *x, int64_t BC, int64_t H,
                                          int64_t W, cmds_error *err) {
  int64_t n = BC * 4 * H * W;
  if (n == 0) return CMDS_OK;
  nearest2x_kernel<<<nn_grid(n, 256), 256, 0, nn_stream(c)>>>(y, x, BC, H, W);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}
