/* fuse: from the four raw maps of a test sample to its anomaly map and image score
 * (METHOD.md section 6), on the CPU (cheap next to the mapper; a sweep of settings reruns
 * only this):
 *
 *   streams=both: A = Psi_2D^R + l1 Psi_2D^E,  B = Psi_3D^R + l2 Psi_3D^E
 *   streams=real: A = Psi_2D^R,                B = Psi_3D^R
 *   streams=est:  A = Psi_2D^E,                B = Psi_3D^E       (l1, l2 unused)
 *   fusion: mul A*B | add A+B | max max(A, B) | 2d A | 3d B        -> Psi (R x R)
 *   Psi -> bilinear (align_corners=False) to S x S when R != S     (nn_resize_forward)
 *       -> x fg (score.fg_mask=1: 0 where the sample cache's fg_mask is 0, no 3D point)
 *       -> Gaussian blur, sigma_px = float(score.sigma * S / 224)   (nn_blur_forward: scipy's
 *          gaussian_filter, mode reflect, truncate 4)
 *   image score = max of the smoothed map.
 * Fusion is done at the mapper resolution (where the maps are computed), then the one fused
 * map is brought to the evaluation grid and smoothed there, so sigma is always in pixels of
 * the evaluation grid (4 px at 224). All arithmetic in float32. */
#ifndef CMDS_SCORE_FUSE_H
#define CMDS_SCORE_FUSE_H

#include <stdint.h>

#include "nn/tensor.h"
#include "taskcfg.h"

typedef enum { FUSE_MUL = 0, FUSE_ADD, FUSE_MAX, FUSE_2D, FUSE_3D } score_fusion;
typedef enum { STREAMS_BOTH = 0, STREAMS_REAL, STREAMS_EST } score_streams;

typedef struct score_params {
  float l1, l2;
  score_fusion fusion;
  score_streams streams;
  double sigma; /* pixels at 224 */
  int fg_mask;  /* zero the map where the point cloud has no point, before smoothing */
} score_params;

void score_params_from_cfg(const cmds_config *c, score_params *p);
/* Which raw maps the setting reads: bit PSI_* set when the map is used with a non-zero
 * weight. (Without normals_est the E maps do not exist: a setting that uses them fails.) */
unsigned score_params_uses(const score_params *p);

/* Psi (n pixels) from the raw maps (est ones may be NULL when unused). */
void score_fuse(const score_params *p, const float *psi2d_r, const float *psi2d_e, const float *psi3d_r,
                const float *psi3d_e, int64_t n, float *out);

/* CPU workspace for score_finish on R x R maps evaluated at S x S. */
typedef struct score_finisher {
  nn_arena arena;
  nn_ctx ctx;
  int R, S;
  float *up, *blur; /* S*S each */
} score_finisher;
int score_finisher_init(score_finisher *f, int R, int S, cmds_error *err);
void score_finisher_free(score_finisher *f);
/* psi (R x R) -> out (S x S) smoothed, *image_score = its max. fg (S x S, 0/1) or NULL: the
 * up-sampled map is zeroed where fg is 0 before the blur. */
int score_finish(score_finisher *f, const float *psi, const uint8_t *fg, double sigma224, float *out,
                 float *image_score, cmds_error *err);

#endif
