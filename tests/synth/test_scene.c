/* test_scene: the synthetic defects are what they claim to be, on the scene model that
 * cmds-synth renders: a colour defect changes the albedo inside its region and nothing of the
 * geometry; bump/dent/cut change the height (by the configured amount) and nothing of the
 * albedo; combined does both; defects sit on the object; everything is a pure function of
 * the seeds. */
#include <math.h>

#include "check.h"
#include "scene.h"

int main(void) {
  const double scale = 0.12, height = 0.012, dh = 0.004;
  const defect_kind kinds[] = {DEFECT_COLOR, DEFECT_BUMP, DEFECT_DENT, DEFECT_CUT, DEFECT_COMBINED};
  for (uint64_t seed = 1; seed <= 20; seed++)
    for (int k = 0; k < 5; k++) {
      scene d, c;
      scene_make(&d, 77, seed, scale, height, dh, kinds[k]);
      scene_make(&c, 77, seed, scale, height, dh, DEFECT_NONE);
      int geo = kinds[k] != DEFECT_COLOR, col = kinds[k] == DEFECT_COLOR || kinds[k] == DEFECT_COMBINED;
      double max_dh = 0;
      int64_t alb_diff_out = 0, alb_diff_in = 0, geo_off_object = 0, in_region = 0;
      for (int i = 0; i < 200; i++)
        for (int j = 0; j < 200; j++) {
          double x = (i / 199.0 - 0.5) * scale, y = (j / 199.0 - 0.5) * scale;
          double h0 = scene_height_clean(&d, x, y), hd = scene_height_defect(&d, x, y);
          CHECK(h0 == scene_height_clean(&c, x, y), "clean height independent of the defect");
          max_dh = fmax(max_dh, fabs(hd));
          geo_off_object += hd != 0 && h0 <= 0;
          double a[3], b[3];
          int on = h0 > 0, region = scene_color_defect(&d, x, y);
          scene_albedo(&d, x, y, on, a);
          scene_albedo(&c, x, y, on, b);
          int differ = a[0] != b[0] || a[1] != b[1] || a[2] != b[2];
          in_region += region;
          if (region) alb_diff_in += differ;
          else alb_diff_out += differ;
        }
      CHECK(geo ? max_dh > 0.5 * dh && max_dh <= 1.2 * dh : max_dh == 0,
            "kind %s seed %d: max height change %.4f", defect_name(kinds[k]), (int)seed, max_dh);
      CHECK(geo_off_object == 0, "3D defect only on the object");
      CHECK(alb_diff_out == 0, "albedo unchanged outside the colour region");
      CHECK(col ? in_region > 10 && alb_diff_in == in_region : in_region == 0,
            "kind %s: colour region %lld px, %lld changed", defect_name(kinds[k]), (long long)in_region,
            (long long)alb_diff_in);
    }
  scene a, b;
  scene_make(&a, 5, 9, 0.12, 0.012, 0.004, DEFECT_BUMP);
  scene_make(&b, 5, 9, 0.12, 0.012, 0.004, DEFECT_BUMP);
  CHECK(a.cx == b.cx && a.dx == b.dx && a.rot == b.rot, "same seeds, same scene");
  scene_make(&b, 5, 10, 0.12, 0.012, 0.004, DEFECT_BUMP);
  CHECK(a.rot != b.rot, "another sample seed, another pose");
  return CHECK_DONE();
}
