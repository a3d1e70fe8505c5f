/* blur: Gaussian blur of NCHW maps over H and W, as scipy.ndimage.gaussian_filter(x,
 * sigma=(0, 0, s, s), mode='reflect', truncate=4.0) computes it (the anomaly-map
 * smoothing): radius r = int(4 * s + 0.5), taps exp(-t^2 / (2 s^2)) for t = -r..r
 * normalised to sum 1, applied along H and then along W, borders mirrored with the edge
 * sample repeated (d c b a | a b c d | d c b a), reflecting again as often as needed
 * when r exceeds the size. s = 0 copies.
 *   x (B, C, H, W)  ->  y (B, C, H, W); scratch: B*C*H*W floats (the H pass). */
#ifndef CMDS_NN_BLUR_H
#define CMDS_NN_BLUR_H

#include "tensor.h"

#define NN_BLUR_MAX_RADIUS 256

int nn_blur_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, float sigma, cmds_error *err);

/* The radius and the 2r+1 normalised taps for sigma (taps needs 2*NN_BLUR_MAX_RADIUS+1). */
int nn_blur_taps(float sigma, double *taps, int *radius, cmds_error *err);

#endif
