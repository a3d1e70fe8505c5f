/* pointcloud: the geometry of organised point clouds (h, w, 3) float32, row-major, as the
 * prep stage needs it (METHOD.md section 2). A point is "valid" (foreground) when all three
 * coordinates are non-zero: MVTec 3D-AD marks missing points as (0, 0, 0), and the field's
 * EyeCandies background points keep non-zero y and z but x = 0.
 * Plain C (OpenMP where it pays); prep runs on CPUs. Results never depend on the number of
 * threads or ranks. */
#ifndef CMDS_KERNELS_POINTCLOUD_H
#define CMDS_KERNELS_POINTCLOUD_H

#include <stddef.h>
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

/* Centred zero padding to a square (MVTec 3D-AD: xyz, RGB and masks alike): side = max(h, w)
 * rounded up to a multiple of `multiple` (100; values < 1 mean 1), top = (side - h) / 2,
 * left = (side - w) / 2 (integer division), the remainder at the bottom/right. */
void cmds_pad_square_geometry(int h, int w, int multiple, int *side, int *top, int *left);
/* src (h, w) of elem_bytes-byte pixels -> *dst (side, side), newly allocated (free()). */
void cmds_pad_square(const void *src, int h, int w, size_t elem_bytes, int multiple, void **dst,
                     int *side, int *top, int *left);

/* DBSCAN over the valid points, as scikit-learn's DBSCAN(eps, min_samples=min_points) in
 * pixel order: 3D distance <= eps; a point's neighbourhood counts the point itself; core
 * iff >= min_points neighbours; a border point joins, among the clusters with a core point
 * within eps of it, the one whose first core point (pixel order) comes first. keep (h*w)
 * gets 1 for the points of the largest cluster (ties: the cluster found first), 0
 * elsewhere. Returns its size; 0 when there is no core point (nothing kept).
 * Grid-based: cells of side eps/sqrt(3), so dense cells are core without distance tests. */
int64_t cmds_dbscan_largest(const float *xyz, int h, int w, double eps, int min_points,
                            uint8_t *keep);
/* Zeroes the points with keep[i] == 0. */
void cmds_pc_keep(float *xyz, int h, int w, const uint8_t *keep);

/* Normal at each pixel: normalised (P[r][c+1] - P[r][c-1]) x (P[r+1][c] - P[r-1][c]),
 * oriented towards the camera at the origin; 0 where the point or a neighbour is invalid,
 * on the border, or where the cross product vanishes. */
void cmds_normals_central(const float *xyz, int h, int w, float *normals);

/* Inverse of a row-major 4x4 matrix (Gauss-Jordan, partial pivoting); -1 if singular. */
int cmds_mat4_inverse(const double m[16], double inv[16]);

/* EyeCandies: X = d * (inverse(K4 @ pose) @ (u, v, 1, 1/d))[:3], K4 = [[f,0,w/2,0],
 * [0,f,h/2,0],[0,0,1,0],[0,0,0,1]], u = column, v = row. CMDS_EINPUT if K4 @ pose is
 * singular or a depth is not positive and finite. */
int cmds_eyecandies_unproject(const float *depth, int h, int w, const double pose[16], double f,
                              float *xyz, cmds_error *err);
/* The field's EyeCandies background removal (METHOD.md section 2). With P_t the point at
 * (row 0, col w/2), P_b at (row h-1, col w/2), s = (0, P_b.y, P_b.z) and R the rotation about
 * x that takes P_t - P_b into the y-z frame, q = R (X - s); a point is background when
 * q1 > q1_max, q2 > q2_max or |q0| > q0_abs_max, and then q = -s (it lands on the origin,
 * so x = 0: not valid by cmds_pc_is_valid); X' = R^T q + s; finally axes reordered to
 * (x, z, y) and scaled by (scale, -scale, scale). */
typedef struct cmds_eyecandies_bg_params {
  double q1_max;     /* -0.02 */
  double q2_max;     /* 1.8 */
  double q0_abs_max; /* 1.0 */
  double scale;      /* 0.1 */
} cmds_eyecandies_bg_params;

void cmds_eyecandies_bg_params_default(cmds_eyecandies_bg_params *p);
void cmds_eyecandies_remove_background_p(float *xyz, int h, int w, const cmds_eyecandies_bg_params *p);
/* Same with the defaults. */
void cmds_eyecandies_remove_background(float *xyz, int h, int w);

/* MVTec 3D-AD cleaning in METHOD.md's order, so prep calls one function:
 *   1. RANSAC background plane on the border strips (cmds_plane_ransac);
 *   2. zero the points within remove_dist of it (cmds_plane_remove);
 *   3. centred zero padding to a square, side a multiple of pad_multiple (cmds_pad_square);
 *   4. keep only the largest DBSCAN cluster (cmds_dbscan_largest + cmds_pc_keep).
 * When nothing survives (a cloud that is only the plane) the result is all zero with
 * kept = 0 and the call still succeeds: whether that is an error is the caller's call. */
typedef struct cmds_mvtec_params {
  cmds_plane_params plane; /* see cmds_plane_params_default */
  double remove_dist;      /* 0.005 */
  int pad_multiple;        /* 100 */
  double dbscan_eps;       /* 0.006 */
  int dbscan_min_points;   /* 30 */
} cmds_mvtec_params;

typedef struct cmds_mvtec_result {
  double plane[4];       /* fitted background plane */
  int64_t plane_inliers; /* border points within inlier_dist of it */
  int64_t removed;       /* points zeroed by step 2 */
  int64_t kept;          /* points of the largest cluster (0: nothing left) */
  int side, top, left;   /* padded square and the offset of the original image in it */
} cmds_mvtec_result;

void cmds_mvtec_params_default(cmds_mvtec_params *p);
/* xyz (h, w, 3) is not modified; *out (side, side, 3) is newly allocated (free()). Errors
 * as cmds_plane_ransac (CMDS_EINPUT: too few valid border points; the caller adds the file
 * name). */
int cmds_mvtec_clean(const float *xyz, int h, int w, const cmds_mvtec_params *p, float **out,
                     cmds_mvtec_result *res, cmds_error *err);

#endif
