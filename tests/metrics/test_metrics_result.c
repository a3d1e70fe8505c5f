/* test_metrics_result: compares one result JSON of cmds-metrics with the values that
 * scikit-learn and the independent numpy AUPRO reference give for the same maps file
 * (tests/fixtures/gen_metrics.py).
 *
 *   test_metrics_result RESULT.json EXPECTED.npy CURVE.npy exact|thresholds
 *
 * EXPECTED.npy (13 float64): i_auroc, p_auroc, aupro_30/10/05/01 (exact curve), the same
 * four for thresholds:100, regions, normal pixels, anomalous pixels; NaN = undefined,
 * which the JSON must write as null with a reason. CURVE.npy: PRO of the exact curve at
 * fpr = 0.3 m / 1000. Tolerance: 1e-6 absolute on every metric and curve point; counts
 * exact. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "npy.h"

#define TOL 1e-6

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  size_t got = fread(s, 1, (size_t)n, f);
  s[got] = 0;
  fclose(f);
  return s;
}

/* Value after `"key": `: a number, or NaN for null. *found = 0 if the key is absent. */
static double json_number(const char *js, const char *key, int *found) {
  char pat[128];
  snprintf(pat, sizeof pat, "\"%s\": ", key);
  const char *p = strstr(js, pat);
  *found = p != NULL;
  if (!p) return NAN;
  p += strlen(pat);
  if (!strncmp(p, "null", 4)) return NAN;
  return strtod(p, NULL);
}

/* Numbers of the array after `"key": [`. Returns the count (up to cap). */
static int json_array(const char *js, const char *key, double *out, int cap) {
  char pat[128];
  snprintf(pat, sizeof pat, "\"%s\": [", key);
  const char *p = strstr(js, pat);
  if (!p) return -1;
  p += strlen(pat);
  int n = 0;
  while (*p && *p != ']' && n < cap) {
    char *end;
    out[n++] = strtod(p, &end);
    p = end;
    while (*p == ',' || *p == ' ') p++;
  }
  return n;
}

static void check_metric(const char *js, const char *key, double want, const char *why_key) {
  int found;
  double got = json_number(js, key, &found);
  CHECK(found, "%s missing from the result", key);
  if (isnan(want)) {
    CHECK(isnan(got), "%s: got %.10g, want null (undefined)", key, got);
    if (why_key) CHECK(strstr(js, why_key) != NULL, "%s is null but %s (the reason) is missing", key, why_key);
  } else {
    CHECK_CLOSE(got, want, TOL, 0.0, key);
  }
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s RESULT.json EXPECTED.npy CURVE.npy exact|thresholds\n", argv[0]);
    return 2;
  }
  char *js = slurp(argv[1]);
  npy_array ex, cv;
  if (!js) {
    fprintf(stderr, "cannot read %s\n", argv[1]);
    return 1;
  }
  if (npy_load(argv[2], &ex) || npy_load(argv[3], &cv)) return 1;
  int thr = !strcmp(argv[4], "thresholds");
  CHECK(ex.count == 13, "expected vector has %lld values, want 13", (long long)ex.count);
  check_metric(js, "i_auroc", npy_get(&ex, 0), "\"i_auroc_undefined\"");
  check_metric(js, "p_auroc", npy_get(&ex, 1), "\"p_auroc_undefined\"");
  const char *keys[4] = {"aupro_30", "aupro_10", "aupro_05", "aupro_01"};
  for (int l = 0; l < 4; l++)
    check_metric(js, keys[l], npy_get(&ex, 2 + 4 * thr + l), "\"aupro_undefined\"");
  int found;
  CHECK(json_number(js, "regions", &found) == npy_get(&ex, 10), "regions: got %g want %g",
        json_number(js, "regions", &found), npy_get(&ex, 10));
  CHECK(json_number(js, "normal_pixels", &found) == npy_get(&ex, 11), "normal_pixels differ");
  CHECK(json_number(js, "anomalous_pixels", &found) == npy_get(&ex, 12), "anomalous_pixels differ");
  char want_curve[32];
  snprintf(want_curve, sizeof want_curve, "\"curve\": \"%s", thr ? "thresholds:" : "exact");
  CHECK(strstr(js, want_curve) != NULL, "result does not say its curve (%s)", want_curve);

  /* the plotted curve (exact mode): PRO at the grid points */
  double *pro = malloc(4096 * sizeof *pro), *fpr = malloc(4096 * sizeof *fpr);
  int np = json_array(js, "pro", pro, 4096), nf = json_array(js, "fpr", fpr, 4096);
  CHECK(np == nf, "pro_curve: %d fpr values, %d pro values", nf, np);
  if (!thr && !isnan(npy_get(&cv, 0))) {
    CHECK(np == cv.count, "pro_curve has %d points, want %lld", np, (long long)cv.count);
    int bad = 0;
    for (int m = 0; m < np && m < cv.count; m++) {
      if (fabs(pro[m] - npy_get(&cv, m)) > TOL || fabs(fpr[m] - 0.3 * m / 1000) > 1e-9) {
        if (bad++ < 3)
          fprintf(stderr, "pro_curve[%d]: fpr %.10g pro %.10g, want %.10g\n", m, fpr[m], pro[m],
                  npy_get(&cv, m));
      }
    }
    CHECK(bad == 0, "%d plotted curve points differ from the reference by more than %g", bad, TOL);
  }
  if (thr && np > 0) {
    for (int m = 1; m < np; m++) CHECK(fpr[m] >= fpr[m - 1], "thresholds curve fpr not ascending");
    CHECK(fpr[np - 1] <= 0.3, "thresholds curve goes past fpr 0.3");
  }
  free(pro);
  free(fpr);
  npy_free(&ex);
  npy_free(&cv);
  free(js);
  return CHECK_DONE();
}
