/* attention_tiled: the CPU attention forward over key tiles with our own AVX2/FMA micro-kernels
 * (see attention_tiled.h). Per image:
 *   1. K of every head is packed once into panels of 16 keys: Kp[h][panel][d][16] (keys past M
 *      zero), so the score kernel reads one contiguous 4 KiB panel (D = 64) per 16 keys;
 *   2. the (head, block of TQ query rows) tasks run in parallel (OpenMP, dynamic). A task scales
 *      its rows of q by 1/sqrt(D) into Qs (TQ, D) and walks the keys in tiles of TK: the score
 *      kernel (6 rows x 16 keys per call, FMA over d) fills S (TQ, TK), an online softmax turns
 *      each row into probabilities against its running max m and sum l (rescaling the row's
 *      output accumulator when m grows), and the P V kernel (6 rows x 16 or 8 columns per call,
 *      FMA over the tile's keys, V read in place) adds into O (TQ, D). At the end O / l goes to
 *      o and m + log l to lse.
 * Nothing is packed per query block, which is what the GEMM path pays OpenBLAS for (K and V
 * repacked for every block: about a third of its time at 9216 keys). Every value's sums run in a
 * fixed order (d, then keys in tile order), so the result does not depend on the thread count.
 * The backward with the forward's lse (backward_rows) runs on the same two kernels: S and dP by
 * the score kernel on K and V panels, dV, dQ and dK by the P V kernel (P and dS transposed for
 * dV and dK). */
#include "attention_tiled.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nn_fastexp.h"

#define TQ NN_ATTN_TILED_ROWS /* query rows per block: 16 calls of the 6-row kernels */
#define TK 256 /* keys per tile: S (96, 256) is 96 KiB, in L2 */
#define KP 16  /* keys per K panel */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(CMDS_NO_ATTN_TILED)
#define ATTN_TILED 1
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma")))
#else
#define ATTN_TILED 0
#endif

static int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

size_t nn_attention_tiled_floats(int64_t M, int64_t H, int64_t D) {
  return (size_t)H * (size_t)round_up(M, KP) * (size_t)D +
         (size_t)omp_get_max_threads() * (size_t)TQ * (size_t)(2 * D + TK + 2);
}

int nn_attention_tiled_usable(int64_t D) {
#if ATTN_TILED
  static int cpu = -1;
  if (cpu < 0) {
    __builtin_cpu_init();
    cpu = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
  const char *env = getenv("CMDS_NN_ATTN_KERNEL"); /* =blas: the GEMM path (comparisons) */
  if (env && !strcmp(env, "blas")) return 0;
  return cpu && D >= 8 && D <= 256 && D % 8 == 0;
#else
  (void)D;
  return 0;
#endif
}

#if ATTN_TILED
/* S[r][0..16) = Qs[r] . Kp[.][0..16) for R rows: acc 2R registers, one panel (D x 16). */
#define SCORE_KERNEL(R)                                                                           \
  AVX2 static void score_k##R(float *s, const float *qs, const float *kp, int64_t D) {            \
    __m256 a0[R], a1[R];                                                                          \
    _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) a0[r] = a1[r] = _mm256_setzero_ps();      \
    _Pragma("GCC unroll 4") for (int64_t d = 0; d < D; d++) {                                     \
      __m256 k0 = _mm256_loadu_ps(kp + d * KP), k1 = _mm256_loadu_ps(kp + d * KP + 8);            \
      _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) {                                       \
        __m256 qv = _mm256_broadcast_ss(qs + r * D + d);                                          \
        a0[r] = _mm256_fmadd_ps(qv, k0, a0[r]);                                                   \
        a1[r] = _mm256_fmadd_ps(qv, k1, a1[r]);                                                   \
      }                                                                                           \
    }                                                                                             \
    _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) {                                         \
      _mm256_storeu_ps(s + r * TK, a0[r]);                                                        \
      _mm256_storeu_ps(s + r * TK + 8, a1[r]);                                                    \
    }                                                                                             \
  }
SCORE_KERNEL(1)
SCORE_KERNEL(2)
SCORE_KERNEL(3)
SCORE_KERNEL(4)
SCORE_KERNEL(5)
SCORE_KERNEL(6)

/* O[r][c0 .. c0 + 16) += sum_j P[r][j] V[j][c0 .. c0 + 16) for R rows, j < kt (W = 16), or the
 * same over 8 columns (W = 8); O rows ldo apart, P rows ldp apart, V rows ld_v apart. */
#define PV_KERNEL(R)                                                                              \
  AVX2 static void pv_k##R(float *o, int64_t ldo, const float *p, int64_t ldp, const float *v,     \
                           int64_t ld_v, int64_t kt, int w16) {                                   \
    __m256 a0[R], a1[R];                                                                          \
    _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) {                                         \
      a0[r] = _mm256_loadu_ps(o + r * ldo);                                                       \
      a1[r] = w16 ? _mm256_loadu_ps(o + r * ldo + 8) : _mm256_setzero_ps();                       \
    }                                                                                             \
    if (w16) {                                                                                    \
      _Pragma("GCC unroll 4") for (int64_t j = 0; j < kt; j++) {                                  \
        __m256 v0 = _mm256_loadu_ps(v + j * ld_v), v1 = _mm256_loadu_ps(v + j * ld_v + 8);        \
        _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) {                                     \
          __m256 pv = _mm256_broadcast_ss(p + r * ldp + j);                                       \
          a0[r] = _mm256_fmadd_ps(pv, v0, a0[r]);                                                 \
          a1[r] = _mm256_fmadd_ps(pv, v1, a1[r]);                                                 \
        }                                                                                         \
      }                                                                                           \
    } else {                                                                                      \
      for (int64_t j = 0; j < kt; j++) {                                                          \
        __m256 v0 = _mm256_loadu_ps(v + j * ld_v);                                                \
        _Pragma("GCC unroll 6") for (int r = 0; r < R; r++)                                       \
            a0[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + r * ldp + j), v0, a0[r]);             \
      }                                                                                           \
    }                                                                                             \
    _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) {                                         \
      _mm256_storeu_ps(o + r * ldo, a0[r]);                                                       \
      if (w16) _mm256_storeu_ps(o + r * ldo + 8, a1[r]);                                          \
    }                                                                                             \
  }
PV_KERNEL(1)
PV_KERNEL(2)
PV_KERNEL(3)
PV_KERNEL(4)
PV_KERNEL(5)
PV_KERNEL(6)

typedef void (*score_fn)(float *, const float *, const float *, int64_t);
typedef void (*pv_fn)(float *, int64_t, const float *, int64_t, const float *, int64_t, int64_t, int);
static const score_fn score_k[7] = {NULL, score_k1, score_k2, score_k3, score_k4, score_k5, score_k6};
static const pv_fn pv_k[7] = {NULL, pv_k1, pv_k2, pv_k3, pv_k4, pv_k5, pv_k6};

/* O (rows, D; rows ldo apart) += P (rows, kt; ldp) V (kt, D; ld_v): 6-row groups by 16- (or
 * 8-) column tiles, the column tile outside so that V's columns stay in L1 across the groups. */
AVX2 static void pv_rows(float *o, int64_t ldo, const float *p, int64_t ldp, const float *v, int64_t ld_v,
                         int64_t rows, int64_t kt, int64_t D) {
  for (int64_t c0 = 0; c0 < D; c0 += 16)
    for (int64_t r0 = 0; r0 < rows; r0 += 6) {
      int R = rows - r0 < 6 ? (int)(rows - r0) : 6;
      pv_k[R](o + r0 * ldo + c0, ldo, p + r0 * ldp, ldp, v + c0, ld_v, kt, D - c0 >= 16);
    }
}

/* S (rows, TK-strided) = A (rows, D, contiguous) . the keys of ceil(n / 16) panels; a panel stays
 * in L1 across the row groups. Columns up to the panel's end are written. */
AVX2 static void score_rows(float *s, const float *a, const float *panels, int64_t rows, int64_t n, int64_t D) {
  int64_t np = (n + KP - 1) / KP;
  for (int64_t p = 0; p < np; p++)
    for (int64_t r0 = 0; r0 < rows; r0 += 6) {
      int R = rows - r0 < 6 ? (int)(rows - r0) : 6;
      score_k[R](s + r0 * TK + p * KP, a + r0 * D, panels + p * D * KP, D);
    }
}

/* One row's online softmax over a tile: s[0, valid) scores in, probabilities against the new
 * running max out, s[valid, kt) zeroed; returns the factor the row's earlier sum and output take. */
AVX2 static float online_row(float *s, int64_t kt, int64_t valid, float *m, float *l) {
  if (valid <= 0) {
    memset(s, 0, sizeof(float) * (size_t)kt);
    return 1.0f;
  }
  __m256 vm = _mm256_set1_ps(-INFINITY);
  int64_t j = 0;
  for (; j + 8 <= valid; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(s + j));
  float lanes[8], mx = -INFINITY;
  _mm256_storeu_ps(lanes, vm);
  for (int i = 0; i < 8; i++) mx = lanes[i] > mx ? lanes[i] : mx;
  for (; j < valid; j++) mx = s[j] > mx ? s[j] : mx;
  float mnew = mx > *m ? mx : *m, corr = *m == -INFINITY ? 0.0f : expf(*m - mnew);
  for (j = 0; j < valid; j++) s[j] = nn_fast_exp(s[j] - mnew); /* vectorised */
  for (j = valid; j < kt; j++) s[j] = 0.0f;
  *l = *l * corr + nn_fast_sum8(s, valid);
  *m = mnew;
  return corr;
}

/* One task: rows [i0, i0 + tq) of head h of image b. ws: this thread's TQ (2 D + TK + 2) floats. */
AVX2 static void tiled_task(float *o, float *lse, const float *q, const float *kp, const float *v, int64_t M,
                            int64_t D, int64_t ld_q, int64_t ld_v, int64_t ld_o, int64_t i0, int64_t tq,
                            int causal, float scale, float *ws) {
  float *qs = ws, *acc = qs + TQ * D, *s = acc + TQ * D, *mrow = s + TQ * TK, *lrow = mrow + TQ;
  for (int64_t r = 0; r < tq; r++) {
    const float *qr = q + (i0 + r) * ld_q;
    for (int64_t d = 0; d < D; d++) qs[r * D + d] = qr[d] * scale;
    mrow[r] = -INFINITY;
    lrow[r] = 0.0f;
  }
  memset(acc, 0, sizeof(float) * (size_t)(tq * D));
  int64_t kend = causal ? (i0 + tq < M ? i0 + tq : M) : M; /* keys past the block's last row: masked */
  for (int64_t j0 = 0; j0 < kend; j0 += TK) {
    int64_t kt = kend - j0 < TK ? kend - j0 : TK;
    score_rows(s, qs, kp + (j0 / KP) * D * KP, tq, kt, D);
    for (int64_t r = 0; r < tq; r++) {
      int64_t valid = causal ? i0 + r + 1 - j0 : kt;
      valid = valid < kt ? valid : kt;
      float corr = online_row(s + r * TK, kt, valid, &mrow[r], &lrow[r]);
      if (corr != 1.0f)
        for (int64_t c = 0; c < D; c++) acc[r * D + c] *= corr;
    }
    pv_rows(acc, D, s, TK, v + j0 * ld_v, ld_v, tq, kt, D);
  }
  for (int64_t r = 0; r < tq; r++) {
    float inv = 1.0f / lrow[r], *orow = o + (i0 + r) * ld_o;
    for (int64_t c = 0; c < D; c++) orow[c] = acc[r * D + c] * inv;
    if (lse) lse[i0 + r] = mrow[r] + logf(lrow[r]);
  }
}

/* t (cols, rows; ldt) = a (rows, cols; lda)^T. */
static void transpose(float *t, int64_t ldt, const float *a, int64_t lda, int64_t rows, int64_t cols) {
  for (int64_t r0 = 0; r0 < rows; r0 += 8)
    for (int64_t c0 = 0; c0 < cols; c0 += 8)
      for (int64_t c = c0; c < c0 + 8 && c < cols; c++)
        for (int64_t r = r0; r < r0 + 8 && r < rows; r++) t[c * ldt + r] = a[r * lda + c];
}

AVX2 static void backward_rows(float *dq, float *dk, float *dv, const float *q, const float *k, const float *dout,
                               const float *lse, const float *dr, const float *kp, const float *vp, int64_t M,
                               int64_t D, int64_t C, int64_t ld_kv, int64_t r0, int64_t r1, int causal, float scale,
                               float *ws) {
  float *qs = ws, *dos = qs + TQ * D, *dqa = dos + TQ * D, *p = dqa + TQ * D, *ds = p + TQ * TK, *t = ds + TQ * TK;
  for (int64_t i0 = r0; i0 < r1; i0 += TQ) {
    int64_t m = r1 - i0 < TQ ? r1 - i0 : TQ, kend = causal ? (i0 + m < M ? i0 + m : M) : M;
    for (int64_t r = 0; r < m; r++) {
      memcpy(qs + r * D, q + (i0 + r) * C, sizeof(float) * (size_t)D);
      memcpy(dos + r * D, dout + (i0 + r) * C, sizeof(float) * (size_t)D);
    }
    memset(dqa, 0, sizeof(float) * (size_t)(m * D));
    for (int64_t j0 = 0; j0 < kend; j0 += TK) {
      int64_t n = kend - j0 < TK ? kend - j0 : TK;
      score_rows(p, qs, kp + (j0 / KP) * D * KP, m, n, D); /* S = Q K_j^T */
      for (int64_t r = 0; r < m; r++) {                     /* P = exp(s S - lse) */
        float *pr = p + r * TK, l = lse[i0 + r];
        int64_t valid = causal ? i0 + r + 1 - j0 : n;
        valid = valid < 0 ? 0 : valid < n ? valid : n;
        for (int64_t j = 0; j < valid; j++) pr[j] = nn_fast_exp(pr[j] * scale - l); /* vectorised */
        for (int64_t j = valid; j < n; j++) pr[j] = 0.0f;
      }
      if (dv) { /* dV_j += P^T dO */
        transpose(t, TQ, p, TK, m, n);
        pv_rows(dv + j0 * ld_kv, ld_kv, t, TQ, dos, D, n, m, D);
      }
      if (!dq && !dk) continue;
      score_rows(ds, dos, vp + (j0 / KP) * D * KP, m, n, D); /* dP = dO V_j^T */
      for (int64_t r = 0; r < m; r++) {                       /* dS = s P (dP - Dr) */
        const float *pr = p + r * TK;
        float *dsr = ds + r * TK, d = dr[i0 + r];
        for (int64_t j = 0; j < n; j++) dsr[j] = scale * pr[j] * (dsr[j] - d);
      }
      if (dq) pv_rows(dqa, D, ds, TK, k + j0 * C, C, m, n, D); /* dQ += dS K_j */
      if (dk) {                                                  /* dK_j += dS^T Q */
        transpose(t, TQ, ds, TK, m, n);
        pv_rows(dk + j0 * ld_kv, ld_kv, t, TQ, qs, D, n, m, D);
      }
    }
    if (dq)
      for (int64_t r = 0; r < m; r++) memcpy(dq + (i0 + r) * C, dqa + r * D, sizeof(float) * (size_t)D);
  }
}

#endif

void nn_attention_tiled_pack(float *kp, const float *k, int64_t M, int64_t D, int64_t ld_k) {
  int64_t panels = (M + KP - 1) / KP;
  for (int64_t p = 0; p < panels; p++)
    for (int64_t jj = 0; jj < KP; jj++) {
      int64_t j = p * KP + jj;
      float *dst = kp + p * D * KP + jj;
      if (j < M)
        for (int64_t d = 0; d < D; d++) dst[d * KP] = k[j * ld_k + d];
      else
        for (int64_t d = 0; d < D; d++) dst[d * KP] = 0.0f;
    }
}

void nn_attention_tiled(float *o, float *lse, const float *q, const float *k, const float *v, int64_t B, int64_t N,
                        int64_t M, int64_t H, int64_t D, int64_t ld_q, int64_t ld_k, int64_t ld_v, int64_t ld_o,
                        int causal, float *scratch) {
#if ATTN_TILED
  const float scale = 1.0f / sqrtf((float)D);
  const int64_t Mp = round_up(M, KP), nqb = (N + TQ - 1) / TQ, tasks = H * nqb;
  float *kp = scratch, *per_thread = scratch + (size_t)H * (size_t)Mp * (size_t)D;
  for (int64_t b = 0; b < B; b++) {
#pragma omp parallel for schedule(static)
    for (int64_t h = 0; h < H; h++) nn_attention_tiled_pack(kp + h * Mp * D, k + b * M * ld_k + h * D, M, D, ld_k);
#pragma omp parallel
    {
      float *ws = per_thread + (size_t)omp_get_thread_num() * (size_t)TQ * (size_t)(2 * D + TK + 2);
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < tasks; t++) {
        int64_t h = t / nqb, i0 = (t % nqb) * TQ, tq = N - i0 < TQ ? N - i0 : TQ;
        tiled_task(o + b * N * ld_o + h * D, lse ? lse + (b * H + h) * N : NULL, q + b * N * ld_q + h * D,
                   kp + h * Mp * D, v + b * M * ld_v + h * D, M, D, ld_q, ld_v, ld_o, i0, tq, causal, scale, ws);
      }
    }
  }
#else
  (void)o, (void)lse, (void)q, (void)k, (void)v, (void)B, (void)N, (void)M, (void)H, (void)D;
  (void)ld_q, (void)ld_k, (void)ld_v, (void)ld_o, (void)causal, (void)scratch;
  abort(); /* nn_attention_tiled_usable said 0 */
#endif
}

size_t nn_attention_tiled_packed_floats(int64_t M, int64_t D) { return (size_t)round_up(M, KP) * (size_t)D; }

size_t nn_attention_tiled_backward_floats(int64_t D) { return 3 * (size_t)TQ * (size_t)D + 3 * (size_t)TQ * TK; }

void nn_attention_tiled_backward_rows(float *dq, float *dk, float *dv, const float *q, const float *k,
                                      const float *dout, const float *lse, const float *dr, const float *kp,
                                      const float *vp, int64_t M, int64_t D, int64_t C, int64_t ld_kv, int64_t r0,
                                      int64_t r1, int causal, float scale, float *ws) {
#if ATTN_TILED
  backward_rows(dq, dk, dv, q, k, dout, lse, dr, kp, vp, M, D, C, ld_kv, r0, r1, causal, scale, ws);
#else
  (void)dq, (void)dk, (void)dv, (void)q, (void)k, (void)dout, (void)lse, (void)dr, (void)kp, (void)vp, (void)M;
  (void)D, (void)C, (void)ld_kv, (void)r0, (void)r1, (void)causal, (void)scale, (void)ws;
  abort(); /* nn_attention_tiled_usable said 0 */
#endif
}
