/* test_sd_img2img: the SD checkpoint loader (kernels/diffusion/sd_lora: sd_models_*) and
 * image-to-image generation (kernels/diffusion/img2img) against diffusers'
 * StableDiffusionImg2ImgPipeline (DDIM, eta 0) on the tiny random SD 2.1-like checkpoint of
 * tests/fixtures/gen_diffusion_sd.py, with the pipeline's own random draws: with and without
 * classifier-free guidance, strengths 0.3 / 0.5 / 0.6 / 1, with the fine-tuned LoRA loaded from
 * the file diffusers wrote (alpha = r and alpha = 2 r); the prompt embedding; the seeded path;
 * refusals of bad input and of incomplete checkpoints.
 * --cuda (exit 77 without a GPU, before anything is loaded): the models on the GPU as
 * cmds-augment --device cuda runs them (fp32, allow_tf32 = 0): every case against diffusers
 * (LoRA loaded onto the GPU UNet included) and against the CPU path's image, the seeded path
 * (deterministic on the GPU, the CPU's image: the draws are made on the host), a context on
 * the wrong device refused.
 *   test_sd_img2img FIXTURE_DIR [--cuda] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "difftest.h"
#include "img2img.h"
#include "jsonread.h"
#include "npy.h"
#include "sd_lora.h"

static const char *dir;

static int load(npy_array *a, const char *name) { return difftest_load(dir, name, a); }

/* difftest_rel_err against another float image. */
static double rel_err_f(const float *got, float *want, int64_t n, int64_t *where) {
  npy_array w = difftest_f32_array(want, n);
  return difftest_rel_err(got, &w, n, where);
}

static void test_layout(const char *root) {
  char why[1024];
  CHECK(sd_have_weights(root, why, sizeof(why)) == 1, "have_weights: %s", why);
  CHECK(sd_have_weights("/nonexistent/sd", why, sizeof(why)) == 0 && strstr(why, "/nonexistent/sd"), "missing: '%s'", why);
  CHECK(sd_have_weights("", why, sizeof(why)) == 0 && why[0], "empty root");
  /* a Marigold checkpoint is not an SD one */
  char mg[1100];
  snprintf(mg, sizeof(mg), "%s/../diffusion_marigold/ckpt", dir);
  CHECK(sd_have_weights(mg, why, sizeof(why)) == 0 && strstr(why, "MarigoldNormalsPipeline"), "marigold: '%s'", why);
  /* a copy without the VAE weights, without the tokenizer's merges */
  char tmp[256], cmd[2400];
  snprintf(tmp, sizeof(tmp), "/tmp/test_sd_img2img.%d", (int)getpid());
  snprintf(cmd, sizeof(cmd), "rm -rf %s && mkdir -p %s && cp -r %s %s/a && cp -r %s %s/b && rm %s/a/vae/*.safetensors "
           "&& rm %s/b/tokenizer/merges.txt", tmp, tmp, root, tmp, root, tmp, tmp, tmp);
  CHECK(system(cmd) == 0, "%s", cmd);
  char a[300], b[300];
  snprintf(a, sizeof(a), "%s/a", tmp);
  snprintf(b, sizeof(b), "%s/b", tmp);
  CHECK(sd_have_weights(a, why, sizeof(why)) == 0 && strstr(why, "vae") && strstr(why, "safetensors"), "no vae: '%s'", why);
  CHECK(sd_have_weights(b, why, sizeof(why)) == 0 && strstr(why, "merges.txt"), "no merges: '%s'", why);
  sd_models M;
  cmds_error err = {0};
  CHECK(sd_models_load(&M, a, NN_CPU, &err) == CMDS_EINPUT && strstr(err.msg, "vae"), "load without vae: %s", err.msg);
  snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
  CHECK(system(cmd) == 0, "%s", cmd);
}

/* One case of img2img.json on M's device against diffusers' image; keep (or NULL): the image
 * (host (H, W, 3), malloc'd; NULL when the run failed) and the case's name. */
static void run_case(sd_models *M, const cmds_jv *c, const npy_array *img, int H, int W, float **keep,
                     const char **keep_name) {
  const nn_device dev = M->device;
  const char *tag = dev == NN_CPU ? "" : " [cuda]";
  if (keep) *keep = NULL;
  const char *name = NULL, *lora = NULL, *f_eps = NULL, *f_noise = NULL, *f_out = NULL;
  double strength = 0, guidance = 0;
  int64_t steps = 0;
  cmds_error err = {0};
  const cmds_jv *lj = cmds_jv_member(c, "lora");
  int rc = cmds_jv_get_str(c, "img2img.json", "name", 1, NULL, &name, &err) ||
           cmds_jv_get_num(c, "img2img.json", "strength", 1, 0, &strength, &err) ||
           cmds_jv_get_num(c, "img2img.json", "guidance", 1, 0, &guidance, &err) ||
           cmds_jv_get_int(c, "img2img.json", "steps", 1, 0, &steps, &err) ||
           cmds_jv_get_str(c, "img2img.json", "eps_vae", 1, NULL, &f_eps, &err) ||
           cmds_jv_get_str(c, "img2img.json", "noise", 1, NULL, &f_noise, &err) ||
           cmds_jv_get_str(c, "img2img.json", "out", 1, NULL, &f_out, &err);
  CHECK(rc == 0, "case: %s", err.msg);
  if (rc) return;
  if (keep_name) *keep_name = name;
  if (lj && lj->type == CMDS_JV_STR) lora = lj->str;
  npy_array eps, noise, want;
  if (load(&eps, f_eps) || load(&noise, f_noise) || load(&want, f_out)) { CHECK(0, "%s: fixture files", name); return; }
  if (lora) {
    char p[1200];
    snprintf(p, sizeof(p), "%s/%s", dir, lora);
    rc = sd_lora_load(&M->unet, p, &err);
    CHECK(rc == 0, "%s: sd_lora_load: %s", name, err.msg);
  } else {
    unet_lora_detach(&M->unet);
  }
  sd_img2img_opts o = sd_img2img_opts_default();
  o.strength = (float)strength;
  o.steps = (int)steps;
  o.guidance = (float)guidance;
  o.eps_vae = eps.data;
  o.noise = noise.data;
  nn_arena s;
  nn_ctx ctx;
  size_t ws = sd_img2img_workspace_bytes(M, H, W, o.guidance);
  if (nn_arena_init(&s, dev, ws, &err) || nn_ctx_init(&ctx, dev, &s, NULL, 0, &err)) { CHECK(0, "%s", err.msg); return; }
  float *y = malloc(sizeof(float) * (size_t)(H * W * 3));
  difftest_poison(y, (int64_t)H * W * 3);
  rc = sd_img2img(M, &ctx, img->data, H, W, &o, y, &err);
  CHECK(rc == 0, "%s%s: %s", name, tag, err.msg);
  if (!rc) {
    int64_t at = 0;
    double e = difftest_rel_err(y, &want, want.count, &at);
    printf("img2img %-12s%s strength %.2f steps %lld guidance %.1f: max |diff| / max |ref| = %.3g (scratch peak %zu of %zu)\n",
           name, tag, strength, (long long)steps, guidance, e, s.peak_bytes, ws);
    CHECK(e <= 1e-4, "img2img %s%s: relative error %.3g at %lld (got %g want %g)", name, tag, e, (long long)at,
          (double)y[at], npy_get(&want, at));
    CHECK(s.peak_bytes <= ws, "%s: scratch peak %zu > workspace %zu", name, s.peak_bytes, ws);
    if (lora) { /* the adapters matter: without them the image differs far beyond the tolerance */
      unet_lora_detach(&M->unet);
      float *y0 = malloc(sizeof(float) * (size_t)(H * W * 3));
      CHECK(sd_img2img(M, &ctx, img->data, H, W, &o, y0, &err) == 0, "%s", err.msg);
      npy_array ours = want;
      ours.data = y0;
      double e0 = difftest_rel_err(y, &ours, want.count, &at);
      CHECK(e0 > 1e-2, "%s%s: the LoRA changes the image by only %.3g", name, tag, e0);
      free(y0);
    }
  }
  if (keep && !rc) *keep = y;
  else free(y);
  nn_ctx_free(&ctx);
  nn_arena_free(&s);
  npy_free(&eps);
  npy_free(&noise);
  npy_free(&want);
}

/* GPU vs CPU on the same inputs and draws: both fp32 (no TF32, as cmds-augment runs), only the
 * summation order differs (cuBLAS and our CUDA reductions against OpenBLAS / OpenMP). The CPU
 * path's distance from diffusers' image, torch's fp32 in another order, is 3.9e-7 .. 5.7e-7 of
 * the image's range (max |diff| / max |ref|, measured here), so the GPU's should be of that
 * size; the direct bound is the CPU test's 1e-4 against diffusers, 100x that: rounding passes,
 * a wrong kernel or a lost LoRA (which moves the image by > 1e-2) does not. */
#define CUDA_VS_CPU_RTOL 1e-4

/* --cuda: the models on the GPU against diffusers and against the CPU path. */
static int test_cuda(const char *root) {
  sd_models Mg, Mc;
  cmds_error err = {0};
  int rc = sd_models_load(&Mg, root, NN_CUDA, &err);
  CHECK(rc == 0, "load on the GPU: %s", err.msg);
  if (rc) return CHECK_DONE();
  rc = sd_models_load(&Mc, root, NN_CPU, &err);
  CHECK(rc == 0, "load on the CPU: %s", err.msg);
  if (rc) {
    sd_models_free(&Mg);
    return CHECK_DONE();
  }
  CHECK(Mg.device == NN_CUDA && Mg.unet.device == NN_CUDA && Mg.vae.device == NN_CUDA, "the networks on the GPU");
  cmds_jv j;
  char p[1200];
  snprintf(p, sizeof(p), "%s/img2img.json", dir);
  if (cmds_jv_read_file(p, &j, &err)) {
    CHECK(0, "%s", err.msg);
    return CHECK_DONE();
  }
  const char *prompt = NULL;
  int64_t H = 0, W = 0;
  cmds_jv_get_str(&j, p, "prompt", 1, NULL, &prompt, &err);
  cmds_jv_get_int(&j, p, "H", 1, 0, &H, &err);
  cmds_jv_get_int(&j, p, "W", 1, 0, &W, &err);
  CHECK(sd_models_set_prompt(&Mg, prompt, "", &err) == 0, "set_prompt: %s", err.msg);
  CHECK(sd_models_set_prompt(&Mc, prompt, "", &err) == 0, "set_prompt: %s", err.msg);
  npy_array img;
  if (load(&img, "i2i_image.npy")) {
    CHECK(0, "i2i_image.npy");
    return CHECK_DONE();
  }
  const int64_t n = H * W * 3;
  const cmds_jv *cases = cmds_jv_member(&j, "cases");
  CHECK(cases && cases->type == CMDS_JV_ARR && cases->n >= 4, "cases");
  for (int64_t i = 0; cases && i < cases->n; i++) {
    float *yg = NULL, *yc = NULL;
    const char *name = "?";
    run_case(&Mg, &cases->items[i], &img, (int)H, (int)W, &yg, &name);
    run_case(&Mc, &cases->items[i], &img, (int)H, (int)W, &yc, NULL);
    CHECK(yg && yc, "%s: both runs", name);
    if (yg && yc) {
      int64_t at = 0;
      double e = rel_err_f(yg, yc, n, &at);
      printf("CUDA vs CPU img2img %-12s: max |diff| / max |cpu| = %.3g (bound %.0e)\n", name, e, CUDA_VS_CPU_RTOL);
      CHECK(e <= CUDA_VS_CPU_RTOL, "%s: GPU vs CPU %.3g at %lld (%g vs %g)", name, e, (long long)at, (double)yg[at],
            (double)yc[at]);
    }
    free(yg), free(yc);
  }

  /* the seeded path (draws on the host): deterministic on the GPU, the CPU's image */
  unet_lora_detach(&Mg.unet);
  unet_lora_detach(&Mc.unet);
  {
    sd_img2img_opts o = sd_img2img_opts_default();
    o.steps = 4;
    o.strength = 0.5f;
    o.seed = 9;
    nn_arena sg, sc;
    nn_ctx cg, cc;
    if (nn_arena_init(&sg, NN_CUDA, sd_img2img_workspace_bytes(&Mg, (int)H, (int)W, o.guidance), &err) ||
        nn_ctx_init(&cg, NN_CUDA, &sg, NULL, 0, &err) ||
        nn_arena_init(&sc, NN_CPU, sd_img2img_workspace_bytes(&Mc, (int)H, (int)W, o.guidance), &err) ||
        nn_ctx_init(&cc, NN_CPU, &sc, NULL, 0, &err)) {
      CHECK(0, "%s", err.msg);
      return CHECK_DONE();
    }
    float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n),
          *c = malloc(sizeof(float) * (size_t)n);
    difftest_poison(a, n), difftest_poison(b, n), difftest_poison(c, n);
    CHECK(sd_img2img(&Mg, &cg, img.data, (int)H, (int)W, &o, a, &err) == 0, "seeded [cuda]: %s", err.msg);
    CHECK(sd_img2img(&Mg, &cg, img.data, (int)H, (int)W, &o, b, &err) == 0, "seeded [cuda]: %s", err.msg);
    CHECK(!memcmp(a, b, sizeof(float) * (size_t)n), "seeded img2img is deterministic on the GPU");
    CHECK(sd_img2img(&Mc, &cc, img.data, (int)H, (int)W, &o, c, &err) == 0, "seeded: %s", err.msg);
    int64_t at = 0;
    double e = rel_err_f(a, c, n, &at);
    printf("CUDA vs CPU img2img seeded (seed 9, guidance %.1f): max |diff| / max |cpu| = %.3g (bound %.0e)\n",
           (double)o.guidance, e, CUDA_VS_CPU_RTOL);
    CHECK(e <= CUDA_VS_CPU_RTOL, "seeded: GPU vs CPU %.3g at %lld", e, (long long)at);
    /* a CPU context for the models on the GPU is refused, naming both */
    CHECK(sd_img2img(&Mg, &cc, img.data, (int)H, (int)W, &o, a, &err) == CMDS_EINPUT && strstr(err.msg, "cuda") &&
              strstr(err.msg, "cpu"),
          "context on another device: %s", err.msg);
    free(a), free(b), free(c);
    nn_ctx_free(&cg), nn_ctx_free(&cc);
    nn_arena_free(&sg), nn_arena_free(&sc);
  }
  npy_free(&img);
  cmds_jv_free(&j);
  sd_models_free(&Mg);
  sd_models_free(&Mc);
  return CHECK_DONE();
}

int main(int argc, char **argv) {
  int cuda = 0, rc = difftest_args(argc, argv, &dir, &cuda);
  if (rc >= 0) return rc;
  char root[1024];
  snprintf(root, sizeof(root), "%s/ckpt", dir);
  if (cuda) return test_cuda(root);
  test_layout(root);

  sd_models M;
  cmds_error err = {0};
  rc = sd_models_load(&M, root, NN_CPU, &err);
  CHECK(rc == 0, "load: %s", err.msg);
  if (rc) return CHECK_DONE();
  CHECK(M.vae_scale == 4 && M.vae.latent_channels == 4 && M.sched.prediction == DDIM_PRED_V, "f %d C %lld pred %d",
        M.vae_scale, (long long)M.vae.latent_channels, (int)M.sched.prediction);

  /* bad calls before a prompt is set */
  {
    float img[3 * 8 * 8] = {0}, out[3 * 8 * 8];
    nn_arena s;
    nn_ctx ctx;
    nn_arena_init(&s, NN_CPU, 1 << 20, &err);
    nn_ctx_init(&ctx, NN_CPU, &s, NULL, 0, &err);
    sd_img2img_opts o = sd_img2img_opts_default();
    CHECK(sd_img2img(&M, &ctx, img, 8, 8, &o, out, &err) == CMDS_EINPUT && strstr(err.msg, "prompt"), "%s", err.msg);
    nn_ctx_free(&ctx);
    nn_arena_free(&s);
  }

  cmds_jv j;
  char p[1200];
  snprintf(p, sizeof(p), "%s/img2img.json", dir);
  rc = cmds_jv_read_file(p, &j, &err);
  CHECK(rc == 0, "%s", err.msg);
  if (rc) { sd_models_free(&M); return CHECK_DONE(); }
  const char *prompt = NULL;
  int64_t H = 0, W = 0;
  cmds_jv_get_str(&j, p, "prompt", 1, NULL, &prompt, &err);
  cmds_jv_get_int(&j, p, "H", 1, 0, &H, &err);
  cmds_jv_get_int(&j, p, "W", 1, 0, &W, &err);
  rc = sd_models_set_prompt(&M, prompt, "", &err);
  CHECK(rc == 0, "set_prompt: %s", err.msg);
  npy_array pe;
  if (!rc && !load(&pe, "prompt_emb.npy")) {
    int64_t at = 0;
    CHECK(M.S == pe.shape[0] && M.hidden == pe.shape[1], "prompt embedding (%lld, %lld)", (long long)M.S, (long long)M.hidden);
    double e = difftest_rel_err(M.prompt_emb, &pe, pe.count, &at);
    CHECK(e <= 1e-5, "prompt embedding vs transformers: %.3g", e);
    npy_free(&pe);
  }
  npy_array img;
  if (load(&img, "i2i_image.npy")) { CHECK(0, "i2i_image.npy"); return CHECK_DONE(); }
  CHECK(img.shape[1] == H && img.shape[2] == W, "image size");
  const cmds_jv *cases = cmds_jv_member(&j, "cases");
  CHECK(cases && cases->type == CMDS_JV_ARR && cases->n >= 4, "cases");
  for (int64_t i = 0; cases && i < cases->n; i++) run_case(&M, &cases->items[i], &img, (int)H, (int)W, NULL, NULL);

  /* refusals */
  {
    nn_arena s;
    nn_ctx ctx;
    nn_arena_init(&s, NN_CPU, sd_img2img_workspace_bytes(&M, (int)H, (int)W, 7.5f), &err);
    nn_ctx_init(&ctx, NN_CPU, &s, NULL, 0, &err);
    float *y = malloc(sizeof(float) * (size_t)(H * W * 3));
    sd_img2img_opts o = sd_img2img_opts_default();
    o.steps = 3;
    o.strength = 0.3f; /* int(0.9) = 0 steps */
    CHECK(sd_img2img(&M, &ctx, img.data, (int)H, (int)W, &o, y, &err) == CMDS_EINPUT && strstr(err.msg, "strength"),
          "no step: %s", err.msg);
    o = sd_img2img_opts_default();
    CHECK(sd_img2img(&M, &ctx, img.data, (int)H - 2, (int)W, &o, y, &err) == CMDS_EINPUT && strstr(err.msg, "multiple"),
          "size: %s", err.msg);
    o.strength = 1.5f;
    CHECK(sd_img2img(&M, &ctx, img.data, (int)H, (int)W, &o, y, &err) == CMDS_EINPUT, "strength 1.5: %s", err.msg);
    /* the seeded path: deterministic, and a different seed gives a different image */
    o = sd_img2img_opts_default();
    o.steps = 4;
    o.strength = 0.5f;
    o.seed = 9;
    float *y2 = malloc(sizeof(float) * (size_t)(H * W * 3));
    CHECK(sd_img2img(&M, &ctx, img.data, (int)H, (int)W, &o, y, &err) == 0, "%s", err.msg);
    CHECK(sd_img2img(&M, &ctx, img.data, (int)H, (int)W, &o, y2, &err) == 0, "%s", err.msg);
    CHECK(!memcmp(y, y2, sizeof(float) * (size_t)(H * W * 3)), "seeded img2img is deterministic");
    o.seed = 10;
    CHECK(sd_img2img(&M, &ctx, img.data, (int)H, (int)W, &o, y2, &err) == 0, "%s", err.msg);
    CHECK(memcmp(y, y2, sizeof(float) * (size_t)(H * W * 3)), "another seed, another image");
    float *bad = malloc(sizeof(float) * (size_t)(H * W * 3));
    memcpy(bad, img.data, sizeof(float) * (size_t)(H * W * 3));
    bad[5] = 1.5f;
    CHECK(sd_img2img(&M, &ctx, bad, (int)H, (int)W, &o, y2, &err) == CMDS_EINPUT && strstr(err.msg, "[-1, 1]"), "%s", err.msg);
    free(bad);
    free(y);
    free(y2);
    nn_ctx_free(&ctx);
    nn_arena_free(&s);
  }
  npy_free(&img);
  cmds_jv_free(&j);
  sd_models_free(&M);
  return CHECK_DONE();
}
