/* test_marigold: the whole Marigold normals procedure (kernels/diffusion/marigold) against
 * diffusers' MarigoldNormalsPipeline on a tiny random checkpoint with the same initial latents
 * (tests/fixtures/gen_diffusion_marigold.py): ensemble sizes 1 and 3 (closest and mean),
 * down- and upscaling processing resolutions and the native one; the antialiased input resize
 * against F.interpolate; the empty-prompt embedding; the seeded path; the frame conversion;
 * refusals of bad input.
 *   test_marigold FIXTURE_DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "jsonread.h"
#include "marigold.h"
#include "npy.h"

static const char *dir;

static int load(npy_array *a, const char *name) {
  char p[1024];
  snprintf(p, sizeof(p), "%s/%s", dir, name);
  return npy_load(p, a);
}

/* the largest |got - want| over n values */
static double max_abs(const float *got, const npy_array *want, int64_t n, int64_t *where) {
  double worst = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)got[i] - npy_get(want, i));
    if (!(d <= worst)) { worst = d; *where = i; }
  }
  return worst;
}

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
    double d = max_abs(y, &out, out.count, &at);
    /* float32 sums of a few weighted taps in torch's order: rounding only */
    CHECK(d <= 1e-6, "antialiased bilinear %dx%d -> %dx%d: max |diff| %.3g at %lld", sz[i][0], sz[i][1], sz[i][2],
          sz[i][3], d, (long long)at);
    free(y);
    npy_free(&in);
    npy_free(&out);
  }
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: test_marigold FIXTURE_DIR\n"); return 2; }
  dir = argv[1];
  char root[1024], why[512];
  snprintf(root, sizeof(root), "%s/ckpt", dir);
  test_resize();

  /* weights present / absent */
  CHECK(marigold_have_weights(root, why, sizeof(why)) == 1, "have_weights: %s", why);
  CHECK(marigold_have_weights("/nonexistent/marigold", why, sizeof(why)) == 0 && strstr(why, "/nonexistent/marigold"),
        "missing checkpoint: '%s'", why);
  CHECK(marigold_have_weights("", why, sizeof(why)) == 0 && why[0], "empty root");

  cmds_error err = {0};
  marigold_model m;
  int rc = marigold_load(&m, root, NN_CPU, &err);
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
      double d = max_abs(m.empty_emb, &emb, emb.count, &at);
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
  float *out = malloc(sizeof(float) * 3 * (size_t)H * (size_t)W);
  for (int64_t c = 0; cases && c < cases->n; c++) {
    const cmds_jv *cs = &cases->items[c];
    const char *name = "?", *red = "closest", *lat_name = NULL, *ref_name = NULL;
    int64_t E = 1, steps = 0, res = -1;
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
    rc = marigold_plan_for(&m, H, W, &o, &plan, &err);
    CHECK(rc == 0 && plan.ensemble * m.latent_channels * plan.h * plan.w == lat.count,
          "%s: latent shape: plan (%d,%d,%d,%d) vs fixture %lld values", name, plan.ensemble, m.latent_channels,
          plan.h, plan.w, (long long)lat.count);
    rc = marigold_normals(&m, &ctx, img.data, H, W, &o, out, &err);
    CHECK(rc == 0, "%s: %s", name, err.msg);
    if (!rc) {
      int64_t at = 0;
      double d = max_abs(out, &ref, ref.count, &at);
      /* unit normals; the networks agree with diffusers to ~1e-6 relative */
      CHECK(d <= 1e-4, "%s: max |ours - diffusers| %.3g at pixel %lld channel %lld (ours %.6f, theirs %.6f)", name, d,
            (long long)(at / 3), (long long)(at % 3), (double)out[at], npy_get(&ref, at));
      printf("%s (E %lld, steps %d, processing %dx%d, latent %dx%d): max |diff| %.3g\n", name, (long long)E,
             plan.steps, plan.ph, plan.pw, plan.h, plan.w, d);
      double worst_len = 0;
      for (int64_t i = 0; i < (int64_t)H * W; i++) {
        double l = sqrt((double)out[3 * i] * out[3 * i] + (double)out[3 * i + 1] * out[3 * i + 1] +
                        (double)out[3 * i + 2] * out[3 * i + 2]);
        if (fabs(l - 1) > worst_len) worst_len = fabs(l - 1);
      }
      CHECK(worst_len < 1e-5, "%s: normals not unit length (%.3g off)", name, worst_len);
    }
    if (!rc && E > 2) { /* members through the UNet two at a time: the same result */
      o.batch = 2;
      rc = marigold_normals(&m, &ctx, img.data, H, W, &o, out, &err);
      CHECK(rc == 0, "%s batch 2: %s", name, err.msg);
      int64_t at = 0;
      double d = rc ? 1 : max_abs(out, &ref, ref.count, &at);
      CHECK(d <= 1e-4, "%s, 2 members per UNet batch: max |diff| %.3g", name, d);
    }
    npy_free(&lat);
    npy_free(&ref);
  }

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
