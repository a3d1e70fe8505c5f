/* source: the RGB image Marigold sees for one row of a sample cache, and the way its
 * normals come back to the cache's S x S grid (stages/estimate/README.md says why).
 *   - "dataset": the original image (MVTec 3D-AD `<split>/<folder>/rgb/<name>.png`,
 *     EyeCandies `<split>/<folder>/<name>_image_4.png`, alpha dropped) placed on prep's
 *     zero-padded square (the row's `pad`: side, top, left), side x side. It is checked
 *     against the cache first: Pillow-bicubic-resized to S it must give the cached RGB byte
 *     for byte, so the geometry is prep's and the file is the one prep read.
 *   - "cache": the cached S x S RGB as it is (augmented samples have no original).
 * Normals at side x side go to S x S by nearest neighbour (PyTorch rule), the rule prep
 * uses for the real normals, so both 3D streams sample the same pixels. */
#ifndef CMDS_ESTIMATE_SOURCE_H
#define CMDS_ESTIMATE_SOURCE_H

#include <stdint.h>

#include "cmds_error.h"
#include "sample_cache.h"

typedef struct est_source {
  const char *data_root; /* NULL: the cached RGB */
  const char *dataset;   /* mvtec3d | eyecandies (the cache's attribute) */
  const char *category;
} est_source;

/* Row 0 of b -> *rgb (side x side x 3, float in [0,1], malloc'd; free with free). */
int est_source_image(const est_source *s, const cmds_sample_batch *b, float **rgb, int *side,
                     cmds_error *err);

/* Path of the row's original image (for errors and records). */
int est_source_path(const est_source *s, const char *sample_id, char *out, size_t cap,
                    cmds_error *err);

/* normals (side, side, 3) -> out (S, S, 3), nearest (PyTorch rule); side == S copies. */
void est_normals_to_cache(const float *normals, int side, int S, float *out);

#endif
