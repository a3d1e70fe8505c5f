/* test_nn_diffusion_ops: the ops the diffusion networks add (general conv, SiLU, quick
 * GELU, GEGLU, nearest 2x, general attention, axpby / scale / add_channel / concat /
 * transpose) on the CPU path against PyTorch fixtures (tests/fixtures/gen_nn_diffusion_ops.py),
 * plus aliasing, the conv's row bands (forced small through CMDS_NN_CONV_BAND_FLOATS),
 * scratch hand-back and the errors for bad arguments. Tolerances (relative, see
 * nnfix_compare): 1e-5 for elementwise ops, 1e-4 for conv and attention (long sums
 * ordered differently from PyTorch's), as test_nn_ops.
 *   test_nn_diffusion_ops <fixtures/nn_diffusion_ops> */
#include <stdlib.h>
#include <string.h>

#include "nn.h"
#include "nnfix.h"

static void test_conv_ex(void) {
  const char *cases[] = {"conv_vae_down", "conv_vae_down_even", "conv_k3_same_odd", "conv_k1_direct",
                         "conv_k1_stride2", "conv_k5_asym_s3", "conv_k3_valid"};
  const int has_bias[] = {1, 0, 0, 1, 1, 1, 1};
  /* pass 0: default bands (one per image); pass 1: the cap forces one output row per band */
  for (int pass = 0; pass < 2; pass++) {
    if (pass) setenv("CMDS_NN_CONV_BAND_FLOATS", "1", 1);
    for (int i = 0; i < 7; i++) {
      cmds_error err = {0};
      char what[96];
      snprintf(what, sizeof what, "%s%s", cases[i], pass ? " (1-row bands)" : "");
      nn_tensor x = nnfix_load(cases[i], "x"), w = nnfix_load(cases[i], "w"), want = nnfix_load(cases[i], "y");
      nn_tensor b = has_bias[i] ? nnfix_load(cases[i], "b") : (nn_tensor){0};
      int s = (int)nnfix_scalar(cases[i], "stride"), pt = (int)nnfix_scalar(cases[i], "pt");
      int pb = (int)nnfix_scalar(cases[i], "pb"), pl = (int)nnfix_scalar(cases[i], "pl");
      int pr = (int)nnfix_scalar(cases[i], "pr");
      nn_tensor y = nnfix_out_like(4, want.shape);
      size_t before = nnfix_ctx.scratch->used_bytes, peak0 = nnfix_ctx.scratch->peak_bytes;
      nnfix_ctx.scratch->peak_bytes = before;
      nnfix_expect_ok(nn_conv2d_ex_forward(&nnfix_ctx, &y, &x, &w, has_bias[i] ? &b : NULL, s, pt, pb, pl, pr, &err),
                      &err, what);
      CHECK(nnfix_ctx.scratch->used_bytes == before, "%s: scratch not handed back", what);
      size_t need = nn_conv2d_ex_scratch_bytes(NN_CPU, x.shape[1], w.shape[2], want.shape[2], want.shape[3]);
      CHECK(nnfix_ctx.scratch->peak_bytes - before <= need + 256, "%s: used %zu bytes of scratch, %zu announced", what,
            nnfix_ctx.scratch->peak_bytes - before, need);
      if (nnfix_ctx.scratch->peak_bytes < peak0) nnfix_ctx.scratch->peak_bytes = peak0;
      nnfix_compare(what, y.data, want.data, nn_tensor_numel(&want), 1e-4);
      nnfix_done_case();
    }
  }
  unsetenv("CMDS_NN_CONV_BAND_FLOATS");

  /* the existing 3x3 "same" conv and the general one agree on the same input */
  cmds_error err = {0};
  nn_tensor x = nnfix_load("conv_k3_same_odd", "x"), w = nnfix_load("conv_k3_same_odd", "w");
  nn_tensor want = nnfix_load("conv_k3_same_odd", "y"), y = nnfix_out_like(4, want.shape);
  nnfix_expect_ok(nn_conv2d_forward(&nnfix_ctx, &y, &x, &w, NULL, &err), &err, "nn_conv2d_forward on k3_same_odd");
  nnfix_compare("nn_conv2d_forward on k3_same_odd", y.data, want.data, nn_tensor_numel(&want), 1e-4);

  /* errors: a wrong output size names the expected shape; bad stride / padding; a kernel
   * larger than the padded input; a non-square kernel */
  int64_t bad[4] = {want.shape[0], want.shape[1], want.shape[2] + 1, want.shape[3]};
  nn_tensor yb = nnfix_out_like(4, bad);
  int rc = nn_conv2d_ex_forward(&nnfix_ctx, &yb, &x, &w, NULL, 1, 1, 1, 1, 1, &err);
  nnfix_expect_fail(rc, &err, "y has shape (1, 6, 8, 5), (1, 6, 7, 5) expected", "conv_ex wrong y");
  rc = nn_conv2d_ex_forward(&nnfix_ctx, &y, &x, &w, NULL, 0, 1, 1, 1, 1, &err);
  nnfix_expect_fail(rc, &err, "stride 0", "conv_ex stride 0");
  rc = nn_conv2d_ex_forward(&nnfix_ctx, &y, &x, &w, NULL, 1, -1, 1, 1, 1, &err);
  nnfix_expect_fail(rc, &err, "paddings", "conv_ex negative padding");
  nn_tensor thin = x;
  thin.shape[3] = 2;  /* (1, 3, 7, 2) unpadded: narrower than 3 */
  rc = nn_conv2d_ex_forward(&nnfix_ctx, &y, &thin, &w, NULL, 1, 0, 0, 0, 0, &err);
  nnfix_expect_fail(rc, &err, "smaller than the 3 x 3 kernel", "conv_ex kernel too large");
  nn_tensor rect = w;
  rect.shape[3] = 1;
  rc = nn_conv2d_ex_forward(&nnfix_ctx, &y, &x, &rect, NULL, 1, 1, 1, 1, 1, &err);
  nnfix_expect_fail(rc, &err, "square kernel", "conv_ex non-square kernel");
  nn_tensor xin = x;
  xin.shape[1] = 4;  /* Cin disagrees with W */
  rc = nn_conv2d_ex_forward(&nnfix_ctx, &y, &xin, &w, NULL, 1, 1, 1, 1, 1, &err);
  nnfix_expect_fail(rc, &err, "W has shape (6, 3, 3, 3), (6, 4, 3, 3) expected", "conv_ex Cin mismatch");
  nnfix_done_case();
}

static void test_activations(void) {
  const char *names[] = {"silu", "quick_gelu"};
  for (int i = 0; i < 2; i++) {
    cmds_error err = {0};
    nn_tensor x = nnfix_load(names[i], "x"), want = nnfix_load(names[i], "y"), y = nnfix_out_like(x.ndim, x.shape);
    int (*fn)(nn_ctx *, nn_tensor *, const nn_tensor *, cmds_error *) = i ? nn_quick_gelu_forward : nn_silu_forward;
    nnfix_expect_ok(fn(&nnfix_ctx, &y, &x, &err), &err, names[i]);
    nnfix_compare(names[i], y.data, want.data, nn_tensor_numel(&want), 1e-5);
    nnfix_expect_ok(fn(&nnfix_ctx, &x, &x, &err), &err, names[i]);
    nnfix_compare(i ? "quick_gelu in place" : "silu in place", x.data, want.data, nn_tensor_numel(&want), 1e-5);
    nnfix_done_case();
  }
  cmds_error err = {0};
  nn_tensor x = nnfix_load("geglu", "x"), want = nnfix_load("geglu", "y"), y = nnfix_out_like(3, want.shape);
  nnfix_expect_ok(nn_geglu_forward(&nnfix_ctx, &y, &x, &err), &err, "geglu");
  nnfix_compare("geglu", y.data, want.data, nn_tensor_numel(&want), 1e-5);
  int rc = nn_geglu_forward(&nnfix_ctx, &x, &x, &err);
  nnfix_expect_fail(rc, &err, "y has shape (2, 5, 48), (2, 5, 24) expected", "geglu y shape");
  nn_tensor odd = x;
  odd.shape[2] = 47;
  rc = nn_geglu_forward(&nnfix_ctx, &y, &odd, &err);
  nnfix_expect_fail(rc, &err, "an even 2F expected", "geglu odd width");
  nnfix_done_case();
}

static void test_nearest2x(void) {
  cmds_error err = {0};
  nn_tensor x = nnfix_load("nearest2x", "x"), want = nnfix_load("nearest2x", "y"), y = nnfix_out_like(4, want.shape);
  nnfix_expect_ok(nn_upsample_nearest2x_forward(&nnfix_ctx, &y, &x, &err), &err, "nearest2x");
  nnfix_compare("nearest2x", y.data, want.data, nn_tensor_numel(&want), 0.0);
  int rc = nn_upsample_nearest2x_forward(&nnfix_ctx, &x, &x, &err);
  nnfix_expect_fail(rc, &err, "y has shape (2, 3, 5, 7), (2, 3, 10, 14) expected", "nearest2x y shape");
  nnfix_done_case();
}

static void test_attention_ex(void) {
  const char *cases[] = {"attention_cross", "attention_d96", "attention_causal", "attention_wide"};
  for (int i = 0; i < 4; i++) {
    cmds_error err = {0};
    nn_tensor q = nnfix_load(cases[i], "q"), k = nnfix_load(cases[i], "k"), v = nnfix_load(cases[i], "v");
    nn_tensor want = nnfix_load(cases[i], "o"), o = nnfix_out_like(3, want.shape);
    int64_t heads = (int64_t)nnfix_scalar(cases[i], "heads");
    int causal = (int)nnfix_scalar(cases[i], "causal");
    size_t before = nnfix_ctx.scratch->used_bytes;
    nnfix_expect_ok(nn_attention_ex_forward(&nnfix_ctx, &o, &q, &k, &v, heads, causal, &err), &err, cases[i]);
    CHECK(nnfix_ctx.scratch->used_bytes == before, "%s: scratch not handed back", cases[i]);
    nnfix_compare(cases[i], o.data, want.data, nn_tensor_numel(&want), 1e-4);
    if (causal) { /* the mask matters: without it the result differs */
      nn_tensor o2 = nnfix_out_like(3, want.shape);
      nnfix_expect_ok(nn_attention_ex_forward(&nnfix_ctx, &o2, &q, &k, &v, heads, 0, &err), &err,
                      "causal case unmasked");
      const float *a = o2.data, *b = want.data;
      double diff = 0;
      for (int64_t j = 0; j < nn_tensor_numel(&want); j++) diff += fabs((double)a[j] - b[j]);
      CHECK(diff > 1.0, "causal case: the unmasked result equals the masked one (diff %g)", diff);
    }
    if (i == 0) {
      int rc = nn_attention_ex_forward(&nnfix_ctx, &o, &q, &k, &v, heads, 1, &err);
      nnfix_expect_fail(rc, &err, "causal attention needs as many keys as queries", "causal with N != M");
      rc = nn_attention_ex_forward(&nnfix_ctx, &o, &q, &k, &v, 3, 0, &err);
      nnfix_expect_fail(rc, &err, "3 heads do not divide width 128", "heads not dividing C");
      rc = nn_attention_ex_forward(&nnfix_ctx, &o, &q, &k, &q, heads, 0, &err); /* v with N rows, not M */
      nnfix_expect_fail(rc, &err, "v has shape (2, 13, 128), (2, 7, 128) expected", "v rows");
      rc = nn_attention_ex_forward(&nnfix_ctx, &q, &q, &k, &v, heads, 0, &err);
      nnfix_expect_fail(rc, &err, "o must not alias", "o aliasing q");
    }
    nnfix_done_case();
  }
  /* the old entry point is the special case N == M, no mask */
  cmds_error err = {0};
  nn_tensor q = nnfix_load("attention_d96", "q"), k = nnfix_load("attention_d96", "k"), v = nnfix_load("attention_d96", "v");
  nn_tensor want = nnfix_load("attention_d96", "o"), o = nnfix_out_like(3, want.shape);
  nnfix_expect_ok(nn_attention_forward(&nnfix_ctx, &o, &q, &k, &v, 2, &err), &err, "nn_attention_forward d96");
  nnfix_compare("nn_attention_forward d96", o.data, want.data, nn_tensor_numel(&want), 1e-4);
  nnfix_done_case();
}

static void test_elementwise(void) {
  cmds_error err = {0};
  /* axpby, into a fresh y, then in place into a, then into b */
  nn_tensor a = nnfix_load("axpby", "a"), b = nnfix_load("axpby", "b"), want = nnfix_load("axpby", "y");
  float alpha = (float)nnfix_scalar("axpby", "alpha"), beta = (float)nnfix_scalar("axpby", "beta");
  int64_t n = nn_tensor_numel(&want);
  nn_tensor y = nnfix_out_like(3, want.shape), a0 = nnfix_out_like(3, want.shape), b0 = nnfix_out_like(3, want.shape);
  memcpy(a0.data, a.data, (size_t)n * 4);
  memcpy(b0.data, b.data, (size_t)n * 4);
  nnfix_expect_ok(nn_axpby_forward(&nnfix_ctx, &y, alpha, &a, beta, &b, &err), &err, "axpby");
  nnfix_compare("axpby", y.data, want.data, n, 1e-5);
  nnfix_expect_ok(nn_axpby_forward(&nnfix_ctx, &a, alpha, &a, beta, &b, &err), &err, "axpby y = a");
  nnfix_compare("axpby y = a", a.data, want.data, n, 1e-5);
  memcpy(a.data, a0.data, (size_t)n * 4);
  nnfix_expect_ok(nn_axpby_forward(&nnfix_ctx, &b, alpha, &a, beta, &b, &err), &err, "axpby y = b");
  nnfix_compare("axpby y = b", b.data, want.data, n, 1e-5);
  /* shapes may differ when the element counts agree: a (3, 4, 5) and b viewed as (60) */
  nn_tensor flat = nn_tensor_view(b0.data, NN_F32, NN_CPU, n, -1, -1, -1);
  nnfix_expect_ok(nn_axpby_forward(&nnfix_ctx, &y, alpha, &a, beta, &flat, &err), &err, "axpby flat b");
  nnfix_compare("axpby flat b", y.data, want.data, n, 1e-5);
  nn_tensor shortb = nn_tensor_view(b0.data, NN_F32, NN_CPU, n - 1, -1, -1, -1);
  nnfix_expect_fail(nn_axpby_forward(&nnfix_ctx, &y, alpha, &a, beta, &shortb, &err), &err, "same number of elements",
                    "axpby count mismatch");
  nnfix_done_case();

  /* scale, fresh and in place */
  nn_tensor x = nnfix_load("scale", "x");
  want = nnfix_load("scale", "y");
  float s = (float)nnfix_scalar("scale", "s");
  y = nnfix_out_like(2, want.shape);
  nnfix_expect_ok(nn_scale_forward(&nnfix_ctx, &y, &x, s, &err), &err, "scale");
  nnfix_compare("scale", y.data, want.data, nn_tensor_numel(&want), 1e-6);
  nnfix_expect_ok(nn_scale_forward(&nnfix_ctx, &x, &x, s, &err), &err, "scale in place");
  nnfix_compare("scale in place", x.data, want.data, nn_tensor_numel(&want), 1e-6);
  nnfix_done_case();

  /* add_channel, fresh and in place; b of the wrong shape is named */
  a = nnfix_load("add_channel", "a");
  b = nnfix_load("add_channel", "b");
  want = nnfix_load("add_channel", "y");
  y = nnfix_out_like(4, want.shape);
  nnfix_expect_ok(nn_add_channel_forward(&nnfix_ctx, &y, &a, &b, &err), &err, "add_channel");
  nnfix_compare("add_channel", y.data, want.data, nn_tensor_numel(&want), 1e-6);
  nn_tensor bt = b;
  bt.shape[0] = 3;
  bt.shape[1] = 2;
  nnfix_expect_fail(nn_add_channel_forward(&nnfix_ctx, &y, &a, &bt, &err), &err, "b has shape (3, 2), (2, 3) expected",
                    "add_channel b shape");
  nnfix_expect_ok(nn_add_channel_forward(&nnfix_ctx, &a, &a, &b, &err), &err, "add_channel in place");
  nnfix_compare("add_channel in place", a.data, want.data, nn_tensor_numel(&want), 1e-6);
  nnfix_done_case();

  /* concat along channels; mismatched spatial sizes are named; aliasing refused */
  a = nnfix_load("concat", "a");
  b = nnfix_load("concat", "b");
  want = nnfix_load("concat", "y");
  y = nnfix_out_like(4, want.shape);
  nnfix_expect_ok(nn_concat_channels_forward(&nnfix_ctx, &y, &a, &b, &err), &err, "concat");
  nnfix_compare("concat", y.data, want.data, nn_tensor_numel(&want), 0.0);
  nn_tensor bw = b;
  bw.shape[3] = 4;
  bw.shape[2] = 5;
  nnfix_expect_fail(nn_concat_channels_forward(&nnfix_ctx, &y, &a, &bw, &err), &err,
                    "b has shape (2, 2, 5, 4), (2, 2, 4, 5) expected", "concat spatial mismatch");
  nn_tensor ya = y;
  ya.data = a.data;
  nnfix_expect_fail(nn_concat_channels_forward(&nnfix_ctx, &ya, &a, &b, &err), &err, "must not alias",
                    "concat aliasing");
  nnfix_done_case();

  /* transpose (B, R, S) -> (B, S, R), sizes not multiples of the 32-tile */
  x = nnfix_load("transpose12", "x");
  want = nnfix_load("transpose12", "y");
  y = nnfix_out_like(3, want.shape);
  nnfix_expect_ok(nn_transpose12_forward(&nnfix_ctx, &y, &x, &err), &err, "transpose12");
  nnfix_compare("transpose12", y.data, want.data, nn_tensor_numel(&want), 0.0);
  nn_tensor yx = y;
  yx.data = x.data;
  nnfix_expect_fail(nn_transpose12_forward(&nnfix_ctx, &yx, &x, &err), &err, "must not alias", "transpose12 aliasing");
  nnfix_expect_fail(nn_transpose12_forward(&nnfix_ctx, &x, &x, &err), &err,
                    "y has shape (2, 37, 45), (2, 45, 37) expected", "transpose12 y shape");
  nnfix_done_case();
}

int main(int argc, char **argv) {
  int rc = nnfix_setup(argc, argv, 16 << 20);
  if (rc >= 0) return rc;
  test_conv_ex();
  test_activations();
  test_nearest2x();
  test_attention_ex();
  test_elementwise();
  nnfix_teardown();
  return CHECK_DONE();
}
