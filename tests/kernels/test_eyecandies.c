/* test_eyecandies: depth -> points and the field's background removal against numpy lines
 * written from METHOD.md (tests/fixtures/gen_geometry.py) on a synthetic 32 x 32 depth map
 * seen by a tilted camera: every coordinate within 1e-5 relative (+1e-6 absolute). Also:
 * a zero depth is refused, the scale parameter scales, the defaults are METHOD.md's. */
#include <string.h>

#include "check.h"
#include "geomtest.h"
#include "pointcloud.h"

int main(int argc, char **argv) {
  if (argc > 1) geom_dir = argv[1];
  npy_array depth = geom_load("eyec_depth"), pose = geom_load("eyec_pose"), un = geom_load("eyec_unproject"),
            proc = geom_load("eyec_processed");
  int h = (int)depth.shape[0], w = (int)depth.shape[1];
  size_t n3 = 3 * (size_t)h * (size_t)w;
  float *xyz = malloc(sizeof(float) * n3), *xyz2 = malloc(sizeof(float) * n3);
  cmds_error err = {0};
  CHECK(cmds_eyecandies_unproject(depth.data, h, w, pose.data, 711.11, xyz, &err) == 0, "%s", err.msg);
  int64_t bad = 0;
  for (int64_t i = 0; i < un.count; i++) {
    double r = ((double *)un.data)[i];
    bad += fabs(xyz[i] - r) > 1e-5 * fabs(r) + 1e-6;
  }
  CHECK(bad == 0, "unprojection: %lld coordinates differ from numpy", (long long)bad);
  memcpy(xyz2, xyz, sizeof(float) * n3);
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

  cmds_eyecandies_bg_params bp;
  cmds_eyecandies_bg_params_default(&bp);
  CHECK(bp.q1_max == -0.02 && bp.q2_max == 1.8 && bp.q0_abs_max == 1.0 && bp.scale == 0.1, "defaults");
  bp.scale = 0.2; /* a power-of-two multiple of the default: exactly twice every coordinate */
  cmds_eyecandies_remove_background_p(xyz2, h, w, &bp);
  int64_t off = 0;
  for (size_t i = 0; i < n3; i++) off += xyz2[i] != 2 * xyz[i];
  CHECK(off == 0, "scale 0.2 doubles every coordinate (%lld differ)", (long long)off);

  float *bad_depth = malloc(sizeof(float) * (size_t)h * (size_t)w);
  memcpy(bad_depth, depth.data, sizeof(float) * (size_t)h * (size_t)w);
  bad_depth[5] = 0;
  CHECK(cmds_eyecandies_unproject(bad_depth, h, w, pose.data, 711.11, xyz, &err) == CMDS_EINPUT &&
            strstr(err.msg, "(0, 5)"),
        "zero depth refused: %s", err.msg);
  double sing[16] = {0};
  CHECK(cmds_eyecandies_unproject(depth.data, h, w, sing, 711.11, xyz, &err) == CMDS_EINPUT, "singular pose refused");
  free(bad_depth);
  free(xyz);
  free(xyz2);
  npy_free(&depth);
  npy_free(&pose);
  npy_free(&un);
  npy_free(&proc);
  return CHECK_DONE();
}
