/* scene: see scene.h. */
#include "scene.h"

#include <math.h>
#include <string.h>

#include "rng.h"

static double hash01(uint64_t seed, int64_t x, int64_t y) {
  uint64_t k = seed ^ ((uint64_t)x * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)y * 0xC2B2AE3D27D4EB4Full);
  return (double)(cmds_splitmix64(&k) >> 11) * (1.0 / 9007199254740992.0);
}

double scene_noise(uint64_t seed, double x, double y) {
  double fx = floor(x), fy = floor(y), tx = x - fx, ty = y - fy;
  tx = tx * tx * (3 - 2 * tx);
  ty = ty * ty * (3 - 2 * ty);
  int64_t ix = (int64_t)fx, iy = (int64_t)fy;
  double a = hash01(seed, ix, iy), b = hash01(seed, ix + 1, iy), c = hash01(seed, ix, iy + 1),
         d = hash01(seed, ix + 1, iy + 1);
  return (a * (1 - tx) + b * tx) * (1 - ty) + (c * (1 - tx) + d * tx) * ty;
}

static double fbm(uint64_t seed, double x, double y) {
  return 0.5 * scene_noise(seed, x, y) + 0.3 * scene_noise(seed + 1, 2.1 * x, 2.1 * y) +
         0.2 * scene_noise(seed + 2, 4.3 * x, 4.3 * y);
}

const char *defect_name(defect_kind k) {
  static const char *const names[] = {"good", "color", "bump", "dent", "cut", "combined"};
  return names[k];
}

void scene_make(scene *s, uint64_t category_seed, uint64_t sample_seed, double scale, double height,
                double defect_height, defect_kind defect) {
  memset(s, 0, sizeof *s);
  cmds_rng cat, smp;
  cmds_rng_seed(&cat, category_seed);
  cmds_rng_seed(&smp, sample_seed);
  s->seed = sample_seed;
  /* Category: shape and colour; sample: small pose, size and colour jitter. */
  double base_ax = 0.17 + 0.06 * cmds_rng_uniform(&cat), base_ay = 0.13 + 0.08 * cmds_rng_uniform(&cat);
  s->ring = cmds_rng_uniform(&cat) < 0.3;
  for (int k = 0; k < 3; k++) {
    s->albedo[k] = 0.25 + 0.6 * cmds_rng_uniform(&cat);
    s->albedo2[k] = s->albedo[k] * (0.6 + 0.3 * cmds_rng_uniform(&cat));
  }
  double jitter = 1 + 0.06 * (cmds_rng_uniform(&smp) - 0.5);
  s->ax = base_ax * scale * jitter;
  s->ay = base_ay * scale * jitter;
  s->rot = 6.283185307179586 * cmds_rng_uniform(&smp);
  s->cx = 0.03 * scale * (cmds_rng_uniform(&smp) - 0.5);
  s->cy = 0.03 * scale * (cmds_rng_uniform(&smp) - 0.5);
  s->height = height * (0.9 + 0.2 * cmds_rng_uniform(&smp));
  for (int k = 0; k < 3; k++) s->albedo[k] *= 0.93 + 0.07 * cmds_rng_uniform(&smp);
  s->defect = defect;
  if (defect != DEFECT_NONE) {
    /* On the object, away from its rim (and off a ring's hole). */
    double ang = 6.283185307179586 * cmds_rng_uniform(&smp);
    double rad = s->ring ? 0.62 : 0.35 * cmds_rng_uniform(&smp);
    double ux = rad * cos(ang) * (s->ax), uy = rad * sin(ang) * (s->ay);
    s->dx = s->cx + ux * cos(s->rot) - uy * sin(s->rot);
    s->dy = s->cy + ux * sin(s->rot) + uy * cos(s->rot);
    s->dr = (s->ring ? 0.16 : 0.24 + 0.08 * cmds_rng_uniform(&smp)) * fmin(s->ax, s->ay);
    s->dh = defect_height * (0.8 + 0.4 * cmds_rng_uniform(&smp));
    s->dangle = 3.141592653589793 * cmds_rng_uniform(&smp);
    double hue = cmds_rng_uniform(&smp);
    for (int k = 0; k < 3; k++) /* a clearly different colour: complement-ish with a hue shift */
      s->dcolor[k] = fmod(1.0 - s->albedo[k] + 0.25 * sin(6.283185307179586 * (hue + k / 3.0)) + 1.0, 1.0);
  }
}

/* Object-local normalised radius. */
static double local_r(const scene *s, double x, double y, double *u, double *v) {
  double px = x - s->cx, py = y - s->cy;
  *u = (px * cos(s->rot) + py * sin(s->rot)) / s->ax;
  *v = (-px * sin(s->rot) + py * cos(s->rot)) / s->ay;
  return sqrt(*u * *u + *v * *v);
}

double scene_height_clean(const scene *s, double x, double y) {
  double u, v, r = local_r(s, x, y, &u, &v), prof;
  if (s->ring) {
    double t = (r - 0.62) / 0.38; /* tube of the torus */
    if (fabs(t) >= 1) return 0;
    prof = sqrt(1 - t * t);
  } else {
    if (r >= 1) return 0;
    prof = pow(1 - r * r, 0.35); /* flatter than an ellipsoid, steep rim */
  }
  /* gentle surface relief, part of the normal appearance */
  double relief = 1 + 0.05 * (scene_noise(s->seed ^ 0x5eedull, 9 * u, 9 * v) - 0.5);
  return s->height * prof * relief;
}

double scene_height_defect(const scene *s, double x, double y) {
  if (s->defect == DEFECT_NONE || s->defect == DEFECT_COLOR) return 0;
  if (scene_height_clean(s, x, y) <= 0) return 0;
  double px = x - s->dx, py = y - s->dy, d2 = (px * px + py * py) / (s->dr * s->dr);
  switch (s->defect) {
    case DEFECT_BUMP:
    case DEFECT_COMBINED: return d2 < 4 ? s->dh * exp(-2 * d2) : 0;
    case DEFECT_DENT: return d2 < 4 ? -s->dh * exp(-2 * d2) : 0;
    default: { /* cut: a narrow groove of length 4 dr along dangle */
      double along = px * cos(s->dangle) + py * sin(s->dangle);
      double across = -px * sin(s->dangle) + py * cos(s->dangle);
      double w = 0.22 * s->dr;
      if (fabs(along) > 2 * s->dr || fabs(across) > 2 * w) return 0;
      return -s->dh * exp(-(across * across) / (w * w) * 2);
    }
  }
}

int scene_color_defect(const scene *s, double x, double y) {
  if (s->defect != DEFECT_COLOR && s->defect != DEFECT_COMBINED) return 0;
  if (scene_height_clean(s, x, y) <= 0) return 0;
  double px = (x - s->dx) / s->dr, py = (y - s->dy) / s->dr, ang = atan2(py, px);
  double edge = 1.1 + 0.25 * sin(3 * ang + s->dangle) + 0.15 * cos(5 * ang); /* irregular blob */
  return px * px + py * py < edge * edge;
}

void scene_albedo(const scene *s, double x, double y, int on_object, double rgb[3]) {
  if (!on_object) {
    double n = fbm(s->seed ^ 0xbacull, x / 0.004, y / 0.004);
    for (int k = 0; k < 3; k++) rgb[k] = 0.18 + 0.1 * n + 0.02 * k;
    return;
  }
  double u, v;
  local_r(s, x, y, &u, &v);
  double n = fbm(s->seed ^ 0x7e47ull, 6 * u, 6 * v);
  for (int k = 0; k < 3; k++) rgb[k] = s->albedo[k] * (1 - n) + s->albedo2[k] * n;
  if (scene_color_defect(s, x, y))
    for (int k = 0; k < 3; k++) rgb[k] = s->dcolor[k];
}
