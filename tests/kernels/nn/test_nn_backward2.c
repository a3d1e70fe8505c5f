/* test_nn_backward2: the training ops of the LoRA fine-tune on the CPU path against PyTorch
 * autograd fixtures (tests/fixtures/gen_nn_backward2.py): linear, layer norm, SiLU, GEGLU,
 * general attention and general conv2d backward, sum over H, W, channel split, MSE, sum of
 * squares and three AdamW steps against torch.optim.AdamW. Also: parameter gradients ADD to
 * what is there (they start at 0.5 here), input gradients are SET (they start as NaN), NULL
 * outputs are skipped, the allowed aliasing, the conv's row bands (forced small through
 * CMDS_NN_CONV_BAND_FLOATS), the attention with 1, 4 and the default threads (the CPU splits
 * its work across heads or within one head by the thread count), scratch handed back and within the announced *_scratch_bytes,
 * and the errors for bad arguments. Tolerances (relative, see nnfix_compare): 1e-5 for
 * elementwise ops, 1e-4 where long sums are ordered differently from PyTorch's.
 *   test_nn_backward2 <fixtures/nn_backward2> */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nn.h"
#include "nnfix.h"

#define PRIOR 0.5f /* what parameter gradients hold before the call */

static nn_tensor copy_of(const nn_tensor *src) {
  nn_tensor t = nnfix_out_like(src->ndim, src->shape);
  memcpy(t.data, src->data, nn_tensor_bytes(src));
  return t;
}

/* A parameter gradient that started at PRIOR must equal PRIOR + want. */
static void compare_accum(const char *what, const nn_tensor *got, const nn_tensor *want, double rtol) {
  int64_t n = nn_tensor_numel(want);
  nn_tensor w2 = nnfix_out_like(want->ndim, want->shape);
  float *d = w2.data;
  const float *s = want->data;
  for (int64_t i = 0; i < n; i++) d[i] = s[i] + PRIOR;
  nnfix_compare(what, got->data, w2.data, n, rtol);
}

/* Runs before a call: notes the scratch level and resets the high-water mark. */
static size_t scratch_before(void) {
  nnfix_ctx.scratch->peak_bytes = nnfix_ctx.scratch->used_bytes;
  return nnfix_ctx.scratch->used_bytes;
}

static void scratch_after(const char *what, size_t before, size_t announced) {
  CHECK(nnfix_ctx.scratch->used_bytes == before, "%s: scratch not handed back", what);
  CHECK(nnfix_ctx.scratch->peak_bytes - before <= announced + 256, "%s: used %zu bytes of scratch, %zu announced", what,
        nnfix_ctx.scratch->peak_bytes - before, announced);
}

static void test_linear(void) {
  const char *cases[] = {"linear3d", "linear2d"};
  for (int i = 0; i < 2; i++) {
    cmds_error err = {0};
    nn_tensor x = nnfix_load(cases[i], "x"), w = nnfix_load(cases[i], "w"), dy = nnfix_load(cases[i], "dy");
    nn_tensor wdx = nnfix_load(cases[i], "dx"), wdw = nnfix_load(cases[i], "dw");
    nn_tensor wdb = i == 0 ? nnfix_load(cases[i], "db") : (nn_tensor){0};
    nn_tensor dx = nnfix_out_like(x.ndim, x.shape), dw = nnfix_out_fill(2, w.shape, PRIOR);
    nn_tensor db = nnfix_out_fill(1, &w.shape[0], PRIOR);
    nnfix_expect_ok(nn_linear_backward(&nnfix_ctx, &dx, &dw, i == 0 ? &db : NULL, &dy, &x, &w, &err), &err, cases[i]);
    nnfix_compare(cases[i], dx.data, wdx.data, nn_tensor_numel(&wdx), 1e-4);
    compare_accum(cases[i], &dw, &wdw, 1e-4);
    if (i == 0) compare_accum(cases[i], &db, &wdb, 1e-5);
    /* only dx wanted (a frozen layer), then only dW */
    nn_tensor dx2 = nnfix_out_like(x.ndim, x.shape), dw2 = nnfix_out_fill(2, w.shape, PRIOR);
    nnfix_expect_ok(nn_linear_backward(&nnfix_ctx, &dx2, NULL, NULL, &dy, &x, &w, &err), &err, "linear dx only");
    nnfix_compare("linear dx only", dx2.data, wdx.data, nn_tensor_numel(&wdx), 1e-4);
    nnfix_expect_ok(nn_linear_backward(&nnfix_ctx, NULL, &dw2, NULL, &dy, &x, &w, &err), &err, "linear dW only");
    compare_accum("linear dW only", &dw2, &wdw, 1e-4);
    if (i == 0) {
      nnfix_expect_fail(nn_linear_backward(&nnfix_ctx, &dx, &dw, NULL, &x, &x, &w, &err), &err,
                        "dy has shape (2, 5, 12), (2, 5, 7) expected", "linear dy shape");
      nnfix_expect_fail(nn_linear_backward(&nnfix_ctx, &dx, &db, NULL, &dy, &x, &w, &err), &err,
                        "dW has shape (7), (7, 12) expected", "linear dW shape");
      nn_tensor dxa = dy;
      dxa.shape[2] = 12;
      nnfix_expect_fail(nn_linear_backward(&nnfix_ctx, &dxa, NULL, NULL, &dy, &x, &w, &err), &err, "must not alias",
                        "linear dx aliasing dy");
    }
    nnfix_done_case();
  }
}

static void test_layernorm(void) {
  const char *cases[] = {"layernorm_affine", "layernorm_plain"};
  for (int i = 0; i < 2; i++) {
    cmds_error err = {0};
    int affine = i == 0;
    nn_tensor x = nnfix_load(cases[i], "x"), dy = nnfix_load(cases[i], "dy"), wdx = nnfix_load(cases[i], "dx");
    nn_tensor gamma = affine ? nnfix_load(cases[i], "gamma") : (nn_tensor){0};
    nn_tensor wdg = affine ? nnfix_load(cases[i], "dgamma") : (nn_tensor){0};
    nn_tensor wdb = affine ? nnfix_load(cases[i], "dbeta") : (nn_tensor){0};
    float eps = (float)nnfix_scalar(cases[i], "eps");
    int64_t C = x.shape[x.ndim - 1], rows = nn_tensor_numel(&x) / C;
    nn_tensor dx = nnfix_out_like(x.ndim, x.shape), dg = nnfix_out_fill(1, &C, PRIOR),
              dbt = nnfix_out_fill(1, &C, PRIOR);
    size_t before = scratch_before();
    nnfix_expect_ok(nn_layernorm_backward(&nnfix_ctx, &dx, affine ? &dg : NULL, affine ? &dbt : NULL, &dy, &x,
                                          affine ? &gamma : NULL, eps, &err),
                    &err, cases[i]);
    scratch_after(cases[i], before, nn_layernorm_backward_scratch_bytes(rows, C));
    nnfix_compare(cases[i], dx.data, wdx.data, nn_tensor_numel(&wdx), 1e-4);
    if (affine) {
      compare_accum("layernorm dgamma", &dg, &wdg, 1e-4);
      compare_accum("layernorm dbeta", &dbt, &wdb, 1e-5);
      /* dx may alias dy */
      nn_tensor dy2 = copy_of(&dy), dg2 = nnfix_out_fill(1, &C, PRIOR), db2 = nnfix_out_fill(1, &C, PRIOR);
      nnfix_expect_ok(nn_layernorm_backward(&nnfix_ctx, &dy2, &dg2, &db2, &dy2, &x, &gamma, eps, &err), &err,
                      "layernorm dx = dy");
      nnfix_compare("layernorm dx = dy", dy2.data, wdx.data, nn_tensor_numel(&wdx), 1e-4);
      compare_accum("layernorm dgamma (dx = dy)", &dg2, &wdg, 1e-4);
      nnfix_expect_fail(nn_layernorm_backward(&nnfix_ctx, &dx, &dg, NULL, &dy, &x, &gamma, eps, &err), &err,
                        "all given or all NULL", "layernorm dbeta missing");
      nn_tensor g3 = gamma;
      g3.shape[0] = C - 1;
      nnfix_expect_fail(nn_layernorm_backward(&nnfix_ctx, &dx, &dg, &dbt, &dy, &x, &g3, eps, &err), &err,
                        "gamma has shape (39), (40) expected", "layernorm gamma shape");
    }
    nnfix_done_case();
  }
}

static void test_gates(void) {
  cmds_error err = {0};
  nn_tensor x = nnfix_load("silu", "x"), dy = nnfix_load("silu", "dy"), want = nnfix_load("silu", "dx");
  nn_tensor dx = nnfix_out_like(1, x.shape);
  nnfix_expect_ok(nn_silu_backward(&nnfix_ctx, &dx, &dy, &x, &err), &err, "silu");
  nnfix_compare("silu", dx.data, want.data, nn_tensor_numel(&want), 1e-5);
  nn_tensor dy2 = copy_of(&dy);
  nnfix_expect_ok(nn_silu_backward(&nnfix_ctx, &dy2, &dy2, &x, &err), &err, "silu dx = dy");
  nnfix_compare("silu dx = dy", dy2.data, want.data, nn_tensor_numel(&want), 1e-5);
  nnfix_done_case();

  x = nnfix_load("geglu", "x");
  dy = nnfix_load("geglu", "dy");
  want = nnfix_load("geglu", "dx");
  dx = nnfix_out_like(3, x.shape);
  nnfix_expect_ok(nn_geglu_backward(&nnfix_ctx, &dx, &dy, &x, &err), &err, "geglu");
  nnfix_compare("geglu", dx.data, want.data, nn_tensor_numel(&want), 1e-5);
  nnfix_expect_fail(nn_geglu_backward(&nnfix_ctx, &dx, &x, &x, &err), &err,
                    "dy has shape (2, 5, 48), (2, 5, 24) expected", "geglu dy shape");
  nnfix_expect_fail(nn_geglu_backward(&nnfix_ctx, &x, &dy, &x, &err), &err, "must not alias", "geglu dx aliasing x");
  nnfix_done_case();
}

static void test_attention(void) {
  const char *cases[] = {"attention_cross", "attention_self2blk", "attention_causal", "attention_wide",
                         "attention_heads5", "attention_onehead", "attention_onehead_causal"};
  for (int i = 0; i < 7; i++) {
    cmds_error err = {0};
    nn_tensor q = nnfix_load(cases[i], "q"), k = nnfix_load(cases[i], "k"), v = nnfix_load(cases[i], "v");
    nn_tensor dout = nnfix_load(cases[i], "dout"), wdq = nnfix_load(cases[i], "dq");
    nn_tensor wdk = nnfix_load(cases[i], "dk"), wdv = nnfix_load(cases[i], "dv");
    int64_t heads = (int64_t)nnfix_scalar(cases[i], "heads");
    int causal = (int)nnfix_scalar(cases[i], "causal");
    nn_tensor dq = nnfix_out_like(3, q.shape), dk = nnfix_out_like(3, k.shape), dv = nnfix_out_like(3, k.shape);
    size_t before = scratch_before();
    nnfix_expect_ok(nn_attention_ex_backward(&nnfix_ctx, &dq, &dk, &dv, &dout, &q, &k, &v, heads, causal, &err), &err,
                    cases[i]);
    scratch_after(cases[i], before,
                  nn_attention_ex_backward_scratch_bytes(q.shape[0], q.shape[1], k.shape[1], q.shape[2], heads));
    char what[96];
    snprintf(what, sizeof what, "%s dq", cases[i]);
    nnfix_compare(what, dq.data, wdq.data, nn_tensor_numel(&wdq), 1e-4);
    snprintf(what, sizeof what, "%s dk", cases[i]);
    nnfix_compare(what, dk.data, wdk.data, nn_tensor_numel(&wdk), 1e-4);
    snprintf(what, sizeof what, "%s dv", cases[i]);
    nnfix_compare(what, dv.data, wdv.data, nn_tensor_numel(&wdv), 1e-4);
    if (i == 0) {
      /* each output alone: the others NULL */
      nn_tensor dk2 = nnfix_out_like(3, k.shape), dv2 = nnfix_out_like(3, k.shape), dq2 = nnfix_out_like(3, q.shape);
      nnfix_expect_ok(nn_attention_ex_backward(&nnfix_ctx, NULL, NULL, &dv2, &dout, &q, &k, &v, heads, causal, &err),
                      &err, "attention dv only");
      nnfix_compare("attention dv only", dv2.data, wdv.data, nn_tensor_numel(&wdv), 1e-4);
      nnfix_expect_ok(nn_attention_ex_backward(&nnfix_ctx, NULL, &dk2, NULL, &dout, &q, &k, &v, heads, causal, &err),
                      &err, "attention dk only");
      nnfix_compare("attention dk only", dk2.data, wdk.data, nn_tensor_numel(&wdk), 1e-4);
      nnfix_expect_ok(nn_attention_ex_backward(&nnfix_ctx, &dq2, NULL, NULL, &dout, &q, &k, &v, heads, causal, &err),
                      &err, "attention dq only");
      nnfix_compare("attention dq only", dq2.data, wdq.data, nn_tensor_numel(&wdq), 1e-4);
      nnfix_expect_fail(nn_attention_ex_backward(&nnfix_ctx, &dq, &dk, &dv, &dout, &q, &k, &v, heads, 1, &err), &err,
                        "causal attention needs as many keys as queries", "attention causal N != M");
      nnfix_expect_fail(nn_attention_ex_backward(&nnfix_ctx, &dq, &dk, &dv, &dout, &q, &k, &v, 3, 0, &err), &err,
                        "3 heads do not divide width 128", "attention heads");
      nnfix_expect_fail(nn_attention_ex_backward(&nnfix_ctx, &dq, &dv, &dv, &dout, &q, &k, &v, heads, 0, &err), &err,
                        "must be distinct", "attention dk = dv");
      nnfix_expect_fail(nn_attention_ex_backward(&nnfix_ctx, &dq, &dk, &dv, &dq, &q, &k, &v, heads, 0, &err), &err,
                        "must not alias", "attention dq aliasing dout");
      nnfix_expect_fail(nn_attention_ex_backward(&nnfix_ctx, &dq, &dk, &dv, &dk, &q, &k, &v, heads, 0, &err), &err,
                        "dout has shape (2, 7, 128), (2, 13, 128) expected", "attention dout shape");
    }
    /* the fast path: the forward's o and log-sum-exp kept; default tiles, then small ones so
       the fixtures' few rows span several query and key tiles (causal: partly masked tiles) */
    {
      int64_t ls[3] = {q.shape[0], heads, q.shape[1]};
      nn_tensor o = nnfix_out_like(3, q.shape), lse = nnfix_out_like(3, ls), o2 = nnfix_out_like(3, q.shape);
      nnfix_expect_ok(nn_attention_ex_forward_lse(&nnfix_ctx, &o, &lse, &q, &k, &v, heads, causal, &err), &err,
                      cases[i]);
      nnfix_expect_ok(nn_attention_ex_forward(&nnfix_ctx, &o2, &q, &k, &v, heads, causal, &err), &err, cases[i]);
      CHECK(!memcmp(o.data, o2.data, nn_tensor_bytes(&o)), "%s: the forward's o changes with lse", cases[i]);
      const char *tiles[] = {NULL, "3x5", "1x2", "2x64"};
      for (int t = 0; t < 4; t++) {
        if (tiles[t]) setenv("CMDS_NN_ATTNB_TILE", tiles[t], 1);
        nn_tensor dq4 = nnfix_out_like(3, q.shape), dk4 = nnfix_out_like(3, k.shape), dv4 = nnfix_out_like(3, k.shape);
        size_t before4 = scratch_before();
        nnfix_expect_ok(nn_attention_ex_backward_lse(&nnfix_ctx, &dq4, &dk4, &dv4, &dout, &q, &k, &v, &o, &lse, heads,
                                                     causal, &err),
                        &err, cases[i]);
        scratch_after(cases[i], before4,
                      nn_attention_ex_backward_scratch_bytes(q.shape[0], q.shape[1], k.shape[1], q.shape[2], heads));
        snprintf(what, sizeof what, "%s lse tiles %s dq", cases[i], tiles[t] ? tiles[t] : "default");
        nnfix_compare(what, dq4.data, wdq.data, nn_tensor_numel(&wdq), 1e-4);
        snprintf(what, sizeof what, "%s lse tiles %s dk", cases[i], tiles[t] ? tiles[t] : "default");
        nnfix_compare(what, dk4.data, wdk.data, nn_tensor_numel(&wdk), 1e-4);
        snprintf(what, sizeof what, "%s lse tiles %s dv", cases[i], tiles[t] ? tiles[t] : "default");
        nnfix_compare(what, dv4.data, wdv.data, nn_tensor_numel(&wdv), 1e-4);
        if (i == 0 && t == 1) { /* each output alone */
          nn_tensor dq5 = nnfix_out_like(3, q.shape), dk5 = nnfix_out_like(3, k.shape),
                    dv5 = nnfix_out_like(3, k.shape);
          nnfix_expect_ok(nn_attention_ex_backward_lse(&nnfix_ctx, NULL, NULL, &dv5, &dout, &q, &k, &v, &o, &lse, heads,
                                                       causal, &err),
                          &err, "attention lse dv only");
          nnfix_compare("attention lse dv only", dv5.data, wdv.data, nn_tensor_numel(&wdv), 1e-4);
          nnfix_expect_ok(nn_attention_ex_backward_lse(&nnfix_ctx, NULL, &dk5, NULL, &dout, &q, &k, &v, &o, &lse, heads,
                                                       causal, &err),
                          &err, "attention lse dk only");
          nnfix_compare("attention lse dk only", dk5.data, wdk.data, nn_tensor_numel(&wdk), 1e-4);
          nnfix_expect_ok(nn_attention_ex_backward_lse(&nnfix_ctx, &dq5, NULL, NULL, &dout, &q, &k, &v, &o, &lse, heads,
                                                       causal, &err),
                          &err, "attention lse dq only");
          nnfix_compare("attention lse dq only", dq5.data, wdq.data, nn_tensor_numel(&wdq), 1e-4);
          nnfix_expect_fail(nn_attention_ex_backward_lse(&nnfix_ctx, &dq5, &dk5, &dv5, &dout, &q, &k, &v, NULL, &lse,
                                                         heads, causal, &err),
                            &err, "lse needs the forward's output o", "attention lse without o");
          nnfix_expect_fail(nn_attention_ex_backward_lse(&nnfix_ctx, &dq5, &dk5, &dv5, &dout, &q, &k, &v, &o, &o, heads,
                                                         causal, &err),
                            &err, "lse has shape", "attention lse shape");
          nnfix_expect_fail(nn_attention_ex_forward_lse(&nnfix_ctx, &o2, &o, &q, &k, &v, heads, causal, &err), &err,
                            "lse has shape", "attention forward lse shape");
        }
      }
      unsetenv("CMDS_NN_ATTNB_TILE");
    }
    if (causal) { /* the mask matters: the unmasked gradients differ */
      nn_tensor dq3 = nnfix_out_like(3, q.shape);
      nnfix_expect_ok(nn_attention_ex_backward(&nnfix_ctx, &dq3, NULL, NULL, &dout, &q, &k, &v, heads, 0, &err), &err,
                      "causal case unmasked");
      const float *a = dq3.data, *b = wdq.data;
      double diff = 0;
      for (int64_t j = 0; j < nn_tensor_numel(&wdq); j++) diff += fabs((double)a[j] - b[j]);
      CHECK(diff > 1.0, "causal case: the unmasked gradient equals the masked one (diff %g)", diff);
    }
    nnfix_done_case();
  }
}

static void test_conv(void) {
  const char *cases[] = {"conv_k3_same",  "conv_unet_down", "conv_unet_down_even", "conv_k3_s2_p1",
                         "conv_k1_direct", "conv_k1_stride2", "conv_k5_asym_s3"};
  const int has_bias[] = {1, 1, 0, 1, 1, 1, 1};
  /* pass 0: default bands (one per image); pass 1: the cap forces one output row per band */
  for (int pass = 0; pass < 2; pass++) {
    if (pass) setenv("CMDS_NN_CONV_BAND_FLOATS", "1", 1);
    for (int i = 0; i < 7; i++) {
      cmds_error err = {0};
      char what[96];
      snprintf(what, sizeof what, "%s%s", cases[i], pass ? " (1-row bands)" : "");
      nn_tensor x = nnfix_load(cases[i], "x"), w = nnfix_load(cases[i], "w"), dy = nnfix_load(cases[i], "dy");
      nn_tensor wdx = nnfix_load(cases[i], "dx"), wdw = nnfix_load(cases[i], "dw");
      nn_tensor wdb = has_bias[i] ? nnfix_load(cases[i], "db") : (nn_tensor){0};
      int s = (int)nnfix_scalar(cases[i], "stride"), pt = (int)nnfix_scalar(cases[i], "pt");
      int pb = (int)nnfix_scalar(cases[i], "pb"), pl = (int)nnfix_scalar(cases[i], "pl");
      int pr = (int)nnfix_scalar(cases[i], "pr");
      nn_tensor dx = nnfix_out_like(4, x.shape), dw = nnfix_out_fill(4, w.shape, PRIOR),
                db = nnfix_out_fill(1, w.shape, PRIOR);
      size_t before = scratch_before();
      nnfix_expect_ok(
          nn_conv2d_ex_backward(&nnfix_ctx, &dx, &dw, has_bias[i] ? &db : NULL, &dy, &x, &w, s, pt, pb, pl, pr, &err),
          &err, what);
      scratch_after(what, before, nn_conv2d_ex_backward_scratch_bytes(&x, &w, s, pt, pb, pl, pr));
      nnfix_compare(what, dx.data, wdx.data, nn_tensor_numel(&wdx), 1e-4);
      compare_accum(what, &dw, &wdw, 1e-4);
      if (has_bias[i]) compare_accum(what, &db, &wdb, 1e-5);
      /* frozen weights: only dx (the LoRA fine-tune's case), no columns built */
      nn_tensor dx2 = nnfix_out_like(4, x.shape);
      nnfix_expect_ok(nn_conv2d_ex_backward(&nnfix_ctx, &dx2, NULL, NULL, &dy, &x, &w, s, pt, pb, pl, pr, &err), &err,
                      what);
      nnfix_compare(what, dx2.data, wdx.data, nn_tensor_numel(&wdx), 1e-4);
      if (i == 1 && !pass) {
        nnfix_expect_fail(nn_conv2d_ex_backward(&nnfix_ctx, &dx, &dw, NULL, &dy, &x, &w, 1, pt, pb, pl, pr, &err), &err,
                          "dy has shape (2, 4, 4, 5), (2, 4, 8, 10) expected", "conv_ex dy geometry");
        nnfix_expect_fail(nn_conv2d_ex_backward(&nnfix_ctx, &dx, &dw, NULL, &dy, &x, &w, 0, pt, pb, pl, pr, &err), &err,
                          "stride 0", "conv_ex stride 0");
        nnfix_expect_fail(nn_conv2d_ex_backward(&nnfix_ctx, &dy, &dw, NULL, &dy, &x, &w, s, pt, pb, pl, pr, &err), &err,
                          "dx has shape (2, 4, 4, 5), (2, 3, 9, 11) expected", "conv_ex dx shape");
        nn_tensor rect = w;
        rect.shape[3] = 1;
        nnfix_expect_fail(nn_conv2d_ex_backward(&nnfix_ctx, &dx, NULL, NULL, &dy, &x, &rect, s, pt, pb, pl, pr, &err),
                          &err, "square kernel", "conv_ex non-square kernel");
      }
      if (i == 0 && !pass) { /* same geometry through the mapper's stride-1 entry point */
        nn_tensor dx3 = nnfix_out_like(4, x.shape), dw3 = nnfix_out_fill(4, w.shape, PRIOR);
        nnfix_expect_ok(nn_conv2d_backward(&nnfix_ctx, &dx3, &dw3, NULL, &dy, &x, &w, &err), &err,
                        "nn_conv2d_backward k3");
        nnfix_compare("nn_conv2d_backward k3", dx3.data, wdx.data, nn_tensor_numel(&wdx), 1e-4);
        compare_accum("nn_conv2d_backward k3", &dw3, &wdw, 1e-4);
      }
      nnfix_done_case();
    }
  }
  unsetenv("CMDS_NN_CONV_BAND_FLOATS");
}

static void test_glue(void) {
  cmds_error err = {0};
  nn_tensor x = nnfix_load("sum_hw", "x"), want = nnfix_load("sum_hw", "y"), y = nnfix_out_like(2, want.shape);
  nnfix_expect_ok(nn_sum_hw_forward(&nnfix_ctx, &y, &x, &err), &err, "sum_hw");
  nnfix_compare("sum_hw", y.data, want.data, nn_tensor_numel(&want), 1e-5);
  nnfix_expect_fail(nn_sum_hw_forward(&nnfix_ctx, &x, &x, &err), &err, "y has shape (2, 3, 5, 7), (2, 3) expected",
                    "sum_hw y shape");
  nnfix_done_case();

  x = nnfix_load("split", "x");
  nn_tensor wa = nnfix_load("split", "a"), wb = nnfix_load("split", "b");
  nn_tensor a = nnfix_out_like(4, wa.shape), b = nnfix_out_like(4, wb.shape);
  nnfix_expect_ok(nn_split_channels_forward(&nnfix_ctx, &a, &b, &x, &err), &err, "split");
  nnfix_compare("split a", a.data, wa.data, nn_tensor_numel(&wa), 0.0);
  nnfix_compare("split b", b.data, wb.data, nn_tensor_numel(&wb), 0.0);
  nn_tensor a2 = nnfix_out_like(4, wa.shape), b2 = nnfix_out_like(4, wb.shape);
  nnfix_expect_ok(nn_split_channels_forward(&nnfix_ctx, &a2, NULL, &x, &err), &err, "split a only");
  nnfix_compare("split a only", a2.data, wa.data, nn_tensor_numel(&wa), 0.0);
  nnfix_expect_ok(nn_split_channels_forward(&nnfix_ctx, NULL, &b2, &x, &err), &err, "split b only");
  nnfix_compare("split b only", b2.data, wb.data, nn_tensor_numel(&wb), 0.0);
  nnfix_expect_fail(nn_split_channels_forward(&nnfix_ctx, NULL, NULL, &x, &err), &err, "both NULL", "split nothing");
  nn_tensor bbad = b;
  bbad.shape[1] = 3;
  nnfix_expect_fail(nn_split_channels_forward(&nnfix_ctx, &a, &bbad, &x, &err), &err,
                    "b has shape (2, 3, 4, 3), (2, 4, 4, 3) expected", "split b channels");
  nnfix_done_case();

  {
    nn_tensor p = nnfix_load("mse", "p"), t = nnfix_load("mse", "t"), wdp = nnfix_load("mse", "dp");
    double wl = nnfix_scalar("mse", "loss"), loss = -1.0;
    nn_tensor dp = nnfix_out_like(4, p.shape);
    nnfix_expect_ok(nn_mse_forward(&nnfix_ctx, &loss, &dp, &p, &t, &err), &err, "mse");
    CHECK(fabs(loss - wl) <= 1e-6 * fabs(wl), "mse: loss %.12g, want %.12g", loss, wl);
    nnfix_compare("mse dp", dp.data, wdp.data, nn_tensor_numel(&wdp), 1e-5);
    double l2 = -1.0;
    nnfix_expect_ok(nn_mse_forward(&nnfix_ctx, &l2, NULL, &p, &t, &err), &err, "mse without dp");
    CHECK(l2 == loss, "mse without dp: %.17g vs %.17g", l2, loss);
    nn_tensor pc = copy_of(&p);
    nnfix_expect_ok(nn_mse_forward(&nnfix_ctx, &l2, &pc, &pc, &t, &err), &err, "mse dp = p");
    nnfix_compare("mse dp = p", pc.data, wdp.data, nn_tensor_numel(&wdp), 1e-5);
    nn_tensor tb = t;
    tb.shape[3] = 4;
    nnfix_expect_fail(nn_mse_forward(&nnfix_ctx, &l2, NULL, &p, &tb, &err), &err,
                      "t has shape (2, 4, 6, 4), (2, 4, 6, 5) expected", "mse t shape");
    nnfix_done_case();
  }
  x = nnfix_load("sumsq", "x");
  double ws = nnfix_scalar("sumsq", "s"), s = -1.0;
  nnfix_expect_ok(nn_sumsq_forward(&nnfix_ctx, &s, &x, &err), &err, "sumsq");
  CHECK(fabs(s - ws) <= 1e-9 * ws, "sumsq: %.12g, want %.12g", s, ws);
  /* sumsq_many: the same sum over a list (torch's global norm over several tensors) */
  const nn_tensor *xs2[3] = {&x, &x, NULL};
  nnfix_expect_ok(nn_sumsq_many_forward(&nnfix_ctx, &s, xs2, 2, &err), &err, "sumsq_many");
  CHECK(fabs(s - 2 * ws) <= 1e-9 * ws, "sumsq_many of x, x: %.12g, want %.12g", s, 2 * ws);
  s = -1.0;
  nnfix_expect_ok(nn_sumsq_many_forward(&nnfix_ctx, &s, NULL, 0, &err), &err, "sumsq_many of none");
  CHECK(s == 0.0, "sumsq_many of no tensors: %g", s);
  nnfix_expect_fail(nn_sumsq_many_forward(&nnfix_ctx, &s, xs2, 3, &err), &err, "xs[2] is NULL", "sumsq_many NULL");
  nnfix_done_case();
}

static void test_adamw(void) {
  const char *cases[] = {"adamw", "adamw_b"};
  for (int i = 0; i < 2; i++) {
    cmds_error err = {0};
    const char *c = cases[i];
    nn_tensor p0 = nnfix_load(c, "p0"), p = copy_of(&p0);
    nn_tensor m = nnfix_out_fill(p.ndim, p.shape, 0.0f), v = nnfix_out_fill(p.ndim, p.shape, 0.0f);
    float lr = (float)nnfix_scalar(c, "lr"), b1 = (float)nnfix_scalar(c, "beta1"), b2 = (float)nnfix_scalar(c, "beta2");
    float eps = (float)nnfix_scalar(c, "eps"), wd = (float)nnfix_scalar(c, "wd");
    for (int step = 1; step <= 3; step++) {
      char gn[8], pn[8], what[64];
      snprintf(gn, sizeof gn, "g%d", step);
      snprintf(pn, sizeof pn, "p%d", step);
      nn_tensor g = nnfix_load(c, gn), want = nnfix_load(c, pn);
      nn_tensor g0 = copy_of(&g);
      nnfix_expect_ok(nn_adamw_update(&nnfix_ctx, &p, &g, &m, &v, lr, b1, b2, eps, wd, step, &err), &err, c);
      snprintf(what, sizeof what, "%s step %d", c, step);
      nnfix_compare(what, p.data, want.data, nn_tensor_numel(&want), 1e-6);
      CHECK(!memcmp(g0.data, g.data, nn_tensor_bytes(&g)), "%s: the gradient was modified", what);
    }
    nn_tensor wm = nnfix_load(c, "m"), wv = nnfix_load(c, "v");
    nnfix_compare("adamw m", m.data, wm.data, nn_tensor_numel(&wm), 1e-6);
    nnfix_compare("adamw v", v.data, wv.data, nn_tensor_numel(&wv), 1e-6);
    if (i == 0) {
      nnfix_expect_fail(nn_adamw_update(&nnfix_ctx, &p, &p0, &m, &v, lr, b1, b2, eps, wd, 0, &err), &err,
                        "the first step is 1", "adamw step 0");
      nnfix_expect_fail(nn_adamw_update(&nnfix_ctx, &p, &p0, &m, &v, lr, 1.0f, b2, eps, wd, 1, &err), &err,
                        "betas must be in", "adamw beta1 = 1");
      nn_tensor vb = v;
      vb.shape[0] = 1;
      nnfix_expect_fail(nn_adamw_update(&nnfix_ctx, &p, &p0, &m, &vb, lr, b1, b2, eps, wd, 1, &err), &err,
                        "v has shape (1, 7), (6, 7) expected", "adamw v shape");
    }
    nnfix_done_case();
  }
}

int main(int argc, char **argv) {
  int rc = nnfix_setup(argc, argv, 32 << 20);
  if (rc >= 0) return rc;
  test_linear();
  test_layernorm();
  test_gates();
  /* the CPU attention splits the work across heads or within a head depending on the thread
   * count: run it with 1 and 4 threads too, so both ways are exercised on any machine */
  test_attention();
  int threads0 = omp_get_max_threads();
  omp_set_num_threads(1);
  test_attention();
  omp_set_num_threads(4);
  test_attention();
  omp_set_num_threads(threads0);
  /* and the forward (its o and log-sum-exp feed the fast path) in query blocks of 20 rows
   * (CMDS_NN_ATTN_QB), several per head with a short last one, as the default blocks are at
   * larger sizes (up to 256 rows) */
  setenv("CMDS_NN_ATTN_QB", "20", 1);
  test_attention();
  unsetenv("CMDS_NN_ATTN_QB");
  test_conv();
  test_glue();
  test_adamw();
  nnfix_teardown();
  return CHECK_DONE();
}
