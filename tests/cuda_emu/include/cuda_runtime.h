/* cuda_runtime.h of the CUDA emulation (tests/cuda_emu): the part of the CUDA runtime API this
 * project calls, implemented on the CPU by tests/cuda_emu/emu.cpp. "Device" memory is host
 * memory the emulation tracks; every call is synchronous. C and C++ (comm/collective.c includes
 * it from C); the device side (built-in variables, __syncthreads, shuffles, the launch) is C++
 * only, in cuda_emu_device.h. Never used by a real CUDA build: nvcc finds the toolkit's header. */
#ifndef CMDS_CUDA_EMU_RUNTIME_H
#define CMDS_CUDA_EMU_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#define CMDS_CUDA_EMU 1

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorLaunchFailure = 719
} cudaError_t;

typedef struct CUstream_st *cudaStream_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  int warpSize;
  int maxThreadsPerBlock;
  int multiProcessorCount;
  int major, minor;
};
typedef struct cudaDeviceProp cudaDeviceProp;

cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d);
cudaError_t cudaDriverGetVersion(int *v);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind,
                            cudaStream_t s);
cudaError_t cudaMemset(void *p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaGetLastError(void);
const char *cudaGetErrorString(cudaError_t e);
/* cudaFuncSetAttribute: the kernel's text is kept with the value, and a launch of that text with
 * over 48 KiB of dynamic shared memory needs MaxDynamicSharedMemorySize set to at least that. */
cudaError_t cmds_emu_func_set_attribute(const char *kernel, enum cudaFuncAttribute a, int value);

/* The emulation's own calls (tests): is p inside a cudaMalloc block (p == end counts)? */
int cmds_emu_is_device(const void *p);

#ifdef __cplusplus
}
#define cudaFuncSetAttribute(fn, a, v) ((void)(fn), cmds_emu_func_set_attribute(#fn, a, v))
#include "cuda_emu_device.h"
#endif

#endif
