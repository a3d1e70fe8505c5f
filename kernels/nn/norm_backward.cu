// norm_backward.cu: group norm backward. Three launches so that dx may overwrite dy:
// statistics per (image, group) (two-pass mean / variance), then dgamma / dbeta per channel
// (reads dy), then dx per (image, group):
//   dx = rstd * (g - mean(g) - xh * mean(g * xh)),  g = dy * gamma,  xh = (x - mean) * rstd.
#include "nn_cuda_backward.h"
#include "nn_cuda_reduce.cuh"

__global__ static void gnb_stats(float *stats, const float *x, int64_t n, float eps) {
  const float *xs = x + blockIdx.x * n;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += xs[i];
  float mean = nn_block_sum(s) / (float)n, v = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v += (xs[i] - mean) * (xs[i] - mean);
  float var = nn_block_sum(v) / (float)n;
  if (threadIdx.x == 0) {
    stats[2 * blockIdx.x] = mean;
    stats[2 * blockIdx.x + 1] = rsqrtf(var + eps);
  }
}

__global__ static void gnb_affine(float *dg, float *dbt, const float *dy, const float *x, const float *stats,
                                  int64_t B, int64_t C, int64_t HW, int64_t G) {
  int64_t c = blockIdx.x, grp = c / (C / G);
  float sdy = 0.0f, sdyx = 0.0f;
  for (int64_t b = 0; b < B; b++) {
    float mean = stats[2 * (b * G + grp)], rstd = stats[2 * (b * G + grp) + 1];
    const float *xr = x + (b * C + c) * HW, *dr = dy + (b * C + c) * HW;
    for (int64_t p = threadIdx.x; p < HW; p += blockDim.x) {
      sdy += dr[p];
      sdyx += dr[p] * (xr[p] - mean) * rstd;
    }
  }
  sdy = nn_block_sum(sdy);
  sdyx = nn_block_sum(sdyx);
  if (threadIdx.x == 0) {
    dg[c] += sdyx;
    dbt[c] += sdy;
  }
}

__global__ static void gnb_dx(float *dx, const float *dy, const float *x, const float *gamma,
                              const float *stats, int64_t C, int64_t HW, int64_t G) {
  int64_t cpg = C / G, n = cpg * HW, c0 = (blockIdx.x % G) * cpg;
  const float *xs = x + blockIdx.x * n, *ds = dy + blockIdx.x * n;
  float mean = stats[2 * blockIdx.x], rstd = stats[2 * blockIdx.x + 1], sg = 0.0f, sgx = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    float g = ds[i] * (gamma ? gamma[c0 + i / HW] : 1.0f);
    sg += g;
    sgx += g * (xs[i] - mean) * rstd;
  }
  float mg = nn_block_sum(sg) / (float)n, mgx = nn_block_sum(sgx) / (float)n;
  float *dxs = dx + blockIdx.x * n;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    float g = ds[i] * (gamma ? gamma[c0 + i / HW] : 1.0f);
    dxs[i] = rstd * (g - mg - (xs[i] - mean) * rstd * mgx);
  }
}

extern "C" int nn_groupnorm_backward_cuda(nn_ctx *c, float *dx, float *dgamma, float *dbeta,
                                          const float *dy, const float *x, const float *gamma, int64_t B,
                                          int64_t C, int64_t HW, int64_t G, float eps, float *stats,
                                          cmds_error *err) {
  if (B == 0 || C == 0 || HW == 0) return CMDS_OK;
  int64_t n = C / G * HW;
  gnb_stats<<<(unsigned)(B * G), 1024, 0, nn_stream(c)>>>(stats, x, n, eps);
  CUDA_CHECK_LAUNCH();
  if (dgamma) {
    gnb_affine<<<(unsigned)C, 256, 0, nn_stream(c)>>>(dgamma, dbeta, dy, x, stats, B, C, HW, G);
    CUDA_CHECK_LAUNCH();
  }
  gnb_dx<<<(unsigned)(B * G), 1024, 0, nn_stream(c)>>>(dx, dy, x, gamma, stats, C, HW, G);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}
