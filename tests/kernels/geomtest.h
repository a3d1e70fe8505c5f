/* geomtest: what the geometry tests share: the fixture folder and a loader that stops the
 * test with a message naming the file when a fixture is missing or malformed. */
#ifndef CMDS_TESTS_GEOMTEST_H
#define CMDS_TESTS_GEOMTEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "npy.h"

static const char *geom_dir = "tests/fixtures/geometry";

static inline npy_array geom_load(const char *name) {
  char p[1024];
  npy_array a;
  snprintf(p, sizeof p, "%s/%s.npy", geom_dir, name);
  if (npy_load(p, &a)) {
    fprintf(stderr, "cannot load fixture %s\n", p);
    exit(1);
  }
  return a;
}

/* Angle between the normals of two planes (a, b, c, d), sign ignored. */
static inline double geom_plane_angle(const double *a, const double *b) {
  double d = fabs(a[0] * b[0] + a[1] * b[1] + a[2] * b[2]);
  return acos(d > 1 ? 1 : d);
}

#endif
