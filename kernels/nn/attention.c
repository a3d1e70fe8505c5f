/* attention: CPU path through OpenBLAS GEMMs and the dispatcher (see attention.h); on CPUs
 * with AVX2 and FMA and head dims that are multiples of 8 up to 256 the key-tiled path of
 * attention_tiled.c runs instead. The
 * softmax of a block's scores is nn_fast_softmax_row (vectorised exp, nn_fastexp.h), the same
 * the backward recomputes its probabilities with; nn_attention_ex_forward_lse also keeps each
 * row's log-sum-exp for the backward's key-tiled path (attention_backward.c). */
#include "attention.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "activation.h"
#include "attention_tiled.h"
#include "nn_blas.h"
#include "nn_fastexp.h"
#include "nn_simd.h"

#ifdef CMDS_CUDA
#include "nn_cuda.h"
#endif

int64_t nn_attention_cpu_qb(int64_t M) {
  const char *env = getenv("CMDS_NN_ATTN_QB"); /* tests force many (and uneven) blocks */
  if (env && atoll(env) > 0) return atoll(env);
  int64_t qb = 256;
  while (qb > 64 && qb * M * (int64_t)sizeof(float) > ((int64_t)1 << 20)) qb /= 2;
  return qb;
}

size_t nn_attention_cpu_scratch_floats(int64_t M, int64_t H, int64_t D) {
  size_t gemm = (size_t)omp_get_max_threads() * (size_t)nn_attention_cpu_qb(M) * (size_t)M;
  if (!nn_attention_tiled_usable(D)) return gemm;
  size_t tiled = nn_attention_tiled_floats(M, H, D);
  return tiled > gemm ? tiled : gemm;
}

/* One block: rows [i0, i0 + m) of head h of image b against keys [0, mc) (mc = M, or
 * i0 + m when causal: later keys are masked anyway). s: (m, mc) scores, then probabilities.
 * lse (NULL = not wanted): the rows' log-sum-exp of the scaled scores, lse[r] for row i0 + r;
 * the probabilities are then nn_fast_softmax_row's, computed inline to keep its max and sum. */
NN_SIMD_CLONES static void attention_block(float *o, float *lse, const float *q, const float *k, const float *v, int64_t M,
                            int64_t D, int64_t ld_q, int64_t ld_k, int64_t ld_v, int64_t ld_o,
                            int64_t i0, int64_t m, int causal, float scale, float *s) {
  int64_t mc = causal && i0 + m < M ? i0 + m : M;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)mc, (int)D, scale, q + i0 * ld_q, (int)ld_q, k,
              (int)ld_k, 0.0f, s, (int)mc);
  for (int64_t r = 0; r < m; r++) {
    float *row = s + r * mc;
    int64_t valid = causal ? i0 + r + 1 : mc;
    if (!lse) {
      nn_fast_softmax_row(row, mc, valid);
      continue;
    }
    float mx = nn_fast_max8(row, valid);
    for (int64_t j = 0; j < valid; j++) row[j] = nn_fast_exp(row[j] - mx);
    float sum = nn_fast_sum8(row, valid), inv = 1.0f / sum;
    for (int64_t j = 0; j < valid; j++) row[j] *= inv;
    for (int64_t j = valid; j < mc; j++) row[j] = 0.0f;
    lse[r] = mx + logf(sum);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)D, (int)mc, 1.0f, s, (int)mc, v, (int)ld_v,
              0.0f, o + i0 * ld_o, (int)ld_o);
}

/* q (B, N) rows, k and v (B, M) rows, each of H heads of D columns at the given row strides;
 * lse (B, H, N) or NULL. */
static void attention_cpu_ex(float *o, float *lse, const float *q, const float *k, const float *v, int64_t B,
                             int64_t N, int64_t M, int64_t H, int64_t D, int64_t ld_q, int64_t ld_k,
                             int64_t ld_v, int64_t ld_o, int causal, float *scratch) {
  if (B == 0 || N == 0 || M == 0) return;
  if (nn_attention_tiled_usable(D)) {
    nn_attention_tiled(o, lse, q, k, v, B, N, M, H, D, ld_q, ld_k, ld_v, ld_o, causal, scratch);
    return;
  }
  float scale = 1.0f / sqrtf((float)D);
  /* blocks of at most nn_attention_cpu_qb(M) rows, evened out on multiples of 16 where that fits
   * (785 rows: 208 + 208 + 208 + 161, not 256 + 256 + 256 + 17) */
  const int64_t qb = nn_attention_cpu_qb(M), nqb = (N + qb - 1) / qb, even = ((N + nqb - 1) / nqb + 15) / 16 * 16,
                QB = even < qb ? even : qb, nblk = B * H * nqb;
  const char *mode = getenv("CMDS_NN_ATTN_THREADS");
  if (mode && !strcmp(mode, "blas")) { /* comparison mode: OpenBLAS threads each GEMM */
    for (int64_t r = 0; r < nblk; r++) {
      int64_t b = r / (H * nqb), h = (r / nqb) % H, i0 = (r % nqb) * QB, m = N - i0 < QB ? N - i0 : QB;
      attention_block(o + b * N * ld_o + h * D, lse ? lse + (b * H + h) * N + i0 : NULL, q + b * N * ld_q + h * D, k + b * M * ld_k + h * D,
                      v + b * M * ld_v + h * D, M, D, ld_q, ld_k, ld_v, ld_o, i0, m, causal, scale, scratch);
    }
    return;
  }
  /* OpenMP over blocks, each GEMM on its calling thread: never OpenMP x OpenBLAS threads. */
  int blas_threads = nn_blas_serial_begin();
#pragma omp parallel
  {
    float *s = scratch + (size_t)omp_get_thread_num() * QB * (size_t)M;
#pragma omp for schedule(dynamic, 1)
    for (int64_t r = 0; r < nblk; r++) {
      int64_t b = r / (H * nqb), h = (r / nqb) % H, i0 = (r % nqb) * QB, m = N - i0 < QB ? N - i0 : QB;
      attention_block(o + b * N * ld_o + h * D, lse ? lse + (b * H + h) * N + i0 : NULL, q + b * N * ld_q + h * D, k + b * M * ld_k + h * D,
                      v + b * M * ld_v + h * D, M, D, ld_q, ld_k, ld_v, ld_o, i0, m, causal, scale, s);
    }
  }
  nn_blas_serial_end(blas_threads);
}

void nn_attention_cpu(float *o, const float *q, const float *k, const float *v, int64_t B,
                      int64_t N, int64_t H, int64_t D, int64_t ld_q, int64_t ld_k, int64_t ld_v,
                      int64_t ld_o, float *scratch) {
  attention_cpu_ex(o, NULL, q, k, v, B, N, N, H, D, ld_q, ld_k, ld_v, ld_o, 0, scratch);
}

int nn_attention_forward(nn_ctx *ctx, nn_tensor *o, const nn_tensor *q, const nn_tensor *k,
                         const nn_tensor *v, int64_t heads, cmds_error *err) {
  const char *op = "nn_attention_forward";
  if (!q || q->ndim != 3) return CMDS_FAIL(err, CMDS_EINPUT, "%s: q must be (B, N, C)", op);
  int64_t B = q->shape[0], N = q->shape[1], C = q->shape[2];
  if (heads < 1 || C % heads)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %lld heads do not divide width %lld", op,
                     (long long)heads, (long long)C);
  int64_t D = C / heads;
  int rc = nn_tensor_expect(q, op, "q", ctx->device, 3, q->shape, err);
  if (!rc) rc = nn_tensor_expect(k, op, "k", ctx->device, 3, q->shape, err);
  if (!rc) rc = nn_tensor_expect(v, op, "v", ctx->device, 3, q->shape, err);
  if (!rc) rc = nn_tensor_expect(o, op, "o", ctx->device, 3, q->shape, err);
  if (rc) return rc;
  if (ctx->device == NN_CPU) {
    if (!ctx->scratch) return CMDS_FAIL(err, CMDS_EINPUT, "%s: needs a scratch arena in the context", op);
    size_t mark = nn_arena_mark(ctx->scratch);
    float *s = nn_arena_alloc(ctx->scratch, nn_attention_cpu_scratch_floats(N, heads, D) * sizeof(float), err);
    if (!s) return cmds_error_wrap(err, "%s scores", op);
    nn_attention_cpu(o->data, q->data, k->data, v->data, B, N, heads, D, C, C, C, C, s);
    nn_arena_rewind(ctx->scratch, mark);
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_attention_cuda(ctx, o->data, q->data, k->data, v->data, B, N, heads, D, C, C, C, C, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}

/* CUDA with D > 128: query rows per chunk so that heads * rows * M scores fit the cap. */
static int64_t attention_cuda_chunk_rows(int64_t N, int64_t M, int64_t heads) {
  size_t per_row = (size_t)heads * (size_t)(M > 0 ? M : 1), cap = NN_ATTN_CUDA_SCORE_FLOATS;
  const char *env = getenv("CMDS_NN_ATTN_SCORE_FLOATS"); /* tests force several chunks */
  if (env && atoll(env) > 0) cap = (size_t)atoll(env);
  int64_t rows = (int64_t)(cap / per_row);
  if (rows < 1) rows = 1;
  return rows < N ? rows : N;
}

size_t nn_attention_ex_scratch_bytes(nn_device device, int64_t N, int64_t M, int64_t heads, int64_t D) {
  if (device == NN_CPU) return nn_attention_cpu_scratch_floats(M, heads, D) * sizeof(float);
  if (D <= 128) return 0;
  return (size_t)heads * (size_t)attention_cuda_chunk_rows(N, M, heads) * (size_t)M * sizeof(float);
}

int nn_attention_ex_forward(nn_ctx *ctx, nn_tensor *o, const nn_tensor *q, const nn_tensor *k,
                            const nn_tensor *v, int64_t heads, int causal, cmds_error *err) {
  return nn_attention_ex_forward_lse(ctx, o, NULL, q, k, v, heads, causal, err);
}

int nn_attention_ex_forward_lse(nn_ctx *ctx, nn_tensor *o, nn_tensor *lse, const nn_tensor *q, const nn_tensor *k,
                                const nn_tensor *v, int64_t heads, int causal, cmds_error *err) {
  const char *op = lse ? "nn_attention_ex_forward_lse" : "nn_attention_ex_forward";
  if (!q || q->ndim != 3) return CMDS_FAIL(err, CMDS_EINPUT, "%s: q must be (B, N, C)", op);
  if (!k || k->ndim != 3) return CMDS_FAIL(err, CMDS_EINPUT, "%s: k must be (B, M, C)", op);
  int64_t B = q->shape[0], N = q->shape[1], C = q->shape[2], M = k->shape[1];
  if (heads < 1 || C % heads)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %lld heads do not divide width %lld", op,
                     (long long)heads, (long long)C);
  if (causal && N != M)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: causal attention needs as many keys as queries, got N = %lld, M = %lld",
                     op, (long long)N, (long long)M);
  int64_t D = C / heads, kshape[3] = {B, M, C};
  int rc = nn_tensor_expect(q, op, "q", ctx->device, 3, q->shape, err);
  if (!rc) rc = nn_tensor_expect(k, op, "k", ctx->device, 3, kshape, err);
  if (!rc) rc = nn_tensor_expect(v, op, "v", ctx->device, 3, kshape, err);
  if (!rc) rc = nn_tensor_expect(o, op, "o", ctx->device, 3, q->shape, err);
  int64_t lshape[3] = {B, heads, N};
  if (!rc && lse) rc = nn_tensor_expect(lse, op, "lse", ctx->device, 3, lshape, err);
  if (rc) return rc;
  if (o->data == q->data || o->data == k->data || o->data == v->data)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: o must not alias q, k or v", op);
  if (lse && (lse->data == o->data || lse->data == q->data || lse->data == k->data || lse->data == v->data))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: lse must not alias o, q, k or v", op);
  if (lse && ctx->device != NN_CPU)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: the lse output is CPU-only (pass NULL on CUDA)", op);
  if (B == 0 || N == 0 || C == 0) return CMDS_OK;
  if (M == 0) return CMDS_FAIL(err, CMDS_EINPUT, "%s: no keys (M = 0)", op);
  size_t need = nn_attention_ex_scratch_bytes(ctx->device, N, M, heads, D);
  float *s = NULL;
  size_t mark = ctx->scratch ? nn_arena_mark(ctx->scratch) : 0;
  if (need) {
    if (!ctx->scratch) return CMDS_FAIL(err, CMDS_EINPUT, "%s: needs a scratch arena in the context", op);
    s = nn_arena_alloc(ctx->scratch, need, err);
    if (!s) return cmds_error_wrap(err, "%s scores", op);
  }
  if (ctx->device == NN_CPU) {
    attention_cpu_ex(o->data, lse ? lse->data : NULL, q->data, k->data, v->data, B, N, M, heads, D, C, C, C, C,
                     causal, s);
  } else {
#ifdef CMDS_CUDA
    rc = nn_attention_ex_cuda(ctx, o->data, q->data, k->data, v->data, B, N, M, heads, D, causal, s,
                              need / sizeof(float), err);
#else
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
  }
  if (ctx->scratch) nn_arena_rewind(ctx->scratch, mark);
  return rc;
}
