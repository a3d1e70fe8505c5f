/* test_marigold: the whole Marigold normals procedure (kernels/diffusion/marigold) against
 * diffusers' MarigoldNormalsPipeline on a tiny random checkpoint with the same initial latents
 * (tests/fixtures/gen_diffusion_marigold.py): ensemble sizes 1 and 3 (closest and mean),
 * down- and upscaling processing resolutions and the native one; the antialiased input resize
 * against F.interpolate; the empty-prompt embedding; the seeded path; the frame conversion;
 * refusals of bad input.
 * --cuda (exit 77 without a GPU, before anything is loaded): the model and the networks' work
 * on the GPU, as cmds-estimate --device cuda runs them (fp32, allow_tf32 = 0): the same four
 * cases against diffusers (and two members per UNet batch), unit length, each case's normals
 * against the CPU path's, the seeded path (deterministic on the GPU, equal to the CPU's: the
 * noise is drawn on the host), a context on the wrong device refused.
 *   test_marigold FIXTURE_DIR [--cuda] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "difftest.h"
#include "jsonread.h"
#include "marigold.h"
#include "npy.h"

static const char *dir;

static int load(npy_array *a, const char *name) { return difftest_load(dir, name, a); }

static void test_resize(void) {
  static const int sz[][4] = {{45, 70, 41, 64}, {45, 70, 30, 48}, {45, 70, 61, 96}, {33, 17, 10, 7},
                              {8, 9, 8, 9},     {50, 40, 13, 37}, {300, 20, 7, 20}};
  for (int i = 0; i < (int)(sizeof(sz) / sizeof(sz[0])); i++) {
    char n1[64], n2[64];
    snprintf(n1, sizeof(n1), "resize_%d_in.npy", i);
    snprintf(n2, sizeof(n2), "resize_%d_out.npy", i);
    npy_array in, out;
    if (load(&in, n1) || load(&out, n2)) { CHECK(0, "resize fixture %d missing", i); continue; }
    int C = (int)in.shape[0];
    CHECK(in.shape[1] == sz[i][0] && in.shape[2] == sz[i][1] && out.shape[1] == sz[i][2] && out.shape[2] == sz[i][3],
          "resize case %d: fixture sizes", i);
    float *y = malloc(sizeof(float) * (size_t)out.count);
    marigold_resize_bilinear_aa(in.data, C, sz[i][0], sz[i][1], y, sz[i][2], sz[i][3]);
    int64_t at = 0;
    double d = difftest_max_abs(y, &out, out.count, &at);
    /* float32 sums of a few weighted taps in torch's order: rounding only */
    CHECK(d <= 1e-6, "antialiased bilinear %dx%d -> %dx%d: max |diff| %.3g at %lld", sz[i][0], sz[i][1], sz[i][2],
          sz[i][3], d, (long long)at);
    free(y);
    npy_free(&in);
    npy_free(&out);
  }
}

/* Runs every case of cases.json with m and ctx (on the model's device) against diffusers'
 * normals; keep (or NULL): a host copy of each case's normals (H, W, 3), NULL where it failed. */
static void run_cases(marigold_model *m, nn_ctx *ctx, const npy_array *img, const cmds_jv *cases, float **keep) {
  const int H = (int)img->shape[0], W = (int)img->shape[1];
  const int64_t n = 3 * (int64_t)H * W;
  const char *tag = ctx->device == NN_CPU ? "" : " [cuda]";
  cmds_error err = {0};
  float *out = malloc(sizeof(float) * (size_t)n);
  for (int64_t c = 0; cases && c < cases->n; c++) {
    const cmds_jv *cs = &cases->items[c];
    const char *name = "?", *red = "closest", *lat_name = NULL, *ref_name = NULL;
    int64_t E = 1, steps = 0, res = -1;
    if (keep) keep[c] = NULL;
    cmds_jv_get_str(cs, "cases.json", "name", 1, NULL, &name, &err);
    cmds_jv_get_str(cs, "cases.json", "reduction", 1, NULL, &red, &err);
    cmds_jv_get_str(cs, "cases.json", "latents", 1, NULL, &lat_name, &err);
    cmds_jv_get_str(cs, "cases.json", "normals", 1, NULL, &ref_name, &err);
    cmds_jv_get_int(cs, "cases.json", "ensemble_size", 1, 1, &E, &err);
    cmds_jv_get_int(cs, "cases.json", "steps", 0, 0, &steps, &err);   /* null: the checkpoint's */
    cmds_jv_get_int(cs, "cases.json", "res", 0, -1, &res, &err);
    npy_array lat, ref;
    if (!lat_name || !ref_name || load(&lat, lat_name) || load(&ref, ref_name)) {
      CHECK(0, "case %lld: fixture files", (long long)c);
      continue;
    }
    marigold_opts o = marigold_opts_default();
    o.steps = (int)steps;
    o.processing_res = (int)res;
    o.ensemble_size = (int)E;
    o.reduction = strcmp(red, "mean") ? MARIGOLD_CLOSEST : MARIGOLD_MEAN;
    o.init_latents = lat.data;
    marigold_plan plan;
    int rc = marigold_plan_for(m, H, W, &o, &plan, &err);
    CHECK(rc == 0 && plan.ensemble * m->latent_channels * plan.h * plan.w == lat.count,
          "%s: latent shape: plan (%d,%d,%d,%d) vs fixture %lld values", name, plan.ensemble, m->latent_channels,
          plan.h, plan.w, (long long)lat.count);
    difftest_poison(out, n);
    rc = marigold_normals(m, ctx, img->data, H, W, &o, out, &err);
    CHECK(rc == 0, "%s%s: %s", name, tag, err.msg);
    if (!rc) {
      int64_t at = 0;
      double d = difftest_max_abs(out, &ref, ref.count, &at);
      /* unit normals; the networks agree with diffusers to ~1e-6 relative (on the GPU too: the
       * same fp32 arithmetic, another summation order) */
      CHECK(d <= 1e-4, "%s%s: max |ours - diffusers| %.3g at pixel %lld channel %lld (ours %.6f, theirs %.6f)", name,
            tag, d, (long long)(at / 3), (long long)(at % 3), (double)out[at], npy_get(&ref, at));
      printf("%s%s (E %lld, steps %d, processing %dx%d, latent %dx%d): max |diff| %.3g\n", name, tag, (long long)E,
             plan.steps, plan.ph, plan.pw, plan.h, plan.w, d);
      double worst_len = 0;
      for (int64_t i = 0; i < (int64_t)H * W; i++) {
        double l = sqrt((double)out[3 * i] * out[3 * i] + (double)out[3 * i + 1] * out[3 * i + 1] +
                        (double)out[3 * i + 2] * out[3 * i + 2]);
        if (!(fabs(l - 1) <= worst_len)) worst_len = isnan(l) ? INFINITY : fabs(l - 1);
      }
      CHECK(worst_len < 1e-5, "%s%s: normals not unit length (%.3g off)", name, tag, worst_len);
      if (keep) {
        keep[c] = malloc(sizeof(float) * (size_t)n);
        memcpy(keep[c], out, sizeof(float) * (size_t)n);
      }
    }
    if (!rc && E > 2) { /* members through the UNet two at a time: the same result */
      o.batch = 2;
      difftest_poison(out, n);
      rc = marigold_normals(m, ctx, img->data, H, W, &o, out, &err);
      CHECK(rc == 0, "%s batch 2%s: %s", name, tag, err.msg);
      int64_t at = 0;
      double d = rc ? 1 : difftest_max_abs(out, &ref, ref.count, &at);
      CHECK(d <= 1e-4, "%s%s, 2 members per UNet batch: max |diff| %.3g", name, tag, d);
    }
    npy_free(&lat);
    npy_free(&ref);
  }
  free(out);
}

/* GPU vs CPU on the same inputs: both fp32 (no TF32, as cmds-estimate runs), so only the
 * summation order differs (cuBLAS and our CUDA reductions against OpenBLAS / OpenMP). The CPU
 * path's distance from diffusers, torch's fp32 in yet another order, is 1.7e-6 .. 9.3e-6 on
 * these unit normals (measured here), so the GPU's should be of that size too; the direct bound
 * is the CPU test's 1e-4 against diffusers: 10x that, and a wrong kernel, or a pixel where
 * "closest" picks another member on the GPU, shows far above it. */
#define CUDA_VS_CPU_ATOL 1e-4

/* --cuda: the model on the GPU against diffusers and against the CPU path. */
static int test_cuda(const char *root) {
  cmds_error err = {0};
  marigold_model mg, mc;
  int rc = marigold_load(&mg, root, NN_CUDA, &err);
  CHECK(rc == 0, "load on the GPU: %s", err.msg);
  if (rc) return CHECK_DONE();
  rc = marigold_load(&mc, root, NN_CPU, &err);
  CHECK(rc == 0, "load on the CPU: %s", err.msg);
  if (rc) {
    marigold_free(&mg);
    return CHECK_DONE();
  }
  CHECK(mg.device == NN_CUDA && mg.unet.device == NN_CUDA && mg.vae.device == NN_CUDA, "the networks on the GPU");
  npy_array img;
  char p[1100];
  snprintf(p, sizeof(p), "%s/cases.json", dir);
  cmds_jv cj;
  if (load(&img, "image.npy") || cmds_jv_read_file(p, &cj, &err)) {
    CHECK(0, "image.npy, cases.json: %s", err.msg);
    return CHECK_DONE();
  }
  const int H = (int)img.shape[0], W = (int)img.shape[1];
  const int64_t n = 3 * (int64_t)H * W;
  const cmds_jv *cases = cmds_jv_member(&cj, "cases");
  CHECK(cases && cases->type == CMDS_JV_ARR && cases->n == 4, "cases.json: 4 cases");
  marigold_opts big = marigold_opts_default();
  big.ensemble_size = 3;
  big.processing_res = 96;
  nn_arena sg, sc;
  nn_ctx cg, cc;
  if (nn_arena_init(&sg, NN_CUDA, marigold_workspace_bytes(&mg, H, W, &big), &err) ||
      nn_ctx_init(&cg, NN_CUDA, &sg, NULL, 0, &err) ||
      nn_arena_init(&sc, NN_CPU, marigold_workspace_bytes(&mc, H, W, &big), &err) ||
      nn_ctx_init(&cc, NN_CPU, &sc, NULL, 0, &err)) {
    CHECK(0, "%s", err.msg);
    return CHECK_DONE();
  }
  float *kg[8] = {0}, *kc[8] = {0};
  int nc = cases && cases->n <= 8 ? (int)cases->n : 0;
  run_cases(&mg, &cg, &img, nc ? cases : NULL, kg);
  run_cases(&mc, &cc, &img, nc ? cases : NULL, kc);
  for (int c = 0; c < nc; c++) {
    const char *name = "?";
    cmds_jv_get_str(&cases->items[c], "cases.json", "name", 1, NULL, &name, &err);
    CHECK(kg[c] && kc[c], "%s: both runs", name);
    if (kg[c] && kc[c]) {
      npy_array cpu = difftest_f32_array(kc[c], n);
      int64_t at = 0;
      double d = difftest_max_abs(kg[c], &cpu, n, &at);
      printf("CUDA vs CPU %s: max |diff| %.3g (bound %.0e)\n", name, d, CUDA_VS_CPU_ATOL);
      CHECK(d <= CUDA_VS_CPU_ATOL, "%s: GPU vs CPU max |diff| %.3g at pixel %lld channel %lld (%.6f vs %.6f)", name, d,
            (long long)(at / 3), (long long)(at % 3), (double)kg[c][at], (double)kc[c][at]);
    }
    free(kg[c]), free(kc[c]);
  }

  /* our own noise (drawn on the host): deterministic on the GPU, the CPU's normals */
  {
    marigold_opts o = marigold_opts_default();
    o.steps = 2;
    o.seed = 11;
    float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n),
          *c = malloc(sizeof(float) * (size_t)n);
    difftest_poison(a, n), difftest_poison(b, n), difftest_poison(c, n);
    CHECK(marigold_normals(&mg, &cg, img.data, H, W, &o, a, &err) == 0, "seeded [cuda]: %s", err.msg);
    CHECK(marigold_normals(&mg, &cg, img.data, H, W, &o, b, &err) == 0, "seeded [cuda]: %s", err.msg);
    CHECK(!memcmp(a, b, sizeof(float) * (size_t)n), "same seed on the GPU, different normals");
    CHECK(marigold_normals(&mc, &cc, img.data, H, W, &o, c, &err) == 0, "seeded: %s", err.msg);
    npy_array cpu = difftest_f32_array(c, n);
    int64_t at = 0;
    double d = difftest_max_abs(a, &cpu, n, &at);
    printf("CUDA vs CPU seeded (seed 11, 2 steps): max |diff| %.3g (bound %.0e)\n", d, CUDA_VS_CPU_ATOL);
    CHECK(d <= CUDA_VS_CPU_ATOL, "seeded: GPU vs CPU max |diff| %.3g at %lld", d, (long long)at);
    /* a context on the CPU for the model on the GPU is refused, naming both */
    CHECK(marigold_normals(&mg, &cc, img.data, H, W, &o, a, &err) == CMDS_EINPUT && strstr(err.msg, "cuda") &&
              strstr(err.msg, "cpu"),
          "context on another device: %s", err.msg);
    free(a), free(b), free(c);
  }
  cmds_jv_free(&cj);
  npy_free(&img);
  nn_ctx_free(&cg), nn_ctx_free(&cc);
  nn_arena_free(&sg), nn_arena_free(&sc);
  marigold_free(&mg), marigold_free(&mc);
  return CHECK_DONE();
}

int main(int argc, char **argv) {
  int cuda = 0, rc = difftest_args(argc, argv, &dir, &cuda);
  if (rc >= 0) return rc;
  char root[1024], why[512];
  snprintf(root, sizeof(root), "%s/ckpt", dir);
  if (cuda) return test_cuda(root);
  test_resize();

  /* weights present / absent */
  CHECK(marigold_have_weights(root, why, sizeof(why)) == 1, "have_weights: %s", why);
  CHECK(marigold_have_weights("/nonexistent/marigold", why, sizeof(why)) == 0 && strstr(why, "/nonexistent/marigold"),
        "missing checkpoint: '%s'", why);
  CHECK(marigold_have_weights("", why, sizeof(why)) == 0 && why[0], "empty root");

  cmds_error err = {0};
  marigold_model m;
  rc = marigold_load(&m, root, NN_CPU, &err);
  CHECK(rc == 0, "load: %s", err.msg);
  if (rc) return CHECK_DONE();
  CHECK(m.default_steps == 4 && m.default_res == 64 && m.use_full_z_range == 1 && m.vae_scale == 4 &&
        m.latent_channels == 4, "model_index defaults: steps %d res %d full_z %d f %d C %d", m.default_steps,
        m.default_res, m.use_full_z_range, m.vae_scale, m.latent_channels);
  npy_array emb;
  if (!load(&emb, "empty_emb.npy")) {
    CHECK(m.emb_S * m.emb_D == emb.count, "empty embedding (%lld, %lld) vs %lld values", (long long)m.emb_S,
          (long long)m.emb_D, (long long)emb.count);
    int64_t at = 0;
    if (m.emb_S * m.emb_D == emb.count) {
      double d = difftest_max_abs(m.empty_emb, &emb, emb.count, &at);
      CHECK(d <= 1e-5, "empty-prompt embedding: max |diff| %.3g at %lld", d, (long long)at);
    }
    npy_free(&emb);
  }

  npy_array img;
  if (load(&img, "image.npy")) return CHECK_DONE();
  const int H = (int)img.shape[0], W = (int)img.shape[1];
  char p[1100];
  snprintf(p, sizeof(p), "%s/cases.json", dir);
  cmds_jv cj;
  if (cmds_jv_read_file(p, &cj, &err)) { CHECK(0, "%s", err.msg); return CHECK_DONE(); }
  const cmds_jv *cases = cmds_jv_member(&cj, "cases");
  CHECK(cases && cases->type == CMDS_JV_ARR && cases->n == 4, "cases.json: 4 cases");

  /* one scratch arena large enough for every case */
  size_t need = 0;
  marigold_opts big = marigold_opts_default();
  big.ensemble_size = 3;
  big.processing_res = 96;
  need = marigold_workspace_bytes(&m, H, W, &big);
  CHECK(need > 0, "workspace size");
  nn_arena scratch;
  nn_ctx ctx;
  if (nn_arena_init(&scratch, NN_CPU, need, &err) || nn_ctx_init(&ctx, NN_CPU, &scratch, NULL, 0, &err)) {
    CHECK(0, "%s", err.msg);
    return CHECK_DONE();
  }
  run_cases(&m, &ctx, &img, cases, NULL);
  float *out = malloc(sizeof(float) * 3 * (size_t)H * (size_t)W);
  /* our own noise: deterministic in the seed, different across seeds, unit normals */
  {
    marigold_opts o = marigold_opts_default();
    o.steps = 2;
    o.seed = 11;
    float *a = malloc(sizeof(float) * 3 * (size_t)H * (size_t)W), *b = malloc(sizeof(float) * 3 * (size_t)H * (size_t)W);
    CHECK(marigold_normals(&m, &ctx, img.data, H, W, &o, a, &err) == 0, "seeded: %s", err.msg);
    CHECK(marigold_normals(&m, &ctx, img.data, H, W, &o, b, &err) == 0, "seeded: %s", err.msg);
    CHECK(!memcmp(a, b, sizeof(float) * 3 * (size_t)H * (size_t)W), "same seed, different normals");
    o.seed = 12;
    CHECK(marigold_normals(&m, &ctx, img.data, H, W, &o, b, &err) == 0, "seeded: %s", err.msg);
    CHECK(memcmp(a, b, sizeof(float) * 3 * (size_t)H * (size_t)W), "another seed, same normals");
    /* match_input_res = 0: the processing size */
    o.match_input_res = 0;
    marigold_plan plan;
    marigold_plan_for(&m, H, W, &o, &plan, &err);
    CHECK(plan.oh == 41 && plan.ow == 64, "processing-size output %dx%d, 41x64 expected", plan.oh, plan.ow);
    CHECK(marigold_normals(&m, &ctx, img.data, H, W, &o, b, &err) == 0, "match_input_res 0: %s", err.msg);
    free(a);
    free(b);
  }

  /* refusals */
  {
    marigold_opts o = marigold_opts_default();
    o.processing_res = 30; /* not a multiple of 4 */
    CHECK(marigold_normals(&m, &ctx, img.data, H, W, &o, out, &err) == CMDS_EINPUT && strstr(err.msg, "multiple"),
          "resolution 30: %s", err.msg);
    float *bad = malloc(sizeof(float) * (size_t)img.count);
    memcpy(bad, img.data, sizeof(float) * (size_t)img.count);
    bad[3 * 100 + 1] = 1.5f;
    o = marigold_opts_default();
    CHECK(marigold_normals(&m, &ctx, bad, H, W, &o, out, &err) == CMDS_EINPUT && strstr(err.msg, "[0, 1]"),
          "pixel outside [0, 1]: %s", err.msg);
    free(bad);
    marigold_model m2;
    snprintf(p, sizeof(p), "%s/../diffusion_ddim/marigold", dir);
    CHECK(marigold_load(&m2, p, NN_CPU, &err) != 0 && strstr(err.msg, "model_index.json"), "no model_index: %s",
          err.msg);
  }

  /* frame conversion: Marigold's (X right, Y up, Z to the viewer) -> ours (y down, z away) */
  {
    float n[6] = {0.6f, 0.0f, 0.8f, 0.0f, 1.0f, 0.0f};
    marigold_normals_to_pointcloud_frame(n, 2);
    CHECK(n[0] == 0.6f && n[1] == 0.0f && n[2] == -0.8f && n[4] == -1.0f,
          "a normal facing the viewer faces the camera (z < 0), up becomes -y");
  }
  free(out);
  cmds_jv_free(&cj);
  npy_free(&img);
  nn_ctx_free(&ctx);
  nn_arena_free(&scratch);
  marigold_free(&m);
  return CHECK_DONE();
}
