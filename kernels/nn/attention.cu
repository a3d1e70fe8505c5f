// attention.cu: fused multi-head attention with an online softmax (flash-attention
// style, our own simple variant), fp32.
//
// Grid (ceil(N / QT), B * H); block QT threads, one query row per thread. Each thread
// keeps its query q (D) and output accumulator acc (D) in registers. The block walks
// the keys in tiles of KT rows that it stages in shared memory (K tile and V tile,
// KT x D each); for every tile a thread computes its KT scores, the tile maximum, rescales
// its running sum l and accumulator by exp(m_old - m_new) once, and adds p_j * v_j.
// The N x N score matrix never leaves registers. All threads read the same K/V row at a
// time, so shared-memory reads are broadcasts.
#include "nn_cuda.h"

template <int DM, int KT>
__global__ static void __launch_bounds__(64)
attention_kernel(float *o, const float *q, const float *k, const float *v, int64_t N, int64_t H,
                 int D, int64_t ld_q, int64_t ld_k, int64_t ld_v, int64_t ld_o, float scale) {
  __shared__ float ks[KT][DM];
  __shared__ float vs[KT][DM];
  const int QT = 64;
  int64_t bh = blockIdx.y, b = bh / H, h = bh % H;
  int64_t i = (int64_t)blockIdx.x * QT + threadIdx.x;
  bool active = i < N;
  const float *kb = k + b * N * ld_k + h * D, *vb = v + b * N * ld_v + h * D;

  float qr[DM], acc[DM];
#pragma unroll
  for (int d = 0; d < DM; d++) {
    qr[d] = (active && d < D) ? q[(b * N + i) * ld_q + h * D + d] * scale : 0.0f;
    acc[d] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;

  for (int64_t j0 = 0; j0 < N; j0 += KT) {
    __syncthreads();  // the previous tile is no longer read
    for (int e = threadIdx.x; e < KT * DM; e += QT) {
      int r = e / DM, d = e % DM;
      bool in = j0 + r < N && d < D;
      ks[r][d] = in ? kb[(j0 + r) * ld_k + d] : 0.0f;
      vs[r][d] = in ? vb[(j0 + r) * ld_v + d] : 0.0f;
    }
    __syncthreads();
    float s[KT], tmax = -INFINITY;
#pragma unroll
    for (int r = 0; r < KT; r++) {
      float a = 0.0f;
#pragma unroll
      for (int d = 0; d < DM; d++) a += qr[d] * ks[r][d];
      s[r] = j0 + r < N ? a : -INFINITY;
      tmax = fmaxf(tmax, s[r]);
    }
    float mnew = fmaxf(m, tmax), corr = expf(m - mnew);  // m = -inf first: corr = 0
    l *= corr;
#pragma unroll
    for (int d = 0; d < DM; d++) acc[d] *= corr;
#pragma unroll
    for (int r = 0; r < KT; r++) {
      float p = expf(s[r] - mnew);
      l += p;
#pragma unroll
      for (int d = 0; d < DM; d++) acc[d] += p * vs[r][d];
    }
    m = mnew;
  }
  if (!active) return;
  float inv = 1.0f / l;
  float *orow = o + (b * N + i) * ld_o + h * D;
#pragma unroll
  for (int d = 0; d < DM; d++)
    if (d < D) orow[d] = acc[d] * inv;
}

extern "C" int nn_attention_cuda(nn_ctx *c, float *o, const float *q, const float *k, const float *v,
                                 int64_t B, int64_t N, int64_t H, int64_t D, int64_t ld_q,
                                 int64_t ld_k, int64_t ld_v, int64_t ld_o, cmds_error *err) {
  if (D > 128)
    return CMDS_FAIL(err, CMDS_EINPUT, "nn_attention_forward (cuda): head dim %lld, at most 128 supported",
                     (long long)D);
  if (B == 0 || N == 0) return CMDS_OK;
  dim3 grid(nn_grid(N, 64), (unsigned)(B * H));
  float scale = 1.0f / sqrtf((float)D);
  cudaStream_t s = nn_stream(c);
  if (D <= 32)
    attention_kernel<32, 64><<<grid, 64, 0, s>>>(o, q, k, v, N, H, (int)D, ld_q, ld_k, ld_v, ld_o, scale);
  else if (D <= 64)
    attention_kernel<64, 32><<<grid, 64, 0, s>>>(o, q, k, v, N, H, (int)D, ld_q, ld_k, ld_v, ld_o, scale);
  else
    attention_kernel<128, 16><<<grid, 64, 0, s>>>(o, q, k, v, N, H, (int)D, ld_q, ld_k, ld_v, ld_o, scale);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}
