/* resize: bilinear and bicubic resizing of NCHW float feature maps, exactly PyTorch's
 * F.interpolate(x, size=(Ho, Wo), mode=..., align_corners=False):
 *   source coordinate s = (dst + 0.5) * (in / out) - 0.5, in fp32 like PyTorch's CPU code;
 *   bilinear clamps s < 0 to 0 and blends the two neighbours (the upper one clamped);
 *   bicubic takes the 4 neighbours floor(s)-1 .. floor(s)+2 clamped to the border, with
 *   the cubic convolution kernel of A = -0.75, first along W then along H.
 *   x (B, C, Hi, Wi)  ->  y (B, C, Ho, Wo)  (sizes from y)
 * nn_upsample_nearest2x_forward: F.interpolate(x, scale_factor=2, mode="nearest") (the
 * diffusers Upsample2D): y[.., i, j] = x[.., i / 2, j / 2].
 *   x (B, C, H, W)  ->  y (B, C, 2H, 2W) */
#ifndef CMDS_NN_RESIZE_H
#define CMDS_NN_RESIZE_H

#include "tensor.h"

typedef enum { NN_RESIZE_BILINEAR = 0, NN_RESIZE_BICUBIC = 1 } nn_resize_mode;

int nn_resize_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, nn_resize_mode mode,
                      cmds_error *err);

int nn_upsample_nearest2x_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err);

#endif
