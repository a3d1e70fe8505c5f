// linear_backward.cu: nn_linear_backward on cuBLAS (column-major views of the row-major
// tensors): dX = dY W, dW += dY^T X, and a column-sum kernel for db.
#include "nn_cuda_train.h"

// db[j] += sum over rows of dy[r, j]: a block owns 32 columns, 8 lanes of rows each; the lanes'
// partial sums are added in lane order (fixed order, no atomics).
__global__ static void linb_bias(float *db, const float *dy, int64_t R, int64_t N) {
  __shared__ float part[8][33];
  int64_t j = (int64_t)blockIdx.x * 32 + threadIdx.x;
  float s = 0.0f;
  if (j < N)
    for (int64_t r = threadIdx.y; r < R; r += 8) s += dy[r * N + j];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && j < N) {
    float t = 0.0f;
    for (int i = 0; i < 8; i++) t += part[i][threadIdx.x];
    db[j] += t;
  }
}

extern "C" int nn_linear_backward_cuda(nn_ctx *c, float *dx, float *dw, float *db, const float *dy, const float *x,
                                       const float *w, int64_t R, int64_t K, int64_t N, cmds_error *err) {
  cublasHandle_t h = (cublasHandle_t)c->cublas;
  float one = 1.0f, zero = 0.0f;
  if (dx && R > 0 && K > 0) {
    if (N > 0)  // column-major: dX^T (K, R) = W^T (K, N) dY^T (N, R)
      CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, (int)K, (int)R, (int)N, &one, w, (int)K, dy, (int)N,
                               &zero, dx, (int)K));
    else
      CUDA_CHECK(cudaMemsetAsync(dx, 0, (size_t)(R * K) * sizeof(float), nn_stream(c)));
  }
  if (dw && R > 0 && N > 0 && K > 0)  // column-major: dW^T (K, N) += X^T (K, R) dY (R, N)
    CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, (int)K, (int)N, (int)R, &one, x, (int)K, dy, (int)N, &one,
                             dw, (int)K));
  if (db && N > 0) {
    linb_bias<<<nn_grid(N, 32), dim3(32, 8), 0, nn_stream(c)>>>(db, dy, R, N);
    CUDA_CHECK_LAUNCH();
  }
  return CMDS_OK;
}
