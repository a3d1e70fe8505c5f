// elementwise_backward.cu: the training glue of elementwise.h on the GPU: sum over H, W (one
// block per (image, channel), double accumulation), channel split, and the squared sums of
// mse / sumsq: a grid of ELB_BLOCKS blocks (grid-stride; fewer for a small tensor, one per 256
// values), one double partial per block, then one block adds the partials in order, so the result
// does not change from run to run.
#include <stdlib.h>

#include "nn_cuda_train.h"
#include "nn_cuda_reduce.cuh"

#define ELB_BLOCKS 256

__global__ static void sum_hw_kernel(float *y, const float *x, int64_t HW) {
  const float *xr = x + blockIdx.x * HW;
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < HW; i += blockDim.x) s += xr[i];
  s = nn_block_sum(s);
  if (threadIdx.x == 0) y[blockIdx.x] = (float)s;
}

__global__ static void split_kernel(float *a, float *b, const float *x, int64_t B, int64_t Ca, int64_t Cb,
                                    int64_t HW) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, C = Ca + Cb;
  if (i >= B * C * HW) return;
  int64_t p = i % HW, ch = (i / HW) % C, bi = i / (C * HW);
  if (ch < Ca) {
    if (a) a[(bi * Ca + ch) * HW + p] = x[i];
  } else if (b) {
    b[(bi * Cb + ch - Ca) * HW + p] = x[i];
  }
}

__global__ static void sumsq_part(double *part, const float *a, const float *t, float *d, float dscale, int64_t n) {
  double s = 0.0;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float e = t ? a[i] - t[i] : a[i];
    s += (double)e * (double)e;
    if (d) d[i] = dscale * e;
  }
  s = nn_block_sum(s);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ static void sumsq_final(double *out, const double *part, int nparts) {
  double s = 0.0;
  for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += part[i];
  s = nn_block_sum(s);
  if (threadIdx.x == 0) *out = s;
}

// One block per chunk of a tensor: the chunk table (device pointer, length) is uploaded per call.
struct sumsq_chunk {
  const float *x;
  int64_t n;
};

__global__ static void sumsq_chunks(double *part, const sumsq_chunk *tab) {
  const sumsq_chunk ch = tab[blockIdx.x];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < ch.n; i += blockDim.x) s += (double)ch.x[i] * (double)ch.x[i];
  s = nn_block_sum(s);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

extern "C" int nn_sum_hw_cuda(nn_ctx *c, float *y, const float *x, int64_t BC, int64_t HW, cmds_error *err) {
  if (BC == 0) return CMDS_OK;
  sum_hw_kernel<<<(unsigned)BC, 256, 0, nn_stream(c)>>>(y, x, HW);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}

extern "C" int nn_split_channels_cuda(nn_ctx *c, float *a, float *b, const float *x, int64_t B, int64_t Ca,
                                      int64_t Cb, int64_t HW, cmds_error *err) {
  int64_t n = B * (Ca + Cb) * HW;
  if (n == 0) return CMDS_OK;
  split_kernel<<<nn_grid(n, 256), 256, 0, nn_stream(c)>>>(a, b, x, B, Ca, Cb, HW);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}

extern "C" int nn_sumsq_many_cuda(nn_ctx *c, double *out, const float *const *x, const int64_t *n, int count,
                                  int64_t chunks, void *ws, cmds_error *err) {
  if (chunks <= 0) {
    *out = 0.0;
    return CMDS_OK;
  }
  if (chunks > 2147483647)
    return CMDS_FAIL(err, CMDS_EINPUT, "nn_sumsq_many_forward: %lld chunks (at most 2^31 - 1)", (long long)chunks);
  sumsq_chunk *tab = (sumsq_chunk *)malloc((size_t)chunks * sizeof *tab);
  if (!tab) return CMDS_FAIL(err, CMDS_ENOMEM, "nn_sumsq_many_forward: chunk table of %lld", (long long)chunks);
  int64_t k = 0;
  for (int i = 0; i < count; i++)
    for (int64_t o = 0; o < n[i]; o += NN_SUMSQ_CHUNK)
      tab[k++] = sumsq_chunk{x[i] + o, n[i] - o < NN_SUMSQ_CHUNK ? n[i] - o : NN_SUMSQ_CHUNK};
  if (k != chunks) {
    free(tab);
    return CMDS_FAIL(err, CMDS_EINTERNAL, "nn_sumsq_many_forward: %lld chunks, %lld expected", (long long)k,
                     (long long)chunks);
  }
  sumsq_chunk *dtab = (sumsq_chunk *)ws;  // 16 bytes per chunk, then the partials and the result
  double *part = (double *)(dtab + chunks), *res = part + chunks;
  cudaError_t e = cudaMemcpyAsync(dtab, tab, (size_t)chunks * sizeof *tab, cudaMemcpyHostToDevice, nn_stream(c));
  if (e == cudaSuccess) e = cudaStreamSynchronize(nn_stream(c));  // tab is freed next
  free(tab);
  if (e != cudaSuccess)
    return CMDS_FAIL(err, CMDS_EINTERNAL, "nn_sumsq_many_forward: chunk table upload: %s", cudaGetErrorString(e));
  sumsq_chunks<<<(unsigned)chunks, 256, 0, nn_stream(c)>>>(part, dtab);
  CUDA_CHECK_LAUNCH();
  sumsq_final<<<1, 256, 0, nn_stream(c)>>>(res, part, (int)chunks);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaMemcpyAsync(out, res, sizeof(double), cudaMemcpyDeviceToHost, nn_stream(c)));
  CUDA_CHECK(cudaStreamSynchronize(nn_stream(c)));
  return CMDS_OK;
}

extern "C" int nn_sumsq_cuda(nn_ctx *c, double *out, const float *a, const float *t, float *d, float dscale,
                             int64_t n, void *ws, cmds_error *err) {
  double *part = (double *)ws, *res = part + ELB_BLOCKS;
  int blocks = n < (int64_t)ELB_BLOCKS * 256 ? (int)((n + 255) / 256) : ELB_BLOCKS;
  if (blocks < 1) blocks = 1;  // n = 0: one block writes the zero sum
  sumsq_part<<<blocks, 256, 0, nn_stream(c)>>>(part, a, t, d, dscale, n);
  CUDA_CHECK_LAUNCH();
  sumsq_final<<<1, 256, 0, nn_stream(c)>>>(res, part, blocks);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaMemcpyAsync(out, res, sizeof(double), cudaMemcpyDeviceToHost, nn_stream(c)));
  CUDA_CHECK(cudaStreamSynchronize(nn_stream(c)));
  return CMDS_OK;
}
