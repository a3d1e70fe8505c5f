// attention_backward.cu: backward of the general attention with cuBLAS, per image and per chunk
// of `rows` query rows, all heads at once through strided-batched GEMMs (head h is the column
// block [h D, (h+1) D) of the row-major (tokens, C) matrices, so the batch stride is D):
//   S = s Q K^T (H, rows, M) -> P (softmax, causal mask) in place;  dP = dO V^T (H, rows, M);
//   dS = P * (dP - rowsum(P * dP)) in place of dP;  dV += P^T dO;  dQ = s dS K;  dK += s dS^T Q.
// dK and dV are SET by the first chunk (beta 0) and added to by the later ones.
#include <math.h>

#include "nn_cuda_train.h"
#include "nn_cuda_reduce.cuh"

// One block per (head, row) of the chunk: the row's softmax with the causal mask, in place.
__global__ static void attnb_softmax(float *p, int64_t rows, int64_t M, int64_t i0, int causal) {
  int64_t hr = blockIdx.x, r = hr % rows, lim = causal ? i0 + r + 1 : M;
  float *pr = p + hr * M;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < lim; j += blockDim.x) mx = fmaxf(mx, pr[j]);
  // block max through the shared sum helper's pattern
  __shared__ float red[32];
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_down_sync(0xffffffffu, mx, o));
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  if (lane == 0) red[warp] = mx;
  __syncthreads();
  mx = -INFINITY;
  for (int i = 0; i < nw; i++) mx = fmaxf(mx, red[i]);
  float s = 0.0f;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    float e = j < lim ? expf(pr[j] - mx) : 0.0f;
    pr[j] = e;
    s += e;
  }
  float inv = 1.0f / nn_block_sum(s);
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) pr[j] *= inv;
}

// One block per (head, row): dS = P * (dP - sum_j P dP), in place of dP.
__global__ static void attnb_ds(float *dp, const float *p, int64_t M) {
  const float *pr = p + blockIdx.x * M;
  float *dr = dp + blockIdx.x * M;
  float s = 0.0f;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) s += pr[j] * dr[j];
  float rd = nn_block_sum(s);
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) dr[j] = pr[j] * (dr[j] - rd);
}

extern "C" int nn_attention_ex_backward_cuda(nn_ctx *c, float *dq, float *dk, float *dv, const float *dout,
                                             const float *q, const float *k, const float *v, int64_t B, int64_t N,
                                             int64_t M, int64_t H, int64_t D, int causal, int64_t rows, float *s,
                                             cmds_error *err) {
  int64_t C = H * D;
  cublasHandle_t h = (cublasHandle_t)c->cublas;
  float one = 1.0f, zero = 0.0f, scale = 1.0f / sqrtf((float)D);
  if (N == 0) {  // no queries: the key / value gradients are zero
    if (dk) CUDA_CHECK(cudaMemsetAsync(dk, 0, (size_t)(B * M * C) * sizeof(float), nn_stream(c)));
    if (dv) CUDA_CHECK(cudaMemsetAsync(dv, 0, (size_t)(B * M * C) * sizeof(float), nn_stream(c)));
    return CMDS_OK;
  }
  float *P = s, *dP = s + (size_t)H * (size_t)rows * (size_t)M;
  for (int64_t b = 0; b < B; b++) {
    const float *qb = q + b * N * C, *kb = k + b * M * C, *vb = v + b * M * C, *dob = dout + b * N * C;
    float *dqb = dq ? dq + b * N * C : NULL, *dkb = dk ? dk + b * M * C : NULL, *dvb = dv ? dv + b * M * C : NULL;
    for (int64_t i0 = 0; i0 < N; i0 += rows) {
      int64_t m = N - i0 < rows ? N - i0 : rows;
      float beta = i0 == 0 ? 0.0f : 1.0f;
      long long sP = (long long)m * M;
      // column-major: S_h^T (M, m) = K_h (M, D) Q_h^T (D, m)
      CUBLAS_CHECK(cublasSgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)M, (int)m, (int)D, &scale, kb, (int)C,
                                             (long long)D, qb + i0 * C, (int)C, (long long)D, &zero, P, (int)M, sP,
                                             (int)H));
      attnb_softmax<<<(unsigned)(H * m), 256, 0, nn_stream(c)>>>(P, m, M, i0, causal);
      CUDA_CHECK_LAUNCH();
      if (dvb)  // column-major: dV_h^T (D, M) += dO_h^T (D, m) P_h (m, M)
        CUBLAS_CHECK(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_T, (int)D, (int)M, (int)m, &one,
                                               dob + i0 * C, (int)C, (long long)D, P, (int)M, sP, &beta, dvb, (int)C,
                                               (long long)D, (int)H));
      if (!dqb && !dkb) continue;
      // column-major: dP_h^T (M, m) = V_h (M, D) dO_h^T (D, m)
      CUBLAS_CHECK(cublasSgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)M, (int)m, (int)D, &one, vb, (int)C,
                                             (long long)D, dob + i0 * C, (int)C, (long long)D, &zero, dP, (int)M, sP,
                                             (int)H));
      attnb_ds<<<(unsigned)(H * m), 256, 0, nn_stream(c)>>>(dP, P, M);
      CUDA_CHECK_LAUNCH();
      if (dqb)  // column-major: dQ_h^T (D, m) = s K_h^T (D, M) dS_h^T (M, m)
        CUBLAS_CHECK(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, (int)D, (int)m, (int)M, &scale, kb,
                                               (int)C, (long long)D, dP, (int)M, sP, &zero, dqb + i0 * C, (int)C,
                                               (long long)D, (int)H));
      if (dkb)  // column-major: dK_h^T (D, M) += s Q_h^T (D, m) dS_h (m, M)
        CUBLAS_CHECK(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_T, (int)D, (int)M, (int)m, &scale,
                                               qb + i0 * C, (int)C, (long long)D, dP, (int)M, sP, &beta, dkb, (int)C,
                                               (long long)D, (int)H));
    }
  }
  return CMDS_OK;
}
