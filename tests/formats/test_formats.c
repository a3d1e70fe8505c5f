/* test_formats: comm/formats reads what Pillow, tifffile and PyYAML write (values compared
 * with the .npy copies from tests/fixtures/gen_formats.py), writes what it reads back, and
 * refuses damaged or unexpected files with a message naming the file. Usage:
 * test_formats FIXTURE_DIR WORK_DIR */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "formats.h"
#include "fsutil.h"
#include "npy.h"

static const char *fx, *work;

static char *fpath(const char *d, const char *name) {
  static char buf[4][1024];
  static int k = 0;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", d, name);
  return buf[k];
}

static void png_matches(const char *png, const char *npy, int channels, int depth) {
  cmds_image img;
  cmds_error err;
  npy_array a;
  CHECK(cmds_png_read(fpath(fx, png), &img, &err) == 0, "%s", err.msg);
  if (npy_load(fpath(fx, npy), &a)) exit(1);
  CHECK(img.channels == channels && img.bit_depth == depth, "%s: %d channels %d bits", png, img.channels,
        img.bit_depth);
  int64_t bad = 0;
  for (int64_t i = 0; i < a.count; i++)
    bad += (depth == 16 ? ((uint16_t *)img.data)[i] : ((uint8_t *)img.data)[i]) != npy_get(&a, i);
  CHECK(bad == 0, "%s: %lld values differ from Pillow's", png, (long long)bad);
  /* round trip through our writer */
  CHECK(cmds_png_write(fpath(work, png), &img, &err) == 0, "%s", err.msg);
  cmds_image back;
  CHECK(cmds_png_read(fpath(work, png), &back, &err) == 0 &&
            !memcmp(back.data, img.data, (size_t)a.count * (size_t)(depth / 8)),
        "%s: round trip", png);
  cmds_image_free(&back);
  cmds_image_free(&img);
  npy_free(&a);
}

static void tiff_matches(const char *tiff, const char *npy) {
  cmds_imagef img;
  cmds_error err;
  npy_array a;
  CHECK(cmds_tiff_read_f32(fpath(fx, tiff), 3, &img, &err) == 0, "%s", err.msg);
  if (npy_load(fpath(fx, npy), &a)) exit(1);
  CHECK(img.height == a.shape[0] && img.width == a.shape[1], "%s: size", tiff);
  CHECK(!memcmp(img.data, a.data, (size_t)a.count * 4), "%s: values differ from tifffile's", tiff);
  CHECK(cmds_tiff_write_f32(fpath(work, tiff), &img, &err) == 0, "%s", err.msg);
  cmds_imagef back;
  CHECK(cmds_tiff_read_f32(fpath(work, tiff), 3, &back, &err) == 0 &&
            !memcmp(back.data, img.data, (size_t)a.count * 4),
        "%s: round trip", tiff);
  cmds_imagef_free(&back);
  cmds_imagef_free(&img);
  npy_free(&a);
}

/* A call that must fail with CMDS_EINPUT and name the file and `what`. */
#define EXPECT_BAD(call, file, what)                                                             \
  do {                                                                                           \
    cmds_error e_ = {0};                                                                         \
    int rc_ = (call);                                                                            \
    CHECK(rc_ == CMDS_EINPUT && strstr(e_.msg, file) && strstr(e_.msg, what), "%s: rc %d msg '%s'", \
          #call, rc_, e_.msg);                                                                   \
  } while (0)

static void write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  fwrite(data, 1, n, f);
  fclose(f);
}

static void truncated_copy(const char *src, const char *dst) {
  FILE *f = fopen(src, "rb");
  char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  write_bytes(dst, buf, n / 2);
}

int main(int argc, char **argv) {
  fx = argv[1];
  work = argv[2];
  cmds_error err;
  cmds_mkdir_p(work, &err);
  png_matches("rgb8.png", "rgb8.npy", 3, 8);
  png_matches("rgba8.png", "rgba8.npy", 4, 8);
  png_matches("gray16.png", "gray16.npy", 1, 16);
  png_matches("palette.png", "palette.npy", 3, 8);
  tiff_matches("xyz_contig.tiff", "xyz.npy");
  tiff_matches("xyz_planar.tiff", "xyz.npy");
  tiff_matches("xyz_tiled.tiff", "xyz_tiled.npy");

  double mn, mx, m[16];
  CHECK(cmds_yaml_read_depth_range(fpath(fx, "info_depth.yaml"), &mn, &mx, &err) == 0 && mn == 0.4123 &&
            mx == 0.8731, "EyeCandies yaml: %s", err.msg);
  CHECK(cmds_yaml_write_depth_range(fpath(work, "d.yaml"), 0.25, 1.5, &err) == 0 &&
            cmds_yaml_read_depth_range(fpath(work, "d.yaml"), &mn, &mx, &err) == 0 && mn == 0.25 && mx == 1.5,
        "yaml round trip");
  npy_array pose;
  if (npy_load(fpath(fx, "pose.npy"), &pose)) return 1;
  CHECK(cmds_matrix4_read(fpath(fx, "pose.txt"), m, &err) == 0, "%s", err.msg);
  int same = 1;
  for (int i = 0; i < 16; i++) same &= m[i] == ((double *)pose.data)[i];
  CHECK(same, "pose matches numpy.loadtxt");
  npy_free(&pose);
  double m2[16];
  CHECK(cmds_matrix4_write(fpath(work, "p.txt"), m, &err) == 0 && cmds_matrix4_read(fpath(work, "p.txt"), m2, &err) == 0 &&
            !memcmp(m, m2, sizeof m), "pose round trip (%%.17g)");

  /* Bad input. */
  const char *tp = fpath(work, "trunc.png"), *tt = fpath(work, "trunc.tiff");
  truncated_copy(fpath(fx, "rgb8.png"), tp);
  truncated_copy(fpath(fx, "xyz_contig.tiff"), tt);
  cmds_image img;
  cmds_imagef imf;
  EXPECT_BAD(cmds_png_read(tp, &img, &e_), tp, "truncated");
  EXPECT_BAD(cmds_png_read(fpath(fx, "xyz.npy"), &img, &e_), "xyz.npy", "not a PNG");
  EXPECT_BAD(cmds_png_read(fpath(work, "missing.png"), &img, &e_), "missing.png", "cannot open");
  EXPECT_BAD(cmds_tiff_read_f32(tt, 3, &imf, &e_), tt, "");
  EXPECT_BAD(cmds_tiff_read_f32(fpath(fx, "uint16.tiff"), 3, &imf, &e_), "uint16.tiff", "expected 32-bit float");
  EXPECT_BAD(cmds_tiff_read_f32(fpath(fx, "xyz_contig.tiff"), 1, &imf, &e_), "xyz_contig.tiff", "expected 1");
  const char *y1 = fpath(work, "nonorm.yaml"), *y2 = fpath(work, "nomax.yaml"), *y3 = fpath(work, "bad.yaml"),
             *y4 = fpath(work, "nan.yaml");
  write_bytes(y1, "min: 1\n", 7);
  write_bytes(y2, "normalization:\n  min: 0.1\n", 26);
  write_bytes(y3, "normalization: [1, 2\n", 21);
  write_bytes(y4, "normalization:\n  min: 0.1\n  max: nan\n", 37);
  EXPECT_BAD(cmds_yaml_read_depth_range(y1, &mn, &mx, &e_), y1, "normalization");
  EXPECT_BAD(cmds_yaml_read_depth_range(y2, &mn, &mx, &e_), y2, "max");
  EXPECT_BAD(cmds_yaml_read_depth_range(y3, &mn, &mx, &e_), y3, "YAML");
  EXPECT_BAD(cmds_yaml_read_depth_range(y4, &mn, &mx, &e_), y4, "finite");
  const char *p1 = fpath(work, "short.txt"), *p2 = fpath(work, "word.txt");
  write_bytes(p1, "1 0 0 0\n0 1 0 0\n0 0 1\n", 22);
  write_bytes(p2, "1 0 0 0\n0 x 0 0\n", 16);
  EXPECT_BAD(cmds_matrix4_read(p1, m, &e_), p1, "11 numbers");
  EXPECT_BAD(cmds_matrix4_read(p2, m, &e_), p2, "'x'");
  return CHECK_DONE();
}
