/* source: see source.h. */
#include "source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats.h"
#include "fsutil.h"
#include "image/resize.h"

int est_source_path(const est_source *s, const char *sample_id, char *out, size_t cap, cmds_error *err) {
  /* sample_id is prep's "<split>/<folder>/<name>" */
  char split[96], folder[96], name[96];
  const char *a = strchr(sample_id, '/'), *b = a ? strchr(a + 1, '/') : NULL;
  if (!a || !b || strchr(b + 1, '/') || a == sample_id || b == a + 1 || !b[1] ||
      (size_t)(a - sample_id) >= sizeof split || (size_t)(b - a - 1) >= sizeof folder || strlen(b + 1) >= sizeof name)
    return CMDS_FAIL(err, CMDS_EINPUT, "sample id '%s': expected <split>/<folder>/<name> as cmds-prep writes it", sample_id);
  snprintf(split, sizeof split, "%.*s", (int)(a - sample_id), sample_id);
  snprintf(folder, sizeof folder, "%.*s", (int)(b - a - 1), a + 1);
  snprintf(name, sizeof name, "%s", b + 1);
  char dir[4096], file[160];
  cmds_path_join(dir, sizeof dir, s->data_root, s->category, split, folder);
  if (!strcmp(s->dataset, "mvtec3d")) snprintf(file, sizeof file, "rgb/%s.png", name);
  else if (!strcmp(s->dataset, "eyecandies")) snprintf(file, sizeof file, "%s_image_4.png", name);
  else return CMDS_FAIL(err, CMDS_EINPUT, "dataset '%s': the original images are found for mvtec3d and eyecandies only "
                        "(run without --data to use the cached RGB)", s->dataset);
  cmds_path_join(out, cap, dir, file, NULL, NULL);
  return CMDS_OK;
}

static void to_unit_float(const uint8_t *src, size_t n, float *dst) {
  for (size_t i = 0; i < n; i++) dst[i] = (float)src[i] / 255.0f;
}

int est_source_image(const est_source *s, const cmds_sample_batch *b, float **rgb, int *side,
                     cmds_error *err) {
  const int S = b->size;
  const size_t spx = (size_t)S * (size_t)S;
  char id[CMDS_SC_ID_LEN + 1];
  memcpy(id, b->sample_id, CMDS_SC_ID_LEN);
  id[CMDS_SC_ID_LEN] = 0;
  if (!s->data_root) {
    *side = S;
    *rgb = cmds_xmalloc(sizeof(float) * spx * 3);
    to_unit_float(b->rgb, spx * 3, *rgb);
    return CMDS_OK;
  }
  char path[4400];
  int rc = est_source_path(s, id, path, sizeof path, err);
  if (rc) return rc;
  cmds_image img;
  rc = cmds_png_read(path, &img, err);
  if (rc) return cmds_error_wrap(err, "original image of sample %s", id);
  const int h = b->native_hw[0], w = b->native_hw[1];
  const int sd = b->pad[0], top = b->pad[1], left = b->pad[2];
  if (img.bit_depth != 8 || (img.channels != 3 && img.channels != 4))
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: %d-bit PNG with %d channel(s), expected 8-bit RGB or RGBA", path,
                   img.bit_depth, img.channels);
  else if (img.height != h || img.width != w)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: %d x %d, but cmds-prep cached sample %s from a %d x %d image "
                   "(the dataset changed: rerun cmds-prep)", path, img.width, img.height, id, w, h);
  else if (sd < h || sd < w || top < 0 || left < 0 || top + h > sd || left + w > sd || sd > 65536)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "sample %s: cached padding (side %d, top %d, left %d) does not hold a %d x %d image",
                   id, sd, top, left, w, h);
  if (rc) {
    cmds_image_free(&img);
    return rc;
  }
  /* prep's geometry: the image on a zero square, side x side */
  size_t px = (size_t)sd * (size_t)sd;
  uint8_t *sq = cmds_xcalloc(px * 3, 1);
  const uint8_t *src = img.data;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int c = 0; c < 3; c++)
        sq[((size_t)(y + top) * (size_t)sd + (size_t)(x + left)) * 3 + (size_t)c] =
            src[((size_t)y * (size_t)w + (size_t)x) * (size_t)img.channels + (size_t)c];
  cmds_image_free(&img);
  uint8_t *small = cmds_xmalloc(spx * 3);
  cmds_resize_bicubic_aa_u8(sq, sd, sd, 3, small, S, S);
  size_t diff = 0;
  for (size_t i = 0; i < spx * 3; i++) diff += small[i] != b->rgb[i];
  free(small);
  if (diff) {
    free(sq);
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: resized as cmds-prep does, it differs from the cached RGB of sample %s "
                     "in %zu of %zu values (the dataset changed since cmds-prep, or --data is another copy): "
                     "rerun cmds-prep, or run without --data to use the cached RGB", path, id, diff, spx * 3);
  }
  *rgb = cmds_xmalloc(sizeof(float) * px * 3);
  to_unit_float(sq, px * 3, *rgb);
  free(sq);
  *side = sd;
  return CMDS_OK;
}

void est_normals_to_cache(const float *normals, int side, int S, float *out) {
  if (side == S) memcpy(out, normals, sizeof(float) * 3 * (size_t)S * (size_t)S);
  else cmds_resize_nearest_torch(normals, side, side, 3 * sizeof(float), out, S, S);
}
