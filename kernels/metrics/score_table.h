/* score_table: the exact, integer state from which I-AUROC, P-AUROC and both PRO curves
 * are computed (METHOD.md section 1), built so that any partition of the pixels over ranks
 * gives bit-identical numbers.
 *
 * - Every float score maps to an order-preserving uint32 key (cmds_score_key); -0.0 is
 *   folded onto +0.0 so that equal floats are equal keys (ties as numpy sees them).
 * - Per distinct key all the curves need is: how many normal pixels (mask 0), how many
 *   anomalous pixels (mask 1), and the PRO weight sum of the anomalous ones, where a
 *   pixel of region r carries 1 / |r|; PRO = weight / R (R = regions of all images), the
 *   division done in double on exact sums, as MVTec's compute_pro divides its cumsum.
 *   Weights are 128-bit fixed point (2^96 = 1.0), rounded once per pixel, so sums are
 *   associative: the same table gives the same bits whichever rank added what.
 * - A table keeps normal pixels as packed uint64 (key << 32 | count), 8 bytes per
 *   distinct key, and anomalous pixels as 24-byte rows (key, count, weight), both sorted
 *   by key after cmds_table_compact. Equal keys may appear in several consecutive rows
 *   (a count that would overflow 32 bits starts a new row); walkers group them.
 *
 * A walk visits the distinct keys of a table in ascending or descending order
 * (cmds_table_iter_*). The stage distributes keys over ranks by ranges; cmds_curve_*
 * then turns one rank's range plus the global prefix at its start into partial sums. */
#ifndef CMDS_KERNELS_SCORE_TABLE_H
#define CMDS_KERNELS_SCORE_TABLE_H

#include <stddef.h>
#include <stdint.h>

/* Fixed point with 96 fractional bits; weight sums here stay below 2^31 (regions) and
 * areas below 1. Also used as a plain 128-bit integer for the AUROC numerator. */
typedef unsigned __int128 cmds_fix128;
#define CMDS_FIX_FRAC_BITS 96

/* round(2^96 / d), d >= 1. */
cmds_fix128 cmds_fix_recip(uint64_t d);
/* x >= 0 (truncated to the fixed-point grid; deterministic). */
cmds_fix128 cmds_fix_from_double(double x);
double cmds_fix_to_double(cmds_fix128 v);
/* As two uint64 (for MPI, which has no 128-bit type). */
static inline void cmds_fix_split(cmds_fix128 v, uint64_t out[2]) {
  out[0] = (uint64_t)v;
  out[1] = (uint64_t)(v >> 64);
}
static inline cmds_fix128 cmds_fix_join(const uint64_t in[2]) {
  return ((cmds_fix128)in[1] << 64) | in[0];
}

/* Order-preserving key: a < b as floats <=> key(a) < key(b); key(-0) = key(+0). The
 * caller has rejected NaN. */
static inline uint32_t cmds_score_key(float s) {
  union { float f; uint32_t u; } v;
  v.f = s == 0.0f ? 0.0f : s;
  return (v.u & 0x80000000u) ? ~v.u : (v.u | 0x80000000u);
}
float cmds_score_from_key(uint32_t key);

/* One anomalous-pixel row: `count` pixels with this key and their summed PRO weight. */
typedef struct cmds_anom_row {
  uint32_t key, count;
  uint64_t w[2]; /* cmds_fix128 as lo, hi (keeps the row 24 bytes, 8-aligned) */
} cmds_anom_row;

typedef struct cmds_score_table {
  uint64_t *nor; /* (n_nor) key << 32 | count */
  size_t n_nor, cap_nor, compact_nor; /* compact_nor: rows sorted at the last compaction */
  cmds_anom_row *an; /* (n_an) */
  size_t n_an, cap_an, compact_an;
} cmds_score_table;

void cmds_table_init(cmds_score_table *t);
void cmds_table_free(cmds_score_table *t);
/* Appends raw rows (unsorted); compacts automatically when the unsorted tail has grown
 * as large as the sorted part (so memory stays near the number of distinct keys). */
void cmds_table_add_normal(cmds_score_table *t, uint32_t key, uint32_t count);
void cmds_table_add_anom(cmds_score_table *t, uint32_t key, uint32_t count, cmds_fix128 w);
/* Appends already packed rows (as received from other ranks). */
void cmds_table_append(cmds_score_table *t, const uint64_t *nor, size_t n_nor,
                       const cmds_anom_row *an, size_t n_an);
/* Sorts by key and merges equal keys (radix sort, stable, O(n)). */
void cmds_table_compact(cmds_score_table *t);

/* Sorting helpers (exposed for tests): stable LSD radix sorts by the 32-bit key. */
void cmds_sort_packed_by_key(uint64_t *a, uint64_t *tmp, size_t n);
void cmds_sort_anom_by_key(cmds_anom_row *a, cmds_anom_row *tmp, size_t n);

/* Totals of a table. */
typedef struct cmds_table_totals {
  int64_t n_normal, n_anom;
  cmds_fix128 w;
} cmds_table_totals;
void cmds_table_totals_get(const cmds_score_table *t, cmds_table_totals *out);

/* Walk over distinct keys of a compacted table. */
typedef struct cmds_table_iter {
  const cmds_score_table *t;
  size_t i, j; /* next normal / anomalous row (ascending: index; descending: index + 1) */
  int descending;
} cmds_table_iter;
/* One distinct key and what the table holds for it. */
typedef struct cmds_key_group {
  uint32_t key;
  int64_t n_normal, n_anom;
  cmds_fix128 w;
} cmds_key_group;
void cmds_table_iter_begin(cmds_table_iter *it, const cmds_score_table *t, int descending);
/* 1 and fills *g while keys remain, 0 at the end. */
int cmds_table_iter_next(cmds_table_iter *it, cmds_key_group *g);

/* ---- exact PRO curve and P-AUROC over keys in descending order -------------------
 * MVTec's compute_pro: every distinct score is a threshold; the point after a key is
 * (FPR, PRO) = (normals with key >= k / N, weight with key >= k); (0, 0) prepended;
 * AUPRO(L) = trapezoid of the points with FPR <= L plus the segment cut at L by linear
 * interpolation, / L. Each segment's area is computed in double from exact integer
 * state and summed in fixed point, so a rank's partial sums are partition-independent. */
#define CMDS_CURVE_MAX_LIMITS 8
typedef struct cmds_curve_walk {
  int64_t n_normal;         /* N over all ranks */
  int64_t n_regions;        /* R over all ranks */
  int64_t below_start;      /* normals with keys below this rank's range (all ranks) */
  int64_t cum_n;            /* normals with key >= current (all ranks) */
  cmds_fix128 cum_w;        /* PRO weight with key >= current (all ranks) */
  int64_t local_n_left;     /* normals of this rank's range below the current key */
  int nlim;
  double limits[CMDS_CURVE_MAX_LIMITS];
  cmds_fix128 area[CMDS_CURVE_MAX_LIMITS]; /* partial trapezoid sums, fixed point */
  cmds_fix128 auc2;         /* partial of 2 * sum(n_anom * below + n_anom * n_normal / 2) */
  /* plot grid: pro at fpr = gmax * m / (ngrid - 1); -1 where the point is not in this range */
  int ngrid;
  double gmax;
  double *grid_pro;
} cmds_curve_walk;

/* above_n, above_w: normals / weight of all keys above this rank's range (the global
 * prefix in descending order); below_n: normals of all keys below it; local_n: this
 * range's normals. grid_pro: (ngrid) filled with -1 here, caller owns it. With no
 * normal pixel or no region only the AUROC numerator is accumulated. */
void cmds_curve_walk_begin(cmds_curve_walk *c, int64_t n_normal, int64_t n_regions,
                           int64_t above_n,
                           cmds_fix128 above_w, int64_t below_n, int64_t local_n,
                           const double *limits, int nlim, double *grid_pro, int ngrid,
                           double gmax);
/* One distinct key, in descending order. */
void cmds_curve_walk_step(cmds_curve_walk *c, const cmds_key_group *g);

/* ---- thresholds:N curve (M3DM / CFM) --------------------------------------------
 * Positions pos_i = floor(i * ((N_ok - 1) / (N - 1))) (numpy's linspace with dtype=int,
 * last = N_ok - 1) of the ascending normal scores; FPR_i = 1 - (pos_i + 1) / N_ok;
 * PRO_i = (weight of pixels scored strictly above the score at pos_i) / R. */
void cmds_thresholds_positions(int64_t n_ok, int n, int64_t *pos);
/* Walks one rank's range in ascending key order. below_n / below_w: normals and weight of
 * all keys below the range; w_total: weight of everything. For every i with pos[i] in
 * this range, sets pro_w[i] (others untouched). */
void cmds_thresholds_walk(const cmds_score_table *t, int64_t below_n, cmds_fix128 below_w,
                          cmds_fix128 w_total, const int64_t *pos, int n, cmds_fix128 *pro_w,
                          unsigned char *owned);
/* MVTec's trapezoid with x_max: x ascending (n points); integrates the points with
 * x <= limit plus the segment that crosses it, cut by linear interpolation. */
double cmds_trapezoid_limit(const double *x, const double *y, int n, double limit);

/* ---- AUROC ------------------------------------------------------------------------
 * Mann-Whitney with average ranks for ties (scikit-learn's roc_auc_score).
 * Returns 0 and sets *auc, or -1 when undefined (*why says which class is missing). */
int cmds_auroc_from_num(cmds_fix128 auc2, int64_t n_pos, int64_t n_neg, double *auc,
                        const char **why);
int cmds_auroc_scores(const float *scores, const uint8_t *labels, int64_t n, double *auc,
                      const char **why);

#endif
