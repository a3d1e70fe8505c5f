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
 *   scale:           y = s x, same shape; y may be x
 * and their training counterparts (backward passes, losses, gradient norms):
 *   sum_hw:          x (B, C, H, W) -> y (B, C), the sum over H, W (the backward of add_channel's
 *                    broadcast); y must not alias x
 *   split_channels:  x (B, Ca + Cb, H, W) -> a (B, Ca, H, W), b (B, Cb, H, W) (the inverse of
 *                    concat_channels, i.e. its backward); a or b may be NULL (Ca or Cb then follows
 *                    from the other and x), not both; neither may alias x
 *   mse:             *loss = mean((p - t)^2) over all elements (accumulated in double); dp (p's shape)
 *                    SET to 2 (p - t) / numel, or NULL; dp may alias p or t
 *   sumsq:           *out = sum of x^2 (accumulated in double): squared gradient norms
 *   sumsq_many:      *out = the sum of x^2 over `count` tensors (a global gradient norm, as
 *                    torch's clip_grad_norm_ takes it): each tensor's sum as sumsq's, added in
 *                    order on the CPU; on CUDA one pass over all of them and one wait, instead of
 *                    a wait per tensor (chunks of 8192 values, a double partial each, added in
 *                    chunk order)
 * mse and sumsq on CUDA take 8 KiB of ctx->scratch, sumsq_many 24 bytes per chunk plus 8; they
 * wait for the stream (the result is a host double); their summation order is fixed (not thread-
 * or run-dependent) on both devices. */
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

int nn_sum_hw_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err);
int nn_split_channels_forward(nn_ctx *ctx, nn_tensor *a, nn_tensor *b, const nn_tensor *x, cmds_error *err);
int nn_mse_forward(nn_ctx *ctx, double *loss, nn_tensor *dp, const nn_tensor *p, const nn_tensor *t,
                   cmds_error *err);
int nn_sumsq_forward(nn_ctx *ctx, double *out, const nn_tensor *x, cmds_error *err);
int nn_sumsq_many_forward(nn_ctx *ctx, double *out, const nn_tensor *const *xs, int count, cmds_error *err);

#endif
