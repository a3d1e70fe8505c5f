/* test_geometry: kernels/geometry/pointcloud against independent computations
 * (tests/fixtures/gen_geometry.py):
 *   normals   vs numpy (1e-5 absolute per component; zero exactly where numpy has zero);
 *   DBSCAN    largest-cluster membership vs scikit-learn, exactly;
 *   RANSAC    finds the plane of the true inliers despite 8 % outliers and an object
 *             (normal within 2e-3 rad, offset within 2e-4), and is deterministic per seed;
 *   TLS fit   vs numpy SVD (1e-9);
 *   EyeCandies unprojection and background removal vs the field's numpy code (1e-5 rel.);
 *   edge cases: too few border points is an error, an empty cloud keeps nothing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "npy.h"
#include "pointcloud.h"

static const char *dir;

static npy_array load(const char *name) {
  char p[1024];
  npy_array a;
  snprintf(p, sizeof p, "%s/%s.npy", dir, name);
  if (npy_load(p, &a)) exit(1);
  return a;
}

static double plane_angle(const double *a, const double *b) {
  double d = fabs(a[0] * b[0] + a[1] * b[1] + a[2] * b[2]);
  return acos(d > 1 ? 1 : d);
}

static void test_normals(void) {
  npy_array in = load("normals_in"), want = load("normals_out");
  int h = (int)in.shape[0], w = (int)in.shape[1];
  float *got = malloc(sizeof(float) * (size_t)in.count);
  cmds_normals_central(in.data, h, w, got);
  int64_t bad = 0, zero_mismatch = 0, nonzero = 0;
  for (int64_t i = 0; i < in.count; i++) {
    double g = got[i], r = ((float *)want.data)[i];
    bad += fabs(g - r) > 1e-5;
    zero_mismatch += (g == 0) != (r == 0);
    nonzero += r != 0;
  }
  CHECK(bad == 0 && zero_mismatch == 0, "normals: %lld components off by > 1e-5, %lld zero mismatches",
        (long long)bad, (long long)zero_mismatch);
  CHECK(nonzero > in.count / 2, "normals: most pixels have one (%lld)", (long long)nonzero);
  free(got);
  npy_free(&in);
  npy_free(&want);
}

static void test_dbscan(void) {
  npy_array in = load("dbscan_in"), want = load("dbscan_keep");
  int h = (int)in.shape[0], w = (int)in.shape[1];
  uint8_t *keep = malloc((size_t)h * (size_t)w);
  int64_t kept = cmds_dbscan_largest(in.data, h, w, 0.006, 30, keep);
  int64_t diff = 0, ref = 0;
  for (int64_t i = 0; i < (int64_t)h * w; i++) {
    diff += keep[i] != ((uint8_t *)want.data)[i];
    ref += ((uint8_t *)want.data)[i];
  }
  CHECK(diff == 0 && kept == ref, "DBSCAN: %lld pixels differ from scikit-learn (kept %lld, sklearn %lld)",
        (long long)diff, (long long)kept, (long long)ref);
  /* Everything missing: nothing kept. */
  float *empty = calloc((size_t)h * (size_t)w * 3, sizeof(float));
  CHECK(cmds_dbscan_largest(empty, h, w, 0.006, 30, keep) == 0, "empty cloud keeps nothing");
  free(empty);
  free(keep);
  npy_free(&in);
  npy_free(&want);
}

static void test_plane(void) {
  npy_array in = load("plane_in"), ref = load("plane_ref");
  int h = (int)in.shape[0], w = (int)in.shape[1];
  cmds_plane_params p;
  cmds_plane_params_default(&p);
  double pl[4], pl2[4];
  int64_t inl = 0, inl2 = 0;
  cmds_error err;
  CHECK(cmds_plane_ransac(in.data, h, w, &p, pl, &inl, &err) == 0, "%s", err.msg);
  const double *r = ref.data;
  double ang = plane_angle(pl, r), off = fabs(fabs(pl[3]) - fabs(r[3]));
  CHECK(ang < 2e-3 && off < 2e-4, "RANSAC plane: angle %.2e rad, offset diff %.2e", ang, off);
  CHECK(pl[3] > 0, "plane sign: camera side positive (d = %g)", pl[3]);
  CHECK(cmds_plane_ransac(in.data, h, w, &p, pl2, &inl2, &err) == 0 && !memcmp(pl, pl2, sizeof pl) && inl == inl2,
        "same seed, same plane");
  /* Removing within 5 mm zeroes the plane but keeps the object 15 mm above it. */
  float *cp = malloc(sizeof(float) * (size_t)in.count);
  memcpy(cp, in.data, sizeof(float) * (size_t)in.count);
  cmds_plane_remove(cp, h, w, pl, 0.005);
  int centre = (h / 2) * w + w / 2, corner = 12 * w + 12;
  CHECK(cp[3 * centre + 2] != 0 || ((float *)in.data)[3 * centre + 2] == 0, "object point kept");
  CHECK(cp[3 * corner + 2] == 0, "plane point removed");
  free(cp);
  /* Too few valid border points is an input error, not a crash. */
  float *none = calloc((size_t)in.count, sizeof(float));
  CHECK(cmds_plane_ransac(none, h, w, &p, pl, &inl, &err) == CMDS_EINPUT && strstr(err.msg, "border"),
        "no border points: %s", err.msg);
  free(none);
  npy_free(&in);
  npy_free(&ref);

  npy_array tin = load("tls_in"), tref = load("tls_ref");
  double tp[4];
  cmds_plane_fit_tls(tin.data, tin.shape[0], tp);
  const double *t = tref.data;
  CHECK(plane_angle(tp, t) < 1e-7 && fabs(tp[3] - t[3]) < 1e-9, "TLS plane vs numpy SVD");
  npy_free(&tin);
  npy_free(&tref);
}

static void test_eyecandies(void) {
  npy_array depth = load("eyec_depth"), pose = load("eyec_pose"), un = load("eyec_unproject"),
            proc = load("eyec_processed");
  int h = (int)depth.shape[0], w = (int)depth.shape[1];
  float *xyz = malloc(sizeof(float) * 3 * (size_t)h * (size_t)w);
  cmds_error err;
  CHECK(cmds_eyecandies_unproject(depth.data, h, w, pose.data, 711.11, xyz, &err) == 0, "%s", err.msg);
  int64_t bad = 0;
  for (int64_t i = 0; i < un.count; i++) {
    double r = ((double *)un.data)[i];
    bad += fabs(xyz[i] - r) > 1e-5 * fabs(r) + 1e-6;
  }
  CHECK(bad == 0, "unprojection: %lld coordinates differ from numpy", (long long)bad);
  cmds_eyecandies_remove_background(xyz, h, w);
  bad = 0;
  int64_t fg = 0;
  for (int64_t i = 0; i < proc.count; i++) {
    double r = ((double *)proc.data)[i];
    bad += fabs(xyz[i] - r) > 1e-5 * fabs(r) + 1e-6;
  }
  for (int64_t i = 0; i < (int64_t)h * w; i++) fg += cmds_pc_is_valid(xyz + 3 * i);
  CHECK(bad == 0, "background removal: %lld coordinates differ from numpy", (long long)bad);
  CHECK(fg > 0 && fg < (int64_t)h * w, "both foreground and background present (%lld)", (long long)fg);
  float *bad_depth = malloc(sizeof(float) * (size_t)h * (size_t)w);
  memcpy(bad_depth, depth.data, sizeof(float) * (size_t)h * (size_t)w);
  bad_depth[5] = 0;
  CHECK(cmds_eyecandies_unproject(bad_depth, h, w, pose.data, 711.11, xyz, &err) == CMDS_EINPUT,
        "zero depth refused");
  free(bad_depth);
  free(xyz);
  npy_free(&depth);
  npy_free(&pose);
  npy_free(&un);
  npy_free(&proc);
}

int main(int argc, char **argv) {
  dir = argc > 1 ? argv[1] : "tests/fixtures/geometry";
  test_normals();
  test_dbscan();
  test_plane();
  test_eyecandies();
  return CHECK_DONE();
}
