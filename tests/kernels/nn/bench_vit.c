/* bench_vit: images/s of our ViT-B/8 forward (random weights, blocks 4/7/11 out, so blocks 1-11
 * run) at 224 on
 * the CPU or the GPU, the GEMM rate this machine reaches (CPU: a large OpenBLAS sgemm; GPU:
 * a large cuBLASLt GEMM in bf16, and in the run's own precision when that is fp32 or TF32),
 * and the fraction of it the forward achieves (model FLOPs counted from the shapes: the
 * GEMMs and the two attention products, over the measured time). Median of `reps` after a
 * warm-up; random inputs (never zeros).
 *   bench_vit cpu|cuda BATCH REPS [fp32|tf32|bf16]
 * bench_vit.sh runs it beside PyTorch (bench_vit_torch.py, same precision and batch) and
 * prints the ratio. Exits 77 for cuda without a GPU. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds_mpi.h"
#include "hash.h"
#include "rng.h"
#include "vit.h"
#ifdef CMDS_CUDA
#include "nn/vit_bf16.h"
#endif

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *t, int n) {
  qsort(t, (size_t)n, sizeof *t, cmp);
  return t[n / 2];
}

static void fill_random(float *p, int64_t n, uint64_t seed) {
  cmds_rng r;
  cmds_rng_seed(&r, seed);
  for (int64_t i = 0; i < n; i++) p[i] = (float)cmds_rng_normal(&r);
}

/* TFLOP/s of a large n x n x n sgemm through OpenBLAS (its configured threads): the fastest of
 * 5 after a warm-up, the rate this machine can reach (on a shared VM the median of 3 moved by a
 * factor of 2 between runs minutes apart). */
static double cpu_gemm_rate(int n) {
  float *a = malloc(sizeof(float) * (size_t)n * n), *b = malloc(sizeof(float) * (size_t)n * n),
        *c = malloc(sizeof(float) * (size_t)n * n);
  fill_random(a, (int64_t)n * n, 11);
  fill_random(b, (int64_t)n * n, 12);
  double best = 1e30;
  for (int k = -1; k < 5; k++) {
    double t0 = cmds_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double dt = cmds_now() - t0;
    if (k >= 0 && dt < best) best = dt;
  }
  free(a);
  free(b);
  free(c);
  return 2.0 * n * n * (double)n / best / 1e12;
}

#ifdef CMDS_CUDA
/* TFLOP/s of a large n x n x n cuBLASLt GEMM, operands bf16 (bf16 out) or f32 (fp32 or TF32
 * by ctx->allow_tf32), random data; each sample times 10 back-to-back GEMMs. */
static double cuda_gemm_rate(nn_ctx *ctx, int n, nn_dtype t, cmds_error *err) {
  size_t el = (size_t)n * n, bytes = el * (t == NN_BF16 ? 2 : 4);
  nn_arena mem;
  if (nn_arena_init(&mem, NN_CUDA, 3 * bytes + el * 4 + 4096, err)) return -1;
  void *a = nn_arena_alloc(&mem, bytes, err), *b = nn_arena_alloc(&mem, bytes, err), *c = nn_arena_alloc(&mem, bytes, err);
  float *stage = nn_arena_alloc(&mem, el * 4, err), *host = malloc(el * 4);
  int rc = 0;
  for (int k = 0; k < 2 && !rc; k++) {
    fill_random(host, (int64_t)el, 21 + (uint64_t)k);
    nn_tensor h = nn_tensor_view(host, NN_F32, NN_CPU, (int64_t)el, -1, -1, -1);
    nn_tensor d = nn_tensor_view(t == NN_BF16 ? (void *)stage : (k ? b : a), NN_F32, NN_CUDA, (int64_t)el, -1, -1, -1);
    rc = nn_tensor_copy(&d, &h, err);
    if (!rc && t == NN_BF16) rc = nn_f32_to_bf16_cuda(ctx, k ? b : a, stage, (int64_t)el, err);
  }
  double s[5];
  for (int k = -1; k < 5 && !rc; k++) {
    if ((rc = nn_ctx_sync(ctx, err))) break;
    double t0 = cmds_now();
    for (int r = 0; r < 10 && !rc; r++) rc = nn_lt_gemm_cuda(ctx, c, t, a, b, t, NULL, n, n, n, 0.0f, err);
    if (!rc) rc = nn_ctx_sync(ctx, err);
    if (k >= 0) s[k] = (cmds_now() - t0) / 10;
  }
  free(host);
  nn_arena_free(&mem);
  return rc ? -1 : 2.0 * n * n * (double)n / median(s, 5) / 1e12;
}
#endif

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: bench_vit cpu|cuda BATCH REPS [fp32|tf32|bf16]\n");
    return 2;
  }
  nn_device dev = !strcmp(argv[1], "cuda") ? NN_CUDA : NN_CPU;
  int64_t B = atoll(argv[2]);
  int reps = atoi(argv[3]);
  const char *prec = argc > 4 ? argv[4] : "fp32";
  int tf32 = !strcmp(prec, "tf32"), bf16 = !strcmp(prec, "bf16");
  if (B < 1 || reps < 1 || (!tf32 && !bf16 && strcmp(prec, "fp32"))) {
    fprintf(stderr, "bench_vit: batch and reps >= 1, precision fp32, tf32 or bf16\n");
    return 2;
  }
  if (dev == NN_CUDA && !nn_cuda_available()) {
    printf("skipped: no GPU\n");
    return 77;
  }
  if (dev == NN_CPU && (tf32 || bf16)) {
    fprintf(stderr, "bench_vit: the CPU path is fp32 only\n");
    return 2;
  }
  char name[256];
  printf("device: %s\n", nn_device_describe(dev, name, sizeof name));
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
  fill_random(img, B * 3 * c.image * c.image, 3);
  nn_arena scratch, io;
  nn_ctx ctx;
  int blocks[3] = {4, 7, 11};
  int rc = nn_arena_init(&scratch, dev, vit_scratch_bytes(&c, B), &err);
  if (!rc) rc = nn_arena_init(&io, dev, sizeof(float) * (size_t)(B * NP * (in + 3 * D)) + 4096, &err);
  if (!rc) rc = nn_ctx_init(&ctx, dev, &scratch, NULL, tf32, &err);
  if (!rc && bf16) ctx.act_dtype = NN_BF16;
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
  /* a digest of the last batch's outputs: builds, thread counts and OpenBLAS flavours that
   * compute the same bits print the same digest (the input and weights are seeded) */
  float *host = malloc(sizeof(float) * (size_t)(B * 3 * NP * D));
  nn_tensor ho = nn_tensor_view(host, NN_F32, NN_CPU, B, 3, NP, D);
  if (!rc) rc = nn_tensor_copy(&ho, &o, &err);
  if (rc) {
    fprintf(stderr, "bench_vit: %s\n", err.msg);
    return 1;
  }
  printf("output digest: %016llx\n",
         (unsigned long long)cmds_fnv64(CMDS_FNV64_INIT, host, sizeof(float) * (size_t)(B * 3 * NP * D)));
  free(host);
  double med = median(t, reps);
  int64_t run = 0; /* vit_forward stops after the last block asked for */
  for (int l = 0; l < 3; l++) run = blocks[l] > run ? blocks[l] : run;
  double flops_img =
      (double)run * (2.0 * T * D * (3 * D) + 2.0 * T * D * D + 2.0 * 2 * T * D * c.mlp + 2.0 * 2 * T * T * D) +
                     2.0 * NP * in * D;
  double rate = (double)B * flops_img / med / 1e12;
  printf("ours %s batch %lld %s: %.2f images/s, %.2f TFLOP/s (median of %d, %.4f s per batch; %.1f GFLOP per image)\n",
         dev == NN_CUDA ? "cuda" : "cpu", (long long)B, prec, (double)B / med, rate, reps, med, flops_img / 1e9);
  double gemm = -1, gemm_bf16 = -1;
  if (dev == NN_CPU) {
    int n = omp_get_max_threads() > 4 ? 4096 : 2048;
    gemm = cpu_gemm_rate(n);
    printf("gemm rate cpu fp32 (OpenBLAS sgemm %d^3, %d threads, fastest of 5): %.3f TFLOP/s\n", n,
           openblas_get_num_threads(), gemm);
  }
#ifdef CMDS_CUDA
  if (dev == NN_CUDA) {
    gemm_bf16 = cuda_gemm_rate(&ctx, 8192, NN_BF16, &err);
    printf("gemm rate cuda bf16 (cuBLASLt 8192^3, fp32 accumulate): %.1f TFLOP/s\n", gemm_bf16);
    if (!bf16) {
      gemm = cuda_gemm_rate(&ctx, 8192, NN_F32, &err);
      printf("gemm rate cuda %s (cuBLASLt 8192^3): %.1f TFLOP/s\n", prec, gemm);
    } else {
      gemm = gemm_bf16;
    }
    if (gemm < 0 || gemm_bf16 < 0) fprintf(stderr, "bench_vit: gemm rate: %s\n", err.msg);
  }
#endif
  if (gemm > 0) printf("ours fraction of the %s gemm rate: %.2f\n", prec, rate / gemm);
  if (gemm_bf16 > 0 && !bf16) printf("ours fraction of the bf16 gemm rate: %.2f\n", rate / gemm_bf16);
  nn_ctx_free(&ctx);
  nn_arena_free(&io);
  nn_arena_free(&scratch);
  vit_free(&m);
  free(img);
  free(pt);
  free(t);
  return 0;
}
