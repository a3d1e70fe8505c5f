/* formats: the input and output file formats of the datasets, with validation that
 * names the file and what was expected.
 *   PNG  (libpng): 8/16-bit gray, gray+alpha, RGB, RGBA; palette expanded to RGB.
 *   TIFF (libtiff): MVTec 3D-AD xyz files (NNN.tiff), float32 with 3 samples per pixel.
 *   YAML (libyaml): EyeCandies `{id}_info_depth.yaml` (`normalization: {min, max}`).
 *   Text: EyeCandies `{id}_pose.txt`, a 4x4 (or 3x4) matrix of numbers.
 * Writers are atomic (write `<path>.partial`, rename). */
#ifndef CMDS_FORMATS_H
#define CMDS_FORMATS_H

#include <stdint.h>

#include "cmds_error.h"

typedef struct cmds_image {
  int width, height, channels; /* channels 1..4 */
  int bit_depth;               /* 8 (data is uint8_t) or 16 (data is uint16_t, host order) */
  void *data;                  /* row-major, interleaved: (height, width, channels) */
} cmds_image;

typedef struct cmds_imagef {
  int width, height, channels;
  float *data; /* (height, width, channels) */
} cmds_imagef;

void cmds_image_free(cmds_image *img);
void cmds_imagef_free(cmds_imagef *img);

/* Reads any PNG as stored (bit depths < 8 expanded to 8, palette to RGB). A truncated
 * or corrupt file gives CMDS_EINPUT naming the file. */
int cmds_png_read(const char *path, cmds_image *img, cmds_error *err);
/* Writes 8- or 16-bit PNG with 1, 2, 3 or 4 channels. */
int cmds_png_write(const char *path, const cmds_image *img, cmds_error *err);

/* Reads a float32 TIFF with `channels` samples per pixel (contiguous or planar).
 * Anything else (other sample format/bits/channel count, truncation) is CMDS_EINPUT
 * with the file and what was found vs expected. */
int cmds_tiff_read_f32(const char *path, int channels, cmds_imagef *img, cmds_error *err);
/* Writes a float32 TIFF (contiguous, no compression), as MVTec 3D-AD ships it. */
int cmds_tiff_write_f32(const char *path, const cmds_imagef *img, cmds_error *err);

/* EyeCandies depth normalisation: reads `normalization: {min: .., max: ..}`. */
int cmds_yaml_read_depth_range(const char *path, double *min, double *max, cmds_error *err);
/* Writes the same layout (synthetic data). */
int cmds_yaml_write_depth_range(const char *path, double min, double max, cmds_error *err);

/* Reads a 4x4 row-major matrix from whitespace-separated text (3x4: last row 0 0 0 1). */
int cmds_matrix4_read(const char *path, double m[16], cmds_error *err);
int cmds_matrix4_write(const char *path, const double m[16], cmds_error *err);

#endif
