/* normalize: see normalize.h. */
#include "normalize.h"

#include <stddef.h>

static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f}, imagenet_std[3] = {0.229f, 0.224f, 0.225f};

void cmds_backbone_input_rgb8(const uint8_t *rgb, int64_t S, float *dst) {
  size_t px = (size_t)S * (size_t)S;
  for (int c = 0; c < 3; c++)
    for (size_t p = 0; p < px; p++)
      dst[(size_t)c * px + p] = (rgb[3 * p + (size_t)c] / 255.0f - imagenet_mean[c]) / imagenet_std[c];
}

void cmds_backbone_input_normals(const float *normals, int64_t S, float *dst) {
  size_t px = (size_t)S * (size_t)S;
  for (int c = 0; c < 3; c++)
    for (size_t p = 0; p < px; p++)
      dst[(size_t)c * px + p] = ((normals[3 * p + (size_t)c] + 1.0f) * 0.5f - imagenet_mean[c]) / imagenet_std[c];
}
