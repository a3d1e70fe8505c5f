/* norm: layer norm (ViT blocks) and group norm (the mapper), PyTorch semantics: biased
 * variance, y = (x - mean) / sqrt(var + eps) * gamma + beta.
 *   layer norm: x (..., C), normalised over the last dim; gamma, beta (C)
 *   group norm: x (B, C, H, W), statistics over (C/G, H, W) per group; gamma, beta (C)
 * gamma and beta may both be NULL (no affine). Statistics are accumulated in double on
 * the CPU (the reference) and with a two-pass mean/variance in fp32 on CUDA. */
#ifndef CMDS_NN_NORM_H
#define CMDS_NN_NORM_H

#include "tensor.h"

int nn_layernorm_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, const nn_tensor *gamma,
                         const nn_tensor *beta, float eps, cmds_error *err);
int nn_groupnorm_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, int64_t groups,
                         const nn_tensor *gamma, const nn_tensor *beta, float eps, cmds_error *err);

#endif
