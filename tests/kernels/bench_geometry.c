/* bench_geometry: wall time of the MVTec 3D-AD cleaning (cmds_mvtec_clean: RANSAC plane,
 * removal, padding, largest DBSCAN cluster) and of cmds_normals_central on a synthetic
 * n x n cloud shaped like an MVTec scan (default 800: a tilted plane 0.25 mm per pixel, a
 * dome-shaped object of about 200k points, a small second object, 2 % missing points).
 * Prints one line per step and checks that the object survived, so a broken build cannot
 * produce a fast but meaningless number. Label bench: not in the default test run.
 * Usage: bench_geometry [n] [repeats] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "pointcloud.h"
#include "rng.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* (n, n, 3): plane z = 0.6 + 0.05 x - 0.03 y with 0.2 mm noise; a dome of radius 0.3 n pixels
 * rising 10-30 mm above it; a disc of radius 0.03 n pixels 20 mm above, far from the dome. */
static float *make_cloud(int n, int64_t *object_points) {
  float *xyz = malloc(sizeof(float) * 3 * (size_t)n * (size_t)n);
  cmds_rng rng;
  cmds_rng_seed(&rng, 12345);
  double sp = 0.00025, R = 0.3 * n, r2d = 0.03 * n;
  int64_t obj = 0;
  for (int r = 0; r < n; r++)
    for (int c = 0; c < n; c++) {
      float *q = xyz + 3 * ((size_t)r * (size_t)n + (size_t)c);
      double x = (c - n / 2 + 0.5) * sp, y = (r - n / 2 + 0.5) * sp, z = 0.6 + 0.05 * x - 0.03 * y;
      double d2 = (c - n / 2.0) * (c - n / 2.0) + (r - n / 2.0) * (r - n / 2.0);
      double e2 = (c - 0.88 * n) * (c - 0.88 * n) + (r - 0.15 * n) * (r - 0.15 * n);
      z += 0.0002 * cmds_rng_normal(&rng);
      if (d2 < R * R) {
        z -= 0.01 + 0.02 * (1 - d2 / (R * R));
        obj++;
      } else if (e2 < r2d * r2d) {
        z -= 0.02;
      }
      q[0] = (float)x;
      q[1] = (float)y;
      q[2] = (float)z;
      if (cmds_rng_uniform(&rng) < 0.02) q[0] = q[1] = q[2] = 0;
    }
  *object_points = obj;
  return xyz;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 800, reps = argc > 2 ? atoi(argv[2]) : 3;
  if (n < 100 || reps < 1) {
    fprintf(stderr, "usage: bench_geometry [n >= 100] [repeats >= 1]\n");
    return 2;
  }
  int64_t obj;
  float *xyz = make_cloud(n, &obj);
  cmds_mvtec_params p;
  cmds_mvtec_params_default(&p);
  double best_clean = 1e30, best_norm = 1e30;
  cmds_mvtec_result res = {0};
  for (int k = 0; k < reps; k++) {
    float *out = NULL;
    cmds_error err = {0};
    double t0 = now();
    if (cmds_mvtec_clean(xyz, n, n, &p, &out, &res, &err)) {
      fprintf(stderr, "bench_geometry: %s\n", err.msg);
      return 1;
    }
    double t1 = now();
    float *normals = malloc(sizeof(float) * 3 * (size_t)res.side * (size_t)res.side);
    cmds_normals_central(out, res.side, res.side, normals);
    double t2 = now();
    if (t1 - t0 < best_clean) best_clean = t1 - t0;
    if (t2 - t1 < best_norm) best_norm = t2 - t1;
    free(normals);
    free(out);
  }
  printf("bench_geometry: %dx%d cloud, object %lld points (before holes), kept %lld, plane removed %lld\n", n,
         n, (long long)obj, (long long)res.kept, (long long)res.removed);
  printf("bench_geometry: mvtec_clean %.3f s, normals %.3f s, total %.3f s (best of %d)\n", best_clean,
         best_norm, best_clean + best_norm, reps);
  free(xyz);
  /* The object minus its 2 % holes must be what is kept (within 3 %: holes are random). */
  return fabs((double)res.kept - 0.98 * (double)obj) < 0.03 * (double)obj ? 0 : 1;
}
