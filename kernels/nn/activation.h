/* activation: exact GELU, softmax over the last dim, SiLU, quick GELU and GEGLU.
 *   gelu:    y = x * 0.5 * (1 + erf(x / sqrt(2)))    (nn.GELU(), approximate='none')
 *   softmax: x (..., C) -> y (..., C), y = exp(x - max) / sum exp(x - max) per row
 *   silu:       y = x * sigmoid(x) = x / (1 + exp(-x))            (nn.SiLU)
 *   quick_gelu: y = x * sigmoid(1.702 x)                            (transformers' quick_gelu)
 *   geglu:      x (..., 2F) -> y (..., F), y = x[..., :F] * gelu(x[..., F:]) with the exact
 *               (erf) GELU: diffusers' GEGLU after its projection (hidden, gate = chunk(2)).
 * y may alias x (in place) for gelu, softmax, silu and quick_gelu; not for geglu. */
#ifndef CMDS_NN_ACTIVATION_H
#define CMDS_NN_ACTIVATION_H

#include "tensor.h"

int nn_gelu_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err);
int nn_softmax_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err);
int nn_silu_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err);
int nn_quick_gelu_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err);
int nn_geglu_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err);

/* CPU row softmax on raw memory (attention reuses it). */
void nn_softmax_row_cpu(float *y, const float *x, int64_t n);

#endif
