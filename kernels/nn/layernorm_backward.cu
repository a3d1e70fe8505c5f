// layernorm_backward.cu: layer norm backward in four launches so that dx may overwrite dy:
// row statistics (two-pass mean / variance, one block per row), per-chunk column partial sums
// of dy * xh and dy (one thread per column, coalesced over the row), their reduction in chunk
// order into dgamma / dbeta, then dx per row:
//   dx = rstd * (g - mean(g) - xh * mean(g * xh)),  g = dy * gamma,  xh = (x - mean) * rstd.
#include "nn_cuda_train.h"
#include "nn_cuda_reduce.cuh"

__global__ static void lnb_stats(float *st, const float *x, int64_t C, float eps) {
  const float *xr = x + blockIdx.x * C;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) s += xr[i];
  float mean = nn_block_sum(s) / (float)C, v = 0.0f;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) v += (xr[i] - mean) * (xr[i] - mean);
  float var = nn_block_sum(v) / (float)C;
  if (threadIdx.x == 0) {
    st[2 * blockIdx.x] = mean;
    st[2 * blockIdx.x + 1] = rsqrtf(var + eps);
  }
}

// grid (ceil(C / 256), chunks): part[(chunk * 2) * C + c] = sum dy * xh, part[(chunk * 2 + 1) * C + c] = sum dy.
__global__ static void lnb_param_part(float *part, const float *dy, const float *x, const float *st, int64_t rows,
                                      int64_t C, int64_t chunk_rows) {
  int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, ch = blockIdx.y;
  if (c >= C) return;
  int64_t r0 = ch * chunk_rows, r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  float sg = 0.0f, sb = 0.0f;
  for (int64_t r = r0; r < r1; r++) {
    float d = dy[r * C + c];
    sg += d * (x[r * C + c] - st[2 * r]) * st[2 * r + 1];
    sb += d;
  }
  part[(ch * 2) * C + c] = sg;
  part[(ch * 2 + 1) * C + c] = sb;
}

__global__ static void lnb_param_sum(float *dg, float *dbt, const float *part, int64_t C, int64_t chunks) {
  int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float sg = 0.0f, sb = 0.0f;
  for (int64_t ch = 0; ch < chunks; ch++) {
    sg += part[(ch * 2) * C + c];
    sb += part[(ch * 2 + 1) * C + c];
  }
  dg[c] += sg;
  dbt[c] += sb;
}

__global__ static void lnb_dx(float *dx, const float *dy, const float *x, const float *gamma, const float *st,
                              int64_t C) {
  const float *xr = x + blockIdx.x * C, *dr = dy + blockIdx.x * C;
  float mean = st[2 * blockIdx.x], rstd = st[2 * blockIdx.x + 1], sg = 0.0f, sgx = 0.0f;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
    float g = dr[i] * (gamma ? gamma[i] : 1.0f);
    sg += g;
    sgx += g * (xr[i] - mean) * rstd;
  }
  float mg = nn_block_sum(sg) / (float)C, mgx = nn_block_sum(sgx) / (float)C;
  float *out = dx + blockIdx.x * C;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
    float g = dr[i] * (gamma ? gamma[i] : 1.0f);
    out[i] = rstd * (g - mg - (xr[i] - mean) * rstd * mgx);
  }
}

extern "C" int nn_layernorm_backward_cuda(nn_ctx *c, float *dx, float *dgamma, float *dbeta, const float *dy,
                                          const float *x, const float *gamma, int64_t rows, int64_t C, float eps,
                                          int64_t row_chunk, float *ws, cmds_error *err) {
  if (rows == 0 || C == 0) return CMDS_OK;
  float *st = ws, *part = ws + 2 * rows;
  lnb_stats<<<(unsigned)rows, 256, 0, nn_stream(c)>>>(st, x, C, eps);
  CUDA_CHECK_LAUNCH();
  if (dgamma) {
    int64_t chunks = (rows + row_chunk - 1) / row_chunk;
    lnb_param_part<<<dim3(nn_grid(C, 256), (unsigned)chunks), 256, 0, nn_stream(c)>>>(part, dy, x, st, rows, C,
                                                                                      row_chunk);
    CUDA_CHECK_LAUNCH();
    lnb_param_sum<<<nn_grid(C, 256), 256, 0, nn_stream(c)>>>(dgamma, dbeta, part, C, chunks);
    CUDA_CHECK_LAUNCH();
  }
  lnb_dx<<<(unsigned)rows, 256, 0, nn_stream(c)>>>(dx, dy, x, gamma, st, C);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}
