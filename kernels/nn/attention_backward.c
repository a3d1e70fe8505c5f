/* attention_backward: CPU reference (OpenBLAS) and the dispatcher of nn_attention_ex_backward
 * (see backward.h). Per (image, head), query rows in blocks of NN_ATTN_CPU_QB, with
 * s = 1 / sqrt(D) and the block's probabilities P recomputed exactly as the forward does:
 *   S = s Q K^T, P = softmax(S) (causal: keys after the query masked), dP = dO V^T,
 *   dS = P * (dP - rowsum(P * dP)), dQ = s dS K, dK += s dS^T Q, dV += P^T dO.
 * dK and dV gather over the query blocks, so one (image, head) is one task: OpenMP runs the
 * tasks in parallel with OpenBLAS single-threaded inside when there are at least as many
 * tasks as threads, else the tasks run in turn with OpenBLAS threading each GEMM.
 * CUDA: per image, chunks of query rows; per chunk strided-batched cuBLAS GEMMs over the heads
 * for S and dP into scratch, one kernel for the softmax and dS, and GEMMs that write dQ and
 * add into dK, dV (attention_backward.cu). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "activation.h"
#include "attention.h"
#include "backward.h"

#ifdef CMDS_CUDA
#include "nn_cuda_train.h"
#endif

/* CUDA: query rows per chunk so that 2 * heads * rows * M floats (P and dP) stay within this
 * cap; CMDS_NN_ATTN_SCORE_FLOATS in the environment overrides it (tests force many chunks). */
#define ATTNB_CUDA_FLOATS ((size_t)64 << 20)

static int64_t attnb_cuda_rows(int64_t N, int64_t M, int64_t heads) {
  size_t per_row = 2 * (size_t)heads * (size_t)(M > 0 ? M : 1), cap = ATTNB_CUDA_FLOATS;
  const char *env = getenv("CMDS_NN_ATTN_SCORE_FLOATS");
  if (env && atoll(env) > 0) cap = (size_t)atoll(env);
  int64_t rows = (int64_t)(cap / per_row);
  if (rows < 1) rows = 1;
  return rows < N ? rows : N;
}

size_t nn_attention_ex_backward_scratch_bytes(int64_t B, int64_t N, int64_t M, int64_t C, int64_t heads) {
  (void)B;
  (void)C;
  size_t cpu = (size_t)omp_get_max_threads() * 2 * NN_ATTN_CPU_QB * (size_t)M * sizeof(float);
  size_t cuda = 2 * (size_t)heads * (size_t)attnb_cuda_rows(N, M, heads) * (size_t)M * sizeof(float) +
                (size_t)heads * (size_t)attnb_cuda_rows(N, M, heads) * sizeof(float) + 512;
  return cpu > cuda ? cpu : cuda;
}

/* Rows [i0, i0 + m) of one (image, head): pointers at the head's first column, row stride C. */
static void attnb_block(float *dq, float *dk, float *dv, const float *q, const float *k, const float *v,
                        const float *dout, int64_t M, int64_t D, int64_t C, int64_t i0, int64_t m, int causal,
                        float scale, float *p, float *dp) {
  int64_t mc = causal && i0 + m < M ? i0 + m : M;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)mc, (int)D, scale, q + i0 * C, (int)C, k,
              (int)C, 0.0f, p, (int)mc);
  for (int64_t r = 0; r < m; r++) {
    float *pr = p + r * mc;
    if (causal)
      for (int64_t j = i0 + r + 1; j < mc; j++) pr[j] = -INFINITY;
    nn_softmax_row_cpu(pr, pr, mc);
  }
  if (dv)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)mc, (int)D, (int)m, 1.0f, p, (int)mc, dout + i0 * C,
                (int)C, 1.0f, dv, (int)C);
  if (!dq && !dk) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)mc, (int)D, 1.0f, dout + i0 * C, (int)C, v,
              (int)C, 0.0f, dp, (int)mc);
  for (int64_t r = 0; r < m; r++) {
    const float *pr = p + r * mc;
    float *dr = dp + r * mc;
    double rd = 0.0;
    for (int64_t j = 0; j < mc; j++) rd += (double)pr[j] * dr[j];
    float rdf = (float)rd;
    for (int64_t j = 0; j < mc; j++) dr[j] = pr[j] * (dr[j] - rdf);
  }
  if (dq)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)D, (int)mc, scale, dp, (int)mc, k, (int)C,
                0.0f, dq + i0 * C, (int)C);
  if (dk)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)mc, (int)D, (int)m, scale, dp, (int)mc, q + i0 * C,
                (int)C, 1.0f, dk, (int)C);
}

/* One (image b, head h) task. */
static void attnb_task(float *dq, float *dk, float *dv, const float *q, const float *k, const float *v,
                       const float *dout, int64_t b, int64_t h, int64_t N, int64_t M, int64_t C, int64_t D,
                       int causal, float scale, float *p, float *dp) {
  int64_t oq = b * N * C + h * D, ok = b * M * C + h * D;
  float *dkh = dk ? dk + ok : NULL, *dvh = dv ? dv + ok : NULL;
  for (int64_t j = 0; j < M; j++) {
    if (dkh) memset(dkh + j * C, 0, (size_t)D * sizeof(float));
    if (dvh) memset(dvh + j * C, 0, (size_t)D * sizeof(float));
  }
  for (int64_t i0 = 0; i0 < N; i0 += NN_ATTN_CPU_QB) {
    int64_t m = N - i0 < NN_ATTN_CPU_QB ? N - i0 : NN_ATTN_CPU_QB;
    attnb_block(dq ? dq + oq : NULL, dkh, dvh, q + oq, k + ok, v + ok, dout + oq, M, D, C, i0, m, causal, scale, p,
                dp);
  }
}

int nn_attention_ex_backward(nn_ctx *ctx, nn_tensor *dq, nn_tensor *dk, nn_tensor *dv, const nn_tensor *dout,
                             const nn_tensor *q, const nn_tensor *k, const nn_tensor *v, int64_t heads,
                             int causal, cmds_error *err) {
  const char *op = "nn_attention_ex_backward";
  if (!q || q->ndim != 3) return CMDS_FAIL(err, CMDS_EINPUT, "%s: q must be (B, N, C)", op);
  if (!k || k->ndim != 3) return CMDS_FAIL(err, CMDS_EINPUT, "%s: k must be (B, M, C)", op);
  int64_t B = q->shape[0], N = q->shape[1], C = q->shape[2], M = k->shape[1];
  if (heads < 1 || C % heads)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %lld heads do not divide width %lld", op, (long long)heads,
                     (long long)C);
  if (causal && N != M)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: causal attention needs as many keys as queries, got N = %lld, M = %lld",
                     op, (long long)N, (long long)M);
  int64_t D = C / heads, kshape[3] = {B, M, C};
  int rc = nn_tensor_expect(q, op, "q", ctx->device, 3, q->shape, err);
  if (!rc) rc = nn_tensor_expect(k, op, "k", ctx->device, 3, kshape, err);
  if (!rc) rc = nn_tensor_expect(v, op, "v", ctx->device, 3, kshape, err);
  if (!rc) rc = nn_tensor_expect(dout, op, "dout", ctx->device, 3, q->shape, err);
  if (!rc && dq) rc = nn_tensor_expect(dq, op, "dq", ctx->device, 3, q->shape, err);
  if (!rc && dk) rc = nn_tensor_expect(dk, op, "dk", ctx->device, 3, kshape, err);
  if (!rc && dv) rc = nn_tensor_expect(dv, op, "dv", ctx->device, 3, kshape, err);
  if (rc) return rc;
  const void *ins[4] = {q->data, k->data, v->data, dout->data};
  nn_tensor *outs[3] = {dq, dk, dv};
  for (int i = 0; i < 3; i++) {
    if (!outs[i]) continue;
    for (int j = 0; j < 4; j++)
      if (outs[i]->data == ins[j])
        return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s must not alias q, k, v or dout", op, i == 0 ? "dq" : i == 1 ? "dk" : "dv");
    for (int j = 0; j < i; j++)
      if (outs[j] && outs[j]->data == outs[i]->data)
        return CMDS_FAIL(err, CMDS_EINPUT, "%s: dq, dk and dv must be distinct", op);
  }
  if (!dq && !dk && !dv) return CMDS_OK;
  if (B == 0 || C == 0) return CMDS_OK;
  if (M == 0) return CMDS_FAIL(err, CMDS_EINPUT, "%s: no keys (M = 0)", op);
  if (!ctx->scratch) return CMDS_FAIL(err, CMDS_EINPUT, "%s: needs a scratch arena in the context", op);
  size_t mark = nn_arena_mark(ctx->scratch);
  float *dqd = dq ? dq->data : NULL, *dkd = dk ? dk->data : NULL, *dvd = dv ? dv->data : NULL;
  const float *qd = q->data, *kd = k->data, *vd = v->data, *dod = dout->data;
  float scale = 1.0f / sqrtf((float)D);
  if (ctx->device != NN_CPU) {
#ifdef CMDS_CUDA
    int64_t rows = attnb_cuda_rows(N, M, heads);
    size_t nf = 2 * (size_t)heads * (size_t)rows * (size_t)M + (size_t)heads * (size_t)rows;
    float *s = nn_arena_alloc(ctx->scratch, nf * sizeof(float), err);
    if (!s) return cmds_error_wrap(err, "%s scores", op);
    rc = nn_attention_ex_backward_cuda(ctx, dqd, dkd, dvd, dod, qd, kd, vd, B, N, M, heads, D, causal, rows, s, err);
    nn_arena_rewind(ctx->scratch, mark);
    return rc;
#else
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
  }
  int threads = omp_get_max_threads();
  size_t per = 2 * (size_t)NN_ATTN_CPU_QB * (size_t)M;
  float *s = nn_arena_alloc(ctx->scratch, (size_t)threads * per * sizeof(float), err);
  if (!s) return cmds_error_wrap(err, "%s scores", op);
  int64_t tasks = B * heads;
  if (N == 0) { /* no queries: the key / value gradients are zero */
    for (int64_t t = 0; t < tasks; t++) attnb_task(NULL, dkd, dvd, qd, kd, vd, dod, t / heads, t % heads, 0, M, C, D,
                                                     causal, scale, s, s + per / 2);
  } else if (tasks >= threads || threads == 1) {
    int blas_threads = openblas_get_num_threads();
    if (blas_threads > 1) openblas_set_num_threads(1);
#pragma omp parallel
    {
      float *p = s + (size_t)omp_get_thread_num() * per;
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < tasks; t++)
        attnb_task(dqd, dkd, dvd, qd, kd, vd, dod, t / heads, t % heads, N, M, C, D, causal, scale, p, p + per / 2);
    }
    if (blas_threads > 1) openblas_set_num_threads(blas_threads);
  } else {
    for (int64_t t = 0; t < tasks; t++)
      attnb_task(dqd, dkd, dvd, qd, kd, vd, dod, t / heads, t % heads, N, M, C, D, causal, scale, s, s + per / 2);
  }
  nn_arena_rewind(ctx->scratch, mark);
  return CMDS_OK;
}
