/* test_plane: the MVTec 3D-AD background steps against tests/fixtures/gen_geometry.py:
 *   TLS fit      vs numpy SVD (normal within 1e-7 rad, offset within 1e-9);
 *   RANSAC       finds the TLS plane of the true background despite 8 % outliers and an
 *                object (normal within 2e-3 rad, offset within 2e-4), same plane for the
 *                same seed, CMDS_EINPUT naming the border strips when all points are missing;
 *   removal      zeroes plane points, keeps the object 15 mm above;
 *   padding      side/top/left rule and content placement, 1-byte and 12-byte pixels;
 *   mvtec_clean  the whole chain vs numpy + scikit-learn: the kept set equal pixel for
 *                pixel, same padding, the same bytes on 1 and 3 OpenMP threads; a cloud
 *                that is only the plane leaves nothing. */
#include <omp.h>
#include <string.h>

#include "check.h"
#include "geomtest.h"
#include "pointcloud.h"

static void test_tls(void) {
  npy_array tin = geom_load("tls_in"), tref = geom_load("tls_ref");
  double tp[4];
  cmds_plane_fit_tls(tin.data, tin.shape[0], tp);
  const double *t = tref.data;
  CHECK(geom_plane_angle(tp, t) < 1e-7 && fabs(tp[3] - t[3]) < 1e-9, "TLS plane vs numpy SVD");
  npy_free(&tin);
  npy_free(&tref);
}

static void test_ransac(void) {
  npy_array in = geom_load("plane_in"), ref = geom_load("plane_ref");
  int h = (int)in.shape[0], w = (int)in.shape[1];
  cmds_plane_params p;
  cmds_plane_params_default(&p);
  CHECK(p.iterations == 1000 && p.sample_points == 50 && p.inlier_dist == 0.004 && p.border == 10,
        "METHOD.md defaults");
  double pl[4], pl2[4];
  int64_t inl = 0, inl2 = 0;
  cmds_error err = {0};
  CHECK(cmds_plane_ransac(in.data, h, w, &p, pl, &inl, &err) == 0, "%s", err.msg);
  const double *r = ref.data;
  double ang = geom_plane_angle(pl, r), off = fabs(fabs(pl[3]) - fabs(r[3]));
  CHECK(ang < 2e-3 && off < 2e-4, "RANSAC plane: angle %.2e rad, offset diff %.2e", ang, off);
  CHECK(pl[3] > 0, "plane sign: camera side positive (d = %g)", pl[3]);
  CHECK(fabs(pl[0] * pl[0] + pl[1] * pl[1] + pl[2] * pl[2] - 1) < 1e-12, "unit normal");
  CHECK(cmds_plane_ransac(in.data, h, w, &p, pl2, &inl2, &err) == 0 && !memcmp(pl, pl2, sizeof pl) && inl == inl2,
        "same seed, same plane");
  /* Removing within 5 mm zeroes the plane but keeps the object 15 mm above it. */
  float *cp = malloc(sizeof(float) * (size_t)in.count);
  memcpy(cp, in.data, sizeof(float) * (size_t)in.count);
  int64_t removed = cmds_plane_remove(cp, h, w, pl, 0.005);
  int centre = (h / 2) * w + w / 2, corner = 12 * w + 12;
  CHECK(cp[3 * centre + 2] != 0 || ((float *)in.data)[3 * centre + 2] == 0, "object point kept");
  CHECK(cp[3 * corner + 2] == 0, "plane point removed");
  int64_t zeroed = 0; /* points that were not (0, 0, 0) and now are */
  for (int64_t i = 0; i < (int64_t)h * w; i++) {
    const float *a = (const float *)in.data + 3 * i, *b = cp + 3 * i;
    zeroed += (a[0] != 0 || a[1] != 0 || a[2] != 0) && b[0] == 0 && b[1] == 0 && b[2] == 0;
  }
  CHECK(removed == zeroed && removed > 0, "returns how many it zeroed (%lld, %lld)", (long long)removed,
        (long long)zeroed);
  free(cp);
  /* Too few valid border points is an input error, not a crash. */
  float *none = calloc((size_t)in.count, sizeof(float));
  CHECK(cmds_plane_ransac(none, h, w, &p, pl, &inl, &err) == CMDS_EINPUT && strstr(err.msg, "border"),
        "no border points: %s", err.msg);
  free(none);
  npy_free(&in);
  npy_free(&ref);
}

static void test_pad(void) {
  static const int cases[][6] = {/* h, w, multiple -> side, top, left */
                                 {800, 800, 100, 800, 0, 0},  {600, 800, 100, 800, 100, 0},
                                 {799, 801, 100, 900, 50, 49}, {61, 40, 100, 100, 19, 30},
                                 {3, 5, 1, 5, 1, 0},           {7, 2, 0, 7, 0, 2}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    int side, top, left;
    cmds_pad_square_geometry(cases[k][0], cases[k][1], cases[k][2], &side, &top, &left);
    CHECK(side == cases[k][3] && top == cases[k][4] && left == cases[k][5],
          "pad %dx%d to %d: got side %d top %d left %d", cases[k][0], cases[k][1], cases[k][2], side, top, left);
  }
  /* Content: 3 x 5 uint8 and 3 x 5 x (3 floats) into 5 x 5 with multiple 1. */
  uint8_t m[15];
  float f[45];
  for (int i = 0; i < 15; i++) {
    m[i] = (uint8_t)(i + 1);
    for (int k = 0; k < 3; k++) f[3 * i + k] = (float)(i + 1) + 0.25f * (float)k;
  }
  void *dm, *df;
  int side, top, left;
  cmds_pad_square(m, 3, 5, 1, 1, &dm, &side, &top, &left);
  int ok = side == 5 && top == 1 && left == 0;
  for (int r = 0; r < 5; r++)
    for (int c = 0; c < 5; c++) {
      int want = (r >= 1 && r < 4) ? (r - 1) * 5 + c + 1 : 0;
      ok &= ((uint8_t *)dm)[r * 5 + c] == want;
    }
  CHECK(ok, "uint8 padding places the image at (1, 0), zeros elsewhere");
  cmds_pad_square(f, 3, 5, 3 * sizeof(float), 4, &df, &side, &top, &left);
  ok = side == 8 && top == 2 && left == 1;
  for (int r = 0; r < 8; r++)
    for (int c = 0; c < 8; c++)
      for (int k = 0; k < 3; k++) {
        int in = r >= 2 && r < 5 && c >= 1 && c < 6;
        float want = in ? (float)((r - 2) * 5 + (c - 1) + 1) + 0.25f * (float)k : 0.0f;
        ok &= ((float *)df)[(r * 8 + c) * 3 + k] == want;
      }
  CHECK(ok, "float3 padding to 8 (multiple 4) places the image at (2, 1)");
  free(dm);
  free(df);
}

static void test_clean(void) {
  npy_array in = geom_load("mvtec_in"), want = geom_load("mvtec_keep"), geom = geom_load("mvtec_geom");
  int h = (int)in.shape[0], w = (int)in.shape[1];
  cmds_mvtec_params p;
  cmds_mvtec_params_default(&p);
  float *out = NULL;
  cmds_mvtec_result res;
  cmds_error err = {0};
  CHECK(cmds_mvtec_clean(in.data, h, w, &p, &out, &res, &err) == 0, "%s", err.msg);
  const int64_t *g = geom.data;
  CHECK(res.side == g[0] && res.top == g[1] && res.left == g[2], "padding %d/%d/%d vs %lld/%lld/%lld",
        res.side, res.top, res.left, (long long)g[0], (long long)g[1], (long long)g[2]);
  if (res.side == g[0] && out) {
    int64_t diff = 0, ref = 0, moved = 0, n = (int64_t)res.side * res.side;
    for (int64_t i = 0; i < n; i++) {
      int k = ((uint8_t *)want.data)[i];
      diff += cmds_pc_is_valid(out + 3 * i) != k;
      ref += k;
      if (k) { /* a kept point is the input point at (r - top, c - left), unchanged */
        int64_t r = i / res.side - res.top, c = i % res.side - res.left;
        const float *src = (const float *)in.data + 3 * (r * w + c);
        moved += memcmp(src, out + 3 * i, 3 * sizeof(float)) != 0;
      }
    }
    CHECK(diff == 0 && res.kept == ref && moved == 0,
          "cleaned cloud vs numpy + scikit-learn: %lld pixels differ, kept %lld vs %lld, %lld moved",
          (long long)diff, (long long)res.kept, (long long)ref, (long long)moved);
    CHECK(res.removed > 0 && res.plane_inliers > 0, "plane removed %lld points, %lld inliers",
          (long long)res.removed, (long long)res.plane_inliers);
  }
  /* Thread count does not change a byte. */
  float *out1 = NULL, *out3 = NULL;
  cmds_mvtec_result r1, r3;
  omp_set_num_threads(1);
  int rc1 = cmds_mvtec_clean(in.data, h, w, &p, &out1, &r1, &err);
  omp_set_num_threads(3);
  int rc3 = cmds_mvtec_clean(in.data, h, w, &p, &out3, &r3, &err);
  CHECK(rc1 == 0 && rc3 == 0 && !memcmp(&r1, &r3, sizeof r1) &&
            !memcmp(out1, out3, sizeof(float) * 3 * (size_t)r1.side * (size_t)r1.side),
        "1 and 3 threads give identical results");
  free(out1);
  free(out3);
  free(out);
  /* Only the plane: removal leaves nothing, DBSCAN keeps nothing, still a success. */
  float *flat = malloc(sizeof(float) * (size_t)in.count);
  for (int r = 0; r < h; r++)
    for (int c = 0; c < w; c++) {
      float *q = flat + 3 * ((size_t)r * (size_t)w + (size_t)c);
      q[0] = 0.0015f * (float)(c - w / 2);
      q[1] = 0.0015f * (float)(r - h / 2);
      q[2] = 0.6f + 0.05f * q[0] - 0.03f * q[1];
      if (q[0] == 0 || q[1] == 0) q[0] = q[1] = q[2] = 0;
    }
  CHECK(cmds_mvtec_clean(flat, h, w, &p, &out, &res, &err) == 0, "%s", err.msg);
  int64_t left = 0;
  for (int64_t i = 0; out && i < (int64_t)res.side * res.side; i++) left += cmds_pc_is_valid(out + 3 * i);
  CHECK(res.kept == 0 && left == 0 && res.removed > 0, "plane only: nothing left (kept %lld, %lld valid)",
        (long long)res.kept, (long long)left);
  free(out);
  /* All missing: the RANSAC error comes through, nothing allocated. */
  memset(flat, 0, sizeof(float) * (size_t)in.count);
  CHECK(cmds_mvtec_clean(flat, h, w, &p, &out, &res, &err) == CMDS_EINPUT && out == NULL,
        "all-missing cloud: %s", err.msg);
  free(flat);
  npy_free(&in);
  npy_free(&want);
  npy_free(&geom);
}

int main(int argc, char **argv) {
  if (argc > 1) geom_dir = argv[1];
  test_tls();
  test_ransac();
  test_pad();
  test_clean();
  return CHECK_DONE();
}
