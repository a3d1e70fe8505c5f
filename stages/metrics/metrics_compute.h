/* metrics_compute: one result (one maps file) computed by the ranks of one communicator.
 *
 * 1. Each rank reads a contiguous block of images and builds its score table
 *    (maps_input.c): keys, normal / anomalous counts, PRO weights in fixed point.
 * 2. Distributed sample sort by key ranges: a global histogram of the top 16 key bits
 *    (MPI_Allreduce) gives splitters; MPI_Alltoallv moves table rows so that every key
 *    lives on exactly one rank; each rank merges its range.
 * 3. The per-rank totals are gathered (they are small) and give each rank the global
 *    prefix at both ends of its range; each rank walks its range (descending for the
 *    exact PRO curve and P-AUROC, ascending for thresholds:N) and the fixed-point partial
 *    sums are reduced. All sums are integers or 128-bit fixed point, so any number of
 *    ranks gives the same bits.
 * 4. Image scores (small) are gathered to rank 0 for I-AUROC. */
#ifndef CMDS_METRICS_COMPUTE_H
#define CMDS_METRICS_COMPUTE_H

#include <stdint.h>

#include "cmds_mpi.h"

#define METRICS_NLIMITS 4
#define METRICS_GRID 1001 /* plot points of the PRO curve, FPR 0 .. METRICS_GRID_MAX */
#define METRICS_GRID_MAX 0.3

extern const double metrics_limits[METRICS_NLIMITS]; /* 0.30, 0.10, 0.05, 0.01 */

typedef struct metrics_options {
  int thresholds;       /* 0: exact curve; N > 1: thresholds:N */
  int64_t batch_pixels; /* pixels read at once per rank */
} metrics_options;

typedef struct metrics_result {
  int64_t n_images, height, width, n_pixels;
  int64_t n_normal_images, n_anom_images, n_normal_pixels, n_anom_pixels, n_regions;
  int64_t distinct_scores;
  double i_auroc, p_auroc, aupro[METRICS_NLIMITS]; /* NAN when undefined */
  const char *i_auroc_why, *p_auroc_why, *aupro_why;
  int image_scores_from_file;
  char dataset[128], category[128];
  char maps_id[128]; /* the maps file's maps_id attribute, "" when it has none */
  uint64_t content_hash;
  int n_curve;                 /* points of the plotted PRO curve */
  double *curve_fpr, *curve_pro;
  double t_read_s, t_exchange_s, t_curve_s; /* rank 0's phases */
  int64_t peak_rss_kb_max;     /* over the ranks of the communicator */
} metrics_result;

/* Collective over mpi->comm. Rank 0 receives the complete result; other ranks only the
 * error status (all ranks return the same code). */
int metrics_compute(const cmds_mpi *mpi, const char *maps_path, const metrics_options *opt,
                    metrics_result *res, cmds_error *err);
void metrics_result_free(metrics_result *res);

#endif
