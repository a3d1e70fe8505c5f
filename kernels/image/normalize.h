/* normalize: images as the backbone takes them (METHOD.md section 2): RGB / 255 and normals
 * encoded (n + 1) / 2, both ImageNet-normalised (mean 0.485 0.456 0.406, std 0.229 0.224
 * 0.225) and moved channels-first. Shared by `features` and `train` (online backbone), so
 * the cached and the online features see the same input.
 *   src (S, S, 3) channels-last  ->  dst (3, S, S) */
#ifndef CMDS_IMAGE_NORMALIZE_H
#define CMDS_IMAGE_NORMALIZE_H

#include <stdint.h>

void cmds_backbone_input_rgb8(const uint8_t *rgb, int64_t S, float *dst);
/* Unit normals (zero where missing, which encodes to 0.5 grey). */
void cmds_backbone_input_normals(const float *normals, int64_t S, float *dst);

#endif
