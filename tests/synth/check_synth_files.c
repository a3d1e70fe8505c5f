/* check_synth_files: the contents of a cmds-synth dataset, read back through comm/formats:
 * MVTec rgb 8-bit RGB, xyz float32 x 3 with holes, gt 8-bit gray 0/255 (empty iff good);
 * EyeCandies image 8-bit RGB, depth 16-bit gray, yaml range with min < max, 4x4 pose,
 * masks 0/255 non-empty iff the sample is a defect (per the manifest order).
 * Usage: check_synth_files MVTEC_ROOT EYEC_ROOT SIZE */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "formats.h"

static void check_mask(const char *path, int S, int want_defect) {
  cmds_image m;
  cmds_error e;
  if (cmds_png_read(path, &m, &e)) {
    CHECK(0, "%s", e.msg);
    return;
  }
  int64_t on = 0, other = 0;
  for (int i = 0; i < S * S; i++) {
    uint8_t v = ((uint8_t *)m.data)[i];
    on += v == 255;
    other += v != 0 && v != 255;
  }
  CHECK(m.channels == 1 && m.bit_depth == 8 && m.width == S && m.height == S, "%s: 8-bit gray %dx%d", path, S, S);
  CHECK(other == 0 && (on > 0) == want_defect, "%s: %lld defect pixels, values 0/255", path, (long long)on);
  cmds_image_free(&m);
}

int main(int argc, char **argv) {
  const char *m = argv[1], *e = argv[2];
  int S = atoi(argv[3]);
  const char *types[] = {"good", "color", "bump", "dent", "cut", "combined"};
  char p[4096];
  cmds_error err;
  for (int t = 0; t < 6; t++) {
    snprintf(p, sizeof p, "%s/bagel/test/%s/rgb/000.png", m, types[t]);
    cmds_image img;
    CHECK(cmds_png_read(p, &img, &err) == 0 && img.channels == 3 && img.bit_depth == 8 && img.width == S,
          "%s: 8-bit RGB", p);
    cmds_image_free(&img);
    snprintf(p, sizeof p, "%s/bagel/test/%s/xyz/000.tiff", m, types[t]);
    cmds_imagef xyz;
    CHECK(cmds_tiff_read_f32(p, 3, &xyz, &err) == 0 && xyz.width == S, "%s: float32 x 3", p);
    int64_t holes = 0;
    for (int i = 0; i < S * S; i++) holes += xyz.data[3 * i + 2] == 0;
    CHECK(holes > 0 && holes < S * S / 4, "%s: some sensor holes (%lld)", p, (long long)holes);
    cmds_imagef_free(&xyz);
    snprintf(p, sizeof p, "%s/bagel/test/%s/gt/000.png", m, types[t]);
    check_mask(p, S, t > 0);
  }
  for (int id = 0; id < 6; id++) {
    snprintf(p, sizeof p, "%s/Lollipop/test_public/data/%02d_depth.png", e, id);
    cmds_image d;
    CHECK(cmds_png_read(p, &d, &err) == 0 && d.bit_depth == 16 && d.channels == 1 && d.width == S,
          "%s: 16-bit gray", p);
    cmds_image_free(&d);
    snprintf(p, sizeof p, "%s/Lollipop/test_public/data/%02d_info_depth.yaml", e, id);
    double mn, mx;
    CHECK(cmds_yaml_read_depth_range(p, &mn, &mx, &err) == 0 && mn > 0 && mn < mx, "%s: range", p);
    snprintf(p, sizeof p, "%s/Lollipop/test_public/data/%02d_pose.txt", e, id);
    double pose[16];
    CHECK(cmds_matrix4_read(p, pose, &err) == 0 && pose[15] == 1, "%s: 4x4 pose", p);
    snprintf(p, sizeof p, "%s/Lollipop/test_public/data/%02d_mask.png", e, id);
    check_mask(p, S, id > 0); /* id 00 is the good sample, 01..05 one per defect kind */
  }
  return CHECK_DONE();
}
