/* elementwise: y = a + b with b broadcast by repetition (numel(b) divides numel(a)):
 * residual additions (same shape) and position embeddings added to every image of a
 * batch ((B, N, D) + (N, D)). y may be a.
 * The diffusion networks' glue (all f32, one device):
 *   axpby:           y = alpha a + beta b, same element count (shapes may differ); y may alias a or b
 *   add_channel:     a (B, C, H, W) + b (B, C) broadcast over H, W (a ResNet block's time
 *                    embedding) -> y (B, C, H, W); y may be a
 *   concat_channels: a (B, Ca, H, W) ++ b (B, Cb, H, W) -> y (B, Ca + Cb, H, W) (UNet skips,
 *                    Marigold's 8-channel input); y must not alias a or b
 *   transpose12:     x (B, R, S) -> y (B, S, R) (NCHW viewed as (B, C, HW) <-> tokens (B, HW, C));
 *                    y must not alias x
 *   scale:           y = s x, same shape; y may be x */
#ifndef CMDS_NN_ELEMENTWISE_H
#define CMDS_NN_ELEMENTWISE_H

#include "tensor.h"

int nn_add_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *a, const nn_tensor *b, cmds_error *err);

int nn_axpby_forward(nn_ctx *ctx, nn_tensor *y, float alpha, const nn_tensor *a, float beta,
                     const nn_tensor *b, cmds_error *err);
int nn_add_channel_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *a, const nn_tensor *b,
                           cmds_error *err);
int nn_concat_channels_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *a, const nn_tensor *b,
                               cmds_error *err);
int nn_transpose12_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err);
int nn_scale_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, float s, cmds_error *err);

#endif
