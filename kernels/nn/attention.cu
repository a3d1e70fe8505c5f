// attention.cu: fused multi-head attention with an online softmax (flash-attention
// style, our own simple variant), fp32.
//
// Grid (ceil(N / QT), B * H); block QT threads, one query row per thread. Each thread
// keeps its query q (D) and output accumulator acc (D) in registers. The block walks
// the keys in tiles of KT rows that it stages in shared memory (K tile and V tile,
// KT x D each); for every tile a thread computes its KT scores, the tile maximum, rescales
// its running sum l and accumulator by exp(m_old - m_new) once, and adds p_j * v_j.
// The N x M score matrix never leaves registers. All threads read the same K/V row at a
// time, so shared-memory reads are broadcasts. N queries, M keys (M = N for self-attention);
// CAUSAL masks key j > query i and stops the key walk after the block's last query.
//
// nn_attention_ex_cuda with D > 128 (one 512-wide head in the VAE): per image, chunks of
// query rows; per chunk a strided-batched cuBLAS GEMM over the heads for the scores
// (H, rows, M) in scratch, a masked row softmax in place, a strided-batched GEMM with V.
#include "nn_cuda.h"

template <int DM, int KT, bool CAUSAL>
__global__ static void __launch_bounds__(64)
attention_kernel(float *o, const float *q, const float *k, const float *v, int64_t N, int64_t M, int64_t H,
                 int D, int64_t ld_q, int64_t ld_k, int64_t ld_v, int64_t ld_o, float scale) {
  __shared__ float ks[KT][DM];
  __shared__ float vs[KT][DM];
  const int QT = 64;
  int64_t bh = blockIdx.y, b = bh / H, h = bh % H;
  int64_t i = (int64_t)blockIdx.x * QT + threadIdx.x;
  bool active = i < N;
  const float *kb = k + b * M * ld_k + h * D, *vb = v + b * M * ld_v + h * D;
  int64_t jend = M;
  if (CAUSAL) {  // keys after the block's last query are masked for all its rows
    int64_t last = (int64_t)blockIdx.x * QT + QT;
    jend = last < M ? last : M;
  }

  float qr[DM], acc[DM];
#pragma unroll
  for (int d = 0; d < DM; d++) {
    qr[d] = (active && d < D) ? q[(b * N + i) * ld_q + h * D + d] * scale : 0.0f;
    acc[d] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;

  for (int64_t j0 = 0; j0 < jend; j0 += KT) {
    __syncthreads();  // the previous tile is no longer read
    for (int e = threadIdx.x; e < KT * DM; e += QT) {
      int r = e / DM, d = e % DM;
      bool in = j0 + r < M && d < D;
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
      bool keep = j0 + r < M && (!CAUSAL || j0 + r <= i);
      s[r] = keep ? a : -INFINITY;
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

// The fused kernel for D <= 128 (template picked by D).
template <bool CAUSAL>
static int attention_fused(nn_ctx *c, float *o, const float *q, const float *k, const float *v, int64_t B,
                           int64_t N, int64_t M, int64_t H, int64_t D, int64_t ld_q, int64_t ld_k,
                           int64_t ld_v, int64_t ld_o, cmds_error *err) {
  dim3 grid(nn_grid(N, 64), (unsigned)(B * H));
  float scale = 1.0f / sqrtf((float)D);
  cudaStream_t s = nn_stream(c);
  if (D <= 32)
    attention_kernel<32, 64, CAUSAL><<<grid, 64, 0, s>>>(o, q, k, v, N, M, H, (int)D, ld_q, ld_k, ld_v, ld_o, scale);
  else if (D <= 64)
    attention_kernel<64, 32, CAUSAL><<<grid, 64, 0, s>>>(o, q, k, v, N, M, H, (int)D, ld_q, ld_k, ld_v, ld_o, scale);
  else
    attention_kernel<128, 16, CAUSAL><<<grid, 64, 0, s>>>(o, q, k, v, N, M, H, (int)D, ld_q, ld_k, ld_v, ld_o, scale);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}

extern "C" int nn_attention_cuda(nn_ctx *c, float *o, const float *q, const float *k, const float *v,
                                 int64_t B, int64_t N, int64_t H, int64_t D, int64_t ld_q,
                                 int64_t ld_k, int64_t ld_v, int64_t ld_o, cmds_error *err) {
  if (D > 128)
    return CMDS_FAIL(err, CMDS_EINPUT, "nn_attention_forward (cuda): head dim %lld, at most 128 supported",
                     (long long)D);
  if (B == 0 || N == 0) return CMDS_OK;
  return attention_fused<false>(c, o, q, k, v, B, N, N, H, D, ld_q, ld_k, ld_v, ld_o, err);
}

__device__ static float attn_block_reduce(float v, float *shared, bool is_max) {
  for (int off = 16; off > 0; off >>= 1) {
    float u = __shfl_xor_sync(0xffffffffu, v, off);
    v = is_max ? fmaxf(v, u) : v + u;
  }
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  __syncthreads();  // shared[] may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < nwarps ? shared[lane] : (is_max ? -INFINITY : 0.0f);
  for (int off = 16; off > 0; off >>= 1) {
    float u = __shfl_xor_sync(0xffffffffu, v, off);
    v = is_max ? fmaxf(v, u) : v + u;
  }
  return v;
}

// In-place softmax of the score rows (H * rows of M), one block per row. Row r of a head is
// query i0 + r; with causal, keys j > i0 + r get probability 0.
__global__ static void attn_softmax_rows(float *s, int64_t rows, int64_t M, int64_t i0, int causal) {
  __shared__ float shared[32];
  float *row = s + (int64_t)blockIdx.x * M;
  int64_t jend = causal ? i0 + (int64_t)blockIdx.x % rows + 1 : M;
  if (jend > M) jend = M;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < jend; j += blockDim.x) m = fmaxf(m, row[j]);
  m = attn_block_reduce(m, shared, true);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < jend; j += blockDim.x) sum += expf(row[j] - m);
  float inv = 1.0f / attn_block_reduce(sum, shared, false);
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) row[j] = j < jend ? expf(row[j] - m) * inv : 0.0f;
}

extern "C" int nn_attention_ex_cuda(nn_ctx *c, float *o, const float *q, const float *k, const float *v,
                                    int64_t B, int64_t N, int64_t M, int64_t H, int64_t D, int causal,
                                    float *scratch, size_t scratch_floats, cmds_error *err) {
  int64_t C = H * D;
  if (B == 0 || N == 0 || D == 0) return CMDS_OK;
  if (D <= 128)
    return causal ? attention_fused<true>(c, o, q, k, v, B, N, M, H, D, C, C, C, C, err)
                  : attention_fused<false>(c, o, q, k, v, B, N, M, H, D, C, C, C, C, err);
  int64_t chunk = scratch ? (int64_t)(scratch_floats / ((size_t)H * (size_t)M)) : 0;
  if (chunk < 1)
    return CMDS_FAIL(err, CMDS_EINTERNAL, "nn_attention_ex_forward (cuda): %zu floats of scratch, %lld needed per query row",
                     scratch_floats, (long long)(H * M));
  if (chunk > N) chunk = N;
  cublasHandle_t hb = (cublasHandle_t)c->cublas;
  float scale = 1.0f / sqrtf((float)D), one = 1.0f, zero = 0.0f;
  for (int64_t b = 0; b < B; b++) {
    const float *qb = q + b * N * C, *kb = k + b * M * C, *vb = v + b * M * C;
    float *ob = o + b * N * C;
    for (int64_t i0 = 0; i0 < N; i0 += chunk) {
      int64_t rows = N - i0 < chunk ? N - i0 : chunk;
      // column-major per head: S^T (M, rows) = K_h (M, D) Q_h^T (D, rows), K_h row-major (M, D) ld C
      CUBLAS_CHECK(cublasSgemmStridedBatched(hb, CUBLAS_OP_T, CUBLAS_OP_N, (int)M, (int)rows, (int)D, &scale, kb,
                                             (int)C, D, qb + i0 * C, (int)C, D, &zero, scratch, (int)M,
                                             rows * M, (int)H));
      attn_softmax_rows<<<(unsigned)(H * rows), 256, 0, nn_stream(c)>>>(scratch, rows, M, i0, causal);
      CUDA_CHECK_LAUNCH();
      // O_h^T (D, rows) = V_h^T (D, M) P^T (M, rows)
      CUBLAS_CHECK(cublasSgemmStridedBatched(hb, CUBLAS_OP_N, CUBLAS_OP_N, (int)D, (int)rows, (int)M, &one, vb,
                                             (int)C, D, scratch, (int)M, rows * M, &zero, ob + i0 * C, (int)C, D,
                                             (int)H));
    }
  }
  return CMDS_OK;
}
