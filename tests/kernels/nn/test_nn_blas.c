/* test_nn_blas: nn_blas_serial_begin / _end (kernels/nn/nn_blas.h) with whichever OpenBLAS the
 * process loaded (pthreads: Debian's default; OpenMP: many cluster builds, and
 * with_openblas_openmp.sh runs this test against Debian's). Inside the region OpenMP keeps its
 * thread count (with the OpenMP OpenBLAS, openblas_set_num_threads would have set it to 1), each
 * thread's GEMM is right, and OpenBLAS's thread count is restored after. */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

#include "check.h"
#include "nn/nn_blas.h"

enum { M = 37, N = 29, K = 53 };

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
  return CHECK_DONE();
}
