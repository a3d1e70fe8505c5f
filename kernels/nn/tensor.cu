// tensor.cu: device memory, copies, the cuBLAS handle and stream sync for the nn CUDA
// backend (entry points in nn_cuda.h). Every call is checked and reported with file and
// line through the cmds_error of the caller.
#include <stdio.h>

#include "nn_cuda.h"

extern "C" int nn_cuda_set_device(int d) { return cudaSetDevice(d) == cudaSuccess ? 0 : -1; }

extern "C" int nn_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error so later calls start clean
    return 0;
  }
  return n;
}

extern "C" int nn_cuda_malloc(void **p, size_t bytes, cmds_error *err) {
  CUDA_CHECK(cudaMalloc(p, bytes));
  return CMDS_OK;
}

extern "C" void nn_cuda_free(void *p) { cudaFree(p); }

extern "C" int nn_cuda_memcpy(void *dst, const void *src, size_t bytes, cmds_error *err) {
  // cudaMemcpyDefault: unified addressing tells host from device; the legacy default
  // stream orders this after work queued on blocking streams.
  CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
  return CMDS_OK;
}

extern "C" int nn_cuda_blas_create(void **handle, void *stream, int allow_tf32, cmds_error *err) {
  cublasHandle_t h;
  CUBLAS_CHECK(cublasCreate(&h));
  *handle = h;
  CUBLAS_CHECK(cublasSetStream(h, (cudaStream_t)stream));
  // Default math is plain fp32 (parity with the CPU path); TF32 only when asked for.
  CUBLAS_CHECK(cublasSetMathMode(h, allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  return CMDS_OK;
}

extern "C" void nn_cuda_blas_destroy(void *handle) { cublasDestroy((cublasHandle_t)handle); }

extern "C" int nn_cuda_sync(void *stream, cmds_error *err) {
  CUDA_CHECK(cudaStreamSynchronize((cudaStream_t)stream));
  CUDA_CHECK(cudaGetLastError());
  return CMDS_OK;
}

extern "C" void nn_cuda_device_name(char *buf, size_t n) {
  int d = 0;
  cudaDeviceProp p;
  if (cudaGetDevice(&d) != cudaSuccess || cudaGetDeviceProperties(&p, d) != cudaSuccess) {
    cudaGetLastError();
    snprintf(buf, n, "cuda (device unknown)");
    return;
  }
  int drv = 0;
  cudaDriverGetVersion(&drv);
  snprintf(buf, n, "%s (%d SMs, %.0f GiB, CUDA driver %d.%d)", p.name, p.multiProcessorCount,
           (double)p.totalGlobalMem / (1 << 30), drv / 1000, (drv % 1000) / 10);
}
