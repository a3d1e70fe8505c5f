/* conv_internal: what the general convolution's forward (conv.c) and backward
 * (conv_ex_backward.c) share on the CPU: the im2col band size and the band's im2col. Not
 * part of the nn interface. */
#ifndef CMDS_NN_CONV_INTERNAL_H
#define CMDS_NN_CONV_INTERNAL_H

#include <stdint.h>

#include "tensor.h"

/* Output rows per im2col band: as many as fit in the device's cap of column floats, at least
 * one, at most Ho. CMDS_NN_CONV_BAND_FLOATS in the environment overrides the cap (tests use
 * it to force many bands on small images). */
int64_t nn_conv_ex_band_rows(nn_device device, int64_t K, int64_t Ho, int64_t Wo);

/* cols (Cin*k*k, rows*Wo) for output rows [r0, r0 + rows) of one image:
 * row (c, ky, kx), column (oi - r0, oj) holds x[c, oi*s - pt + ky, oj*s - pl + kx], 0 outside. */
void nn_conv_ex_im2col(float *cols, const float *x, int64_t Cin, int64_t H, int64_t W, int64_t k, int64_t s,
                       int64_t pt, int64_t pl, int64_t r0, int64_t rows, int64_t Wo);

#endif
