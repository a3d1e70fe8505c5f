/* pointcloud: the geometry of organised point clouds (h, w, 3) float32, row-major, as the
 * prep stage needs it (METHOD.md section 2). A point is "valid" (foreground) when all three
 * coordinates are non-zero: MVTec 3D-AD marks missing points as (0, 0, 0), and the field's
 * EyeCandies background points keep non-zero y and z but x = 0.
 * Plain C (OpenMP where it pays); prep runs on CPUs. Results never depend on the number of
 * threads or ranks. */
#ifndef CMDS_KERNELS_POINTCLOUD_H
#define CMDS_KERNELS_POINTCLOUD_H

#include <stdint.h>

#include "cmds_error.h"

static inline int cmds_pc_is_valid(const float *p) { return p[0] != 0 && p[1] != 0 && p[2] != 0; }

typedef struct cmds_plane_params {
  int iterations;     /* RANSAC hypotheses (1000) */
  int sample_points;  /* points per hypothesis (50) */
  double inlier_dist; /* inlier distance (0.004) */
  int border;         /* width of the border strips the plane is fitted to (10 px) */
  uint64_t seed;
} cmds_plane_params;

void cmds_plane_params_default(cmds_plane_params *p);

/* Fits the background plane a x + b y + c z + d = 0 (unit normal) to the valid points of
 * the border strips: RANSAC with total-least-squares hypotheses, best = most inliers (the
 * first on ties), refit on the inliers. CMDS_EINPUT if there are fewer valid border points
 * than sample_points. */
int cmds_plane_ransac(const float *xyz, int h, int w, const cmds_plane_params *p, double plane[4],
                      int64_t *inliers, cmds_error *err);
/* Zeroes every point closer than dist to the plane; returns how many. */
int64_t cmds_plane_remove(float *xyz, int h, int w, const double plane[4], double dist);
/* Total-least-squares plane through n points (x,y,z interleaved, double). */
void cmds_plane_fit_tls(const double *pts, int64_t n, double plane[4]);

/* DBSCAN over the valid points (3D distance < = eps; a point's neighbourhood counts the point
 * itself; core iff >= min_points neighbours; border points join the first cluster, in
 * index order of its core points, within eps). keep[i] = 1 for the points of the largest
 * cluster (ties: the cluster whose first point comes first). Returns its size (0: none).
 * Grid-based: cells of side eps/sqrt(3), so dense cells are core without distance tests. */
int64_t cmds_dbscan_largest(const float *xyz, int h, int w, double eps, int min_points,
                            uint8_t *keep);
/* Zeroes the points with keep[i] == 0. */
void cmds_pc_keep(float *xyz, int h, int w, const uint8_t *keep);

/* Normal at each pixel: normalised (P[r][c+1] - P[r][c-1]) x (P[r+1][c] - P[r-1][c]),
 * oriented towards the camera at the origin; 0 where the point or a neighbour is invalid,
 * on the border, or where the cross product vanishes. */
void cmds_normals_central(const float *xyz, int h, int w, float *normals);

/* EyeCandies: X = d * (inverse(K4 @ pose) @ (u, v, 1, 1/d))[:3], K4 = [[f,0,w/2,0],
 * [0,f,h/2,0],[0,0,1,0],[0,0,0,1]], u = column, v = row. CMDS_EINPUT if K4 @ pose is
 * singular or a depth is not positive and finite. */
int cmds_eyecandies_unproject(const float *depth, int h, int w, const double pose[16], double f,
                              float *xyz, cmds_error *err);
/* The field's EyeCandies background removal, then axes reordered to (x, z, y) and scaled
 * by (0.1, -0.1, 0.1) (METHOD.md section 2). */
void cmds_eyecandies_remove_background(float *xyz, int h, int w);

#endif
