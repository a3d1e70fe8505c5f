/* process: one sample from its source files to its row of the sample cache
 * (METHOD.md section 2): read and validate the files, clean the point cloud (MVTec 3D-AD:
 * RANSAC plane removal, centred padding, largest DBSCAN cluster; EyeCandies: depth to
 * points and the field's background removal), normals at native resolution, foreground
 * mask, resize to S x S (RGB: Pillow bicubic antialiased; xyz/normals: PyTorch nearest;
 * ground truth: Pillow nearest, > 0.5). */
#ifndef CMDS_PREP_PROCESS_H
#define CMDS_PREP_PROCESS_H

#include <stdint.h>

#include "dataset.h"
#include "pointcloud.h"
#include "sample_cache.h"

typedef struct prep_params {
  int size;       /* working resolution S (224) */
  uint64_t seed;  /* RANSAC seed; each sample's stream is keyed by seed + sample id */
  int zstd_level; /* 3 */
  cmds_mvtec_params mvtec; /* RANSAC 1000 x 50 points, inlier 0.004, border 10; removal
                             * 0.005; padding to multiples of 100; DBSCAN eps 0.006, 30 */
  cmds_eyecandies_bg_params eyecandies_bg; /* -0.02, 1.8, 1, scale 0.1 */
  double eyecandies_focal;  /* 711.11 */
} prep_params;

void prep_params_default(prep_params *p);
/* Every setting that shapes the cache's content, as JSON (stored in the cache). */
char *prep_params_json(const prep_params *p, const char *dataset, const char *root, int shots);

/* Folds the identity of a sample's source files (path, size, modification time) into the
 * FNV-1a hash h, so a cache is rebuilt when its inputs change. */
uint64_t prep_sample_fingerprint(prep_format f, const char *root, const char *category,
                                 const prep_sample *s, uint64_t h);

/* Fills row `row` of batch b. Errors name the file and what was expected. */
int prep_process_sample(prep_format f, const char *root, const char *category, const prep_sample *s,
                        const prep_params *p, cmds_sample_batch *b, int64_t row, cmds_error *err);

#endif
