/* cuda_pair: what the CUDA-vs-CPU parity tests share: host and device arenas and contexts,
 * seeded random host tensors (keyed by the case name, never by rank), device copies
 * (NaN-poisoned when asked, so an unwritten value fails), the relative L2 error of a GPU
 * result against the CPU one, RUN2 (the same call on both paths, each checked), and the setup
 * and release of the arenas and contexts. Included by test_nn_cuda.c, test_nn_backward2_cuda.c
 * and tests/mapper/test_mapper_cuda.c, after check.h, nn.h and rng.h. The helpers are static
 * inline: not every includer uses every one. */
#ifndef CMDS_TESTS_NN_CUDA_PAIR_H
#define CMDS_TESTS_NN_CUDA_PAIR_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static nn_arena host, dev, host_scratch, dev_scratch;
static nn_ctx cpu, gpu;

static inline void die_on(int rc, const cmds_error *err) {
  if (rc) {
    fprintf(stderr, "%s\n", err->msg);
    exit(1);
  }
}

/* A host tensor of N(0,1) * scale values keyed by the case name (never by rank). */
static inline nn_tensor host_random(const char *name, int ndim, const int64_t *shape, double scale) {
  cmds_error err = {0};
  nn_tensor t;
  die_on(nn_tensor_alloc(&t, &host, NN_F32, ndim, shape, &err), &err);
  cmds_rng r;
  cmds_rng_seed(&r, cmds_hash_str(name));
  float *p = t.data;
  for (int64_t i = 0; i < nn_tensor_numel(&t); i++) p[i] = (float)(cmds_rng_normal(&r) * scale);
  return t;
}

static inline nn_tensor host_empty(int ndim, const int64_t *shape) {
  cmds_error err = {0};
  nn_tensor t;
  die_on(nn_tensor_alloc(&t, &host, NN_F32, ndim, shape, &err), &err);
  return t;
}

/* A device copy of a host tensor (or of its shape, NaN-filled when `poison`). */
static inline nn_tensor to_dev(const nn_tensor *h, int poison) {
  cmds_error err = {0};
  nn_tensor d;
  die_on(nn_tensor_alloc(&d, &dev, NN_F32, h->ndim, h->shape, &err), &err);
  if (poison) {
    size_t mark = nn_arena_mark(&host);
    nn_tensor nan = host_empty(h->ndim, h->shape);
    float *p = nan.data;
    for (int64_t i = 0; i < nn_tensor_numel(&nan); i++) p[i] = NAN;
    die_on(nn_tensor_copy(&d, &nan, &err), &err);
    nn_arena_rewind(&host, mark);
  } else {
    die_on(nn_tensor_copy(&d, h, &err), &err);
  }
  return d;
}

/* ||gpu - cpu|| / ||cpu|| with the GPU result copied back; NaN fails. */
static inline double rel_err(const nn_tensor *d, const nn_tensor *ref) {
  cmds_error err = {0};
  size_t mark = nn_arena_mark(&host);
  nn_tensor back = host_empty(ref->ndim, ref->shape);
  die_on(nn_ctx_sync(&gpu, &err), &err);
  die_on(nn_tensor_copy(&back, d, &err), &err);
  const float *a = back.data, *b = ref->data;
  double num = 0, den = 0;
  for (int64_t i = 0; i < nn_tensor_numel(ref); i++) {
    double e = (double)a[i] - b[i];
    num += e * e;
    den += (double)b[i] * b[i];
  }
  nn_arena_rewind(&host, mark);
  double r = sqrt(num) / (sqrt(den) + 1e-30);
  return isnan(num) ? INFINITY : r;
}

static inline void report(const char *op, double err, double tol) {
  printf("  %-48s rel L2 err %.3e (tol %.0e)\n", op, err, tol);
  CHECK(err < tol, "%s: relative error %.3e above %.0e", op, err, tol);
}

static inline void reset(void) {
  nn_arena_reset(&host);
  nn_arena_reset(&dev);
}

/* The host and device arenas (arena_bytes each) and scratch arenas (scratch_bytes each), the
 * contexts cpu and gpu (fp32: TF32 off) on GPU 0. Returns 0; 77 without a GPU (or a build
 * without CUDA: "skipped" printed); 1 after printing why the setup failed. */
static inline int cuda_pair_setup(size_t arena_bytes, size_t scratch_bytes) {
  if (!nn_cuda_available()) {
    printf("no CUDA backend or no GPU: skipped\n");
    return 77;
  }
  nn_cuda_select(0);
  cmds_error err = {0};
  int rc = nn_arena_init(&host, NN_CPU, arena_bytes, &err);
  if (!rc) rc = nn_arena_init(&host_scratch, NN_CPU, scratch_bytes, &err);
  if (!rc) rc = nn_arena_init(&dev, NN_CUDA, arena_bytes, &err);
  if (!rc) rc = nn_arena_init(&dev_scratch, NN_CUDA, scratch_bytes, &err);
  if (!rc) rc = nn_ctx_init(&cpu, NN_CPU, &host_scratch, NULL, 0, &err);
  if (!rc) rc = nn_ctx_init(&gpu, NN_CUDA, &dev_scratch, NULL, 0, &err);
  if (rc) fprintf(stderr, "setup: %s\n", err.msg);
  return rc ? 1 : 0;
}

static inline void cuda_pair_release(void) {
  nn_ctx_free(&cpu);
  nn_ctx_free(&gpu);
  nn_arena_free(&host);
  nn_arena_free(&host_scratch);
  nn_arena_free(&dev);
  nn_arena_free(&dev_scratch);
}

#define RUN2(call_cpu, call_gpu)                                \
  do {                                                          \
    cmds_error e_ = {0};                                        \
    int rc_ = (call_cpu);                                       \
    CHECK(rc_ == 0, "cpu: %s", e_.msg);                         \
    rc_ = (call_gpu);                                           \
    CHECK(rc_ == 0, "gpu: %s", e_.msg);                         \
  } while (0)

#endif
