/* linear: y = x W^T + b, PyTorch's nn.Linear weight layout.
 *   x (..., K)   W (N, K)   b (N) or NULL   ->   y (..., N)
 * CPU: one cblas_sgemm. CUDA: cublasSgemm (fp32, or TF32 when ctx->allow_tf32) and a
 * bias kernel. */
#ifndef CMDS_NN_LINEAR_H
#define CMDS_NN_LINEAR_H

#include "tensor.h"

int nn_linear_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, const nn_tensor *w,
                      const nn_tensor *b, cmds_error *err);

/* The same on raw CPU arrays with row strides (ld_x >= K, ld_y >= N): lets callers run a
 * linear on a column block of a bigger matrix (the fused qkv of timm's ViT). */
void nn_linear_cpu(float *y, int64_t ld_y, const float *x, int64_t ld_x, const float *w,
                   const float *b, int64_t M, int64_t K, int64_t N);

#endif
