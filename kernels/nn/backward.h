/* backward: the hand-written backward passes of the nn ops the mapper trains through
 * (conv 1x1/3x3, group norm, GELU), beside their forwards in conv.h, norm.h and
 * activation.h. Same conventions as the forwards: every call runs on ctx's device, shapes
 * are checked, scratch comes from ctx->scratch and is handed back. Parameter gradients
 * are ACCUMULATED (+=), so micro-batches and several uses of one weight add up; input
 * gradients are SET.
 *
 *   conv:  x (B, Cin, H, W), W (Cout, Cin, k, k), dy (B, Cout, H, W)
 *          dx (B, Cin, H, W) or NULL (not wanted); dw += dL/dW; db (Cout) += dL/db or NULL.
 *          k = 3 needs Cin*9*H*W floats of scratch (one image at a time, on both devices).
 *   group norm: x (B, C, H, W) the forward's INPUT, gamma (C) or NULL; dy (B, C, H, W)
 *          dx (may alias dy); dgamma, dbeta (C) += (both NULL when gamma is NULL).
 *          Statistics are recomputed from x (double on the CPU, fp32 two-pass on CUDA);
 *          CUDA takes 2*B*groups floats of scratch.
 *   gelu:  dx = dy * GELU'(x), exact erf form; dx may alias dy. */
#ifndef CMDS_NN_BACKWARD_H
#define CMDS_NN_BACKWARD_H

#include "tensor.h"

int nn_conv2d_backward(nn_ctx *ctx, nn_tensor *dx, nn_tensor *dw, nn_tensor *db, const nn_tensor *dy,
                       const nn_tensor *x, const nn_tensor *w, cmds_error *err);
int nn_groupnorm_backward(nn_ctx *ctx, nn_tensor *dx, nn_tensor *dgamma, nn_tensor *dbeta,
                          const nn_tensor *dy, const nn_tensor *x, int64_t groups,
                          const nn_tensor *gamma, float eps, cmds_error *err);
int nn_gelu_backward(nn_ctx *ctx, nn_tensor *dx, const nn_tensor *dy, const nn_tensor *x,
                     cmds_error *err);

#endif
