/* activation: exact GELU and softmax over the last dim.
 *   gelu:    y = x * 0.5 * (1 + erf(x / sqrt(2)))    (nn.GELU(), approximate='none')
 *   softmax: x (..., C) -> y (..., C), y = exp(x - max) / sum exp(x - max) per row
 * y may alias x (in place) for both. */
#ifndef CMDS_NN_ACTIVATION_H
#define CMDS_NN_ACTIVATION_H

#include "tensor.h"

int nn_gelu_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err);
int nn_softmax_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err);

/* CPU row softmax on raw memory (attention reuses it). */
void nn_softmax_row_cpu(float *y, const float *x, int64_t n);

#endif
