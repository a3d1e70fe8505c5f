/* metrics_compute: see metrics_compute.h. */
#include "metrics_compute.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "maps_input.h"
#include "progress.h"
#include "score_table.h"

const double metrics_limits[METRICS_NLIMITS] = {0.30, 0.10, 0.05, 0.01};

void metrics_result_free(metrics_result *res) {
  free(res->curve_fpr);
  free(res->curve_pro);
  res->curve_fpr = res->curve_pro = NULL;
  res->n_curve = 0;
}

/* ---- distributed sample sort of the table by key ranges ------------------------ */

#define HIST_BUCKETS 65536 /* top 16 bits of the key */

/* start[r] = first bucket owned by rank r; start[size] = HIST_BUCKETS. Rows are
 * balanced over ranks; all rows of one key share a bucket, hence a rank. */
static void splitters(const int64_t *hist, int size, int *start) {
  int64_t total = 0, cum = 0;
  for (int d = 0; d < HIST_BUCKETS; d++) total += hist[d];
  int r = 0;
  start[0] = 0;
  for (int d = 0; d < HIST_BUCKETS; d++) {
    cum += hist[d];
    while (r < size - 1 && cum * size >= total * (r + 1)) start[++r] = d + 1;
  }
  while (r < size - 1) start[++r] = HIST_BUCKETS;
  start[size] = HIST_BUCKETS;
}

static int int_count(int64_t n, const char *what, cmds_error *err) {
  if (n > INT_MAX)
    return CMDS_FAIL(err, CMDS_EINPUT,
                     "%s: %lld rows between two ranks exceed MPI's int counts; use more ranks",
                     what, (long long)n);
  return CMDS_OK;
}

static int table_exchange(const cmds_mpi *mpi, cmds_score_table *t, cmds_error *err) {
  int size = mpi->size;
  if (size == 1) return CMDS_OK;
  int64_t *hist = cmds_xcalloc(HIST_BUCKETS, sizeof *hist);
  for (size_t i = 0; i < t->n_nor; i++) hist[t->nor[i] >> 48]++;
  for (size_t i = 0; i < t->n_an; i++) hist[t->an[i].key >> 16]++;
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, hist, HIST_BUCKETS, MPI_INT64_T, MPI_SUM, mpi->comm));
  int *start = cmds_xmalloc((size_t)(size + 1) * sizeof *start);
  splitters(hist, size, start);
  free(hist);
  /* rows for rank r are contiguous: the table is sorted by key */
  int *cnt = cmds_xcalloc((size_t)size * 4, sizeof *cnt); /* send nor, send an, recv nor, recv an */
  int *sn = cnt, *sa = cnt + size, *rn = cnt + 2 * size, *ra = cnt + 3 * size;
  int rc = CMDS_OK;
  size_t i = 0, j = 0;
  for (int r = 0; r < size; r++) {
    size_t i0 = i, j0 = j;
    while (i < t->n_nor && (int)(t->nor[i] >> 48) < start[r + 1]) i++;
    while (j < t->n_an && (int)(t->an[j].key >> 16) < start[r + 1]) j++;
    if (!rc) rc = int_count((int64_t)(i - i0), "normal-pixel table", err);
    if (!rc) rc = int_count((int64_t)(j - j0), "anomalous-pixel table", err);
    sn[r] = (int)(i - i0);
    sa[r] = (int)(j - j0);
  }
  free(start);
  rc = cmds_mpi_agree(mpi, err, rc);
  if (rc) {
    free(cnt);
    return rc;
  }
  MPI_CHECK(MPI_Alltoall(sn, 1, MPI_INT, rn, 1, MPI_INT, mpi->comm));
  MPI_CHECK(MPI_Alltoall(sa, 1, MPI_INT, ra, 1, MPI_INT, mpi->comm));
  int *disp = cmds_xmalloc((size_t)size * 4 * sizeof *disp);
  int *dsn = disp, *dsa = disp + size, *drn = disp + 2 * size, *dra = disp + 3 * size;
  int64_t tot_rn = 0, tot_ra = 0, o[4] = {0, 0, 0, 0};
  for (int r = 0; r < size; r++) {
    dsn[r] = (int)o[0];
    dsa[r] = (int)o[1];
    drn[r] = (int)o[2];
    dra[r] = (int)o[3];
    o[0] += sn[r];
    o[1] += sa[r];
    o[2] += rn[r];
    o[3] += ra[r];
  }
  tot_rn = o[2];
  tot_ra = o[3];
  rc = int_count(tot_rn, "received normal-pixel table", err);
  if (!rc) rc = int_count(tot_ra, "received anomalous-pixel table", err);
  rc = cmds_mpi_agree(mpi, err, rc);
  if (rc) {
    free(cnt);
    free(disp);
    return rc;
  }
  uint64_t *nor = cmds_xmalloc((size_t)(tot_rn ? tot_rn : 1) * sizeof *nor);
  cmds_anom_row *an = cmds_xmalloc((size_t)(tot_ra ? tot_ra : 1) * sizeof *an);
  MPI_Datatype row_t;
  MPI_CHECK(MPI_Type_contiguous((int)sizeof(cmds_anom_row), MPI_BYTE, &row_t));
  MPI_CHECK(MPI_Type_commit(&row_t));
  MPI_CHECK(MPI_Alltoallv(t->nor, sn, dsn, MPI_UINT64_T, nor, rn, drn, MPI_UINT64_T, mpi->comm));
  MPI_CHECK(MPI_Alltoallv(t->an, sa, dsa, row_t, an, ra, dra, row_t, mpi->comm));
  MPI_CHECK(MPI_Type_free(&row_t));
  free(cnt);
  free(disp);
  cmds_table_free(t);
  t->nor = nor;
  t->n_nor = t->cap_nor = (size_t)tot_rn;
  t->an = an;
  t->n_an = t->cap_an = (size_t)tot_ra;
  cmds_table_compact(t);
  return CMDS_OK;
}

/* ---- gathering per-rank totals and partial sums ------------------------------- */

typedef struct rank_totals {
  int64_t n_normal, n_anom;
  uint64_t w[2];
} rank_totals;

static int64_t peak_rss_kb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (int64_t)ru.ru_maxrss;
}

/* Sums n_vals 128-bit values (as uint64 pairs) of every rank, at rank 0. */
static void reduce_fix_sum(const cmds_mpi *mpi, const cmds_fix128 *vals, int n_vals,
                           cmds_fix128 *out) {
  uint64_t *mine = cmds_xmalloc((size_t)n_vals * 2 * sizeof *mine);
  for (int k = 0; k < n_vals; k++) cmds_fix_split(vals[k], mine + 2 * k);
  uint64_t *all = mpi->rank == 0 ? cmds_xmalloc((size_t)n_vals * 2 * mpi->size * sizeof *all) : NULL;
  MPI_CHECK(MPI_Gather(mine, 2 * n_vals, MPI_UINT64_T, all, 2 * n_vals, MPI_UINT64_T, 0, mpi->comm));
  if (mpi->rank == 0) {
    for (int k = 0; k < n_vals; k++) {
      cmds_fix128 s = 0;
      for (int r = 0; r < mpi->size; r++) s += cmds_fix_join(all + (size_t)r * 2 * n_vals + 2 * k);
      out[k] = s;
    }
  }
  free(mine);
  free(all);
}

/* thresholds:N curve: every rank fills the positions in its key range; rank 0 builds the
 * curve, integrates it and keeps the points up to METRICS_GRID_MAX for plotting. */
static void thresholds_curve(const cmds_mpi *mpi, const cmds_score_table *t, int nthr,
                             int64_t below_n, cmds_fix128 below_w, cmds_fix128 w_total,
                             metrics_result *res) {
  int64_t *pos = cmds_xmalloc((size_t)nthr * sizeof *pos);
  cmds_fix128 *pro_w = cmds_xcalloc((size_t)nthr, sizeof *pro_w);
  unsigned char *owned = cmds_xcalloc((size_t)nthr, 1);
  cmds_thresholds_positions(res->n_normal_pixels, nthr, pos);
  cmds_thresholds_walk(t, below_n, below_w, w_total, pos, nthr, pro_w, owned);
  uint64_t *mine = cmds_xcalloc((size_t)nthr * 2, sizeof *mine);
  for (int i = 0; i < nthr; i++)
    if (owned[i]) cmds_fix_split(pro_w[i], mine + 2 * i);
  uint64_t *all = mpi->rank == 0 ? cmds_xcalloc((size_t)nthr * 2, sizeof *all) : NULL;
  /* each position is owned by exactly one rank, the others send zeros */
  MPI_CHECK(MPI_Reduce(mine, all, 2 * nthr, MPI_UINT64_T, MPI_BOR, 0, mpi->comm));
  if (mpi->rank == 0) {
    /* ascending FPR: the last threshold first, then the added point (1, 1) */
    int np = nthr + 1;
    double *x = cmds_xmalloc((size_t)np * sizeof *x), *y = cmds_xmalloc((size_t)np * sizeof *y);
    double R = (double)res->n_regions, N = (double)res->n_normal_pixels;
    for (int k = 0; k < nthr; k++) {
      int i = nthr - 1 - k;
      x[k] = 1.0 - (double)(pos[i] + 1) / N;
      y[k] = cmds_fix_to_double(cmds_fix_join(all + 2 * i)) / R;
    }
    x[nthr] = 1.0;
    y[nthr] = 1.0;
    for (int l = 0; l < METRICS_NLIMITS; l++)
      res->aupro[l] = cmds_trapezoid_limit(x, y, np, metrics_limits[l]) / metrics_limits[l];
    int keep = 0;
    while (keep < np && x[keep] <= METRICS_GRID_MAX) keep++;
    int stride = keep > METRICS_GRID ? (keep + METRICS_GRID - 1) / METRICS_GRID : 1;
    res->curve_fpr = cmds_xmalloc((size_t)(keep + 1) * sizeof(double));
    res->curve_pro = cmds_xmalloc((size_t)(keep + 1) * sizeof(double));
    for (int k = 0; k < keep; k += stride) {
      res->curve_fpr[res->n_curve] = x[k];
      res->curve_pro[res->n_curve++] = y[k];
    }
    free(x);
    free(y);
  }
  free(mine);
  free(all);
  free(pos);
  free(pro_w);
  free(owned);
}

/* I-AUROC: image scores and labels of every block, gathered at rank 0. */
static int image_auroc(const cmds_mpi *mpi, metrics_input *in, const metrics_local *loc,
                       metrics_result *res, cmds_error *err) {
  int64_t n = in->n;
  int *counts = NULL, *displs = NULL;
  float *scores = NULL;
  uint8_t *labels = NULL;
  if (mpi->rank == 0) {
    counts = cmds_xmalloc((size_t)mpi->size * sizeof *counts);
    displs = cmds_xmalloc((size_t)mpi->size * sizeof *displs);
    for (int r = 0; r < mpi->size; r++) {
      int64_t b, e;
      cmds_block_range(n, r, mpi->size, &b, &e);
      counts[r] = (int)(e - b);
      displs[r] = (int)b;
    }
    scores = cmds_xmalloc((size_t)n * sizeof *scores);
    labels = cmds_xmalloc((size_t)n);
  }
  int mine = (int)(loc->e - loc->b);
  MPI_CHECK(MPI_Gatherv(loc->image_score, mine, MPI_FLOAT, scores, counts, displs, MPI_FLOAT, 0,
                        mpi->comm));
  MPI_CHECK(MPI_Gatherv(loc->image_label, mine, MPI_UINT8_T, labels, counts, displs, MPI_UINT8_T,
                        0, mpi->comm));
  int rc = CMDS_OK;
  if (mpi->rank == 0) {
    if (in->has_image_scores) rc = metrics_input_read_image_scores(in, scores, err);
    res->image_scores_from_file = in->has_image_scores;
    for (int64_t i = 0; i < n; i++) res->n_anom_images += labels[i] != 0;
    res->n_normal_images = n - res->n_anom_images;
    const char *why = NULL;
    if (!rc && cmds_auroc_scores(scores, labels, n, &res->i_auroc, &why))
      res->i_auroc_why = res->n_anom_images == 0 ? "no anomalous image" : "no normal image";
  }
  free(counts);
  free(displs);
  free(scores);
  free(labels);
  return cmds_mpi_agree(mpi, err, rc);
}

int metrics_compute(const cmds_mpi *mpi, const char *maps_path, const metrics_options *opt,
                    metrics_result *res, cmds_error *err) {
  memset(res, 0, sizeof *res);
  res->i_auroc = res->p_auroc = NAN;
  for (int l = 0; l < METRICS_NLIMITS; l++) res->aupro[l] = NAN;
  metrics_input in;
  double t0 = cmds_now();
  int rc = cmds_mpi_agree(mpi, err, metrics_input_open(&in, maps_path, mpi->comm, err));
  if (rc) return rc;
  res->n_images = in.n;
  res->height = in.h;
  res->width = in.w;
  res->n_pixels = in.n * in.h * in.w;
  snprintf(res->dataset, sizeof res->dataset, "%s", in.dataset);
  snprintf(res->category, sizeof res->category, "%s", in.category);
  snprintf(res->maps_id, sizeof res->maps_id, "%s", in.maps_id);

  int64_t b, e;
  cmds_block_range(in.n, mpi->rank, mpi->size, &b, &e);
  metrics_local loc;
  cmds_progress prog;
  cmds_progress_begin(&prog, mpi, "metrics", maps_path, e - b);
  rc = metrics_input_read_block(&in, b, e, opt->batch_pixels, &loc, &prog, err);
  rc = cmds_mpi_agree(mpi, err, rc);
  if (rc) goto done;
  cmds_progress_end(&prog);
  rc = image_auroc(mpi, &in, &loc, res, err);
  if (rc) goto done;
  free(loc.image_score);
  free(loc.image_label);
  loc.image_score = NULL;
  loc.image_label = NULL;
  res->t_read_s = cmds_now() - t0;

  /* global counts; the content hash is a wrapping sum, so it does not depend on ranks */
  int64_t cnt[2] = {loc.n_regions, 0};
  uint64_t hash = loc.content_hash;
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, cnt, 2, MPI_INT64_T, MPI_SUM, mpi->comm));
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &hash, 1, MPI_UINT64_T, MPI_SUM, mpi->comm));
  res->n_regions = cnt[0];
  res->content_hash = hash;

  double t1 = cmds_now();
  rc = table_exchange(mpi, &loc.table, err);
  if (rc) goto done;
  res->t_exchange_s = cmds_now() - t1;

  double t2 = cmds_now();
  rank_totals mine = {0}, *all = cmds_xmalloc((size_t)mpi->size * sizeof *all);
  cmds_table_totals tot;
  cmds_table_totals_get(&loc.table, &tot);
  mine.n_normal = tot.n_normal;
  mine.n_anom = tot.n_anom;
  cmds_fix_split(tot.w, mine.w);
  MPI_CHECK(MPI_Allgather(&mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE,
                          mpi->comm));
  int64_t below_n = 0, above_n = 0, n_normal = 0, n_anom = 0;
  cmds_fix128 below_w = 0, above_w = 0, w_total = 0;
  for (int r = 0; r < mpi->size; r++) {
    cmds_fix128 w = cmds_fix_join(all[r].w);
    n_normal += all[r].n_normal;
    n_anom += all[r].n_anom;
    w_total += w;
    if (r < mpi->rank) {
      below_n += all[r].n_normal;
      below_w += w;
    } else if (r > mpi->rank) {
      above_n += all[r].n_normal;
      above_w += w;
    }
  }
  free(all);
  res->n_normal_pixels = n_normal;
  res->n_anom_pixels = n_anom;

  /* exact curve and P-AUROC: descending walk of this rank's key range */
  double *grid = cmds_xmalloc(METRICS_GRID * sizeof *grid);
  cmds_curve_walk c;
  cmds_curve_walk_begin(&c, n_normal, res->n_regions, above_n, above_w, below_n, tot.n_normal,
                        metrics_limits, METRICS_NLIMITS, grid, METRICS_GRID, METRICS_GRID_MAX);
  cmds_table_iter it;
  cmds_key_group g;
  int64_t distinct = 0;
  cmds_table_iter_begin(&it, &loc.table, 1);
  while (cmds_table_iter_next(&it, &g)) {
    cmds_curve_walk_step(&c, &g);
    distinct++;
  }
  cmds_fix128 part[METRICS_NLIMITS + 1], sum[METRICS_NLIMITS + 1];
  for (int l = 0; l < METRICS_NLIMITS; l++) part[l] = c.area[l];
  part[METRICS_NLIMITS] = c.auc2;
  reduce_fix_sum(mpi, part, METRICS_NLIMITS + 1, sum);
  double *grid_all = mpi->rank == 0 ? cmds_xmalloc(METRICS_GRID * sizeof *grid_all) : NULL;
  MPI_CHECK(MPI_Reduce(grid, grid_all, METRICS_GRID, MPI_DOUBLE, MPI_MAX, 0, mpi->comm));
  MPI_CHECK(MPI_Reduce(&distinct, &res->distinct_scores, 1, MPI_INT64_T, MPI_SUM, 0, mpi->comm));
  free(grid);

  int pro_defined = n_normal > 0 && res->n_regions > 0;
  if (mpi->rank == 0) {
    const char *why = NULL;
    if (cmds_auroc_from_num(sum[METRICS_NLIMITS], n_anom, n_normal, &res->p_auroc, &why))
      res->p_auroc_why = n_anom == 0 ? "no anomalous pixel" : "no normal pixel";
    if (!pro_defined)
      res->aupro_why = n_normal == 0 ? "no normal pixel" : "no ground-truth region";
    if (pro_defined && !opt->thresholds) {
      for (int l = 0; l < METRICS_NLIMITS; l++)
        res->aupro[l] = cmds_fix_to_double(sum[l]) / metrics_limits[l];
      res->n_curve = METRICS_GRID;
      res->curve_fpr = cmds_xmalloc(METRICS_GRID * sizeof(double));
      res->curve_pro = grid_all;
      grid_all = NULL;
      for (int m = 0; m < METRICS_GRID; m++)
        res->curve_fpr[m] = METRICS_GRID_MAX / (METRICS_GRID - 1) * m;
    }
  }
  free(grid_all);
  if (pro_defined && opt->thresholds)
    thresholds_curve(mpi, &loc.table, opt->thresholds, below_n, below_w, w_total, res);
  res->t_curve_s = cmds_now() - t2;
  int64_t rss = peak_rss_kb();
  MPI_CHECK(MPI_Reduce(&rss, &res->peak_rss_kb_max, 1, MPI_INT64_T, MPI_MAX, 0, mpi->comm));

done:
  metrics_local_free(&loc);
  metrics_input_close(&in);
  return rc;
}
