/* scene: the synthetic objects, defects and textures shared by both dataset layouts.
 * An object is a height field over a 2D domain (metres for MVTec 3D-AD, EyeCandies' world
 * units otherwise) with an albedo; a defect changes the height (bump, dent, cut), the
 * albedo (color) or both (combined) inside an exact region. Everything is a pure
 * function of the sample's seed, so any sample can be regenerated alone. */
#ifndef CMDS_SYNTH_SCENE_H
#define CMDS_SYNTH_SCENE_H

#include <stdint.h>

typedef enum { DEFECT_NONE, DEFECT_COLOR, DEFECT_BUMP, DEFECT_DENT, DEFECT_CUT, DEFECT_COMBINED } defect_kind;

typedef struct scene {
  uint64_t seed;       /* texture and per-sample variation */
  double cx, cy;       /* object centre in the domain */
  double ax, ay, rot;  /* semi-axes and rotation */
  double height;       /* peak height */
  int ring;            /* torus-like (a hole in the middle) */
  double albedo[3], albedo2[3];
  /* defect */
  defect_kind defect;
  double dx, dy, dr;   /* defect centre and radius */
  double dh;           /* height change (bump/dent/cut depth) */
  double dangle;       /* cut direction */
  double dcolor[3];
} scene;

/* Builds the sample's scene. `scale` is the domain size (object sizes are fractions of it),
 * `height` the object's peak height, `defect_height` the size of 3D defects. */
void scene_make(scene *s, uint64_t category_seed, uint64_t sample_seed, double scale, double height,
                double defect_height, defect_kind defect);
/* Height of the defect-free object at (x, y) (0 outside). */
double scene_height_clean(const scene *s, double x, double y);
/* Height change of the defect at (x, y) (0 outside it or for colour-only defects). */
double scene_height_defect(const scene *s, double x, double y);
/* 1 inside the colour defect's region. */
int scene_color_defect(const scene *s, double x, double y);
/* Albedo (0..1) at (x, y), defect colour applied. */
void scene_albedo(const scene *s, double x, double y, int on_object, double rgb[3]);
/* Smooth value noise in [0, 1). */
double scene_noise(uint64_t seed, double x, double y);

const char *defect_name(defect_kind k);

#endif
