/* nn_cuda: the C-callable entry points of the CUDA backend (the .cu files in kernels/nn) and the
 * check macros every CUDA / cuBLAS call goes through. Only the dispatchers in the .c
 * files call these, and only when CMDS_CUDA is defined; they take raw device pointers
 * whose shapes the dispatcher has already checked. Each returns 0 or a CMDS_E* code with
 * *err naming the call, file and line. */
#ifndef CMDS_NN_CUDA_H
#define CMDS_NN_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "cmds_error.h"
#include "tensor.h"

/* memory, handles, streams (tensor.cu) */
int nn_cuda_device_count(void);
int nn_cuda_set_device(int d);
int nn_cuda_malloc(void **p, size_t bytes, cmds_error *err);
void nn_cuda_free(void *p);
int nn_cuda_memcpy(void *dst, const void *src, size_t bytes, cmds_error *err);
int nn_cuda_blas_create(void **handle, void *stream, int allow_tf32, cmds_error *err);
void nn_cuda_blas_destroy(void *handle);
int nn_cuda_sync(void *stream, cmds_error *err);

/* ops: shapes as in the matching public header */
int nn_linear_cuda(nn_ctx *c, float *y, const float *x, const float *w, const float *b,
                   int64_t M, int64_t K, int64_t N, cmds_error *err);
int nn_conv2d_cuda(nn_ctx *c, float *y, const float *x, const float *w, const float *b,
                   int64_t B, int64_t Cin, int64_t Cout, int64_t H, int64_t W, int ksize,
                   float *cols, cmds_error *err);
int nn_layernorm_cuda(nn_ctx *c, float *y, const float *x, const float *g, const float *b,
                      int64_t rows, int64_t C, float eps, cmds_error *err);
int nn_groupnorm_cuda(nn_ctx *c, float *y, const float *x, const float *g, const float *b,
                      int64_t B, int64_t C, int64_t HW, int64_t G, float eps, cmds_error *err);
int nn_gelu_cuda(nn_ctx *c, float *y, const float *x, int64_t n, cmds_error *err);
int nn_add_cuda(nn_ctx *c, float *y, const float *a, const float *b, int64_t n, int64_t nb,
                cmds_error *err);
int nn_softmax_cuda(nn_ctx *c, float *y, const float *x, int64_t rows, int64_t cols,
                    cmds_error *err);
int nn_attention_cuda(nn_ctx *c, float *o, const float *q, const float *k, const float *v,
                      int64_t B, int64_t N, int64_t H, int64_t D, int64_t ld_q, int64_t ld_k,
                      int64_t ld_v, int64_t ld_o, cmds_error *err);
int nn_resize_cuda(nn_ctx *c, float *y, const float *x, int64_t BC, int64_t Hi, int64_t Wi,
                   int64_t Ho, int64_t Wo, int mode, cmds_error *err);
int nn_blur_cuda(nn_ctx *c, float *y, const float *x, int64_t BC, int64_t H, int64_t W,
                 const float *taps_host, int radius, float *tmp, cmds_error *err);
/* the diffusion networks' ops (conv.cu, activation.cu, resize.cu, attention.cu, elementwise.cu) */
int nn_conv2d_ex_cuda(nn_ctx *c, float *y, const float *x, const float *w, const float *b,
                      int64_t B, int64_t Cin, int64_t Cout, int64_t H, int64_t W, int ksize, int stride,
                      int pad_top, int pad_left, int64_t Ho, int64_t Wo, int64_t band_rows, float *cols,
                      cmds_error *err);
int nn_silu_cuda(nn_ctx *c, float *y, const float *x, int64_t n, float beta, cmds_error *err);
int nn_geglu_cuda(nn_ctx *c, float *y, const float *x, int64_t rows, int64_t F, cmds_error *err);
int nn_upsample_nearest2x_cuda(nn_ctx *c, float *y, const float *x, int64_t BC, int64_t H, int64_t W,
                               cmds_error *err);
int nn_attention_ex_cuda(nn_ctx *c, float *o, const float *q, const float *k, const float *v,
                         int64_t B, int64_t N, int64_t M, int64_t H, int64_t D, int causal,
                         float *scratch, size_t scratch_floats, cmds_error *err);
int nn_axpby_cuda(nn_ctx *c, float *y, float alpha, const float *a, float beta, const float *b,
                  int64_t n, cmds_error *err);
int nn_add_channel_cuda(nn_ctx *c, float *y, const float *a, const float *b, int64_t BC, int64_t HW,
                        cmds_error *err);
int nn_concat_channels_cuda(nn_ctx *c, float *y, const float *a, const float *b, int64_t B, int64_t Ca,
                            int64_t Cb, int64_t HW, cmds_error *err);
int nn_transpose12_cuda(nn_ctx *c, float *y, const float *x, int64_t B, int64_t R, int64_t S,
                        cmds_error *err);
int nn_cosine_distance_cuda(nn_ctx *c, float *d, const float *a, const float *b, int64_t B,
                            int64_t C, int64_t HW, float eps, cmds_error *err);

#ifdef __cplusplus
}
#endif

#ifdef __CUDACC__
#include <cublas_v2.h>
#include <cuda_runtime.h>

/* In functions that return an error code: fail with the call, file and line. */
#define CUDA_CHECK(call)                                                                   \
  do {                                                                                     \
    cudaError_t e_ = (call);                                                               \
    if (e_ != cudaSuccess)                                                                 \
      return CMDS_FAIL(err, CMDS_EINTERNAL, "%s:%d: %s: %s", __FILE__, __LINE__, #call,    \
                       cudaGetErrorString(e_));                                            \
  } while (0)
#define CUBLAS_CHECK(call)                                                                 \
  do {                                                                                     \
    cublasStatus_t s_ = (call);                                                            \
    if (s_ != CUBLAS_STATUS_SUCCESS)                                                       \
      return CMDS_FAIL(err, CMDS_EINTERNAL, "%s:%d: %s: cuBLAS status %d (%s)", __FILE__, \
                       __LINE__, #call, (int)s_, cublasGetStatusString(s_));              \
  } while (0)
/* After a kernel launch: reports a bad launch configuration at the launch site. */
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

static inline cudaStream_t nn_stream(const nn_ctx *c) { return (cudaStream_t)c->stream; }
static inline unsigned nn_grid(int64_t n, int block) { return (unsigned)((n + block - 1) / block); }
#endif

#endif
