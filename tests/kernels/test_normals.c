/* test_normals: cmds_normals_central against numpy (tests/fixtures/gen_geometry.py) on a
 * curved surface with holes and a missing block: every component within 1e-5 absolute, and
 * zero exactly where numpy's is zero (a missing neighbour, the image border). Plus a flat
 * plane facing the camera, whose normal must be (0, 0, -1) everywhere inside. */
#include <string.h>

#include "check.h"
#include "geomtest.h"
#include "pointcloud.h"

static void test_fixture(void) {
  npy_array in = geom_load("normals_in"), want = geom_load("normals_out");
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

static void test_flat(void) {
  enum { H = 7, W = 9 };
  float xyz[H * W * 3], n[H * W * 3];
  for (int r = 0; r < H; r++)
    for (int c = 0; c < W; c++) {
      float *p = xyz + 3 * (r * W + c);
      p[0] = 0.01f * (float)(c + 1);
      p[1] = 0.01f * (float)(r + 1);
      p[2] = 0.5f;
    }
  cmds_normals_central(xyz, H, W, n);
  int inner_ok = 1, border_zero = 1;
  for (int r = 0; r < H; r++)
    for (int c = 0; c < W; c++) {
      const float *q = n + 3 * (r * W + c);
      if (r == 0 || c == 0 || r == H - 1 || c == W - 1)
        border_zero &= q[0] == 0 && q[1] == 0 && q[2] == 0;
      else
        inner_ok &= fabsf(q[0]) < 1e-6f && fabsf(q[1]) < 1e-6f && fabsf(q[2] + 1) < 1e-6f;
    }
  CHECK(inner_ok, "flat plane z = 0.5: normal (0, 0, -1), towards the camera");
  CHECK(border_zero, "image border: zero normal");
  /* One missing point zeroes itself and its four neighbours' normals. */
  memset(xyz + 3 * (3 * W + 4), 0, 3 * sizeof(float));
  cmds_normals_central(xyz, H, W, n);
  CHECK(n[3 * (3 * W + 4) + 2] == 0 && n[3 * (3 * W + 3) + 2] == 0 && n[3 * (2 * W + 4) + 2] == 0 &&
            n[3 * (3 * W + 6) + 2] != 0,
        "a hole zeroes the normals that use it, and only those");
}

int main(int argc, char **argv) {
  if (argc > 1) geom_dir = argv[1];
  test_fixture();
  test_flat();
  return CHECK_DONE();
}
