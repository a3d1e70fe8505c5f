/* resize: image resizing with the exact rules of the libraries the field's code uses, so
 * the sample cache matches what a PyTorch/Pillow pipeline would feed the backbone.
 *   - cmds_resize_bicubic_aa_u8: Pillow's Image.resize(BICUBIC) on 8-bit images
 *     (antialiased: the filter support widens by the downscale factor; a = -0.5; 22-bit
 *     fixed-point weights; two passes through an 8-bit intermediate, in Pillow's order);
 *   - cmds_resize_nearest_pil: Pillow's NEAREST (torchvision Resize on a PIL mask);
 *   - cmds_resize_nearest_torch: F.interpolate(mode='nearest') (the field's xyz resize).
 * Images are row-major, channels last. Plain C (OpenMP over rows; results do not depend on
 * the thread count). These are the CPU references; a CUDA resize of feature maps belongs in
 * a resize.cu beside this file with its own cmds_resize_*_cuda names, checked against
 * these. */
#ifndef CMDS_KERNELS_RESIZE_H
#define CMDS_KERNELS_RESIZE_H

#include <stddef.h>
#include <stdint.h>

/* src (sh, sw, c) -> dst (dh, dw, c), c in 1..4. */
void cmds_resize_bicubic_aa_u8(const uint8_t *src, int sh, int sw, int c, uint8_t *dst, int dh,
                               int dw);
/* Nearest neighbour, generic over the pixel size: elem_bytes bytes per pixel (a uint8 mask:
 * 1, an xyz pixel of 3 floats: 12). Each axis maps output index o to a source index:
 *   Pillow: trunc(0.5 s + o s) with the sum accumulated in double, s = in / out;
 *   torch:  floor(o * s) in float32, s = (float)in / out;
 * both clamped to in - 1. */
void cmds_resize_nearest_pil(const void *src, int sh, int sw, size_t elem_bytes, void *dst, int dh,
                             int dw);
void cmds_resize_nearest_torch(const void *src, int sh, int sw, size_t elem_bytes, void *dst, int dh,
                               int dw);

#endif
