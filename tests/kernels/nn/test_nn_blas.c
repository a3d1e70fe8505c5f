/* test_nn_blas: nn_blas_serial_begin / _end and nn_sgemm (kernels/nn/nn_blas.h) with whichever
 * OpenBLAS the process loaded (pthreads: Debian's default; OpenMP: many cluster builds, and
 * with_openblas_openmp.sh runs this test against Debian's).
 *  - Inside the region OpenMP keeps its thread count (with the OpenMP OpenBLAS,
 *    openblas_set_num_threads would have set it to 1), each thread's GEMM is right, and
 *    OpenBLAS's thread count is restored after.
 *  - nn_sgemm, cut into slabs over 3 and 4 OpenMP threads (by rows, by rows and columns, by
 *    columns, or not at all; every transpose, beta 0 and 1, padded leading dimensions): equal to
 *    a double-precision product within float rounding, bit-identical to the same call on 1
 *    thread when there are at least 48 rows per thread, nothing written outside C's M x N, and
 *    OpenBLAS's and OpenMP's thread counts unchanged after. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "nn/nn_blas.h"
#include "rng.h"

enum { M = 37, N = 29, K = 53 };

static float frand(cmds_rng *r) { return (float)(2.0 * cmds_rng_uniform(r) - 1.0); }

/* One nn_sgemm case: returns the number of failed checks. */
static int sgemm_case(int threads, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k,
                      float beta) {
  int64_t pad = 3, ar = ta == CblasNoTrans ? m : k, ac = ta == CblasNoTrans ? k : m;
  int64_t br = tb == CblasNoTrans ? k : n, bc = tb == CblasNoTrans ? n : k, lda = ac + pad, ldb = bc + pad,
          ldc = n + pad;
  float *a = malloc(sizeof(float) * (size_t)(ar * lda)), *b = malloc(sizeof(float) * (size_t)(br * ldb));
  float *c1 = malloc(sizeof(float) * (size_t)(m * ldc)), *c3 = malloc(sizeof(float) * (size_t)(m * ldc));
  cmds_rng seed;
  cmds_rng_seed(&seed, (uint64_t)(m * 1000003 + n * 1009 + k));
  for (int64_t i = 0; i < ar * lda; i++) a[i] = frand(&seed);
  for (int64_t i = 0; i < br * ldb; i++) b[i] = frand(&seed);
  for (int64_t i = 0; i < m * ldc; i++) c1[i] = c3[i] = frand(&seed);
  float *c0 = malloc(sizeof(float) * (size_t)(m * ldc));
  memcpy(c0, c1, sizeof(float) * (size_t)(m * ldc));
  omp_set_num_threads(1);
  nn_sgemm(ta, tb, m, n, k, 0.75f, a, lda, b, ldb, beta, c1, ldc);
  omp_set_num_threads(threads);
  int blas_before = openblas_get_num_threads();
  nn_sgemm(ta, tb, m, n, k, 0.75f, a, lda, b, ldb, beta, c3, ldc);
  int failed = check_failed_;
  CHECK(openblas_get_num_threads() == blas_before && omp_get_max_threads() == threads,
        "thread counts changed: OpenBLAS %d (was %d), OpenMP %d (was %d)", openblas_get_num_threads(), blas_before,
        omp_get_max_threads(), threads);
  double worst = 0;
  int64_t differ = 0, outside = 0;
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < ldc; j++) {
      int64_t at = i * ldc + j;
      if (j >= n) { /* the padding is C's neighbours' memory: never written */
        outside += c3[at] != c0[at];
        continue;
      }
      double want = beta * (double)c0[at], mag = fabs(want);
      for (int64_t p = 0; p < k; p++) {
        double x = ta == CblasNoTrans ? a[i * lda + p] : a[p * lda + i];
        double y = tb == CblasNoTrans ? b[p * ldb + j] : b[j * ldb + p];
        want += 0.75 * x * y;
        mag += fabs(0.75 * x * y);
      }
      double e = fabs(c3[at] - want) / (mag > 0 ? mag : 1);
      worst = e > worst ? e : worst;
      differ += memcmp(&c1[at], &c3[at], sizeof(float)) != 0;
    }
  const char *tn = ta == CblasNoTrans ? "N" : "T", *tm = tb == CblasNoTrans ? "N" : "T";
  CHECK(worst < 1e-6, "nn_sgemm %s%s %lldx%lldx%lld beta %g, %d threads: error %.2e of the terms' magnitude", tn,
        tm, (long long)m, (long long)n, (long long)k, beta, threads, worst);
  if (m >= 48 * threads) /* a row slab (on multiples of 48) per thread: the bits of one serial call */
    CHECK(differ == 0, "nn_sgemm %s%s %lldx%lldx%lld beta %g: %lld elements differ between 1 and %d threads", tn, tm,
          (long long)m, (long long)n, (long long)k, beta, (long long)differ, threads);
  else if (differ)
    printf("nn_sgemm %s%s %lldx%lldx%lld beta %g: %lld elements differ in the last bits between 1 and %d threads "
           "(fewer than 48 rows per thread: allowed)\n",
           tn, tm, (long long)m, (long long)n, (long long)k, beta, (long long)differ, threads);
  failed = check_failed_ - failed;
  free(a);
  free(b);
  free(c0);
  free(c1);
  free(c3);
  return failed;
}

int main(void) {
  const char *flavour[] = {"serial", "pthreads", "OpenMP"};
  int par = openblas_get_parallel();
  printf("OpenBLAS %s (%s), %d threads\n", openblas_get_config(), par >= 0 && par <= 2 ? flavour[par] : "unknown",
         openblas_get_num_threads());
  /* two OpenBLAS threads (so there is something to hold; with the OpenMP OpenBLAS this also sets
   * OpenMP's count), then three OpenMP threads, whatever the environment said */
  openblas_set_num_threads(2);
  omp_set_num_threads(3);
  int blas_before = openblas_get_num_threads();
  float a[M * K], b[K * N], want[M * N];
  for (int i = 0; i < M * K; i++) a[i] = (float)((i * 7) % 13) - 6.0f;
  for (int i = 0; i < K * N; i++) b[i] = (float)((i * 5) % 11) - 5.0f;
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      float s = 0;
      for (int k = 0; k < K; k++) s += a[i * K + k] * b[k * N + j];
      want[i * N + j] = s; /* small integers: exact in float whatever the order */
    }
  int saved = nn_blas_serial_begin();
  CHECK(omp_get_max_threads() == 3, "OpenMP's thread count changed to %d inside the region", omp_get_max_threads());
  int team = 0, wrong = 0;
#pragma omp parallel reduction(+ : wrong)
  {
#pragma omp single
    team = omp_get_num_threads();
    float c[M * N];
    for (int rep = 0; rep < 20; rep++) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
      for (int i = 0; i < M * N; i++) wrong += c[i] != want[i];
    }
  }
  nn_blas_serial_end(saved);
  CHECK(team == 3, "the parallel region ran on %d threads, 3 asked", team);
  CHECK(wrong == 0, "%d wrong GEMM elements across the threads", wrong);
  CHECK(openblas_get_num_threads() == blas_before, "OpenBLAS threads %d after the region, %d before",
        openblas_get_num_threads(), blas_before);
  CHECK(omp_get_max_threads() == 3, "OpenMP's thread count %d after the region", omp_get_max_threads());

  /* nn_sgemm on 3 and 4 threads: row slabs (48 rows or more per thread; boundaries on
   * multiples of 48, the last slab short), a grid of row and column slabs (100 x 200 on 4
   * threads: 2 x 2), column slabs (fewer than 96 rows), a single row or column, too small to cut */
  static const int64_t shapes[][3] = {{301, 40, 70}, {20, 333, 90}, {150, 97, 64},  {97, 150, 64},  {67, 65, 129},
                                      {9, 7, 5},     {1, 500, 300}, {500, 1, 300},  {785, 64, 48}, {100, 200, 64}};
  int failed = 0, cases = 0;
  for (int nt = 3; nt <= 4; nt++)
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
      for (int t = 0; t < 4; t++)
        for (int bz = 0; bz < 2; bz++, cases++)
          failed += sgemm_case(nt, t & 1 ? CblasTrans : CblasNoTrans, t & 2 ? CblasTrans : CblasNoTrans,
                               shapes[s][0], shapes[s][1], shapes[s][2], bz ? 1.0f : 0.0f);
  printf("nn_sgemm: %d cases, %d failed checks\n", cases, failed);
  return CHECK_DONE();
}
