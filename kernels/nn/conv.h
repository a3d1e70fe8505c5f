/* conv: 2-D convolution with stride 1 and "same" padding for the mapper's 1x1 and 3x3
 * convolutions (PyTorch nn.Conv2d(Cin, Cout, k, padding=k//2), weight layout).
 *   x (B, Cin, H, W)   W (Cout, Cin, k, k), k in {1, 3}   b (Cout) or NULL
 *   -> y (B, Cout, H, W)
 * k = 1 is one GEMM per image: y_b (Cout, HW) = W (Cout, Cin) x_b (Cin, HW).
 * k = 3 unfolds each image into columns (Cin*9, HW) in the context's scratch arena
 * (im2col, zero padding) and does the same GEMM with K = Cin*9. Scratch needed:
 * Cin*9*H*W floats on the CPU, B times that on CUDA (all images in one batched GEMM).
 *
 * nn_conv2d_ex_forward: any square kernel k, any stride, asymmetric zero padding
 * (PyTorch's F.conv2d after F.pad(x, (left, right, top, bottom)); the diffusers VAE
 * downsampler pads (0, 1, 0, 1) and convolves 3x3 with stride 2).
 *   x (B, Cin, H, W)   W (Cout, Cin, k, k)   b (Cout) or NULL   ->   y (B, Cout, Ho, Wo)
 *   Ho = (H + pad_top + pad_bottom - k) / stride + 1, Wo likewise (floor); y sized by the caller.
 * k = 1, stride 1, no padding: one GEMM per image (no scratch). Otherwise im2col into the
 * context's scratch over bands of output rows, so that the columns stay bounded
 * (nn_conv2d_ex_scratch_bytes) whatever the image size, and one GEMM per band:
 * y_b[:, band] (Cout, rows*Wo) = W (Cout, Cin*k*k) cols (Cin*k*k, rows*Wo).
 * CUDA: the same bands, im2col kernel + cuBLAS. Band caps: 8 Mi floats on the CPU, 32 Mi on
 * CUDA (CMDS_NN_CONV_BAND_FLOATS in the environment overrides them, for tests). */
#ifndef CMDS_NN_CONV_H
#define CMDS_NN_CONV_H

#include "tensor.h"

int nn_conv2d_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, const nn_tensor *w,
                      const nn_tensor *b, cmds_error *err);

int nn_conv2d_ex_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, const nn_tensor *w,
                         const nn_tensor *b /* or NULL */, int stride, int pad_top, int pad_bottom,
                         int pad_left, int pad_right, cmds_error *err);

/* Scratch bytes nn_conv2d_ex_forward takes from ctx->scratch on `device` for one call with
 * these sizes (0 for k = 1, stride 1, no padding). Add 256 for the arena's alignment. */
size_t nn_conv2d_ex_scratch_bytes(nn_device device, int64_t Cin, int64_t k, int64_t Ho, int64_t Wo);

#endif
