/* score_table: see score_table.h. Integer state, radix sorts and the curve walkers. */
#include "score_table.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmds_error.h"

/* ---- fixed point ---------------------------------------------------------------- */

cmds_fix128 cmds_fix_recip(uint64_t d) {
  CMDS_ASSERT(d >= 1);
  cmds_fix128 one = (cmds_fix128)1 << CMDS_FIX_FRAC_BITS;
  return (one + d / 2) / d;
}

cmds_fix128 cmds_fix_from_double(double x) {
  if (!(x > 0)) return 0;
  /* x * 2^96 is exact in double; split into the high and low 64-bit halves. */
  double s = ldexp(x, CMDS_FIX_FRAC_BITS - 64);
  double hi = floor(s);
  double lo = ldexp(s - hi, 64);
  return ((cmds_fix128)(uint64_t)hi << 64) + (cmds_fix128)(uint64_t)lo;
}

double cmds_fix_to_double(cmds_fix128 v) {
  return ldexp((double)(uint64_t)(v >> 64), 64 - CMDS_FIX_FRAC_BITS) +
         ldexp((double)(uint64_t)v, -CMDS_FIX_FRAC_BITS);
}

float cmds_score_from_key(uint32_t key) {
  union { float f; uint32_t u; } v;
  v.u = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  return v.f;
}

/* ---- radix sorts (LSD, two 16-bit digits of the key, stable) -------------------- */

static inline uint32_t packed_key(uint64_t x) { return (uint32_t)(x >> 32); }

void cmds_sort_packed_by_key(uint64_t *a, uint64_t *tmp, size_t n) {
  if (n < 2) return;
  size_t *cnt = cmds_xmalloc(65536 * sizeof *cnt);
  uint64_t *src = a, *dst = tmp;
  for (int pass = 0; pass < 2; pass++) {
    int shift = 16 * pass;
    memset(cnt, 0, 65536 * sizeof *cnt);
    for (size_t i = 0; i < n; i++) cnt[(packed_key(src[i]) >> shift) & 0xffff]++;
    size_t sum = 0;
    for (int d = 0; d < 65536; d++) {
      size_t c = cnt[d];
      cnt[d] = sum;
      sum += c;
    }
    for (size_t i = 0; i < n; i++) dst[cnt[(packed_key(src[i]) >> shift) & 0xffff]++] = src[i];
    uint64_t *t = src;
    src = dst;
    dst = t;
  }
  free(cnt); /* two passes: the result is back in a */
}

void cmds_sort_anom_by_key(cmds_anom_row *a, cmds_anom_row *tmp, size_t n) {
  if (n < 2) return;
  size_t *cnt = cmds_xmalloc(65536 * sizeof *cnt);
  cmds_anom_row *src = a, *dst = tmp;
  for (int pass = 0; pass < 2; pass++) {
    int shift = 16 * pass;
    memset(cnt, 0, 65536 * sizeof *cnt);
    for (size_t i = 0; i < n; i++) cnt[(src[i].key >> shift) & 0xffff]++;
    size_t sum = 0;
    for (int d = 0; d < 65536; d++) {
      size_t c = cnt[d];
      cnt[d] = sum;
      sum += c;
    }
    for (size_t i = 0; i < n; i++) dst[cnt[(src[i].key >> shift) & 0xffff]++] = src[i];
    cmds_anom_row *t = src;
    src = dst;
    dst = t;
  }
  free(cnt);
}

/* ---- tables ---------------------------------------------------------------------- */

void cmds_table_init(cmds_score_table *t) { memset(t, 0, sizeof *t); }

void cmds_table_free(cmds_score_table *t) {
  free(t->nor);
  free(t->an);
  memset(t, 0, sizeof *t);
}

static void reserve_nor(cmds_score_table *t, size_t extra) {
  if (t->n_nor + extra <= t->cap_nor) return;
  size_t cap = t->cap_nor ? t->cap_nor : 1024;
  while (cap < t->n_nor + extra) cap += cap / 2;
  t->nor = cmds_xrealloc(t->nor, cap * sizeof *t->nor);
  t->cap_nor = cap;
}

static void reserve_an(cmds_score_table *t, size_t extra) {
  if (t->n_an + extra <= t->cap_an) return;
  size_t cap = t->cap_an ? t->cap_an : 256;
  while (cap < t->n_an + extra) cap += cap / 2;
  t->an = cmds_xrealloc(t->an, cap * sizeof *t->an);
  t->cap_an = cap;
}

/* Unsorted tails are compacted once they are as long as the sorted part (and at least
 * 4M rows): amortised linear work, memory within about twice the distinct keys. */
#define COMPACT_MIN_ROWS ((size_t)1 << 22)

void cmds_table_add_normal(cmds_score_table *t, uint32_t key, uint32_t count) {
  if (t->n_nor == t->cap_nor && t->n_nor - t->compact_nor >= COMPACT_MIN_ROWS &&
      t->n_nor - t->compact_nor >= t->compact_nor)
    cmds_table_compact(t);
  reserve_nor(t, 1);
  t->nor[t->n_nor++] = ((uint64_t)key << 32) | count;
}

void cmds_table_add_anom(cmds_score_table *t, uint32_t key, uint32_t count, cmds_fix128 w) {
  if (t->n_an == t->cap_an && t->n_an - t->compact_an >= COMPACT_MIN_ROWS &&
      t->n_an - t->compact_an >= t->compact_an)
    cmds_table_compact(t);
  reserve_an(t, 1);
  cmds_anom_row *r = &t->an[t->n_an++];
  r->key = key;
  r->count = count;
  cmds_fix_split(w, r->w);
}

void cmds_table_append(cmds_score_table *t, const uint64_t *nor, size_t n_nor,
                       const cmds_anom_row *an, size_t n_an) {
  reserve_nor(t, n_nor);
  if (n_nor) memcpy(t->nor + t->n_nor, nor, n_nor * sizeof *nor);
  t->n_nor += n_nor;
  reserve_an(t, n_an);
  if (n_an) memcpy(t->an + t->n_an, an, n_an * sizeof *an);
  t->n_an += n_an;
}

void cmds_table_compact(cmds_score_table *t) {
  if (t->n_nor > 1) {
    uint64_t *tmp = cmds_xmalloc(t->n_nor * sizeof *tmp);
    cmds_sort_packed_by_key(t->nor, tmp, t->n_nor);
    free(tmp);
    size_t o = 0;
    for (size_t i = 0; i < t->n_nor; i++) {
      uint64_t x = t->nor[i];
      if (o > 0 && packed_key(t->nor[o - 1]) == packed_key(x) &&
          (t->nor[o - 1] & 0xffffffffu) + (x & 0xffffffffu) <= 0xffffffffu)
        t->nor[o - 1] += x & 0xffffffffu;
      else
        t->nor[o++] = x;
    }
    t->n_nor = o;
  }
  if (t->n_an > 1) {
    cmds_anom_row *tmp = cmds_xmalloc(t->n_an * sizeof *tmp);
    cmds_sort_anom_by_key(t->an, tmp, t->n_an);
    free(tmp);
    size_t o = 0;
    for (size_t i = 0; i < t->n_an; i++) {
      cmds_anom_row x = t->an[i];
      cmds_anom_row *p = o > 0 ? &t->an[o - 1] : NULL;
      if (p && p->key == x.key && (uint64_t)p->count + x.count <= 0xffffffffu) {
        p->count += x.count;
        cmds_fix_split(cmds_fix_join(p->w) + cmds_fix_join(x.w), p->w);
      } else {
        t->an[o++] = x;
      }
    }
    t->n_an = o;
  }
  t->compact_nor = t->n_nor;
  t->compact_an = t->n_an;
}

void cmds_table_totals_get(const cmds_score_table *t, cmds_table_totals *out) {
  memset(out, 0, sizeof *out);
  for (size_t i = 0; i < t->n_nor; i++) out->n_normal += (int64_t)(t->nor[i] & 0xffffffffu);
  for (size_t i = 0; i < t->n_an; i++) {
    out->n_anom += t->an[i].count;
    out->w += cmds_fix_join(t->an[i].w);
  }
}

/* ---- iteration over distinct keys ---------------------------------------------- */

void cmds_table_iter_begin(cmds_table_iter *it, const cmds_score_table *t, int descending) {
  it->t = t;
  it->descending = descending;
  it->i = descending ? t->n_nor : 0;
  it->j = descending ? t->n_an : 0;
}

int cmds_table_iter_next(cmds_table_iter *it, cmds_key_group *g) {
  const cmds_score_table *t = it->t;
  memset(g, 0, sizeof *g);
  if (it->descending) {
    int has_n = it->i > 0, has_a = it->j > 0;
    if (!has_n && !has_a) return 0;
    uint32_t kn = has_n ? packed_key(t->nor[it->i - 1]) : 0, ka = has_a ? t->an[it->j - 1].key : 0;
    g->key = !has_a ? kn : !has_n ? ka : (kn > ka ? kn : ka);
    while (it->i > 0 && packed_key(t->nor[it->i - 1]) == g->key)
      g->n_normal += (int64_t)(t->nor[--it->i] & 0xffffffffu);
    while (it->j > 0 && t->an[it->j - 1].key == g->key) {
      --it->j;
      g->n_anom += t->an[it->j].count;
      g->w += cmds_fix_join(t->an[it->j].w);
    }
  } else {
    int has_n = it->i < t->n_nor, has_a = it->j < t->n_an;
    if (!has_n && !has_a) return 0;
    uint32_t kn = has_n ? packed_key(t->nor[it->i]) : 0, ka = has_a ? t->an[it->j].key : 0;
    g->key = !has_a ? kn : !has_n ? ka : (kn < ka ? kn : ka);
    while (it->i < t->n_nor && packed_key(t->nor[it->i]) == g->key)
      g->n_normal += (int64_t)(t->nor[it->i++] & 0xffffffffu);
    while (it->j < t->n_an && t->an[it->j].key == g->key) {
      g->n_anom += t->an[it->j].count;
      g->w += cmds_fix_join(t->an[it->j].w);
      it->j++;
    }
  }
  return 1;
}

/* ---- exact curve ----------------------------------------------------------------- */

void cmds_curve_walk_begin(cmds_curve_walk *c, int64_t n_normal, int64_t n_regions,
                           int64_t above_n,
                           cmds_fix128 above_w, int64_t below_n, int64_t local_n,
                           const double *limits, int nlim, double *grid_pro, int ngrid,
                           double gmax) {
  CMDS_ASSERT(nlim >= 0 && nlim <= CMDS_CURVE_MAX_LIMITS);
  memset(c, 0, sizeof *c);
  c->n_normal = n_normal;
  c->n_regions = n_regions;
  c->cum_n = above_n;
  c->cum_w = above_w;
  c->below_start = below_n;
  c->local_n_left = local_n;
  c->nlim = nlim;
  for (int l = 0; l < nlim; l++) c->limits[l] = limits[l];
  c->grid_pro = grid_pro;
  c->ngrid = ngrid;
  c->gmax = gmax;
  for (int m = 0; m < ngrid; m++) grid_pro[m] = -1.0;
}

void cmds_curve_walk_step(cmds_curve_walk *c, const cmds_key_group *g) {
  /* P-AUROC: anomalous pixels of this key beat every normal below it and tie with the
   * normals at it (half credit, hence the factor 2). */
  c->local_n_left -= g->n_normal;
  int64_t below = c->below_start + c->local_n_left;
  c->auc2 += (cmds_fix128)(uint64_t)g->n_anom * (uint64_t)(2 * below + g->n_normal);
  if (c->n_normal <= 0 || c->n_regions <= 0) return;
  double r = (double)c->n_regions;
  double fp = (double)c->cum_n / (double)c->n_normal, pp = cmds_fix_to_double(c->cum_w) / r;
  c->cum_n += g->n_normal;
  c->cum_w += g->w;
  double fj = (double)c->cum_n / (double)c->n_normal, pj = cmds_fix_to_double(c->cum_w) / r;
  if (fj == fp) return; /* vertical step: no area, the next segment starts from (fp, pj) */
  for (int l = 0; l < c->nlim; l++) {
    double lim = c->limits[l];
    if (fj <= lim) {
      c->area[l] += cmds_fix_from_double(0.5 * (pp + pj) * (fj - fp));
    } else if (fp <= lim) { /* the one segment crossing the limit */
      double yi = pp + (pj - pp) * (lim - fp) / (fj - fp);
      c->area[l] += cmds_fix_from_double(0.5 * (yi + pp) * (lim - fp));
    }
  }
  /* plot grid: a grid fpr g in [fp, fj) lies on this segment */
  if (c->ngrid > 1) {
    double step = c->gmax / (c->ngrid - 1);
    int m0 = (int)ceil(fp / step) - 1;
    if (m0 < 0) m0 = 0;
    for (int m = m0; m < c->ngrid; m++) {
      double gx = step * m;
      if (gx >= fj) break;
      if (gx < fp) continue;
      c->grid_pro[m] = pp + (pj - pp) * (gx - fp) / (fj - fp);
    }
  }
}

/* ---- thresholds:N ---------------------------------------------------------------- */

void cmds_thresholds_positions(int64_t n_ok, int n, int64_t *pos) {
  /* numpy.linspace(0, n_ok - 1, n, dtype=int): y = i * step, floor, last = stop */
  double step = n > 1 ? (double)(n_ok - 1) / (double)(n - 1) : 0.0;
  for (int i = 0; i < n; i++) pos[i] = (int64_t)floor((double)i * step);
  if (n > 1) pos[n - 1] = n_ok - 1;
}

void cmds_thresholds_walk(const cmds_score_table *t, int64_t below_n, cmds_fix128 below_w,
                          cmds_fix128 w_total, const int64_t *pos, int n, cmds_fix128 *pro_w,
                          unsigned char *owned) {
  int i = 0;
  while (i < n && pos[i] < below_n) i++;
  cmds_table_iter it;
  cmds_key_group g;
  int64_t cum_n = below_n;
  cmds_fix128 cum_w = below_w;
  cmds_table_iter_begin(&it, t, 0);
  while (i < n && cmds_table_iter_next(&it, &g)) {
    cum_n += g.n_normal;
    cum_w += g.w;
    /* the threshold is the score at pos: PRO counts what lies strictly above it */
    while (i < n && pos[i] < cum_n) {
      pro_w[i] = w_total - cum_w;
      owned[i] = 1;
      i++;
    }
  }
}

double cmds_trapezoid_limit(const double *x, const double *y, int n, double limit) {
  double area = 0.0;
  for (int k = 1; k < n; k++) {
    if (x[k] <= limit) {
      area += 0.5 * (y[k] + y[k - 1]) * (x[k] - x[k - 1]);
    } else {
      if (x[k - 1] <= limit) {
        double yi = y[k - 1] + (y[k] - y[k - 1]) * (limit - x[k - 1]) / (x[k] - x[k - 1]);
        area += 0.5 * (yi + y[k - 1]) * (limit - x[k - 1]);
      }
      break;
    }
  }
  return area;
}

/* ---- AUROC ------------------------------------------------------------------------ */

int cmds_auroc_from_num(cmds_fix128 auc2, int64_t n_pos, int64_t n_neg, double *auc,
                        const char **why) {
  if (n_pos <= 0 || n_neg <= 0) {
    *auc = NAN;
    *why = n_pos <= 0 ? "no anomalous sample" : "no normal sample";
    return -1;
  }
  /* auc2 / (2 P N): both below 2^127; long double keeps the quotient correctly rounded
   * to double for any realistic size. */
  long double den = 2.0L * (long double)n_pos * (long double)n_neg;
  long double num = ldexpl((long double)(uint64_t)(auc2 >> 64), 64) + (long double)(uint64_t)auc2;
  *auc = (double)(num / den);
  *why = NULL;
  return 0;
}

typedef struct keyed_label {
  uint32_t key;
  uint32_t label;
} keyed_label;

static int keyed_label_cmp(const void *a, const void *b) {
  uint32_t x = ((const keyed_label *)a)->key, y = ((const keyed_label *)b)->key;
  return (x > y) - (x < y);
}

int cmds_auroc_scores(const float *scores, const uint8_t *labels, int64_t n, double *auc,
                      const char **why) {
  keyed_label *v = cmds_xmalloc((size_t)(n > 0 ? n : 1) * sizeof *v);
  int64_t n_pos = 0, n_neg = 0;
  for (int64_t i = 0; i < n; i++) {
    v[i].key = cmds_score_key(scores[i]);
    v[i].label = labels[i] != 0;
    n_pos += labels[i] != 0;
  }
  n_neg = n - n_pos;
  qsort(v, (size_t)n, sizeof *v, keyed_label_cmp);
  cmds_fix128 auc2 = 0;
  int64_t below = 0;
  for (int64_t i = 0; i < n;) {
    int64_t j = i, np = 0, nn = 0;
    while (j < n && v[j].key == v[i].key) {
      np += v[j].label;
      nn += !v[j].label;
      j++;
    }
    auc2 += (cmds_fix128)(uint64_t)np * (uint64_t)(2 * below + nn);
    below += nn;
    i = j;
  }
  free(v);
  return cmds_auroc_from_num(auc2, n_pos, n_neg, auc, why);
}
