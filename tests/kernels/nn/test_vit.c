/* test_vit: the ViT forward (kernels/nn/vit) against timm and transformers
 * (tests/fixtures/gen_vit.py): a small random DINO-style ViT exported by each library in
 * the names Hugging Face ships (timm; transformers as on the Hub; transformers 5 names in
 * BF16), the patch tokens of blocks 4, 7 and 11 with and without the final LayerNorm, on
 * the CPU path, to 1e-4 relative (L2). Broken checkpoints: a missing tensor and a wrong
 * shape are named in the error; a file that is not a ViT says which names it looked for.
 * With a GPU, the CUDA path is compared with the CPU path too: fp32 to 1e-5, and the bf16
 * path (ctx.act_dtype = NN_BF16) to 2e-2. The CPU forward gives the same bits on 1 and 3
 * threads, and stops after the last block asked for without changing the earlier ones.
 * Usage: test_vit FIXTURE_DIR */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "npy.h"
#include "rng.h"
#include "vit.h"

static const char *dir;

static char *fpath(const char *name) {
  static char b[2][1024];
  static int k;
  k ^= 1;
  snprintf(b[k], sizeof b[k], "%s/%s", dir, name);
  return b[k];
}

/* CPU forward of m on B random images (seeded), blocks `blocks`; out (B, nb, NP, D). */
static int run_random(vit_model *m, int64_t B, const int *blocks, int nb, float *out, cmds_error *err) {
  int64_t G = m->cfg.image / m->cfg.patch, NP = G * G, in = 3 * m->cfg.patch * m->cfg.patch, D = m->cfg.width;
  float *patches = malloc(sizeof(float) * (size_t)(B * NP * in));
  cmds_rng r;
  cmds_rng_seed(&r, 12345);
  for (int64_t i = 0; i < B * NP * in; i++) patches[i] = (float)(2.0 * cmds_rng_uniform(&r) - 1.0);
  nn_arena scratch;
  nn_ctx ctx;
  int rc = nn_arena_init(&scratch, NN_CPU, vit_scratch_bytes(&m->cfg, B), err);
  if (!rc) rc = nn_ctx_init(&ctx, NN_CPU, &scratch, NULL, 0, err);
  nn_tensor pt = nn_tensor_view(patches, NN_F32, NN_CPU, B, NP, in, -1);
  nn_tensor o = nn_tensor_view(out, NN_F32, NN_CPU, B, nb, NP, D);
  if (!rc) rc = vit_forward(m, &ctx, &pt, blocks, nb, 0, &o, err);
  nn_ctx_free(&ctx);
  nn_arena_free(&scratch);
  free(patches);
  return rc;
}

/* Runs the model on the fixture images; out (B, 3, NP, D) on the host. */
static int run(vit_model *m, nn_device dev, int final_norm, int bf16, float *host_out, cmds_error *err) {
  npy_array img;
  if (npy_load(fpath("images.npy"), &img)) return -1;
  int64_t B = img.shape[0], H = img.shape[2], W = img.shape[3], P = m->cfg.patch, G = H / P, D = m->cfg.width;
  int blocks[3] = {4, 7, 11};
  float *patches = malloc(sizeof(float) * (size_t)(B * G * G * 3 * P * P));
  vit_patchify_cpu(img.data, B, H, W, P, patches);
  nn_arena scratch, io;
  nn_ctx ctx;
  int rc = nn_arena_init(&scratch, dev, vit_scratch_bytes(&m->cfg, B), err);
  if (!rc) rc = nn_arena_init(&io, dev, sizeof(float) * (size_t)(B * G * G * (3 * P * P + 3 * D)) + 4096, err);
  if (!rc) rc = nn_ctx_init(&ctx, dev, &scratch, NULL, 0, err);
  if (!rc && bf16) ctx.act_dtype = NN_BF16;
  nn_tensor pt, out;
  int64_t ps[3] = {B, G * G, 3 * P * P}, os[4] = {B, 3, G * G, D};
  if (!rc) rc = nn_tensor_alloc(&pt, &io, NN_F32, 3, ps, err);
  if (!rc) rc = nn_tensor_alloc(&out, &io, NN_F32, 4, os, err);
  nn_tensor hp = nn_tensor_view(patches, NN_F32, NN_CPU, B, G * G, 3 * P * P, -1);
  nn_tensor ho = nn_tensor_view(host_out, NN_F32, NN_CPU, B, 3, G * G, D);
  if (!rc) rc = nn_tensor_copy(&pt, &hp, err);
  if (!rc) rc = vit_forward(m, &ctx, &pt, blocks, 3, final_norm, &out, err);
  if (!rc) rc = nn_ctx_sync(&ctx, err);
  if (!rc) rc = nn_tensor_copy(&ho, &out, err);
  nn_ctx_free(&ctx);
  nn_arena_free(&io);
  nn_arena_free(&scratch);
  free(patches);
  npy_free(&img);
  return rc;
}

static void check_model(const char *file, const char *want_plain, const char *want_norm, vit_layout layout) {
  vit_model m;
  cmds_error err = {0};
  int rc = vit_load(&m, fpath(file), NN_CPU, 2, -1, &err);
  CHECK(rc == 0, "%s: %s", file, err.msg);
  if (rc) return;
  CHECK(m.layout == layout && m.cfg.width == 32 && m.cfg.depth == 12 && m.cfg.patch == 8 && m.cfg.image == 32 &&
            m.cfg.mlp == 128,
        "%s: layout %s, config read from the shapes", file, vit_layout_name(m.layout));
  for (int fn = 0; fn < 2; fn++) {
    npy_array want;
    if (npy_load(fpath(fn ? want_norm : want_plain), &want)) exit(1);
    float *got = malloc(sizeof(float) * (size_t)want.count);
    CHECK(run(&m, NN_CPU, fn, 0, got, &err) == 0, "%s: %s", file, err.msg);
    double e = check_rel_l2(got, want.data, want.count);
    CHECK(e < 1e-4, "%s (final norm %d): relative L2 error %.2e vs the library", file, fn, e);
    if (nn_cuda_available() && fn == 0) {
      vit_model g;
      float *gg = malloc(sizeof(float) * (size_t)want.count);
      CHECK(vit_load(&g, fpath(file), NN_CUDA, 2, -1, &err) == 0 && run(&g, NN_CUDA, 0, 0, gg, &err) == 0, "cuda: %s",
            err.msg);
      double eg = check_rel_l2(gg, got, want.count);
      printf("%s: CUDA vs CPU relative L2 %.2e\n", file, eg);
      CHECK(eg < 1e-5, "%s: CUDA vs CPU %.2e", file, eg);
      /* bf16 weights and activations, f32 accumulation and statistics: bf16 tolerance */
      for (int i = 0; i < want.count; i++) gg[i] = NAN;
      CHECK(run(&g, NN_CUDA, 0, 1, gg, &err) == 0, "cuda bf16: %s", err.msg);
      eg = check_rel_l2(gg, got, want.count);
      printf("%s: CUDA bf16 vs CPU f32 relative L2 %.2e\n", file, eg);
      CHECK(eg < 2e-2, "%s: CUDA bf16 vs CPU %.2e", file, eg);
      vit_free(&g);
      free(gg);
    }
    free(got);
    npy_free(&want);
  }
  vit_free(&m);
}

int main(int argc, char **argv) {
  dir = argc > 1 ? argv[1] : "tests/fixtures/vit";
  check_model("timm.safetensors", "timm_out.npy", "timm_out_norm.npy", VIT_TIMM);
  check_model("hf.safetensors", "hf_out.npy", "hf_out_norm.npy", VIT_HF);
  check_model("hf5.safetensors", "hf_out.npy", "hf_out_norm.npy", VIT_HF5);

  vit_model m;
  cmds_error err = {0};
  CHECK(vit_load(&m, fpath("hf_missing.safetensors"), NN_CPU, 2, -1, &err) == CMDS_EINPUT &&
            strstr(err.msg, "encoder.layer.1.attention.attention.key.bias") && strstr(err.msg, "layernorm.weight") &&
            strstr(err.msg, "hf_missing.safetensors"),
        "every missing tensor named: %s", err.msg);
  CHECK(vit_load(&m, fpath("timm_badshape.safetensors"), NN_CPU, 2, -1, &err) == CMDS_EINPUT &&
            strstr(err.msg, "blocks.1.mlp.fc1.weight"),
        "wrong shape named: %s", err.msg);
  CHECK(vit_load(&m, fpath("images.npy"), NN_CPU, 2, -1, &err) == CMDS_EINPUT && strstr(err.msg, "images.npy"),
        "not safetensors: %s", err.msg);
  CHECK(vit_load(&m, fpath("hf.safetensors"), NN_CPU, 3, -1, &err) == CMDS_EINPUT && strstr(err.msg, "heads"),
        "heads that do not divide the width: %s", err.msg);

  /* bf16 is a CUDA path: the CPU refuses it with a clear error. */
  {
    vit_model cm;
    CHECK(vit_load(&cm, fpath("timm.safetensors"), NN_CPU, 2, -1, &err) == 0, "%s", err.msg);
    float *o = malloc(sizeof(float) * 2 * 3 * 16 * 32 * 4);
    CHECK(run(&cm, NN_CPU, 0, 1, o, &err) == CMDS_EINPUT && strstr(err.msg, "bf16"), "bf16 on the cpu: %s",
          err.msg);
    free(o);
    vit_free(&cm);
  }

  /* The random stand-in backbone: deterministic, finite, right shape. */
  vit_config c = {.image = 32, .patch = 8, .width = 32, .depth = 12, .heads = 2, .mlp = 128, .eps = 1e-6f};
  vit_model r1, r2;
  CHECK(vit_init_random(&r1, &c, 7, NN_CPU, &err) == 0 && vit_init_random(&r2, &c, 7, NN_CPU, &err) == 0, "%s",
        err.msg);
  float *o1 = malloc(sizeof(float) * 2 * 3 * 16 * 32), *o2 = malloc(sizeof(float) * 2 * 3 * 16 * 32);
  CHECK(run(&r1, NN_CPU, 0, 0, o1, &err) == 0 && run(&r2, NN_CPU, 0, 0, o2, &err) == 0, "%s", err.msg);
  int finite = 1;
  for (int i = 0; i < 2 * 3 * 16 * 32; i++) finite &= isfinite(o1[i]);
  CHECK(finite && !memcmp(o1, o2, sizeof(float) * 2 * 3 * 16 * 32), "random backbone: same seed, same output");
  free(o1);
  free(o2);
  vit_free(&r1);
  vit_free(&r2);

  /* Thread count: with 145 tokens every GEMM is cut into row slabs (nn_sgemm), the attention,
   * LayerNorm and GELU are per row or per element, so 1 and 3 threads give the same bits (with
   * OpenBLAS threading the GEMMs, CMDS_NN_GEMM_THREADS=blas, they did not). And the blocks after
   * the last one asked for are not run: blocks {2} equal the first slice of blocks {2, 4}. */
  vit_config cw = {.image = 96, .patch = 8, .width = 64, .depth = 4, .heads = 2, .mlp = 256, .eps = 1e-6f};
  vit_model w;
  CHECK(vit_init_random(&w, &cw, 11, NN_CPU, &err) == 0, "%s", err.msg);
  int64_t np = 144 * 64, B = 2;
  float *t1 = malloc(sizeof(float) * (size_t)(B * 2 * np)), *t3 = malloc(sizeof(float) * (size_t)(B * 2 * np));
  float *only2 = malloc(sizeof(float) * (size_t)(B * np));
  int both[2] = {2, 4}, two[1] = {2}, threads = omp_get_max_threads(), blas = openblas_get_num_threads();
  openblas_set_num_threads(1); /* both pools, as OMP_NUM_THREADS and OPENBLAS_NUM_THREADS would */
  omp_set_num_threads(1);
  CHECK(run_random(&w, B, both, 2, t1, &err) == 0, "%s", err.msg);
  openblas_set_num_threads(3);
  omp_set_num_threads(3);
  CHECK(run_random(&w, B, both, 2, t3, &err) == 0, "%s", err.msg);
  CHECK(run_random(&w, B, two, 1, only2, &err) == 0, "%s", err.msg);
  openblas_set_num_threads(blas);
  omp_set_num_threads(threads);
  int64_t differ = 0, differ2 = 0;
  for (int64_t i = 0; i < B * 2 * np; i++) differ += memcmp(&t1[i], &t3[i], sizeof(float)) != 0;
  for (int64_t b = 0; b < B; b++)
    for (int64_t i = 0; i < np; i++) differ2 += memcmp(&only2[b * np + i], &t3[(b * 2) * np + i], sizeof(float)) != 0;
  CHECK(differ == 0, "forward on 1 and 3 threads: %lld of %lld values differ", (long long)differ,
        (long long)(B * 2 * np));
  CHECK(differ2 == 0, "blocks {2} vs the block-2 slice of blocks {2, 4}: %lld values differ", (long long)differ2);
  free(t1);
  free(t3);
  free(only2);
  vit_free(&w);
  return CHECK_DONE();
}
