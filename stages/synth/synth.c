/* cmds-synth: synthetic datasets in the exact on-disk layouts of MVTec 3D-AD and
 * EyeCandies (see README.md here), deterministic from a seed: every sample is keyed by
 * seed + category + split + type + index, so any subset regenerates identically.
 *
 *   cmds-synth --format mvtec3d|eyecandies --out DIR [--seed S] [--size PX]
 *              [--categories A,B] [--train N] [--validation N] [--test-good N]
 *              [--test-per-defect N]
 *
 * Besides the real layout it writes DIR/.synth/manifest.json and, per sample, the true
 * object silhouette DIR/.synth/<category>/<split>/<folder>/<name>_fg.png (hidden, so
 * dataset readers skip it): the ground truth the tests hold prep against. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats.h"
#include "fsutil.h"
#include "json.h"
#include "rng.h"
#include "scene.h"

typedef struct synth_args {
  int eyecandies;
  const char *out;
  uint64_t seed;
  int size, train, validation, test_good, test_per_defect;
  char **cats;
  int ncats;
} synth_args;

static const char *const mvtec_cats[] = {"bagel", "cable_gland", "carrot", "cookie", "dowel",
                                          "foam",  "peach",       "potato", "rope",   "tire"};
static const char *const eyec_cats[] = {"CandyCane", "ChocolateCookie", "ChocolatePraline", "Confetto",
                                         "GummyBear", "HazelnutTruffle", "LicoriceSandwich", "Lollipop",
                                         "Marshmallow", "PeppermintCandy"};
static const defect_kind test_kinds[] = {DEFECT_NONE, DEFECT_COLOR, DEFECT_BUMP,
                                         DEFECT_DENT, DEFECT_CUT,   DEFECT_COMBINED};

/* An image being rendered: rgb (8-bit), xyz or depth (float), gt and silhouette masks. */
typedef struct frame {
  int S;
  uint8_t *rgb, *gt, *fg;
  float *xyz;   /* MVTec: (S, S, 3) */
  float *depth; /* EyeCandies: (S, S) */
  float *nrm;   /* EyeCandies: camera-frame normals (S, S, 3) */
  uint8_t *rgb_light[6];
} frame;

static uint64_t sample_seed(const synth_args *a, const char *cat, const char *split, const char *folder,
                            int idx) {
  char key[512];
  snprintf(key, sizeof key, "%s/%s/%s/%d", cat, split, folder, idx);
  return a->seed * 0x9E3779B97F4A7C15ull ^ cmds_hash_str(key);
}

static int write_png8(const char *path, const uint8_t *data, int S, int ch, cmds_error *err) {
  cmds_image img = {.width = S, .height = S, .channels = ch, .bit_depth = 8, .data = (void *)data};
  return cmds_png_write(path, &img, err);
}

static uint8_t to8(double v) {
  v = v < 0 ? 0 : v > 1 ? 1 : v;
  return (uint8_t)lrint(v * 255);
}

/* ---- MVTec 3D-AD -------------------------------------------------------------------- */
/* Camera at the origin looking along +z, background plane ~0.6 m away, slightly tilted.
 * The object rises towards the camera. Pitch 0.6 mm at small sizes, a 12 cm field of view
 * from 200 px up (real scans: 800 px). */
static void render_mvtec(const scene *sc, const scene *clean_shading, uint64_t seed, int S, frame *fr) {
  double fov = S >= 200 ? 0.12 : 0.12 * S / 200.0;
  double z0 = 0.6, f = S * z0 / fov, c0 = (S - 1) / 2.0;
  cmds_rng rng;
  cmds_rng_seed(&rng, seed ^ 0x3dull);
  double tx = 0.05 * (cmds_rng_uniform(&rng) - 0.5), ty = 0.05 * (cmds_rng_uniform(&rng) - 0.5);
  double L[3] = {cmds_rng_uniform(&rng) - 0.5, cmds_rng_uniform(&rng) - 0.5, -1};
  double ll = sqrt(L[0] * L[0] + L[1] * L[1] + L[2] * L[2]);
  for (int k = 0; k < 3; k++) L[k] /= ll;
  double gain = 0.85 + 0.3 * cmds_rng_uniform(&rng);
  double pitch = fov / S;
  /* sensor holes: a few dropout blobs */
  int nholes = 3 + (int)cmds_rng_below(&rng, 4);
  double hx[8], hy[8], hr[8];
  for (int i = 0; i < nholes; i++) {
    hx[i] = (cmds_rng_uniform(&rng) - 0.5) * fov;
    hy[i] = (cmds_rng_uniform(&rng) - 0.5) * fov;
    hr[i] = (1.5 + 3 * cmds_rng_uniform(&rng)) * pitch;
  }
  for (int r = 0; r < S; r++)
    for (int c = 0; c < S; c++) {
      size_t i = (size_t)r * (size_t)S + (size_t)c;
      double dxr = (c - c0) / f, dyr = (r - c0) / f;
      double t = z0 / (1 - tx * dxr - ty * dyr); /* ray meets the plane z = z0 + tx x + ty y */
      double x = t * dxr, y = t * dyr, zp = t;
      double h0 = scene_height_clean(sc, x, y), hd = scene_height_defect(sc, x, y), hgt = h0 + hd;
      int on = h0 > 0;
      /* shading from the defect-free surface: 3D-only defects leave the RGB as it was */
      double e = pitch;
      double gx = (scene_height_clean(clean_shading, x + e, y) - scene_height_clean(clean_shading, x - e, y)) / (2 * e);
      double gy = (scene_height_clean(clean_shading, x, y + e) - scene_height_clean(clean_shading, x, y - e)) / (2 * e);
      double n[3] = {gx, gy, -1}, nl = sqrt(gx * gx + gy * gy + 1);
      double lam = (n[0] * L[0] + n[1] * L[1] + n[2] * L[2]) / nl;
      double alb[3];
      scene_albedo(sc, x, y, on, alb);
      for (int k = 0; k < 3; k++) fr->rgb[3 * i + (size_t)k] = to8(gain * alb[k] * (0.45 + 0.55 * fmax(lam, 0)));
      double noise = 0.0002 * cmds_rng_normal(&rng);
      float *p = fr->xyz + 3 * i;
      p[0] = (float)x;
      p[1] = (float)y;
      p[2] = (float)(zp - hgt + noise);
      int hole = 0;
      for (int k = 0; k < nholes; k++) hole |= (x - hx[k]) * (x - hx[k]) + (y - hy[k]) * (y - hy[k]) < hr[k] * hr[k];
      if (on && nl > 3.5 && cmds_rng_uniform(&rng) < 0.5) hole = 1; /* steep rim: dropouts */
      if (hole) p[0] = p[1] = p[2] = 0;
      /* truth of the foreground: object points the sensor saw that rise above the 5 mm
       * plane-removal band */
      fr->fg[i] = h0 > 0.005 && !hole ? 255 : 0;
      int defect = fabs(hd) > 0.15 * sc->dh || scene_color_defect(sc, x, y);
      fr->gt[i] = on && defect ? 255 : 0;
    }
}

/* ---- EyeCandies --------------------------------------------------------------------- */
/* World: background plane y = 0, the object rises towards -y; a camera above and in front
 * (elevation 65 degrees) looking at the origin; f = 711.11 and the principal point at the
 * image centre, as the dataset's reader assumes. */
#define EYEC_F 711.11

static void eyec_pose(int S, double pose[16], double C[3]) {
  double phi = 65 * 3.141592653589793 / 180, D = 1.0 * EYEC_F / (S / 2.0);
  C[0] = 0;
  C[1] = -D * sin(phi);
  C[2] = -D * cos(phi);
  double R[3][3] = {{1, 0, 0}, {0, cos(phi), -sin(phi)}, {0, sin(phi), cos(phi)}}; /* rows x_c, y_c, z_c */
  memset(pose, 0, 16 * sizeof(double));
  for (int r = 0; r < 3; r++) {
    for (int c = 0; c < 3; c++) pose[r * 4 + c] = R[r][c];
    pose[r * 4 + 3] = -(R[r][0] * C[0] + R[r][1] * C[1] + R[r][2] * C[2]);
  }
  pose[15] = 1;
}

static double eyec_total_height(const scene *sc, double x, double z) {
  return scene_height_clean(sc, x, z) + scene_height_defect(sc, x, z);
}

static void render_eyec(const scene *sc, uint64_t seed, int S, frame *fr, double pose[16]) {
  double C[3];
  eyec_pose(S, pose, C);
  double c0 = S / 2.0;
  cmds_rng rng;
  cmds_rng_seed(&rng, seed ^ 0xe7ull);
  double lights[6][3];
  for (int l = 0; l < 6; l++) {
    double az = 6.283185307179586 * (l / 6.0 + 0.1 * cmds_rng_uniform(&rng)), el = 0.9;
    lights[l][0] = cos(az) * cos(el);
    lights[l][1] = -sin(el);
    lights[l][2] = sin(az) * cos(el);
  }
  double hmax = sc->height * 1.2 + sc->dh * 1.5;
  for (int r = 0; r < S; r++)
    for (int c = 0; c < S; c++) {
      size_t i = (size_t)r * (size_t)S + (size_t)c;
      double dc[3] = {(c - c0) / EYEC_F, (r - c0) / EYEC_F, 1};
      /* world direction = R^T dc (pose rows are the camera axes) */
      double D[3];
      for (int k = 0; k < 3; k++) D[k] = pose[0 * 4 + k] * dc[0] + pose[1 * 4 + k] * dc[1] + pose[2 * 4 + k] * dc[2];
      double t_plane = -C[1] / D[1], t_top = (-hmax - C[1]) / D[1];
      /* march from the top of the height field's box to the plane, then bisect */
      double t = t_plane, prev = t_top;
      int steps = 256;
      double g_prev = C[1] + prev * D[1] + eyec_total_height(sc, C[0] + prev * D[0], C[2] + prev * D[2]);
      for (int k = 1; k <= steps; k++) {
        double tk = t_top + (t_plane - t_top) * k / steps;
        double g = C[1] + tk * D[1] + eyec_total_height(sc, C[0] + tk * D[0], C[2] + tk * D[2]);
        if (g >= 0 && g_prev < 0) {
          double lo = prev, hi = tk;
          for (int b = 0; b < 40; b++) {
            double mid = 0.5 * (lo + hi);
            double gm = C[1] + mid * D[1] + eyec_total_height(sc, C[0] + mid * D[0], C[2] + mid * D[2]);
            if (gm >= 0) hi = mid;
            else lo = mid;
          }
          t = hi;
          break;
        }
        prev = tk;
        g_prev = g;
      }
      double X = C[0] + t * D[0], Z = C[2] + t * D[2];
      double h0 = scene_height_clean(sc, X, Z), hd = scene_height_defect(sc, X, Z);
      fr->depth[i] = (float)t; /* camera z of the hit: dc has z = 1 */
      double e = 1e-3;
      double gx = (eyec_total_height(sc, X + e, Z) - eyec_total_height(sc, X - e, Z)) / (2 * e);
      double gz = (eyec_total_height(sc, X, Z + e) - eyec_total_height(sc, X, Z - e)) / (2 * e);
      double nw[3] = {gx, -1, gz}, nl = sqrt(gx * gx + 1 + gz * gz); /* world normal, pointing up (-y) */
      double gxc = (scene_height_clean(sc, X + e, Z) - scene_height_clean(sc, X - e, Z)) / (2 * e);
      double gzc = (scene_height_clean(sc, X, Z + e) - scene_height_clean(sc, X, Z - e)) / (2 * e);
      double ns[3] = {gxc, -1, gzc}, nsl = sqrt(gxc * gxc + 1 + gzc * gzc); /* shading: defect-free */
      for (int k = 0; k < 3; k++) fr->nrm[3 * i + (size_t)k] =
          (float)((pose[k * 4] * nw[0] + pose[k * 4 + 1] * nw[1] + pose[k * 4 + 2] * nw[2]) / nl);
      double alb[3];
      scene_albedo(sc, X, Z, h0 > 0, alb);
      for (int l = 0; l < 6; l++) {
        double lam = (ns[0] * lights[l][0] + ns[1] * lights[l][1] + ns[2] * lights[l][2]) / nsl;
        for (int k = 0; k < 3; k++) fr->rgb_light[l][3 * i + (size_t)k] = to8(alb[k] * (0.35 + 0.65 * fmax(lam, 0)));
      }
      fr->fg[i] = h0 > 0.02 ? 255 : 0; /* the field's removal keeps points 0.02 above the plane */
      int defect = fabs(hd) > 0.15 * sc->dh || scene_color_defect(sc, X, Z);
      fr->gt[i] = h0 > 0 && defect ? 255 : 0;
    }
}

/* ---- writers ------------------------------------------------------------------------ */

static void frame_alloc(frame *fr, int S) {
  memset(fr, 0, sizeof *fr);
  size_t px = (size_t)S * (size_t)S;
  fr->S = S;
  fr->rgb = cmds_xcalloc(px * 3, 1);
  fr->gt = cmds_xcalloc(px, 1);
  fr->fg = cmds_xcalloc(px, 1);
  fr->xyz = cmds_xcalloc(px * 3, sizeof(float));
  fr->depth = cmds_xcalloc(px, sizeof(float));
  fr->nrm = cmds_xcalloc(px * 3, sizeof(float));
  for (int l = 0; l < 6; l++) fr->rgb_light[l] = cmds_xcalloc(px * 3, 1);
}

static void frame_free(frame *fr) {
  free(fr->rgb);
  free(fr->gt);
  free(fr->fg);
  free(fr->xyz);
  free(fr->depth);
  free(fr->nrm);
  for (int l = 0; l < 6; l++) free(fr->rgb_light[l]);
}

static int mkdirs(const char *base, const char *a, const char *b, const char *c, cmds_error *err) {
  char p[4096];
  cmds_path_join(p, sizeof p, base, a, b, c);
  return cmds_mkdir_p(p, err);
}

/* Writes the silhouette truth and records the sample in the manifest. */
static int write_truth(const synth_args *a, const char *cat, const char *split, const char *folder,
                       const char *name, defect_kind kind, const frame *fr, cmds_json *man,
                       cmds_error *err) {
  char dir[4096], path[4200];
  snprintf(dir, sizeof dir, "%s/.synth/%s/%s/%s", a->out, cat, split, folder);
  int rc = cmds_mkdir_p(dir, err);
  snprintf(path, sizeof path, "%s/%s_fg.png", dir, name);
  if (!rc) rc = write_png8(path, fr->fg, fr->S, 1, err);
  int64_t gt = 0;
  for (size_t i = 0; i < (size_t)fr->S * (size_t)fr->S; i++) gt += fr->gt[i] != 0;
  cmds_json_object_begin(man);
  cmds_json_kv_str(man, "split", split);
  cmds_json_kv_str(man, "folder", folder);
  cmds_json_kv_str(man, "name", name);
  cmds_json_kv_str(man, "defect", defect_name(kind));
  cmds_json_kv_int(man, "defect_pixels", gt);
  cmds_json_object_end(man);
  return rc;
}

static int mvtec_sample(const synth_args *a, const char *cat, const char *split, const char *folder, int idx,
                        defect_kind kind, frame *fr, cmds_json *man, cmds_error *err) {
  uint64_t ss = sample_seed(a, cat, split, folder, idx);
  double fov = a->size >= 200 ? 0.12 : 0.12 * a->size / 200.0;
  scene sc, clean;
  scene_make(&sc, a->seed ^ cmds_hash_str(cat), ss, fov, 0.012, 0.004, kind);
  scene_make(&clean, a->seed ^ cmds_hash_str(cat), ss, fov, 0.012, 0.004, DEFECT_NONE);
  render_mvtec(&sc, &clean, ss, a->size, fr);
  char name[16], base[4096], path[4200];
  snprintf(name, sizeof name, "%03d", idx);
  cmds_path_join(base, sizeof base, a->out, cat, split, folder);
  int rc = mkdirs(base, "rgb", NULL, NULL, err);
  if (!rc) rc = mkdirs(base, "xyz", NULL, NULL, err);
  if (!rc) rc = mkdirs(base, "gt", NULL, NULL, err);
  snprintf(path, sizeof path, "%s/rgb/%s.png", base, name);
  if (!rc) rc = write_png8(path, fr->rgb, a->size, 3, err);
  cmds_imagef xyz = {.width = a->size, .height = a->size, .channels = 3, .data = fr->xyz};
  snprintf(path, sizeof path, "%s/xyz/%s.tiff", base, name);
  if (!rc) rc = cmds_tiff_write_f32(path, &xyz, err);
  snprintf(path, sizeof path, "%s/gt/%s.png", base, name);
  if (!rc) rc = write_png8(path, fr->gt, a->size, 1, err);
  if (!rc) rc = write_truth(a, cat, split, folder, name, kind, fr, man, err);
  return rc;
}

static int eyec_sample(const synth_args *a, const char *cat, const char *split, int idx, int digits,
                       defect_kind kind, frame *fr, cmds_json *man, cmds_error *err) {
  uint64_t ss = sample_seed(a, cat, split, defect_name(kind), idx);
  scene sc;
  scene_make(&sc, a->seed ^ cmds_hash_str(cat), ss, 2.0, 0.25, 0.07, kind);
  double pose[16];
  render_eyec(&sc, ss, a->size, fr, pose);
  char name[16], dir[4096], path[4200];
  snprintf(name, sizeof name, "%0*d", digits, idx);
  cmds_path_join(dir, sizeof dir, a->out, cat, split, "data");
  int rc = cmds_mkdir_p(dir, err);
  size_t px = (size_t)a->size * (size_t)a->size;
  for (int l = 0; l < 6 && !rc; l++) {
    snprintf(path, sizeof path, "%s/%s_image_%d.png", dir, name, l);
    rc = write_png8(path, fr->rgb_light[l], a->size, 3, err);
  }
  /* depth as 16-bit PNG with its normalisation range */
  double dmin = 1e300, dmax = -1e300;
  for (size_t i = 0; i < px; i++) {
    dmin = fmin(dmin, fr->depth[i]);
    dmax = fmax(dmax, fr->depth[i]);
  }
  uint16_t *d16 = cmds_xmalloc(px * 2);
  for (size_t i = 0; i < px; i++)
    d16[i] = (uint16_t)lrint(dmax > dmin ? (fr->depth[i] - dmin) / (dmax - dmin) * 65535.0 : 0);
  cmds_image dimg = {.width = a->size, .height = a->size, .channels = 1, .bit_depth = 16, .data = d16};
  snprintf(path, sizeof path, "%s/%s_depth.png", dir, name);
  if (!rc) rc = cmds_png_write(path, &dimg, err);
  free(d16);
  snprintf(path, sizeof path, "%s/%s_info_depth.yaml", dir, name);
  if (!rc) rc = cmds_yaml_write_depth_range(path, dmin, dmax, err);
  snprintf(path, sizeof path, "%s/%s_pose.txt", dir, name);
  if (!rc) rc = cmds_matrix4_write(path, pose, err);
  /* normals as the dataset encodes them: camera frame with y and z flipped, (n + 1) / 2 */
  uint8_t *n8 = cmds_xmalloc(px * 3);
  for (size_t i = 0; i < px; i++) {
    n8[3 * i] = to8((fr->nrm[3 * i] + 1) / 2);
    n8[3 * i + 1] = to8((-fr->nrm[3 * i + 1] + 1) / 2);
    n8[3 * i + 2] = to8((-fr->nrm[3 * i + 2] + 1) / 2);
  }
  snprintf(path, sizeof path, "%s/%s_normals.png", dir, name);
  if (!rc) rc = write_png8(path, n8, a->size, 3, err);
  free(n8);
  if (!rc && !strcmp(split, "test_public")) {
    snprintf(path, sizeof path, "%s/%s_mask.png", dir, name);
    rc = write_png8(path, fr->gt, a->size, 1, err);
  }
  if (!rc) rc = write_truth(a, cat, split, "data", name, kind, fr, man, err);
  return rc;
}

static int synth_category(const synth_args *a, const char *cat, cmds_json *man, cmds_error *err) {
  frame fr;
  frame_alloc(&fr, a->size);
  int rc = CMDS_OK;
  cmds_json_key(man, cat);
  cmds_json_array_begin(man);
  if (!a->eyecandies) {
    for (int i = 0; i < a->train && !rc; i++) rc = mvtec_sample(a, cat, "train", "good", i, DEFECT_NONE, &fr, man, err);
    for (int i = 0; i < a->validation && !rc; i++) rc = mvtec_sample(a, cat, "validation", "good", i, DEFECT_NONE, &fr, man, err);
    for (size_t k = 0; k < sizeof test_kinds / sizeof *test_kinds && !rc; k++) {
      int n = test_kinds[k] == DEFECT_NONE ? a->test_good : a->test_per_defect;
      for (int i = 0; i < n && !rc; i++)
        rc = mvtec_sample(a, cat, "test", defect_name(test_kinds[k]), i, test_kinds[k], &fr, man, err);
    }
  } else {
    for (int i = 0; i < a->train && !rc; i++) rc = eyec_sample(a, cat, "train", i, 3, DEFECT_NONE, &fr, man, err);
    for (int i = 0; i < a->validation && !rc; i++) rc = eyec_sample(a, cat, "val", i, 3, DEFECT_NONE, &fr, man, err);
    int id = 0;
    for (size_t k = 0; k < sizeof test_kinds / sizeof *test_kinds && !rc; k++) {
      int n = test_kinds[k] == DEFECT_NONE ? a->test_good : a->test_per_defect;
      for (int i = 0; i < n && !rc; i++) rc = eyec_sample(a, cat, "test_public", id++, 2, test_kinds[k], &fr, man, err);
    }
  }
  cmds_json_array_end(man);
  frame_free(&fr);
  return rc;
}

static void usage(void) {
  printf("usage: cmds-synth --format mvtec3d|eyecandies --out DIR [--seed S] [--size PX]\n"
         "                  [--categories A,B,...] [--train N] [--validation N]\n"
         "                  [--test-good N] [--test-per-defect N]\n"
         "Writes a synthetic dataset in the real on-disk layout (see stages/synth/README.md).\n"
         "Defaults: size 256, the 10 real categories, train 8, validation 2, test-good 4,\n"
         "test-per-defect 2 (defects: color, bump, dent, cut, combined).\n");
}

static int parse_count(const char *opt, const char *v, int lo, int hi, int *out) {
  char *end = NULL;
  long x = v ? strtol(v, &end, 10) : 0;
  if (!v || *end || x < lo || x > hi) {
    fprintf(stderr, "cmds-synth: %s: expected an integer in [%d, %d], got '%s'\n", opt, lo, hi, v ? v : "");
    return -1;
  }
  *out = (int)x;
  return 0;
}

int main(int argc, char **argv) {
  synth_args a = {.size = 256, .train = 8, .validation = 2, .test_good = 4, .test_per_defect = 2};
  const char *format = NULL, *cats = NULL;
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
      usage();
      return 0;
    }
    if (!v) {
      fprintf(stderr, "cmds-synth: %s needs a value (see --help)\n", o);
      return 2;
    }
    i++;
    int bad = 0, seed = 0;
    if (!strcmp(o, "--format")) format = v;
    else if (!strcmp(o, "--out")) a.out = v;
    else if (!strcmp(o, "--categories")) cats = v;
    else if (!strcmp(o, "--seed")) { bad = parse_count(o, v, 0, 2147483647, &seed); a.seed = (uint64_t)seed; }
    else if (!strcmp(o, "--size")) bad = parse_count(o, v, 32, 4096, &a.size);
    else if (!strcmp(o, "--train")) bad = parse_count(o, v, 0, 100000, &a.train);
    else if (!strcmp(o, "--validation")) bad = parse_count(o, v, 0, 100000, &a.validation);
    else if (!strcmp(o, "--test-good")) bad = parse_count(o, v, 0, 100000, &a.test_good);
    else if (!strcmp(o, "--test-per-defect")) bad = parse_count(o, v, 0, 100000, &a.test_per_defect);
    else {
      fprintf(stderr, "cmds-synth: unknown option '%s' (see --help)\n", o);
      return 2;
    }
    if (bad) return 2;
  }
  if (!format || !a.out) {
    fprintf(stderr, "cmds-synth: --format and --out are required (see --help)\n");
    return 2;
  }
  if (!strcmp(format, "eyecandies")) a.eyecandies = 1;
  else if (strcmp(format, "mvtec3d")) {
    fprintf(stderr, "cmds-synth: --format: expected mvtec3d or eyecandies, got '%s'\n", format);
    return 2;
  }
  if (a.eyecandies && a.test_good + 5 * a.test_per_defect > 100) {
    fprintf(stderr, "cmds-synth: EyeCandies test ids have two digits: at most 100 test samples\n");
    return 2;
  }
  if (cats) {
    a.ncats = cmds_split_commas(cats, &a.cats);
    if (!a.ncats) {
      fprintf(stderr, "cmds-synth: --categories: no category names in '%s'\n", cats);
      return 2;
    }
    for (int i = 0; i < a.ncats; i++)
      if (strchr(a.cats[i], '/') || a.cats[i][0] == '.') {
        fprintf(stderr, "cmds-synth: --categories: '%s' is not a folder name\n", a.cats[i]);
        return 2;
      }
  } else {
    const char *const *def = a.eyecandies ? eyec_cats : mvtec_cats;
    for (int i = 0; i < 10; i++) {
      a.cats = cmds_xrealloc(a.cats, sizeof(char *) * (size_t)(a.ncats + 1));
      a.cats[a.ncats++] = cmds_xstrdup(def[i]);
    }
  }
  cmds_error err = {0};
  char path[4200], argkey[8192];
  /* Everything that shapes the bytes: a dataset with the same key is not written again. */
  int n = snprintf(argkey, sizeof argkey, "format=%s seed=%llu size=%d train=%d validation=%d test_good=%d "
                   "test_per_defect=%d categories=", format, (unsigned long long)a.seed, a.size, a.train,
                   a.validation, a.test_good, a.test_per_defect);
  for (int i = 0; i < a.ncats && n < (int)sizeof argkey; i++)
    n += snprintf(argkey + n, sizeof argkey - (size_t)n, "%s%s", i ? "," : "", a.cats[i]);
  snprintf(path, sizeof path, "%s/.synth/manifest.json", a.out);
  FILE *old = fopen(path, "r");
  if (old) {
    char line[8400];
    int same = 0;
    while (!same && fgets(line, sizeof line, old)) {
      char want[8300];
      snprintf(want, sizeof want, "\"args\": \"%s\"", argkey);
      same = strstr(line, want) != NULL;
    }
    fclose(old);
    if (same) {
      printf("cmds-synth: %s is up to date (same arguments), nothing written\n", a.out);
      cmds_free_list(a.cats, a.ncats);
      return 0;
    }
  }
  snprintf(path, sizeof path, "%s/.synth", a.out);
  int rc = cmds_mkdir_p(path, &err);
  cmds_json man;
  cmds_json_init(&man, 1);
  cmds_json_object_begin(&man);
  cmds_json_kv_str(&man, "format", format);
  cmds_json_kv_str(&man, "args", argkey);
  cmds_json_kv_int(&man, "seed", (int64_t)a.seed);
  cmds_json_kv_int(&man, "size", a.size);
  cmds_json_key(&man, "categories");
  cmds_json_object_begin(&man);
  for (int i = 0; i < a.ncats && !rc; i++) rc = synth_category(&a, a.cats[i], &man, &err);
  cmds_json_object_end(&man);
  cmds_json_object_end(&man);
  cmds_json_raw(&man, "\n");
  snprintf(path, sizeof path, "%s/.synth/manifest.json", a.out);
  if (!rc) rc = cmds_write_file_atomic(path, man.buf, man.len, &err);
  cmds_json_free(&man);
  if (rc) fprintf(stderr, "cmds-synth: %s\n", err.msg);
  else printf("cmds-synth: %s, %d categor%s at %d px -> %s\n", format, a.ncats, a.ncats == 1 ? "y" : "ies", a.size, a.out);
  cmds_free_list(a.cats, a.ncats);
  return rc;
}
