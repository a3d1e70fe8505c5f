/* attention_backward: CPU reference (OpenBLAS) and the dispatcher of nn_attention_ex_backward
 * (see backward.h). Per (image, head), query rows in blocks of ATTNB_QB, with
 * s = 1 / sqrt(D) and the block's probabilities P recomputed from the scores:
 *   S = s Q K^T, P = softmax(S) (causal: keys after the query masked), dP = dO V^T,
 *   dS = P * (dP - rowsum(P * dP)), dQ = s dS K, dK += s dS^T Q, dV += P^T dO.
 * Two ways to spread the work over the OpenMP threads (OpenBLAS single-threaded inside),
 * whichever keeps more threads busy for the shape at hand:
 *   across heads: one (image, head) per task, its query blocks in turn (dK, dV gather there);
 *   within a head: the heads in turn, the query blocks of one head in parallel, each thread
 *     gathering dK, dV in a private (M, D) pair that is added up (in thread order) at the end;
 *     K and V of the head stay in cache for all threads.
 * With one thread both are the same loop. The softmax uses nn_fast_exp (vectorised by the
 * compiler) instead of libm's expf.
 * With the forward's per-row log-sum-exp and output (nn_attention_ex_backward_lse, the fast
 * path), no full score row is needed: P = exp(S - lse) tile by tile, and rowsum(P * dP) =
 * rowsum(dO * O) =: Dr per query row, computed once from O. Each (ATTNB_LQ x ATTNB_LK) tile of
 * S/P and dP/dS stays in L2 (the full-row path streams (128, M) blocks through L3):
 *   S = s Q_i K_j^T, P = exp(S - lse_i), dV_j += P^T dO_i, dP = dO_i V_j^T, dS = P (dP - Dr_i),
 *   dQ_i += s dS K_j, dK_j += s dS^T Q_i,
 * with the same two ways of spreading the work over the threads (query blocks of ATTNB_LQ rows).
 * CUDA: per image, chunks of query rows; per chunk strided-batched cuBLAS GEMMs over the heads
 * for S and dP into scratch, one kernel for the softmax and dS, and GEMMs that write dQ and
 * add into dK, dV (attention_backward.cu); on CUDA lse and o are accepted and not used. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "activation.h"
#include "attention.h"
#include "attention_tiled.h"
#include "backward.h"
#include "nn_blas.h"
#include "nn_fastexp.h"

#ifdef CMDS_CUDA
#include "nn_cuda_train.h"
#endif

/* Query rows per CPU block (the forward uses nn_attention_cpu_qb(M): 64 to 256): K and V are packed by
 * OpenBLAS once per block and used by ATTNB_QB rows, so larger blocks pay less packing per flop
 * (D is small); -DATTNB_QB=... to try others. */
#ifndef ATTNB_QB
#define ATTNB_QB 128
#endif

/* The fast path's tile: ATTNB_LQ query rows x ATTNB_LK keys (P and dS 2 x 128 KiB at 128 x 256);
 * CMDS_NN_ATTNB_TILE=QxK in the environment overrides both (tuning); CMDS_NN_ATTNB_RECOMPUTE=1
 * takes the recomputing path even when lse is given (before / after comparisons). */
#ifndef ATTNB_LQ
#define ATTNB_LQ 128
#endif
#ifndef ATTNB_LK
#define ATTNB_LK 256
#endif

static void attnb_tile(int64_t *lq, int64_t *lk) {
  *lq = ATTNB_LQ;
  *lk = ATTNB_LK;
  const char *env = getenv("CMDS_NN_ATTNB_TILE");
  long a, b;
  if (env && sscanf(env, "%ldx%ld", &a, &b) == 2 && a > 0 && b > 0) {
    *lq = a;
    *lk = b;
  }
}

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

/* Floats of CPU scratch per thread: P and dP blocks (QB, M), private dK and dV (M, D). */
static size_t attnb_cpu_floats_per_thread(int64_t M, int64_t D) {
  return 2 * (size_t)ATTNB_QB * (size_t)M + 2 * (size_t)M * (size_t)D;
}

/* The fast path's floats per thread: P and dS tiles, private dK and dV (M, D), Dr (N) (that far:
 * the offset of the rest); where the key-tiled kernels run (attention_tiled.h), then the head's K
 * and V packed and their tiles. */
static size_t attnb_tiled_offset(int64_t N, int64_t M, int64_t D) {
  int64_t lq, lk;
  attnb_tile(&lq, &lk);
  return 2 * (size_t)lq * (size_t)lk + 2 * (size_t)M * (size_t)D + (size_t)N;
}

static size_t attnb_lse_floats_per_thread(int64_t N, int64_t M, int64_t D) {
  size_t f = attnb_tiled_offset(N, M, D);
  if (nn_attention_tiled_usable(D))
    f += 2 * nn_attention_tiled_packed_floats(M, D) + nn_attention_tiled_backward_floats(D);
  return f;
}

/* The tiled kernels' part of a thread's floats: the head's K and V packed (attnb_pack_head), then
 * nn_attention_tiled_backward_rows' tiles. */
static void attnb_pack_head(float *tw, const float *k, const float *v, int64_t M, int64_t D, int64_t C) {
  nn_attention_tiled_pack(tw, k, M, D, C);
  nn_attention_tiled_pack(tw + nn_attention_tiled_packed_floats(M, D), v, M, D, C);
}

size_t nn_attention_ex_backward_scratch_bytes(int64_t B, int64_t N, int64_t M, int64_t C, int64_t heads) {
  (void)B;
  int64_t D = heads > 0 ? C / heads : C;
  size_t cpu = (size_t)omp_get_max_threads() * attnb_cpu_floats_per_thread(M, D) * sizeof(float);
  size_t cpu_lse = ((size_t)omp_get_max_threads() * attnb_lse_floats_per_thread(N, M, D) + (size_t)N) * sizeof(float);
  if (cpu_lse > cpu) cpu = cpu_lse;
  size_t cuda = 2 * (size_t)heads * (size_t)attnb_cuda_rows(N, M, heads) * (size_t)M * sizeof(float) +
                (size_t)heads * (size_t)attnb_cuda_rows(N, M, heads) * sizeof(float) + 512;
  return cpu > cuda ? cpu : cuda;
}

static float attnb_dot(const float *a, const float *b, int64_t n) {
  float s[8] = {0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; l++) s[l] += a[j + l] * b[j + l];
  for (; j < n; j++) s[0] += a[j] * b[j];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* Rows [i0, i0 + m) of one (image, head): q, k, v, dout, dq at the head's first column with row
 * stride C; dk, dv (added to) with row stride ld_kv. */
static void attnb_block(float *dq, float *dk, float *dv, const float *q, const float *k, const float *v,
                        const float *dout, int64_t M, int64_t D, int64_t C, int64_t ld_kv, int64_t i0, int64_t m,
                        int causal, float scale, float *p, float *dp) {
  int64_t mc = causal && i0 + m < M ? i0 + m : M;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)mc, (int)D, scale, q + i0 * C, (int)C, k,
              (int)C, 0.0f, p, (int)mc);
  for (int64_t r = 0; r < m; r++) nn_fast_softmax_row(p + r * mc, mc, causal ? i0 + r + 1 : mc);
  if (dv)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)mc, (int)D, (int)m, 1.0f, p, (int)mc, dout + i0 * C,
                (int)C, 1.0f, dv, (int)ld_kv);
  if (!dq && !dk) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)mc, (int)D, 1.0f, dout + i0 * C, (int)C, v,
              (int)C, 0.0f, dp, (int)mc);
  for (int64_t r = 0; r < m; r++) {
    const float *pr = p + r * mc;
    float *dr = dp + r * mc;
    float rdf = attnb_dot(pr, dr, mc);
    for (int64_t j = 0; j < mc; j++) dr[j] = pr[j] * (dr[j] - rdf);
  }
  if (dq)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)D, (int)mc, scale, dp, (int)mc, k, (int)C,
                0.0f, dq + i0 * C, (int)C);
  if (dk)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)mc, (int)D, (int)m, scale, dp, (int)mc, q + i0 * C,
                (int)C, 1.0f, dk, (int)ld_kv);
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
  for (int64_t i0 = 0; i0 < N; i0 += ATTNB_QB) {
    int64_t m = N - i0 < ATTNB_QB ? N - i0 : ATTNB_QB;
    attnb_block(dq ? dq + oq : NULL, dkh, dvh, q + oq, k + ok, v + ok, dout + oq, M, D, C, C, i0, m, causal, scale,
                p, dp);
  }
}

/* Fast path: query rows [r0, r1) of one (image, head) against all keys, tile by tile. q, k, v,
 * dout, dq at the head's first column with row stride C; dq rows SET; dk, dv (added to) with row
 * stride ld_kv; lse and dr indexed by query row. p, ds: (lq, lk) tiles. */
static void attnb_lse_rows(float *dq, float *dk, float *dv, const float *q, const float *k, const float *v,
                           const float *dout, const float *lse, const float *dr, int64_t M, int64_t D, int64_t C,
                           int64_t ld_kv, int64_t r0, int64_t r1, int causal, float scale, int64_t lq, int64_t lk,
                           float *p, float *ds) {
  for (int64_t i0 = r0; i0 < r1; i0 += lq) {
    int64_t m = r1 - i0 < lq ? r1 - i0 : lq, kend = causal && i0 + m < M ? i0 + m : M;
    for (int64_t j0 = 0; j0 < kend; j0 += lk) {
      int64_t n = kend - j0 < lk ? kend - j0 : lk;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)D, scale, q + i0 * C, (int)C,
                  k + j0 * C, (int)C, 0.0f, p, (int)n);
      for (int64_t r = 0; r < m; r++) {
        float *pr = p + r * n, l = lse[i0 + r];
        int64_t valid = n;
        if (causal) valid = i0 + r + 1 - j0 < n ? (i0 + r + 1 - j0 > 0 ? i0 + r + 1 - j0 : 0) : n;
        for (int64_t j = 0; j < valid; j++) pr[j] = nn_fast_exp(pr[j] - l); /* vectorised */
        for (int64_t j = valid; j < n; j++) pr[j] = 0.0f;
      }
      if (dv)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)D, (int)m, 1.0f, p, (int)n, dout + i0 * C,
                    (int)C, 1.0f, dv + j0 * ld_kv, (int)ld_kv);
      if (!dq && !dk) continue;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)D, 1.0f, dout + i0 * C, (int)C,
                  v + j0 * C, (int)C, 0.0f, ds, (int)n);
      for (int64_t r = 0; r < m; r++) {
        const float *pr = p + r * n;
        float *dsr = ds + r * n, d = dr[i0 + r];
        for (int64_t j = 0; j < n; j++) dsr[j] = pr[j] * (dsr[j] - d);
      }
      if (dq)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)D, (int)n, scale, ds, (int)n, k + j0 * C,
                    (int)C, j0 ? 1.0f : 0.0f, dq + i0 * C, (int)C);
      if (dk)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)D, (int)m, scale, ds, (int)n, q + i0 * C,
                    (int)C, 1.0f, dk + j0 * ld_kv, (int)ld_kv);
    }
  }
}

/* Rows [r0, r1) of one (image, head) on the fast path: the key-tiled kernels when tw (this thread's
 * tiled part, the head packed into it), else OpenBLAS (attnb_lse_rows). */
static void attnb_lse_run(float *tw, float *dq, float *dk, float *dv, const float *q, const float *k, const float *v,
                          const float *dout, const float *lse, const float *dr, int64_t M, int64_t D, int64_t C,
                          int64_t ld_kv, int64_t r0, int64_t r1, int causal, float scale, int64_t lq, int64_t lk,
                          float *p, float *ds) {
  if (tw) {
    size_t pf = nn_attention_tiled_packed_floats(M, D);
    nn_attention_tiled_backward_rows(dq, dk, dv, q, k, dout, lse, dr, tw, tw + pf, M, D, C, ld_kv, r0, r1, causal,
                                     scale, tw + 2 * pf);
  } else {
    attnb_lse_rows(dq, dk, dv, q, k, v, dout, lse, dr, M, D, C, ld_kv, r0, r1, causal, scale, lq, lk, p, ds);
  }
}

/* Dr_i = dO_i . O_i for query rows [r0, r1) of one head (dout, o at its first column, stride C). */
/* Inside a parallel region of team threads: dk, dv rows [0, M) of one (item, head) (row stride
 * C, at offset ok; either may be NULL) = the sum over threads of their private (M, D) pairs,
 * thread th's at s + th * per + off (dk) and M * D further (dv), in thread order (the result
 * does not depend on the schedule). Shares the rows out over the team (an orphaned omp for). */
static void attnb_sum_private(float *dkd, float *dvd, int64_t ok, int64_t C, int64_t M, int64_t D, const float *s,
                              size_t per, size_t off, int team) {
#pragma omp for schedule(static)
  for (int64_t j = 0; j < M; j++) {
    float *dkr = dkd ? dkd + ok + j * C : NULL, *dvr = dvd ? dvd + ok + j * C : NULL;
    for (int64_t e = 0; e < D; e++) {
      if (dkr) dkr[e] = 0.0f;
      if (dvr) dvr[e] = 0.0f;
    }
    for (int th = 0; th < team; th++) {
      const float *tk = s + (size_t)th * per + off, *tv = tk + M * D;
      for (int64_t e = 0; e < D; e++) {
        if (dkr) dkr[e] += tk[j * D + e];
        if (dvr) dvr[e] += tv[j * D + e];
      }
    }
  }
}

static void attnb_rowdots(float *dr, const float *dout, const float *o, int64_t C, int64_t D, int64_t r0, int64_t r1) {
  for (int64_t i = r0; i < r1; i++) dr[i] = attnb_dot(dout + i * C, o + i * C, D);
}

/* The fast path over all (image, head)s; s: per-thread scratch of `per` floats. */
static void attnb_lse_cpu(float *dqd, float *dkd, float *dvd, const float *qd, const float *kd, const float *vd,
                          const float *dod, const float *od, const float *lsed, int64_t B, int64_t N, int64_t M,
                          int64_t C, int64_t heads, int64_t D, int causal, float scale, float *s, size_t per) {
  int threads = omp_get_max_threads(), tiled = nn_attention_tiled_usable(D);
  int64_t lq, lk;
  attnb_tile(&lq, &lk);
  size_t tile = (size_t)lq * (size_t)lk, toff = attnb_tiled_offset(N, M, D);
  int64_t bq = tiled ? NN_ATTN_TILED_ROWS : lq; /* query rows per block when a head's blocks are spread */
  int64_t tasks = B * heads, nqb = (N + bq - 1) / bq;
  int need_dr = dqd || dkd;
  double eff_across = (double)tasks / (double)(threads * ((tasks + threads - 1) / threads));
  double eff_within = (double)nqb / (double)(threads * ((nqb + threads - 1) / threads));
  if (N == 0 || threads == 1 || eff_across >= eff_within) {
#pragma omp parallel
    {
      float *p = s + (size_t)omp_get_thread_num() * per, *dr = p + 2 * tile + 2 * (size_t)M * (size_t)D;
      float *tw = tiled ? p + toff : NULL;
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < tasks; t++) {
        int64_t b = t / heads, h = t % heads, oq = b * N * C + h * D, ok = b * M * C + h * D;
        float *dkh = dkd ? dkd + ok : NULL, *dvh = dvd ? dvd + ok : NULL;
        for (int64_t j = 0; j < M; j++) {
          if (dkh) memset(dkh + j * C, 0, (size_t)D * sizeof(float));
          if (dvh) memset(dvh + j * C, 0, (size_t)D * sizeof(float));
        }
        if (need_dr) attnb_rowdots(dr, dod + oq, od + oq, C, D, 0, N);
        if (tw) attnb_pack_head(tw, kd + ok, vd + ok, M, D, C);
        attnb_lse_run(tw, dqd ? dqd + oq : NULL, dkh, dvh, qd + oq, kd + ok, vd + ok, dod + oq, lsed + t * N, dr, M, D,
                      C, C, 0, N, causal, scale, lq, lk, p, p + tile);
      }
    }
    return;
  }
  float *dr = s + (size_t)threads * per; /* shared by the team: one head's Dr */
  for (int64_t t = 0; t < tasks; t++) {
    int64_t b = t / heads, h = t % heads, oq = b * N * C + h * D, ok = b * M * C + h * D;
#pragma omp parallel
    {
      float *p = s + (size_t)omp_get_thread_num() * per, *pdk = p + 2 * tile, *pdv = pdk + M * D;
      float *tw = tiled ? p + toff : NULL;
      int team = omp_get_num_threads();
      if (dkd) memset(pdk, 0, (size_t)(M * D) * sizeof(float));
      if (dvd) memset(pdv, 0, (size_t)(M * D) * sizeof(float));
      if (tw) attnb_pack_head(tw, kd + ok, vd + ok, M, D, C); /* each thread its own copy: no barrier */
      if (need_dr) {
#pragma omp for schedule(static)
        for (int64_t qb = 0; qb < nqb; qb++)
          attnb_rowdots(dr, dod + oq, od + oq, C, D, qb * bq, qb * bq + bq < N ? qb * bq + bq : N);
      }
#pragma omp for schedule(dynamic, 1)
      for (int64_t qb = 0; qb < nqb; qb++) {
        int64_t i0 = qb * bq, i1 = i0 + bq < N ? i0 + bq : N;
        attnb_lse_run(tw, dqd ? dqd + oq : NULL, dkd ? pdk : NULL, dvd ? pdv : NULL, qd + oq, kd + ok, vd + ok,
                      dod + oq, lsed + t * N, dr, M, D, C, D, i0, i1, causal, scale, lq, lk, p, p + tile);
      }
      attnb_sum_private(dkd, dvd, ok, C, M, D, s, per, 2 * tile, team);
    }
  }
}

int nn_attention_ex_backward(nn_ctx *ctx, nn_tensor *dq, nn_tensor *dk, nn_tensor *dv, const nn_tensor *dout,
                             const nn_tensor *q, const nn_tensor *k, const nn_tensor *v, int64_t heads,
                             int causal, cmds_error *err) {
  return nn_attention_ex_backward_lse(ctx, dq, dk, dv, dout, q, k, v, NULL, NULL, heads, causal, err);
}

int nn_attention_ex_backward_lse(nn_ctx *ctx, nn_tensor *dq, nn_tensor *dk, nn_tensor *dv, const nn_tensor *dout,
                                 const nn_tensor *q, const nn_tensor *k, const nn_tensor *v, const nn_tensor *o,
                                 const nn_tensor *lse, int64_t heads, int causal, cmds_error *err) {
  const char *op = lse ? "nn_attention_ex_backward_lse" : "nn_attention_ex_backward";
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
  if (!rc && lse && !o) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: lse needs the forward's output o too", op);
  int64_t lshape[3] = {B, heads, N};
  if (!rc && lse) rc = nn_tensor_expect(o, op, "o", ctx->device, 3, q->shape, err);
  if (!rc && lse) rc = nn_tensor_expect(lse, op, "lse", ctx->device, 3, lshape, err);
  if (rc) return rc;
  const void *ins[6] = {q->data, k->data, v->data, dout->data, lse ? o->data : NULL, lse ? lse->data : NULL};
  nn_tensor *outs[3] = {dq, dk, dv};
  for (int i = 0; i < 3; i++) {
    if (!outs[i]) continue;
    for (int j = 0; j < 6; j++)
      if (outs[i]->data == ins[j])
        return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s must not alias q, k, v, dout, o or lse", op, i == 0 ? "dq" : i == 1 ? "dk" : "dv");
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
  const char *nolse = getenv("CMDS_NN_ATTNB_RECOMPUTE"); /* =1: the recomputing path even with lse (comparisons) */
  if (lse && !(nolse && atoi(nolse) > 0)) {
    size_t lper = attnb_lse_floats_per_thread(N, M, D);
    float *ls = nn_arena_alloc(ctx->scratch, ((size_t)threads * lper + (size_t)N) * sizeof(float), err);
    if (!ls) return cmds_error_wrap(err, "%s tiles", op);
    int blas_threads = nn_blas_serial_begin();
    attnb_lse_cpu(dqd, dkd, dvd, qd, kd, vd, dod, o->data, lse->data, B, N, M, C, heads, D, causal, scale, ls, lper);
    nn_blas_serial_end(blas_threads);
    nn_arena_rewind(ctx->scratch, mark);
    return CMDS_OK;
  }
  size_t per = attnb_cpu_floats_per_thread(M, D), blk = (size_t)ATTNB_QB * (size_t)M;
  float *s = nn_arena_alloc(ctx->scratch, (size_t)threads * per * sizeof(float), err);
  if (!s) return cmds_error_wrap(err, "%s scores", op);
  int64_t tasks = B * heads, nqb = (N + ATTNB_QB - 1) / ATTNB_QB;
  /* busy fraction of the threads over the run: across heads vs within a head */
  double eff_across = (double)tasks / (double)(threads * ((tasks + threads - 1) / threads));
  double eff_within = (double)nqb / (double)(threads * ((nqb + threads - 1) / threads));
  int blas_threads = nn_blas_serial_begin();
  if (N == 0 || threads == 1 || eff_across >= eff_within) {
#pragma omp parallel
    {
      float *p = s + (size_t)omp_get_thread_num() * per;
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < tasks; t++)
        attnb_task(dqd, dkd, dvd, qd, kd, vd, dod, t / heads, t % heads, N, M, C, D, causal, scale, p, p + blk);
    }
  } else {
    for (int64_t t = 0; t < tasks; t++) {
      int64_t b = t / heads, h = t % heads, oq = b * N * C + h * D, ok = b * M * C + h * D;
#pragma omp parallel
      {
        float *p = s + (size_t)omp_get_thread_num() * per, *pdk = p + 2 * blk, *pdv = pdk + M * D;
        int team = omp_get_num_threads(); /* the threads that zeroed and filled a private pair */
        if (dkd) memset(pdk, 0, (size_t)(M * D) * sizeof(float));
        if (dvd) memset(pdv, 0, (size_t)(M * D) * sizeof(float));
#pragma omp for schedule(dynamic, 1)
        for (int64_t qb = 0; qb < nqb; qb++) {
          int64_t i0 = qb * ATTNB_QB, m = N - i0 < ATTNB_QB ? N - i0 : ATTNB_QB;
          attnb_block(dqd ? dqd + oq : NULL, dkd ? pdk : NULL, dvd ? pdv : NULL, qd + oq, kd + ok, vd + ok, dod + oq,
                      M, D, C, D, i0, m, causal, scale, p, p + blk);
        }
        /* the implicit barrier above: every private pair is complete; add them up by key rows */
        attnb_sum_private(dkd, dvd, ok, C, M, D, s, per, 2 * blk, team);
      }
    }
  }
  nn_blas_serial_end(blas_threads);
  nn_arena_rewind(ctx->scratch, mark);
  return CMDS_OK;
}
