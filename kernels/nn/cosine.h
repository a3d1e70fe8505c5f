/* cosine: per-pixel cosine distance over channels, 1 - F.cosine_similarity(a, b, dim=1,
 * eps=1e-8): each norm is clamped to eps separately, so a zero vector gives distance 1.
 *   a, b (B, C, H, W)  ->  d (B, H, W) */
#ifndef CMDS_NN_COSINE_H
#define CMDS_NN_COSINE_H

#include "tensor.h"

#define NN_COSINE_EPS 1e-8f

int nn_cosine_distance_forward(nn_ctx *ctx, nn_tensor *d, const nn_tensor *a, const nn_tensor *b,
                               cmds_error *err);

#endif
