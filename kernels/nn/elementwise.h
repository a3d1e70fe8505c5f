/* elementwise: y = a + b with b broadcast by repetition (numel(b) divides numel(a)):
 * residual additions (same shape) and position embeddings added to every image of a
 * batch ((B, N, D) + (N, D)). y may be a. */
#ifndef CMDS_NN_ELEMENTWISE_H
#define CMDS_NN_ELEMENTWISE_H

#include "tensor.h"

int nn_add_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *a, const nn_tensor *b, cmds_error *err);

#endif
