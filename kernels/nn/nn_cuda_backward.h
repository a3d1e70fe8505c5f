/* nn_cuda_backward: C-callable CUDA entry points of backward.h (conv_backward.cu,
 * norm_backward.cu, activation_backward.cu); raw device pointers, shapes checked by the
 * dispatchers in the matching .c files. */
#ifndef CMDS_NN_CUDA_BACKWARD_H
#define CMDS_NN_CUDA_BACKWARD_H

#include "nn_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cols: Cin*k*k*H*W floats of device scratch when k = 3 (else unused). */
int nn_conv2d_backward_cuda(nn_ctx *c, float *dx, float *dw, float *db, const float *dy,
                            const float *x, const float *w, int64_t B, int64_t Cin, int64_t Cout,
                            int64_t H, int64_t W, int ksize, float *cols, cmds_error *err);
/* stats: 2*B*G floats of device scratch. */
int nn_groupnorm_backward_cuda(nn_ctx *c, float *dx, float *dgamma, float *dbeta, const float *dy,
                               const float *x, const float *gamma, int64_t B, int64_t C,
                               int64_t HW, int64_t G, float eps, float *stats, cmds_error *err);
int nn_gelu_backward_cuda(nn_ctx *c, float *dx, const float *dy, const float *x, int64_t n,
                          cmds_error *err);

#ifdef __cplusplus
}
#endif

#endif
