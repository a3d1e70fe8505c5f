/* test_nn_ops: every nn op on the CPU path against PyTorch / scipy fixtures
 * (tests/fixtures/gen_nn.py), plus the tensor layer: arena bounds, shape errors,
 * half-precision conversion. Tolerances (relative, see nnfix_compare): 1e-5 for
 * elementwise ops, norms, resize, blur, cosine; 1e-4 for linear, conv and attention,
 * whose long sums are ordered differently from PyTorch's.
 *   test_nn_ops <fixtures/nn> */
#include <stdlib.h>
#include <string.h>

#include "nn.h"
#include "nnfix.h"

static void test_linear(void) {
  cmds_error err = {0};
  const char *cases[] = {"linear_bias", "linear_nobias"};
  for (int i = 0; i < 2; i++) {
    nn_tensor x = nnfix_load(cases[i], "x"), w = nnfix_load(cases[i], "w"), want = nnfix_load(cases[i], "y");
    nn_tensor b = i == 0 ? nnfix_load(cases[i], "b") : (nn_tensor){0};
    nn_tensor y = nnfix_out_like(want.ndim, want.shape);
    nnfix_expect_ok(nn_linear_forward(&nnfix_ctx, &y, &x, &w, i == 0 ? &b : NULL, &err), &err, cases[i]);
    nnfix_compare(cases[i], y.data, want.data, nn_tensor_numel(&want), 1e-4);
    nnfix_done_case();
  }
}

static void test_conv(void) {
  cmds_error err = {0};
  const char *cases[] = {"conv_1x1", "conv_3x3", "conv_3x3_nobias_thin"};
  for (int i = 0; i < 3; i++) {
    nn_tensor x = nnfix_load(cases[i], "x"), w = nnfix_load(cases[i], "w"), want = nnfix_load(cases[i], "y");
    nn_tensor b = i < 2 ? nnfix_load(cases[i], "b") : (nn_tensor){0};
    nn_tensor y = nnfix_out_like(4, want.shape);
    size_t before = nnfix_ctx.scratch->used_bytes;
    nnfix_expect_ok(nn_conv2d_forward(&nnfix_ctx, &y, &x, &w, i < 2 ? &b : NULL, &err), &err, cases[i]);
    CHECK(nnfix_ctx.scratch->used_bytes == before, "%s: scratch not handed back", cases[i]);
    nnfix_compare(cases[i], y.data, want.data, nn_tensor_numel(&want), 1e-4);
    nnfix_done_case();
  }
}

static void test_norms(void) {
  cmds_error err = {0};
  const char *ln[] = {"layernorm_affine", "layernorm_plain"};
  for (int i = 0; i < 2; i++) {
    nn_tensor x = nnfix_load(ln[i], "x"), want = nnfix_load(ln[i], "y");
    nn_tensor g = i == 0 ? nnfix_load(ln[i], "gamma") : (nn_tensor){0};
    nn_tensor b = i == 0 ? nnfix_load(ln[i], "beta") : (nn_tensor){0};
    nn_tensor y = nnfix_out_like(want.ndim, want.shape);
    float eps = (float)nnfix_scalar(ln[i], "eps");
    nnfix_expect_ok(nn_layernorm_forward(&nnfix_ctx, &y, &x, i == 0 ? &g : NULL, i == 0 ? &b : NULL, eps, &err), &err,
                    ln[i]);
    nnfix_compare(ln[i], y.data, want.data, nn_tensor_numel(&want), 1e-5);
    nnfix_done_case();
  }
  const char *gn[] = {"groupnorm_affine", "groupnorm_plain"};
  for (int i = 0; i < 2; i++) {
    nn_tensor x = nnfix_load(gn[i], "x"), want = nnfix_load(gn[i], "y");
    nn_tensor g = i == 0 ? nnfix_load(gn[i], "gamma") : (nn_tensor){0};
    nn_tensor b = i == 0 ? nnfix_load(gn[i], "beta") : (nn_tensor){0};
    nn_tensor y = nnfix_out_like(4, want.shape);
    int64_t groups = (int64_t)nnfix_scalar(gn[i], "groups");
    float eps = (float)nnfix_scalar(gn[i], "eps");
    nnfix_expect_ok(nn_groupnorm_forward(&nnfix_ctx, &y, &x, groups, i == 0 ? &g : NULL, i == 0 ? &b : NULL, eps, &err),
                    &err, gn[i]);
    nnfix_compare(gn[i], y.data, want.data, nn_tensor_numel(&want), 1e-5);
    /* groups that do not divide the channels are refused */
    int rc = nn_groupnorm_forward(&nnfix_ctx, &y, &x, 5, NULL, NULL, eps, &err);
    CHECK(rc == CMDS_EINPUT && strstr(err.msg, "do not divide"), "groupnorm 5 groups: %d %s", rc, err.msg);
    nnfix_done_case();
  }
}

static void test_activations(void) {
  cmds_error err = {0};
  nn_tensor x = nnfix_load("gelu", "x"), want = nnfix_load("gelu", "y");
  nn_tensor y = nnfix_out_like(x.ndim, x.shape);
  nnfix_expect_ok(nn_gelu_forward(&nnfix_ctx, &y, &x, &err), &err, "gelu");
  nnfix_compare("gelu", y.data, want.data, nn_tensor_numel(&want), 1e-5);
  nnfix_expect_ok(nn_gelu_forward(&nnfix_ctx, &x, &x, &err), &err, "gelu in place");
  nnfix_compare("gelu in place", x.data, want.data, nn_tensor_numel(&want), 1e-5);
  nnfix_release();

  x = nnfix_load("softmax", "x");
  want = nnfix_load("softmax", "y");
  y = nnfix_out_like(x.ndim, x.shape);
  nnfix_expect_ok(nn_softmax_forward(&nnfix_ctx, &y, &x, &err), &err, "softmax");
  nnfix_compare("softmax", y.data, want.data, nn_tensor_numel(&want), 1e-5);
  nnfix_expect_ok(nn_softmax_forward(&nnfix_ctx, &x, &x, &err), &err, "softmax in place");
  nnfix_compare("softmax in place", x.data, want.data, nn_tensor_numel(&want), 1e-5);
  nnfix_release();
  nn_arena_reset(&nnfix_out);
}

static void test_attention(void) {
  cmds_error err = {0};
  const char *cases[] = {"attention_small", "attention_vitlike"};
  /* the default query blocks (one per head at these sizes), then blocks forced to 16 and 20 rows
   * (CMDS_NN_ATTN_QB): several per head, the last one short (97 rows: 6 x 16 + 1, 4 x 20 + 17) */
  const char *qb[] = {NULL, "16", "20"};
  for (int b = 0; b < 3; b++) {
    if (qb[b]) setenv("CMDS_NN_ATTN_QB", qb[b], 1);
    for (int i = 0; i < 2; i++) {
      nn_tensor q = nnfix_load(cases[i], "q"), k = nnfix_load(cases[i], "k"), v = nnfix_load(cases[i], "v");
      nn_tensor want = nnfix_load(cases[i], "o"), o = nnfix_out_like(3, want.shape);
      int64_t heads = (int64_t)nnfix_scalar(cases[i], "heads");
      char what[80];
      snprintf(what, sizeof what, "%s (query blocks %s)", cases[i], qb[b] ? qb[b] : "default");
      nnfix_expect_ok(nn_attention_forward(&nnfix_ctx, &o, &q, &k, &v, heads, &err), &err, what);
      nnfix_compare(what, o.data, want.data, nn_tensor_numel(&want), 1e-4);
      nnfix_done_case();
    }
  }
  unsetenv("CMDS_NN_ATTN_QB");
}

static void test_resize(void) {
  cmds_error err = {0};
  const char *modes[] = {"bilinear", "bicubic"}, *names[] = {"up", "down", "mixed", "feat28"};
  for (int m = 0; m < 2; m++)
    for (int i = 0; i < 4; i++) {
      char c[64];
      snprintf(c, sizeof c, "resize_%s_%s", modes[m], names[i]);
      nn_tensor x = nnfix_load(c, "x"), want = nnfix_load(c, "y"), y = nnfix_out_like(4, want.shape);
      nnfix_expect_ok(nn_resize_forward(&nnfix_ctx, &y, &x, m ? NN_RESIZE_BICUBIC : NN_RESIZE_BILINEAR, &err), &err, c);
      nnfix_compare(c, y.data, want.data, nn_tensor_numel(&want), 1e-5);
      nnfix_release();
      nn_arena_reset(&nnfix_out);
    }
}

static void test_blur(void) {
  cmds_error err = {0};
  const char *cases[] = {"blur_s1_5", "blur_s4", "blur_s0_3", "blur_s6_multi_reflect"};
  for (int i = 0; i < 4; i++) {
    nn_tensor x = nnfix_load(cases[i], "x"), want = nnfix_load(cases[i], "y"), y = nnfix_out_like(4, want.shape);
    float sigma = (float)nnfix_scalar(cases[i], "sigma");
    nnfix_expect_ok(nn_blur_forward(&nnfix_ctx, &y, &x, sigma, &err), &err, cases[i]);
    nnfix_compare(cases[i], y.data, want.data, nn_tensor_numel(&want), 1e-5);
    nnfix_done_case();
  }
  double taps[2 * NN_BLUR_MAX_RADIUS + 1];
  int r;
  CHECK(nn_blur_taps(-1.0f, taps, &r, &err) == CMDS_EINPUT, "negative sigma accepted");
  CHECK(nn_blur_taps(4.0f, taps, &r, &err) == 0 && r == 16, "sigma 4: radius %d, 16 expected", r);
}

static void test_cosine(void) {
  cmds_error err = {0};
  nn_tensor a = nnfix_load("cosine", "a"), b = nnfix_load("cosine", "b"), want = nnfix_load("cosine", "d");
  nn_tensor d = nnfix_out_like(3, want.shape);
  nnfix_expect_ok(nn_cosine_distance_forward(&nnfix_ctx, &d, &a, &b, &err), &err, "cosine");
  /* distances are in [0, 2]: compare absolutely at 1e-6 (near-parallel pairs cancel) */
  float *g = d.data, *w = want.data;
  int bad = 0;
  for (int64_t i = 0; i < nn_tensor_numel(&want); i++) bad += !(fabsf(g[i] - w[i]) <= 1e-6f);
  CHECK(bad == 0, "cosine: %d values off by more than 1e-6", bad);
  CHECK_CLOSE(g[1 * 6 + 2], 1.0, 1e-7, 0, "zero vector gives distance 1");
  nnfix_release();
  nn_arena_reset(&nnfix_out);
}

static void test_tensor_layer(void) {
  cmds_error err = {0};
  nn_arena a;
  CHECK(nn_arena_init(&a, NN_CPU, 1200, &err) == 0, "arena: %s", err.msg);
  void *p = nn_arena_alloc(&a, 300, &err), *q = nn_arena_alloc(&a, 300, &err);
  CHECK(p && q && (char *)q - (char *)p == 512, "arena: 256-byte aligned bump expected");
  CHECK(nn_arena_alloc(&a, 600, &err) == NULL && err.code == CMDS_ENOMEM && strstr(err.msg, "600 bytes asked"),
        "arena overflow: %s", err.msg);
  size_t m = nn_arena_mark(&a);
  CHECK(nn_arena_alloc(&a, 100, &err) != NULL, "arena: room for 100 bytes");
  nn_arena_rewind(&a, m);
  CHECK(a.used_bytes == m && a.peak_bytes >= m + 100, "arena mark/rewind/peak");
  nn_arena_free(&a);

  /* wrong shapes are named in the error */
  float buf[64] = {0};
  nn_tensor x = nn_tensor_view(buf, NN_F32, NN_CPU, 2, 8, -1, -1);
  nn_tensor w = nn_tensor_view(buf, NN_F32, NN_CPU, 3, 7, -1, -1);
  nn_tensor y = nn_tensor_view(buf, NN_F32, NN_CPU, 2, 3, -1, -1);
  int rc = nn_linear_forward(&nnfix_ctx, &y, &x, &w, NULL, &err);
  CHECK(rc == CMDS_EINPUT && strstr(err.msg, "W has shape (3, 7), (3, 8) expected"), "linear shape: %s", err.msg);
  nn_tensor h = nn_tensor_view(buf, NN_F16, NN_CPU, 2, 8, -1, -1);
  rc = nn_gelu_forward(&nnfix_ctx, &h, &h, &err);
  CHECK(rc == CMDS_EINPUT && strstr(err.msg, "f16, f32 expected"), "dtype check: %s", err.msg);
  nn_tensor gpu = nn_tensor_view(buf, NN_F32, NN_CUDA, 16, -1, -1, -1);
  rc = nn_gelu_forward(&nnfix_ctx, &gpu, &gpu, &err);
  CHECK(rc == CMDS_EINPUT && strstr(err.msg, "is on cuda, the context runs on cpu"), "device check: %s", err.msg);

  /* half-precision storage against PyTorch's conversions */
  nn_tensor xs = nnfix_load("halfconv", "x"), f16 = nnfix_load("halfconv", "f16"), bf = nnfix_load("halfconv", "bf16");
  const float *xv = xs.data, *hv = f16.data, *bv = bf.data;
  int bad16 = 0, badbf = 0;
  for (int64_t i = 0; i < nn_tensor_numel(&xs); i++) {
    float h16 = nn_f16_to_f32(nn_f32_to_f16(xv[i])), hb = nn_bf16_to_f32(nn_f32_to_bf16(xv[i]));
    bad16 += memcmp(&h16, &hv[i], 4) != 0;
    badbf += memcmp(&hb, &bv[i], 4) != 0;
    if (memcmp(&h16, &hv[i], 4) != 0 && bad16 < 4) fprintf(stderr, "f16 of %.9g: %.9g, torch %.9g\n", xv[i], h16, hv[i]);
    if (memcmp(&hb, &bv[i], 4) != 0 && badbf < 4) fprintf(stderr, "bf16 of %.9g: %.9g, torch %.9g\n", xv[i], hb, bv[i]);
  }
  CHECK(bad16 == 0, "f16 round trip differs from torch for %d values", bad16);
  CHECK(badbf == 0, "bf16 round trip differs from torch for %d values", badbf);
  nnfix_release();
}

int main(int argc, char **argv) {
  int rc = nnfix_setup(argc, argv, 16 << 20);
  if (rc >= 0) return rc;
  test_linear();
  test_conv();
  test_norms();
  test_activations();
  test_attention();
  test_resize();
  test_blur();
  test_cosine();
  test_tensor_layer();
  nnfix_teardown();
  return CHECK_DONE();
}
