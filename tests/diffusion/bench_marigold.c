/* bench_marigold: our Marigold normals on one SIZE x SIZE image (random RGB) with a checkpoint
 * in diffusers layout (bench_marigold.sh makes a full-size random one): load time, seconds per
 * image (median of REPS; on CUDA after one warm-up), peak memory (host RSS, and the arenas).
 *   bench_marigold ROOT cpu|cuda SIZE STEPS REPS      exit 77 when cuda is asked and absent */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "difftest.h"
#include "marigold.h"

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s ROOT cpu|cuda SIZE STEPS REPS\n", argv[0]);
    return 2;
  }
  const char *root = argv[1];
  nn_device dev;
  int size = atoi(argv[3]), steps = atoi(argv[4]), reps = atoi(argv[5]);
  if (difftest_bench_device(argv[2], &dev)) return 77;
  char desc[256];
  printf("device: %s\n", nn_device_describe(dev, desc, sizeof desc));
  cmds_error err = {0};
  marigold_model m;
  double t0 = difftest_now();
  if (marigold_load(&m, root, dev, &err)) {
    fprintf(stderr, "bench_marigold: %s\n", err.msg);
    return 1;
  }
  printf("load: %.2f s\n", difftest_now() - t0);
  float *rgb = malloc((size_t)size * size * 3 * sizeof(float)), *nrm = malloc((size_t)size * size * 3 * sizeof(float));
  unsigned s = 1;
  for (size_t i = 0; i < (size_t)size * size * 3; i++) rgb[i] = (float)difftest_lcg_u16(&s) / 65535.0f;
  marigold_opts o = marigold_opts_default();
  o.steps = steps;
  o.processing_res = 768;
  size_t need = marigold_workspace_bytes(&m, size, size, &o);
  nn_arena scratch;
  nn_ctx ctx;
  if (nn_arena_init(&scratch, dev, need, &err) || nn_ctx_init(&ctx, dev, &scratch, NULL, 0, &err)) {
    fprintf(stderr, "bench_marigold: %s\n", err.msg);
    return 1;
  }
  printf("workspace: %.2f GiB\n", (double)need / (1 << 30));
  double *times = calloc((size_t)reps + 1, sizeof(double));
  int warm = dev == NN_CUDA;
  for (int r = 0; r < reps + warm; r++) {
    double t = difftest_now();
    if (marigold_normals(&m, &ctx, rgb, size, size, &o, nrm, &err)) {
      fprintf(stderr, "bench_marigold: %s\n", err.msg);
      return 1;
    }
    if (r >= warm) times[r - warm] = difftest_now() - t;
  }
  difftest_sort(times, (size_t)reps);
  printf("ours: %.3f s per image (%dx%d, processing 768, %d steps, ensemble 1), peak RSS %.2f GiB\n",
         times[reps / 2], size, size, steps, difftest_rss_gib());
  printf("workspace used at peak: %.2f GiB\n", (double)scratch.peak_bytes / (1 << 30));
  nn_ctx_free(&ctx);
  nn_arena_free(&scratch);
  marigold_free(&m);
  free(rgb);
  free(nrm);
  free(times);
  return 0;
}
