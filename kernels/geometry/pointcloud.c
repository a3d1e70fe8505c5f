/* pointcloud: the point-cloud geometry of prep (see pointcloud.h for the contracts).
 * Layout everywhere: (h, w, 3) float32, row-major; computations in double. Parallel loops
 * write disjoint outputs or reduce integers, and every random draw comes from one serial
 * stream keyed by the seed, so results are identical on any number of threads.
 *   planes:  TLS fit (smallest eigenvector of the 3x3 scatter, Jacobi), RANSAC, removal;
 *   padding: centred zero padding to a square;
 *   DBSCAN:  uniform grid of cells of side eps/sqrt(3) (a cell's diagonal is eps, so a cell
 *            holding min_points points is all core), core clusters by union-find over
 *            neighbouring cells, border points by scikit-learn's first-cluster rule;
 *   normals: central differences; EyeCandies: unprojection and the field's background
 *            removal; MVTec: the whole cleaning chain. */
#include "pointcloud.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

void cmds_plane_params_default(cmds_plane_params *p) {
  p->iterations = 1000;
  p->sample_points = 50;
  p->inlier_dist = 0.004;
  p->border = 10;
  p->seed = 0;
}

/* ---- planes ------------------------------------------------------------------------- */

/* Eigenvector of the smallest eigenvalue of a symmetric 3x3 matrix (cyclic Jacobi). */
static void smallest_eigvec(double a[3][3], double v_out[3]) {
  double v[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
  for (int sweep = 0; sweep < 50; sweep++) {
    double off = fabs(a[0][1]) + fabs(a[0][2]) + fabs(a[1][2]);
    if (off < 1e-300) break;
    for (int p = 0; p < 2; p++)
      for (int q = p + 1; q < 3; q++) {
        if (fabs(a[p][q]) < 1e-300) continue;
        double theta = (a[q][q] - a[p][p]) / (2 * a[p][q]);
        double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
        double c = 1 / sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < 3; k++) { /* A <- J^T A J */
          double akp = a[k][p], akq = a[k][q];
          a[k][p] = c * akp - s * akq;
          a[k][q] = s * akp + c * akq;
        }
        for (int k = 0; k < 3; k++) {
          double apk = a[p][k], aqk = a[q][k];
          a[p][k] = c * apk - s * aqk;
          a[q][k] = s * apk + c * aqk;
        }
        for (int k = 0; k < 3; k++) {
          double vkp = v[k][p], vkq = v[k][q];
          v[k][p] = c * vkp - s * vkq;
          v[k][q] = s * vkp + c * vkq;
        }
      }
  }
  int m = 0;
  for (int i = 1; i < 3; i++)
    if (a[i][i] < a[m][m]) m = i;
  for (int k = 0; k < 3; k++) v_out[k] = v[k][m];
}

void cmds_plane_fit_tls(const double *pts, int64_t n, double plane[4]) {
  double c[3] = {0, 0, 0};
  for (int64_t i = 0; i < n; i++)
    for (int k = 0; k < 3; k++) c[k] += pts[3 * i + k];
  for (int k = 0; k < 3; k++) c[k] /= (double)(n > 0 ? n : 1);
  double cov[3][3] = {{0}};
  for (int64_t i = 0; i < n; i++) {
    double d[3] = {pts[3 * i] - c[0], pts[3 * i + 1] - c[1], pts[3 * i + 2] - c[2]};
    for (int r = 0; r < 3; r++)
      for (int k = 0; k < 3; k++) cov[r][k] += d[r] * d[k];
  }
  double nrm[3];
  smallest_eigvec(cov, nrm);
  double len = sqrt(nrm[0] * nrm[0] + nrm[1] * nrm[1] + nrm[2] * nrm[2]);
  /* Sign fixed so that the camera side is positive: d = -n.c > 0 for a plane in front of
   * a camera at the origin, whatever the eigen solver returned. */
  double s = (nrm[0] * c[0] + nrm[1] * c[1] + nrm[2] * c[2]) > 0 ? -1 : 1;
  for (int k = 0; k < 3; k++) plane[k] = s * nrm[k] / len;
  plane[3] = -(plane[0] * c[0] + plane[1] * c[1] + plane[2] * c[2]);
}

static int64_t count_inliers(const double *pts, int64_t n, const double pl[4], double dist) {
  int64_t cnt = 0;
  for (int64_t i = 0; i < n; i++)
    cnt += fabs(pl[0] * pts[3 * i] + pl[1] * pts[3 * i + 1] + pl[2] * pts[3 * i + 2] + pl[3]) < dist;
  return cnt;
}

int cmds_plane_ransac(const float *xyz, int h, int w, const cmds_plane_params *p, double plane[4],
                      int64_t *inliers, cmds_error *err) {
  int b = p->border;
  int64_t cap = 0;
  for (int r = 0; r < h; r++)
    for (int c = 0; c < w; c++) cap += (r < b || r >= h - b || c < b || c >= w - b);
  double *pts = cmds_xmalloc(sizeof(double) * 3 * (size_t)(cap > 0 ? cap : 1));
  int64_t n = 0;
  for (int r = 0; r < h; r++)
    for (int c = 0; c < w; c++) {
      if (!(r < b || r >= h - b || c < b || c >= w - b)) continue;
      const float *q = xyz + 3 * ((size_t)r * (size_t)w + (size_t)c);
      if (!cmds_pc_is_valid(q)) continue;
      for (int k = 0; k < 3; k++) pts[3 * n + k] = q[k];
      n++;
    }
  if (n < p->sample_points) {
    free(pts);
    return CMDS_FAIL(err, CMDS_EINPUT,
                     "%lld valid points in the %d-pixel border strips, the background plane fit "
                     "needs at least %d", (long long)n, b, p->sample_points);
  }
  /* The samples are drawn serially from one stream (partial Fisher-Yates: m distinct points
   * per hypothesis), so they depend on the seed only; the hypotheses are then scored in
   * parallel and the best taken serially (first on ties): any thread count, same plane. */
  int m = p->sample_points, iters = p->iterations > 0 ? p->iterations : 1;
  int64_t *idx = cmds_xmalloc(sizeof(int64_t) * (size_t)n);
  int64_t *draws = cmds_xmalloc(sizeof(int64_t) * (size_t)iters * (size_t)m);
  for (int64_t i = 0; i < n; i++) idx[i] = i;
  cmds_rng rng;
  cmds_rng_seed(&rng, p->seed);
  for (int it = 0; it < iters; it++)
    for (int k = 0; k < m; k++) {
      int64_t j = k + (int64_t)cmds_rng_below(&rng, (uint64_t)(n - k));
      int64_t t = idx[k];
      idx[k] = idx[j];
      idx[j] = t;
      draws[(size_t)it * (size_t)m + (size_t)k] = idx[k];
    }
  double *hyps = cmds_xmalloc(sizeof(double) * 4 * (size_t)iters);
  int64_t *counts = cmds_xmalloc(sizeof(int64_t) * (size_t)iters);
#pragma omp parallel
  {
    double *sample = cmds_xmalloc(sizeof(double) * 3 * (size_t)m);
#pragma omp for schedule(static)
    for (int it = 0; it < iters; it++) {
      for (int k = 0; k < m; k++)
        memcpy(sample + 3 * k, pts + 3 * draws[(size_t)it * (size_t)m + (size_t)k], 3 * sizeof(double));
      cmds_plane_fit_tls(sample, m, hyps + 4 * it);
      counts[it] = count_inliers(pts, n, hyps + 4 * it, p->inlier_dist);
    }
    free(sample);
  }
  int best_it = 0;
  for (int it = 1; it < iters; it++)
    if (counts[it] > counts[best_it]) best_it = it;
  double best_plane[4];
  memcpy(best_plane, hyps + 4 * best_it, sizeof best_plane);
  free(hyps);
  free(counts);
  free(draws);
  /* Refit on the inliers of the best hypothesis. */
  int64_t k = 0;
  for (int64_t i = 0; i < n; i++) {
    const double *q = pts + 3 * i;
    if (fabs(best_plane[0] * q[0] + best_plane[1] * q[1] + best_plane[2] * q[2] + best_plane[3]) <
        p->inlier_dist) {
      memmove(pts + 3 * k, q, 3 * sizeof(double));
      k++;
    }
  }
  cmds_plane_fit_tls(pts, k, plane);
  *inliers = k;
  free(idx);
  free(pts);
  return CMDS_OK;
}

int64_t cmds_plane_remove(float *xyz, int h, int w, const double plane[4], double dist) {
  int64_t n = (int64_t)h * w, removed = 0;
#pragma omp parallel for reduction(+ : removed) schedule(static)
  for (int64_t i = 0; i < n; i++) {
    float *q = xyz + 3 * i;
    if (q[0] == 0 && q[1] == 0 && q[2] == 0) continue;
    if (fabs(plane[0] * q[0] + plane[1] * q[1] + plane[2] * q[2] + plane[3]) < dist) {
      q[0] = q[1] = q[2] = 0;
      removed++;
    }
  }
  return removed;
}

/* ---- padding ------------------------------------------------------------------------ */

void cmds_pad_square_geometry(int h, int w, int multiple, int *side, int *top, int *left) {
  int m = multiple < 1 ? 1 : multiple, s = h > w ? h : w;
  s = (s + m - 1) / m * m;
  *side = s;
  *top = (s - h) / 2;
  *left = (s - w) / 2;
}

void cmds_pad_square(const void *src, int h, int w, size_t elem_bytes, int multiple, void **dst,
                     int *side, int *top, int *left) {
  cmds_pad_square_geometry(h, w, multiple, side, top, left);
  size_t s = (size_t)*side, row = (size_t)w * elem_bytes;
  uint8_t *d = cmds_xcalloc(s * s, elem_bytes);
  for (int r = 0; r < h; r++)
    memcpy(d + (((size_t)(r + *top)) * s + (size_t)*left) * elem_bytes,
           (const uint8_t *)src + (size_t)r * row, row);
  *dst = d;
}

void cmds_pc_keep(float *xyz, int h, int w, const uint8_t *keep) {
  int64_t n = (int64_t)h * w;
  for (int64_t i = 0; i < n; i++)
    if (!keep[i]) xyz[3 * i] = xyz[3 * i + 1] = xyz[3 * i + 2] = 0;
}

/* ---- DBSCAN ------------------------------------------------------------------------- */

#define CELL_BITS 21
#define CELL_OFF (1 << 20)

typedef struct grid {
  int64_t n;         /* valid points */
  int64_t *pix;      /* (n) pixel index of sorted point i */
  double *p;         /* (n, 3) coordinates, sorted by cell */
  int64_t ncell;
  int64_t *cstart, *ccount; /* per cell, in sorted order */
  int32_t (*cxyz)[3];
  int64_t *hkeys, *hval; /* open-addressing table cell key -> cell id */
  uint64_t hmask;
} grid;

static uint64_t cell_key(int32_t x, int32_t y, int32_t z) {
  return ((uint64_t)(x + CELL_OFF) << (2 * CELL_BITS)) | ((uint64_t)(y + CELL_OFF) << CELL_BITS) |
         (uint64_t)(z + CELL_OFF);
}

static uint64_t mix(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  return k;
}

static int64_t cell_find(const grid *g, int32_t x, int32_t y, int32_t z) {
  uint64_t key = cell_key(x, y, z);
  for (uint64_t s = mix(key) & g->hmask;; s = (s + 1) & g->hmask) {
    if (g->hkeys[s] == -1) return -1;
    if ((uint64_t)g->hkeys[s] == key) return g->hval[s];
  }
}

typedef struct sortrec {
  uint64_t key;
  int64_t pix;
} sortrec;

static int cmp_rec(const void *a, const void *b) {
  const sortrec *x = a, *y = b;
  if (x->key != y->key) return x->key < y->key ? -1 : 1;
  return x->pix < y->pix ? -1 : x->pix > y->pix;
}

static void grid_build(grid *g, const float *xyz, int64_t npix, double cell) {
  memset(g, 0, sizeof *g);
  int64_t n = 0;
  for (int64_t i = 0; i < npix; i++) n += cmds_pc_is_valid(xyz + 3 * i);
  sortrec *rec = cmds_xmalloc(sizeof *rec * (size_t)(n ? n : 1));
  n = 0;
  for (int64_t i = 0; i < npix; i++) {
    const float *q = xyz + 3 * i;
    if (!cmds_pc_is_valid(q)) continue;
    rec[n].key = cell_key((int32_t)floor(q[0] / cell), (int32_t)floor(q[1] / cell), (int32_t)floor(q[2] / cell));
    rec[n].pix = i;
    n++;
  }
  qsort(rec, (size_t)n, sizeof *rec, cmp_rec);
  g->n = n;
  g->pix = cmds_xmalloc(sizeof(int64_t) * (size_t)(n ? n : 1));
  g->p = cmds_xmalloc(sizeof(double) * 3 * (size_t)(n ? n : 1));
  g->cstart = cmds_xmalloc(sizeof(int64_t) * (size_t)(n ? n : 1));
  g->ccount = cmds_xmalloc(sizeof(int64_t) * (size_t)(n ? n : 1));
  g->cxyz = cmds_xmalloc(sizeof *g->cxyz * (size_t)(n ? n : 1));
  for (int64_t i = 0; i < n; i++) {
    g->pix[i] = rec[i].pix;
    for (int k = 0; k < 3; k++) g->p[3 * i + k] = xyz[3 * rec[i].pix + k];
    if (i == 0 || rec[i].key != rec[i - 1].key) {
      g->cstart[g->ncell] = i;
      g->ccount[g->ncell] = 0;
      uint64_t key = rec[i].key, mask = ((uint64_t)1 << CELL_BITS) - 1;
      g->cxyz[g->ncell][0] = (int32_t)((key >> (2 * CELL_BITS)) & mask) - CELL_OFF;
      g->cxyz[g->ncell][1] = (int32_t)((key >> CELL_BITS) & mask) - CELL_OFF;
      g->cxyz[g->ncell][2] = (int32_t)(key & mask) - CELL_OFF;
      g->ncell++;
    }
    g->ccount[g->ncell - 1]++;
  }
  uint64_t size = 16;
  while (size < 2 * (uint64_t)g->ncell) size <<= 1;
  g->hmask = size - 1;
  g->hkeys = cmds_xmalloc(sizeof(int64_t) * size);
  g->hval = cmds_xmalloc(sizeof(int64_t) * size);
  memset(g->hkeys, 0xff, sizeof(int64_t) * size);
  for (int64_t c = 0; c < g->ncell; c++) {
    uint64_t key = cell_key(g->cxyz[c][0], g->cxyz[c][1], g->cxyz[c][2]);
    uint64_t s = mix(key) & g->hmask;
    while (g->hkeys[s] != -1) s = (s + 1) & g->hmask;
    g->hkeys[s] = (int64_t)key;
    g->hval[s] = c;
  }
  free(rec);
}

static void grid_free(grid *g) {
  free(g->pix);
  free(g->p);
  free(g->cstart);
  free(g->ccount);
  free(g->cxyz);
  free(g->hkeys);
  free(g->hval);
}

static double dist2(const double *a, const double *b) {
  double dx = a[0] - b[0], dy = a[1] - b[1], dz = a[2] - b[2];
  return dx * dx + dy * dy + dz * dz;
}

static int64_t uf_find(int64_t *par, int64_t x) {
  while (par[x] != x) {
    par[x] = par[par[x]];
    x = par[x];
  }
  return x;
}

/* Range of cells around a cell that can hold points within eps: ceil(sqrt(3)) = 2. */
#define REACH 2

int64_t cmds_dbscan_largest(const float *xyz, int h, int w, double eps, int min_points,
                            uint8_t *keep) {
  int64_t npix = (int64_t)h * w;
  memset(keep, 0, (size_t)npix);
  grid g;
  grid_build(&g, xyz, npix, eps / sqrt(3.0));
  const double e2 = eps * eps;
  uint8_t *core = cmds_xcalloc((size_t)(g.n ? g.n : 1), 1);
  /* 1. Core points: a cell with >= min_points points is all core (its diagonal is eps). */
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t c = 0; c < g.ncell; c++) {
    int64_t s = g.cstart[c], cnt = g.ccount[c];
    if (cnt >= min_points) {
      memset(core + s, 1, (size_t)cnt);
      continue;
    }
    for (int64_t i = s; i < s + cnt; i++) {
      int64_t nb = 0;
      for (int dx = -REACH; dx <= REACH && nb < min_points; dx++)
        for (int dy = -REACH; dy <= REACH && nb < min_points; dy++)
          for (int dz = -REACH; dz <= REACH && nb < min_points; dz++) {
            int64_t o = cell_find(&g, g.cxyz[c][0] + dx, g.cxyz[c][1] + dy, g.cxyz[c][2] + dz);
            if (o < 0) continue;
            for (int64_t j = g.cstart[o]; j < g.cstart[o] + g.ccount[o] && nb < min_points; j++)
              nb += dist2(g.p + 3 * i, g.p + 3 * j) <= e2;
          }
      core[i] = nb >= min_points;
    }
  }
  /* 2. Clusters of core points: union-find over cells (core points of one cell are within
   * eps of each other); two cells join when any pair of their core points is within eps. */
  int64_t *par = cmds_xmalloc(sizeof(int64_t) * (size_t)(g.ncell ? g.ncell : 1));
  uint8_t *has_core = cmds_xcalloc((size_t)(g.ncell ? g.ncell : 1), 1);
  for (int64_t c = 0; c < g.ncell; c++) {
    par[c] = c;
    for (int64_t i = g.cstart[c]; i < g.cstart[c] + g.ccount[c]; i++) has_core[c] |= core[i];
  }
  for (int64_t c = 0; c < g.ncell; c++) {
    if (!has_core[c]) continue;
    for (int dx = -REACH; dx <= REACH; dx++)
      for (int dy = -REACH; dy <= REACH; dy++)
        for (int dz = -REACH; dz <= REACH; dz++) {
          int64_t o = cell_find(&g, g.cxyz[c][0] + dx, g.cxyz[c][1] + dy, g.cxyz[c][2] + dz);
          if (o <= c || !has_core[o] || uf_find(par, c) == uf_find(par, o)) continue;
          int linked = 0;
          for (int64_t i = g.cstart[c]; i < g.cstart[c] + g.ccount[c] && !linked; i++) {
            if (!core[i]) continue;
            for (int64_t j = g.cstart[o]; j < g.cstart[o] + g.ccount[o]; j++)
              if (core[j] && dist2(g.p + 3 * i, g.p + 3 * j) <= e2) {
                linked = 1;
                break;
              }
          }
          if (linked) par[uf_find(par, o)] = uf_find(par, c);
        }
  }
  /* Roots resolved once, serially: the parallel labelling below then only reads them (path
   * compression inside a parallel loop would be a data race). */
  for (int64_t c = 0; c < g.ncell; c++) par[c] = uf_find(par, c);
  /* Cluster order as scikit-learn numbers them: by the smallest pixel index of a core point. */
  int64_t *first = cmds_xmalloc(sizeof(int64_t) * (size_t)(g.ncell ? g.ncell : 1));
  for (int64_t c = 0; c < g.ncell; c++) first[c] = INT64_MAX;
  for (int64_t i = 0, c = 0; i < g.n; i++) {
    while (c + 1 < g.ncell && g.cstart[c + 1] <= i) c++;
    if (core[i]) {
      int64_t r = par[c];
      if (g.pix[i] < first[r]) first[r] = g.pix[i];
    }
  }
  /* 3. Labels: core points their cluster; a border point the neighbouring cluster that
   * comes first (scikit-learn expands clusters in that order). Label = root cell. */
  int64_t *label = cmds_xmalloc(sizeof(int64_t) * (size_t)(g.n ? g.n : 1));
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t c = 0; c < g.ncell; c++) {
    for (int64_t i = g.cstart[c]; i < g.cstart[c] + g.ccount[c]; i++) {
      if (core[i]) {
        label[i] = par[c];
        continue;
      }
      int64_t best = -1;
      for (int dx = -REACH; dx <= REACH; dx++)
        for (int dy = -REACH; dy <= REACH; dy++)
          for (int dz = -REACH; dz <= REACH; dz++) {
            int64_t o = cell_find(&g, g.cxyz[c][0] + dx, g.cxyz[c][1] + dy, g.cxyz[c][2] + dz);
            if (o < 0 || !has_core[o]) continue;
            int64_t r = par[o];
            if (best >= 0 && first[r] >= first[best]) continue;
            for (int64_t j = g.cstart[o]; j < g.cstart[o] + g.ccount[o]; j++)
              if (core[j] && dist2(g.p + 3 * i, g.p + 3 * j) <= e2) {
                best = r;
                break;
              }
          }
      label[i] = best;
    }
  }
  /* 4. The largest cluster (ties: the one numbered first). */
  int64_t *size = cmds_xcalloc((size_t)(g.ncell ? g.ncell : 1), sizeof(int64_t));
  for (int64_t i = 0; i < g.n; i++)
    if (label[i] >= 0) size[label[i]]++;
  int64_t best = -1;
  for (int64_t c = 0; c < g.ncell; c++)
    if (size[c] > 0 && (best < 0 || size[c] > size[best] || (size[c] == size[best] && first[c] < first[best])))
      best = c;
  int64_t kept = 0;
  for (int64_t i = 0; i < g.n; i++)
    if (best >= 0 && label[i] == best) {
      keep[g.pix[i]] = 1;
      kept++;
    }
  free(size);
  free(label);
  free(first);
  free(has_core);
  free(par);
  free(core);
  grid_free(&g);
  return kept;
}

/* ---- normals ------------------------------------------------------------------------ */

void cmds_normals_central(const float *xyz, int h, int w, float *normals) {
  memset(normals, 0, sizeof(float) * 3 * (size_t)h * (size_t)w);
#pragma omp parallel for schedule(static)
  for (int r = 1; r < h - 1; r++)
    for (int c = 1; c < w - 1; c++) {
      size_t i = (size_t)r * (size_t)w + (size_t)c;
      const float *p = xyz + 3 * i, *l = p - 3, *rt = p + 3, *up = p - 3 * (size_t)w, *dn = p + 3 * (size_t)w;
      if (!cmds_pc_is_valid(p) || !cmds_pc_is_valid(l) || !cmds_pc_is_valid(rt) ||
          !cmds_pc_is_valid(up) || !cmds_pc_is_valid(dn))
        continue;
      double dx[3], dy[3];
      for (int k = 0; k < 3; k++) {
        dx[k] = (double)rt[k] - l[k];
        dy[k] = (double)dn[k] - up[k];
      }
      double n[3] = {dx[1] * dy[2] - dx[2] * dy[1], dx[2] * dy[0] - dx[0] * dy[2], dx[0] * dy[1] - dx[1] * dy[0]};
      double len = sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);
      if (len == 0) continue;
      double s = (n[0] * p[0] + n[1] * p[1] + n[2] * p[2]) > 0 ? -1 / len : 1 / len;
      for (int k = 0; k < 3; k++) normals[3 * i + (size_t)k] = (float)(n[k] * s);
    }
}

/* ---- EyeCandies --------------------------------------------------------------------- */

int cmds_mat4_inverse(const double m[16], double inv[16]) {
  double a[4][8];
  for (int r = 0; r < 4; r++)
    for (int c = 0; c < 8; c++) a[r][c] = c < 4 ? m[r * 4 + c] : (double)(c - 4 == r);
  for (int c = 0; c < 4; c++) {
    int piv = c;
    for (int r = c + 1; r < 4; r++)
      if (fabs(a[r][c]) > fabs(a[piv][c])) piv = r;
    if (fabs(a[piv][c]) < 1e-300) return -1;
    for (int k = 0; k < 8; k++) {
      double t = a[c][k];
      a[c][k] = a[piv][k];
      a[piv][k] = t;
    }
    double d = a[c][c];
    for (int k = 0; k < 8; k++) a[c][k] /= d;
    for (int r = 0; r < 4; r++) {
      if (r == c) continue;
      double f = a[r][c];
      for (int k = 0; k < 8; k++) a[r][k] -= f * a[c][k];
    }
  }
  for (int r = 0; r < 4; r++)
    for (int c = 0; c < 4; c++) inv[r * 4 + c] = a[r][c + 4];
  return 0;
}

int cmds_eyecandies_unproject(const float *depth, int h, int w, const double pose[16], double f,
                              float *xyz, cmds_error *err) {
  const double k4[16] = {f, 0, w / 2.0, 0, 0, f, h / 2.0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
  double m[16], inv[16];
  for (int r = 0; r < 4; r++)
    for (int c = 0; c < 4; c++) {
      double s = 0;
      for (int k = 0; k < 4; k++) s += k4[r * 4 + k] * pose[k * 4 + c];
      m[r * 4 + c] = s;
    }
  if (cmds_mat4_inverse(m, inv)) return CMDS_FAIL(err, CMDS_EINPUT, "K @ pose is singular");
  int64_t n = (int64_t)h * w, bad = -1;
  for (int64_t i = 0; i < n && bad < 0; i++)
    if (!(depth[i] > 0) || !isfinite(depth[i])) bad = i;
  if (bad >= 0)
    return CMDS_FAIL(err, CMDS_EINPUT, "depth %g at pixel (%lld, %lld), expected positive and finite",
                     (double)depth[bad], (long long)(bad / w), (long long)(bad % w));
#pragma omp parallel for schedule(static)
  for (int r = 0; r < h; r++)
    for (int c = 0; c < w; c++) {
      size_t i = (size_t)r * (size_t)w + (size_t)c;
      double d = depth[i], v[4] = {c, r, 1, 1 / d};
      for (int k = 0; k < 3; k++)
        xyz[3 * i + (size_t)k] =
            (float)(d * (inv[k * 4] * v[0] + inv[k * 4 + 1] * v[1] + inv[k * 4 + 2] * v[2] + inv[k * 4 + 3] * v[3]));
    }
  return CMDS_OK;
}

void cmds_eyecandies_bg_params_default(cmds_eyecandies_bg_params *p) {
  p->q1_max = -0.02;
  p->q2_max = 1.8;
  p->q0_abs_max = 1.0;
  p->scale = 0.1;
}

void cmds_eyecandies_remove_background(float *xyz, int h, int w) {
  cmds_eyecandies_bg_params p;
  cmds_eyecandies_bg_params_default(&p);
  cmds_eyecandies_remove_background_p(xyz, h, w, &p);
}

void cmds_eyecandies_remove_background_p(float *xyz, int h, int w, const cmds_eyecandies_bg_params *bp) {
  const float *pt = xyz + 3 * (size_t)(w / 2), *pb = xyz + 3 * ((size_t)(h - 1) * (size_t)w + (size_t)(w / 2));
  double s[3] = {0, pb[1], pb[2]};
  double dz = (double)pt[1] - pb[1], dy = (double)pt[2] - pb[2], nrm = sqrt(dz * dz + dy * dy);
  double c = nrm > 0 ? dy / nrm : 1, sn = nrm > 0 ? dz / nrm : 0;
  const double R[3][3] = {{1, 0, 0}, {0, c, -sn}, {0, sn, c}};
  int64_t n = (int64_t)h * w;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) {
    float *p = xyz + 3 * i;
    double d[3] = {p[0] - s[0], p[1] - s[1], p[2] - s[2]}, q[3], x[3];
    for (int r = 0; r < 3; r++) q[r] = R[r][0] * d[0] + R[r][1] * d[1] + R[r][2] * d[2];
    if (q[1] > bp->q1_max || q[2] > bp->q2_max || q[0] > bp->q0_abs_max || q[0] < -bp->q0_abs_max)
      for (int k = 0; k < 3; k++) q[k] = -s[k];
    for (int r = 0; r < 3; r++) x[r] = R[0][r] * q[0] + R[1][r] * q[1] + R[2][r] * q[2] + s[r];
    p[0] = (float)(x[0] * bp->scale);
    p[1] = (float)(x[2] * -bp->scale);
    p[2] = (float)(x[1] * bp->scale);
  }
}

/* ---- MVTec 3D-AD: the whole cleaning ------------------------------------------------ */

void cmds_mvtec_params_default(cmds_mvtec_params *p) {
  cmds_plane_params_default(&p->plane);
  p->remove_dist = 0.005;
  p->pad_multiple = 100;
  p->dbscan_eps = 0.006;
  p->dbscan_min_points = 30;
}

int cmds_mvtec_clean(const float *xyz, int h, int w, const cmds_mvtec_params *p, float **out,
                     cmds_mvtec_result *res, cmds_error *err) {
  memset(res, 0, sizeof *res);
  *out = NULL;
  int rc = cmds_plane_ransac(xyz, h, w, &p->plane, res->plane, &res->plane_inliers, err);
  if (rc) return rc;
  /* Remove on a copy: the caller's cloud stays as read. */
  float *work = cmds_xmalloc(sizeof(float) * 3 * (size_t)h * (size_t)w);
  memcpy(work, xyz, sizeof(float) * 3 * (size_t)h * (size_t)w);
  res->removed = cmds_plane_remove(work, h, w, res->plane, p->remove_dist);
  void *padded;
  cmds_pad_square(work, h, w, 3 * sizeof(float), p->pad_multiple, &padded, &res->side, &res->top,
                  &res->left);
  free(work);
  /* DBSCAN after padding, as the field's scripts do: the padding only adds missing points,
   * so the clusters are those of the unpadded cloud. */
  float *sq = padded;
  uint8_t *keep = cmds_xmalloc((size_t)res->side * (size_t)res->side);
  res->kept = cmds_dbscan_largest(sq, res->side, res->side, p->dbscan_eps, p->dbscan_min_points, keep);
  cmds_pc_keep(sq, res->side, res->side, keep);
  free(keep);
  *out = sq;
  return CMDS_OK;
}
