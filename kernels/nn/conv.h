/* conv: 2-D convolution with stride 1 and "same" padding for the mapper's 1x1 and 3x3
 * convolutions (PyTorch nn.Conv2d(Cin, Cout, k, padding=k//2), weight layout).
 *   x (B, Cin, H, W)   W (Cout, Cin, k, k), k in {1, 3}   b (Cout) or NULL
 *   -> y (B, Cout, H, W)
 * k = 1 is one GEMM per image: y_b (Cout, HW) = W (Cout, Cin) x_b (Cin, HW).
 * k = 3 unfolds each image into columns (Cin*9, HW) in the context's scratch arena
 * (im2col, zero padding) and does the same GEMM with K = Cin*9. Scratch needed:
 * Cin*9*H*W floats on the CPU, B times that on CUDA (all images in one batched GEMM). */
#ifndef CMDS_NN_CONV_H
#define CMDS_NN_CONV_H

#include "tensor.h"

int nn_conv2d_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, const nn_tensor *w,
                      const nn_tensor *b, cmds_error *err);

#endif
