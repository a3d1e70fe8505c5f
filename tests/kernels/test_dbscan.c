/* test_dbscan: cmds_dbscan_largest against scikit-learn's DBSCAN(eps=0.006, min_samples=30)
 * (tests/fixtures/gen_geometry.py: three Gaussian blobs of different sizes scattered over a
 * 60 x 60 image among holes and uniform noise, so border points and noise both occur): the
 * largest cluster's membership must agree pixel for pixel. The border rule: two balls of 35
 * core points and 3 non-core points within eps of both; the shared points join the cluster
 * whose first core point comes first in pixel order, which makes it the largest (variants
 * a and b), and with no shared points the tie goes to the cluster found first (variant
 * tie); membership vs scikit-learn, exactly. Defined edge cases: an all-missing
 * cloud keeps nothing; a cloud that is only a dense plane is one cluster and is kept whole;
 * a cloud too sparse to have a core point keeps nothing. */
#include <string.h>

#include "check.h"
#include "geomtest.h"
#include "pointcloud.h"

static void test_fixture(void) {
  npy_array in = geom_load("dbscan_in"), want = geom_load("dbscan_keep");
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
  CHECK(ref > 100, "the reference cluster is not trivial (%lld points)", (long long)ref);
  /* cmds_pc_keep zeroes exactly the others. */
  float *cp = malloc(sizeof(float) * (size_t)in.count);
  memcpy(cp, in.data, sizeof(float) * (size_t)in.count);
  cmds_pc_keep(cp, h, w, keep);
  int64_t left = 0;
  for (int64_t i = 0; i < (int64_t)h * w; i++) left += cmds_pc_is_valid(cp + 3 * i);
  CHECK(left == kept, "cmds_pc_keep leaves the kept points (%lld of %lld)", (long long)left, (long long)kept);
  free(cp);
  /* Everything missing: nothing kept. */
  float *empty = calloc((size_t)h * (size_t)w * 3, sizeof(float));
  CHECK(cmds_dbscan_largest(empty, h, w, 0.006, 30, keep) == 0, "empty cloud keeps nothing");
  free(empty);
  free(keep);
  npy_free(&in);
  npy_free(&want);
}

static void test_border_rule(void) {
  static const char *variants[3] = {"a", "b", "tie"};
  for (int v = 0; v < 3; v++) {
    char ni[64], nk[64];
    snprintf(ni, sizeof ni, "dborder_%s_in", variants[v]);
    snprintf(nk, sizeof nk, "dborder_%s_keep", variants[v]);
    npy_array in = geom_load(ni), want = geom_load(nk);
    int h = (int)in.shape[0], w = (int)in.shape[1];
    uint8_t *keep = malloc((size_t)h * (size_t)w);
    int64_t kept = cmds_dbscan_largest(in.data, h, w, 0.006, 30, keep), diff = 0, ref = 0;
    for (int64_t i = 0; i < (int64_t)h * w; i++) {
      diff += keep[i] != ((uint8_t *)want.data)[i];
      ref += ((uint8_t *)want.data)[i];
    }
    CHECK(diff == 0 && kept == ref, "border rule %s: %lld pixels differ from scikit-learn (kept %lld, sklearn %lld)",
          variants[v], (long long)diff, (long long)kept, (long long)ref);
    free(keep);
    npy_free(&in);
    npy_free(&want);
  }
}

static void test_plane_only(void) {
  /* A 1 mm grid plane: every point has > 30 neighbours within 6 mm, so it is one cluster. */
  enum { H = 40, W = 50 };
  float *xyz = malloc(sizeof(float) * 3 * H * W);
  uint8_t keep[H * W];
  int64_t valid = 0;
  for (int i = 0; i < H * W; i++) {
    float *p = xyz + 3 * i;
    p[0] = 0.001f * (float)(i % W) + 0.01f;
    p[1] = 0.001f * (float)(i / W) + 0.01f;
    p[2] = 0.6f + 0.0002f * (float)(i % W);
    if (i % 17 == 3) p[0] = p[1] = p[2] = 0; /* some holes */
    valid += cmds_pc_is_valid(p);
  }
  int64_t kept = cmds_dbscan_largest(xyz, H, W, 0.006, 30, keep);
  CHECK(kept == valid, "plane-only cloud: the whole plane is kept (%lld of %lld)", (long long)kept,
        (long long)valid);
  /* Spread the points 10 mm apart: no core point, nothing kept. */
  for (int i = 0; i < H * W; i++) {
    float *p = xyz + 3 * i;
    if (cmds_pc_is_valid(p)) {
      p[0] = 0.01f * (float)(i % W) + 0.01f;
      p[1] = 0.01f * (float)(i / W) + 0.01f;
    }
  }
  CHECK(cmds_dbscan_largest(xyz, H, W, 0.006, 30, keep) == 0, "no core point: nothing kept");
  free(xyz);
}

int main(int argc, char **argv) {
  if (argc > 1) geom_dir = argv[1];
  test_fixture();
  test_border_rule();
  test_plane_only();
  return CHECK_DONE();
}
