/* prep_corrupt: damages one file of a dataset copy in a chosen way, for the bad-input
 * tests of cmds-prep (test_bad_inputs.sh). Writes through comm/formats so each damaged
 * file is otherwise well-formed and only the property under test is wrong.
 *   prep_corrupt truncate FILE        keep the first half of the bytes
 *   prep_corrupt tiff-1ch FILE        float32 TIFF with 1 sample per pixel
 *   prep_corrupt tiff-size FILE       float32 3-channel TIFF 8 pixels narrower
 *   prep_corrupt tiff-nan FILE        one coordinate NaN
 *   prep_corrupt tiff-zero FILE       all points zero
 *   prep_corrupt png-16bit FILE       the same image as 16-bit
 *   prep_corrupt png-size FILE        the same image 8 pixels narrower
 *   prep_corrupt png-gray FILE        single channel
 *   prep_corrupt png-8bit FILE        a 16-bit image as 8-bit */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats.h"

static int die(const cmds_error *e) {
  fprintf(stderr, "prep_corrupt: %s\n", e->msg);
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: prep_corrupt MODE FILE\n");
    return 2;
  }
  const char *mode = argv[1], *path = argv[2];
  cmds_error e = {0};
  if (!strcmp(mode, "truncate")) {
    struct stat st;
    if (stat(path, &st) != 0 || truncate(path, st.st_size / 2) != 0) return 1;
    return 0;
  }
  if (!strncmp(mode, "tiff-", 5)) {
    cmds_imagef img;
    if (cmds_tiff_read_f32(path, 3, &img, &e)) return die(&e);
    size_t px = (size_t)img.width * (size_t)img.height;
    cmds_imagef out = img;
    if (!strcmp(mode, "tiff-1ch")) {
      out.channels = 1;
      for (size_t i = 0; i < px; i++) out.data[i] = img.data[3 * i + 2];
    } else if (!strcmp(mode, "tiff-size")) {
      out.width = img.width - 8;
      out.data = calloc(px * 3, sizeof(float));
      for (int r = 0; r < img.height; r++)
        memcpy(out.data + (size_t)r * (size_t)out.width * 3, img.data + (size_t)r * (size_t)img.width * 3,
               (size_t)out.width * 3 * sizeof(float));
    } else if (!strcmp(mode, "tiff-nan")) {
      out.data[3 * (px / 2) + 1] = NAN;
    } else if (!strcmp(mode, "tiff-zero")) {
      memset(out.data, 0, px * 3 * sizeof(float));
    } else {
      fprintf(stderr, "unknown mode %s\n", mode);
      return 2;
    }
    if (cmds_tiff_write_f32(path, &out, &e)) return die(&e);
    return 0;
  }
  cmds_image img;
  if (cmds_png_read(path, &img, &e)) return die(&e);
  cmds_image out = img;
  size_t px = (size_t)img.width * (size_t)img.height;
  const uint8_t *src = img.data;
  if (!strcmp(mode, "png-16bit")) {
    uint16_t *d = malloc(px * (size_t)img.channels * 2);
    for (size_t i = 0; i < px * (size_t)img.channels; i++) d[i] = (uint16_t)(src[i] * 257);
    out.bit_depth = 16;
    out.data = d;
  } else if (!strcmp(mode, "png-8bit")) {
    uint8_t *d = malloc(px * (size_t)img.channels);
    for (size_t i = 0; i < px * (size_t)img.channels; i++)
      d[i] = img.bit_depth == 16 ? (uint8_t)(((const uint16_t *)img.data)[i] >> 8) : src[i];
    out.bit_depth = 8;
    out.data = d;
  } else if (!strcmp(mode, "png-size")) {
    out.width = img.width - 8;
    uint8_t *d = malloc(px * (size_t)img.channels);
    for (int r = 0; r < img.height; r++)
      memcpy(d + (size_t)r * (size_t)out.width * (size_t)img.channels,
             src + (size_t)r * (size_t)img.width * (size_t)img.channels,
             (size_t)out.width * (size_t)img.channels);
    out.data = d;
  } else if (!strcmp(mode, "png-gray")) {
    uint8_t *d = malloc(px);
    for (size_t i = 0; i < px; i++) d[i] = src[i * (size_t)img.channels];
    out.channels = 1;
    out.data = d;
  } else {
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  if (cmds_png_write(path, &out, &e)) return die(&e);
  return 0;
}
