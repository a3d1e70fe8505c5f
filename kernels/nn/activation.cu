// activation.cu: exact GELU (elementwise) and row softmax (one block per row: max, then
// the sum of exponentials, then the scaled write).
#include "nn_cuda.h"

__global__ static void gelu_kernel(float *y, const float *x, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    float v = x[i];
    y[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
  }
}

__device__ static float act_block_reduce(float v, float *shared, bool is_max) {
  for (int o = 16; o > 0; o >>= 1) {
    float u = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, u) : v + u;
  }
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < nwarps ? shared[lane] : (is_max ? -INFINITY : 0.0f);
  for (int o = 16; o > 0; o >>= 1) {
    float u = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, u) : v + u;
  }
  return v;
}

__global__ static void softmax_kernel(float *y, const float *x, int64_t cols) {
  __shared__ float shared[32];
  const float *xr = x + (int64_t)blockIdx.x * cols;
  float *yr = y + (int64_t)blockIdx.x * cols;
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) m = fmaxf(m, xr[i]);
  m = act_block_reduce(m, shared, true);
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) s += expf(xr[i] - m);
  float inv = 1.0f / act_block_reduce(s, shared, false);
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) yr[i] = expf(xr[i] - m) * inv;
}

extern "C" int nn_gelu_cuda(nn_ctx *c, float *y, const float *x, int64_t n, cmds_error *err) {
  if (n == 0) return CMDS_OK;
  gelu_kernel<<<nn_grid(n, 256), 256, 0, nn_stream(c)>>>(y, x, n);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}

extern "C" int nn_softmax_cuda(nn_ctx *c, float *y, const float *x, int64_t rows, int64_t cols,
                               cmds_error *err) {
  if (rows == 0) return CMDS_OK;
  softmax_kernel<<<(unsigned)rows, 256, 0, nn_stream(c)>>>(y, x, cols);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}

// y = x * sigmoid(beta x): SiLU (beta 1), quick GELU (beta 1.702); same formula as activation.c.
__global__ static void sigmoid_gate_kernel(float *y, const float *x, int64_t n, float beta) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    float v = x[i];
    y[i] = v / (1.0f + expf(-beta * v));
  }
}

// x (rows, 2F) -> y (rows, F) = x[:, :F] * gelu(x[:, F:]).
__global__ static void geglu_kernel(float *y, const float *x, int64_t rows, int64_t F) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= rows * F) return;
  int64_t r = i / F, f = i % F;
  float h = x[r * 2 * F + f], g = x[r * 2 * F + F + f];
  y[i] = h * (0.5f * g * (1.0f + erff(g * 0.70710678118654752f)));
}

extern "C" int nn_silu_cuda(nn_ctx *c, float *y, const float *x, int64_t n, float beta, cmds_error *err) {
  if (n == 0) return CMDS_OK;
  sigmoid_gate_kernel<<<nn_grid(n, 256), 256, 0, nn_stream(c)>>>(y, x, n, beta);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}

extern "C" int nn_geglu_cuda(nn_ctx *c, float *y, const float *x, int64_t rows, int64_t F, cmds_error *err) {
  if (rows * F == 0) return CMDS_OK;
  geglu_kernel<<<nn_grid(rows * F, 256), 256, 0, nn_stream(c)>>>(y, x, rows, F);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}
