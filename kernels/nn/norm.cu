// norm.cu: layer norm and group norm share one kernel: one block per normalised segment
// (a row of C values, or a group of C/G channels x HW), two passes (mean, then the
// centred sum of squares) so the variance does not cancel, then the affine write.
#include "nn_cuda.h"

// Sum over the block; every thread gets the result. blockDim.x is a multiple of 32, <= 1024.
__device__ static float norm_block_sum(float v, float *shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  __syncthreads();  // shared may still be read from the previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < nwarps ? shared[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Segment s covers n values; value i has channel (s % groups) * (n / per_channel) + i / per_channel.
__global__ static void norm_segments(float *y, const float *x, const float *g, const float *b,
                                     int64_t n, int64_t per_channel, int64_t groups, float eps) {
  __shared__ float shared[32];
  int64_t s = blockIdx.x;
  const float *xs = x + s * n;
  float *ys = y + s * n;
  float acc = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += xs[i];
  float mean = norm_block_sum(acc, shared) / (float)n;
  acc = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    float d = xs[i] - mean;
    acc += d * d;
  }
  float rstd = rsqrtf(norm_block_sum(acc, shared) / (float)n + eps);
  int64_t c0 = (s % groups) * (n / per_channel);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    float t = (xs[i] - mean) * rstd;
    int64_t ch = c0 + i / per_channel;
    ys[i] = g ? t * g[ch] + b[ch] : t;
  }
}

extern "C" int nn_layernorm_cuda(nn_ctx *c, float *y, const float *x, const float *g, const float *b,
                                 int64_t rows, int64_t C, float eps, cmds_error *err) {
  if (rows == 0) return CMDS_OK;
  norm_segments<<<(unsigned)rows, 256, 0, nn_stream(c)>>>(y, x, g, b, C, 1, 1, eps);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}

extern "C" int nn_groupnorm_cuda(nn_ctx *c, float *y, const float *x, const float *g, const float *b,
                                 int64_t B, int64_t C, int64_t HW, int64_t G, float eps, cmds_error *err) {
  if (B == 0) return CMDS_OK;
  norm_segments<<<(unsigned)(B * G), 512, 0, nn_stream(c)>>>(y, x, g, b, (C / G) * HW, HW, G, eps);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}
