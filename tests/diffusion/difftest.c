/* difftest: see difftest.h. */
#define _POSIX_C_SOURCE 200809L
#include "difftest.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

int difftest_args(int argc, char **argv, const char **dir, int *cuda) {
  if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--cuda") != 0)) {
    fprintf(stderr, "usage: %s FIXTURE_DIR [--cuda]\n", argv[0]);
    return 2;
  }
  *dir = argv[1];
  *cuda = argc == 3;
  if (*cuda) {
    if (!nn_cuda_available()) {
      printf("no GPU: skipped\n");
      return 77;
    }
    nn_cuda_select(0);
  }
  return -1;
}

int difftest_load(const char *dir, const char *name, npy_array *a) {
  char p[1024];
  snprintf(p, sizeof(p), "%s/%s", dir, name);
  return npy_load(p, a);
}

void difftest_poison(float *y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = NAN;
}

npy_array difftest_f32_array(float *data, int64_t n) {
  npy_array a = {0};
  snprintf(a.dtype, sizeof a.dtype, "f4");
  a.ndim = 1;
  a.shape[0] = n;
  a.count = n;
  a.itemsize = sizeof(float);
  a.data = data;
  return a;
}

double difftest_max_abs(const float *got, const npy_array *want, int64_t n, int64_t *where) {
  double worst = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)got[i] - npy_get(want, i));
    if (!(d <= worst)) { worst = isnan(d) ? INFINITY : d; *where = i; } /* NaN stays the worst */
  }
  return worst;
}

double difftest_rel_err(const float *got, const npy_array *want, int64_t n, int64_t *where) {
  double scale = 0;
  for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(npy_get(want, i)));
  return difftest_max_abs(got, want, n, where) / (scale > 0 ? scale : 1);
}

double difftest_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

double difftest_cpu_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

double difftest_rss_gib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_maxrss / (1 << 20);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

void difftest_sort(double *v, size_t n) { qsort(v, n, sizeof(double), cmp_double); }

int difftest_bench_device(const char *arg, nn_device *dev) {
  *dev = strcmp(arg, "cuda") == 0 ? NN_CUDA : NN_CPU;
  if (*dev == NN_CUDA && nn_cuda_select(0) < 0) {
    printf("no GPU: skipped\n");
    return 77;
  }
  return 0;
}

unsigned difftest_lcg_u16(unsigned *s) {
  *s = *s * 1103515245u + 12345u;
  return (*s >> 8) & 0xffff;
}
