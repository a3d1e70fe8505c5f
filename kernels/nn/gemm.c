/* gemm: nn_sgemm (see nn_blas.h), the CPU ops' one entry to OpenBLAS's sgemm. One thread pool:
 * the C matrix is cut into one slab of rows per OpenMP thread (a grid of rows and columns when
 * there are too few rows), and each slab is a serial OpenBLAS call on its own thread. Letting OpenBLAS thread the
 * GEMMs itself puts a second pool beside OpenMP's: a perf profile of the ViT-B/8 forward on 2
 * cores had about a fifth of its samples in the two pools' idle workers spinning and yielding
 * (OpenBLAS's after each GEMM while our OpenMP ops ran, OpenMP's while OpenBLAS ran), on cores
 * the working threads needed.
 *
 * Reproducible across thread counts. OpenBLAS's result for an element of C depends on where the
 * element falls in its micro-kernel's tiles, so its own threading changes the last bits with the
 * thread count (sgemm 1570 x 2304 x 768 on Zen: 150934 elements differ between 1 and 2 threads).
 * Row slabs start on multiples of NN_GEMM_ROWS, which the micro-kernels' row tiles divide (12 on
 * Zen/Haswell; 4, 8 or 16 elsewhere), so every element lands in the same tile as in one serial
 * call: a GEMM of at least NN_GEMM_ROWS rows per thread is bit-identical whatever the thread
 * count (kernels.nn.blas checks it). Column slabs change the last bits (OpenBLAS blocks its
 * loops by the width of the call): they are used only when there are fewer rows than that, in
 * a grid with the row slabs, so that every thread still works (a 320-channel convolution on 16
 * threads: 6 row slabs x 2 column slabs, not 6 threads of 16). */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nn_blas.h"

/* Below this many multiply-adds per thread the slabs' fork and join cost more than they save. */
#define NN_GEMM_MIN_MACS_PER_THREAD ((double)(1 << 18))
/* Row slabs start on multiples of this (see above), column slabs on multiples of NN_GEMM_COLS. */
#define NN_GEMM_ROWS 48
#define NN_GEMM_COLS 16

/* Slabs of at least `unit` along a dimension of n, for up to t threads. */
static int slabs(int64_t n, int64_t unit, int t) {
  int64_t most = n / unit;
  return most < t ? (int)(most > 0 ? most : 1) : t;
}

/* [lo, hi) of slab s of n slabs over length len, boundaries on multiples of unit. */
static void slab_range(int64_t len, int64_t unit, int n, int s, int64_t *lo, int64_t *hi) {
  int64_t units = (len + unit - 1) / unit;
  *lo = units * s / n * unit;
  *hi = units * (s + 1) / n * unit;
  if (*lo > len) *lo = len;
  if (*hi > len) *hi = len;
}

void nn_sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  const char *mode = getenv("CMDS_NN_GEMM_THREADS"); /* "blas": OpenBLAS threads each GEMM (to compare) */
  if (mode && !strcmp(mode, "blas")) {
    cblas_sgemm(CblasRowMajor, ta, tb, (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
    return;
  }
  int t = omp_in_parallel() ? 1 : omp_get_max_threads();
  double macs = (double)M * (double)N * (double)(K > 0 ? K : 1);
  if (t > 1 && macs / t < NN_GEMM_MIN_MACS_PER_THREAD) {
    int fit = (int)(macs / NN_GEMM_MIN_MACS_PER_THREAD);
    t = fit > 1 ? fit : 1;
  }
  /* Row slabs when every thread gets one (reproducible); with fewer rows than that, a grid of
   * row slabs x column slabs so that all the threads still work (not reproducible). */
  int r = slabs(M, NN_GEMM_ROWS, t), c = r == t ? 1 : slabs(N, NN_GEMM_COLS, t / r);
  if (r * c <= 1) { /* one serial call (inside a parallel region OpenBLAS is already serial) */
    int saved = omp_in_parallel() ? 0 : nn_blas_serial_begin();
    cblas_sgemm(CblasRowMajor, ta, tb, (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
    nn_blas_serial_end(saved);
    return;
  }
  int saved = nn_blas_serial_begin();
#pragma omp parallel for num_threads(r * c) schedule(static, 1)
  for (int s = 0; s < r * c; s++) {
    int64_t i0, i1, j0, j1; /* rows i0..i1 of op(A) and C, columns j0..j1 of op(B) and C */
    slab_range(M, NN_GEMM_ROWS, r, s / c, &i0, &i1);
    slab_range(N, NN_GEMM_COLS, c, s % c, &j0, &j1);
    if (i1 <= i0 || j1 <= j0) continue;
    const float *a = ta == CblasNoTrans ? A + i0 * lda : A + i0, *b = tb == CblasNoTrans ? B + j0 : B + j0 * ldb;
    cblas_sgemm(CblasRowMajor, ta, tb, (int)(i1 - i0), (int)(j1 - j0), (int)K, alpha, a, (int)lda, b, (int)ldb, beta,
                C + i0 * ldc + j0, (int)ldc);
  }
  nn_blas_serial_end(saved);
}
