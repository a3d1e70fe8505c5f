/* compare_mappers: compares the tensors of two safetensors files (trained mappers or
 * checkpoints) of the same names and shapes.
 *   compare_mappers A B            every tensor bit-identical
 *   compare_mappers A B --rel TOL  max |a - b| <= TOL * max |b|, both maxima over every tensor of
 *                                  the file (the relative error of the weight vector in the max
 *                                  norm; per-tensor figures are printed too)
 *   compare_mappers A B --rel-each TOL   the same bound within every tensor
 * Prints the largest difference; exit 0 when equal, 1 when not, 2 on unreadable input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int main(int argc, char **argv) {
  int each = argc == 5 && !strcmp(argv[3], "--rel-each");
  if (argc != 3 && !(argc == 5 && (!strcmp(argv[3], "--rel") || each))) {
    fprintf(stderr, "usage: compare_mappers A B [--rel TOL | --rel-each TOL]\n");
    return 2;
  }
  double tol = argc == 5 ? atof(argv[4]) : -1;
  cmds_st_file a, b;
  cmds_error err = {0};
  if (cmds_st_open(&a, argv[1], &err) || cmds_st_open(&b, argv[2], &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 2;
  }
  int bad = 0;
  double worst = 0, gmaxd = 0, gmaxb = 0;
  const char *worst_name = "";
  if (a.n_tensors != b.n_tensors) {
    printf("tensor counts differ: %d vs %d\n", a.n_tensors, b.n_tensors);
    bad = 1;
  }
  for (int i = 0; i < a.n_tensors && !bad; i++) {
    const cmds_st_tensor *ta = &a.tensors[i], *tb = cmds_st_find(&b, ta->name);
    if (!tb || tb->dtype != ta->dtype || tb->end - tb->begin != ta->end - ta->begin || ta->dtype != CMDS_ST_F32) {
      printf("%s: missing or of another dtype/size in %s\n", ta->name, argv[2]);
      bad = 1;
      break;
    }
    size_t n = (size_t)(ta->end - ta->begin) / 4;
    const float *x = ta->data, *y = tb->data;
    double maxd = 0, maxb = 0;
    for (size_t k = 0; k < n; k++) {
      float xv, yv;
      memcpy(&xv, x + k, 4);
      memcpy(&yv, y + k, 4);
      double d = fabs((double)xv - (double)yv);
      if (!(d <= maxd)) maxd = d; /* NaN counts as a difference */
      if (fabs(yv) > maxb) maxb = fabs(yv);
    }
    double rel = maxb > 0 ? maxd / maxb : maxd;
    if (!(maxd <= gmaxd)) gmaxd = maxd;
    if (maxb > gmaxb) gmaxb = maxb;
    if (rel > worst || isnan(rel)) {
      worst = rel;
      worst_name = ta->name;
    }
    if (tol < 0 ? memcmp(x, y, n * 4) != 0 : each && !(rel <= tol)) {
      printf("%s: differs (max |a-b| = %.3g, relative to the tensor's max |b| = %.3g)\n", ta->name, maxd, rel);
      bad = 1;
    }
  }
  double grel = gmaxb > 0 ? gmaxd / gmaxb : gmaxd;
  if (tol >= 0 && !each && !(grel <= tol)) bad = 1;
  if (tol >= 0) printf("max |a-b| / max |b| over all tensors: %.3g (tolerance %.3g)\n", grel, tol);
  printf("%d tensors, largest per-tensor relative difference %.3g (%s): %s\n", a.n_tensors, worst, worst_name,
         bad ? "DIFFERENT" : tol < 0 ? "bit-identical" : "equal within tolerance");
  cmds_st_close(&a);
  cmds_st_close(&b);
  return bad;
}
