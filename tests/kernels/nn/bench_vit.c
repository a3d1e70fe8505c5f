/* bench_vit: images/s of our ViT-B/8 forward (random weights, blocks 4/7/11 out) at 224,
 * on the CPU or the GPU, and the GEMM rate it achieves (FLOPs counted from the shapes:
 * the GEMMs and the two attention products). Median of `reps` after a warm-up.
 *   bench_vit cpu|cuda BATCH REPS [tf32]
 * Prints one line: "ours <device> batch B: X images/s, Y TFLOP/s". bench_vit.sh runs it
 * beside PyTorch (bench_vit_torch.py) and prints the ratio. Exits 77 for cuda without a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds_mpi.h"
#include "rng.h"
#include "vit.h"

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: bench_vit cpu|cuda BATCH REPS [tf32]\n");
    return 2;
  }
  nn_device dev = !strcmp(argv[1], "cuda") ? NN_CUDA : NN_CPU;
  int64_t B = atoll(argv[2]);
  int reps = atoi(argv[3]), tf32 = argc > 4 && !strcmp(argv[4], "tf32");
  if (dev == NN_CUDA && !nn_cuda_available()) {
    printf("skipped: no GPU\n");
    return 77;
  }
  vit_config c;
  vit_config_b8(&c);
  cmds_error err = {0};
  vit_model m;
  if (vit_init_random(&m, &c, 1, dev, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  int64_t G = c.image / c.patch, NP = G * G, T = NP + 1, in = 3 * c.patch * c.patch, D = c.width;
  float *img = malloc(sizeof(float) * (size_t)(B * 3 * c.image * c.image));
  float *pt = malloc(sizeof(float) * (size_t)(B * NP * in));
  cmds_rng r;
  cmds_rng_seed(&r, 3);
  for (int64_t i = 0; i < B * 3 * c.image * c.image; i++) img[i] = (float)cmds_rng_normal(&r);
  nn_arena scratch, io;
  nn_ctx ctx;
  int blocks[3] = {4, 7, 11};
  int rc = nn_arena_init(&scratch, dev, vit_scratch_bytes(&c, B), &err);
  if (!rc) rc = nn_arena_init(&io, dev, sizeof(float) * (size_t)(B * NP * (in + 3 * D)) + 4096, &err);
  if (!rc) rc = nn_ctx_init(&ctx, dev, &scratch, NULL, tf32, &err);
  nn_tensor p, o;
  int64_t ps[3] = {B, NP, in}, os[4] = {B, 3, NP, D};
  if (!rc) rc = nn_tensor_alloc(&p, &io, NN_F32, 3, ps, &err);
  if (!rc) rc = nn_tensor_alloc(&o, &io, NN_F32, 4, os, &err);
  double *t = calloc((size_t)reps + 1, sizeof(double));
  for (int k = -1; k < reps && !rc; k++) {
    double t0 = cmds_now();
    /* per batch: patchify on the host and upload, as the features stage does */
    vit_patchify_cpu(img, B, c.image, c.image, c.patch, pt);
    nn_tensor hp = nn_tensor_view(pt, NN_F32, NN_CPU, B, NP, in, -1);
    rc = nn_tensor_copy(&p, &hp, &err);
    if (!rc) rc = vit_forward(&m, &ctx, &p, blocks, 3, 0, &o, &err);
    if (!rc) rc = nn_ctx_sync(&ctx, &err);
    if (k >= 0) t[k] = cmds_now() - t0;
  }
  if (rc) {
    fprintf(stderr, "bench_vit: %s\n", err.msg);
    return 1;
  }
  qsort(t, (size_t)reps, sizeof *t, cmp);
  double med = t[reps / 2];
  double flops = (double)B * c.depth *
                 (2.0 * T * D * (3 * D) + 2.0 * T * D * D + 2.0 * 2 * T * D * c.mlp + 2.0 * 2 * T * T * D) +
                 2.0 * B * NP * in * D;
  printf("ours %s batch %lld%s: %.2f images/s, %.2f TFLOP/s (median of %d, %.4f s per batch)\n",
         dev == NN_CUDA ? "cuda" : "cpu", (long long)B, tf32 ? " tf32" : "", (double)B / med, flops / med / 1e12,
         reps, med);
  nn_ctx_free(&ctx);
  nn_arena_free(&io);
  nn_arena_free(&scratch);
  vit_free(&m);
  free(img);
  free(pt);
  free(t);
  return 0;
}
