/* nn_blas: OpenBLAS's own threads around our OpenMP regions, and nn_sgemm (internal to
 * kernels/nn). The CPU ops that run many small GEMMs in parallel (the attention forward and
 * backward) call OpenBLAS from inside their own OpenMP region, one GEMM per thread; OpenMP x
 * OpenBLAS threads must never nest.
 *  - pthreads OpenBLAS (Debian's default): held to one thread for the region, restored after.
 *  - OpenMP OpenBLAS (openblas_get_parallel() == 2): a GEMM inside a parallel region already runs
 *    on its calling thread, and openblas_set_num_threads would also call omp_set_num_threads,
 *    leaving every later OpenMP region of the process on one thread: nothing is done.
 *  - serial OpenBLAS: nothing to do.
 *   int saved = nn_blas_serial_begin();  ... #pragma omp parallel ... cblas_sgemm ...;
 *   nn_blas_serial_end(saved); */
#ifndef CMDS_NN_BLAS_H
#define CMDS_NN_BLAS_H

#include <cblas.h>
#include <stdint.h>

static inline int nn_blas_serial_begin(void) {
  if (openblas_get_parallel() != 1) return 0;
  int n = openblas_get_num_threads();
  if (n > 1) openblas_set_num_threads(1);
  return n;
}

static inline void nn_blas_serial_end(int saved) {
  if (saved > 1) openblas_set_num_threads(saved);
}

/* Row-major C = alpha op(A) op(B) + beta C (cblas_sgemm's arguments without the order), threaded by
 * our OpenMP pool with OpenBLAS serial in each thread (gemm.c says why); from inside a parallel
 * region, one serial call. Every CPU op's GEMM goes through here. */
void nn_sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

#endif
