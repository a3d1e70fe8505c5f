/* test_nn_cuda: every nn op on the GPU against the CPU path (the reference the unit
 * tests pin to PyTorch), on fresh random inputs at the sizes the pipeline uses (ViT-B/8
 * attention: 785 tokens, 12 heads of 64; mapper convs on 28 x 28). GPU outputs are
 * poisoned with NaN before each run, so an unwritten value fails. Pass: ||gpu - cpu|| /
 * ||cpu|| < 1e-5 in fp32; the TF32 GEMM (ctx.allow_tf32) < 2e-3 (TF32 lands near 3e-4).
 * The diffusion networks' ops (test_diffusion_*) at UNet / VAE / CLIP sizes: the general
 * conv (VAE downsampler stride 2 with (0, 1, 0, 1) padding, 3x3, 1x1, forced row bands),
 * SiLU, quick GELU, GEGLU, nearest 2x, general attention (cross N != M, causal, D = 64,
 * 96, and the chunked cuBLAS path for D > 128 with forced small chunks), axpby with
 * aliasing, scale, add_channel, concat, transpose.
 * Exits 77 (skip) when the build has no CUDA or no GPU is visible.
 *   test_nn_cuda */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cmds_mpi.h"
#include "nn.h"
#include "rng.h"

#include "cuda_pair.h"

static nn_ctx gpu_tf32;

static void test_linear(void) {
  int64_t xs[2] = {1000, 768}, ws[2] = {300, 768}, bs[1] = {300}, ys[2] = {1000, 300};
  nn_tensor x = host_random("lin.x", 2, xs, 1), w = host_random("lin.w", 2, ws, 0.05), b = host_random("lin.b", 1, bs, 1);
  nn_tensor y = host_empty(2, ys);
  nn_tensor dx = to_dev(&x, 0), dw = to_dev(&w, 0), db = to_dev(&b, 0), dy = to_dev(&y, 1);
  RUN2(nn_linear_forward(&cpu, &y, &x, &w, &b, &e_), nn_linear_forward(&gpu, &dy, &dx, &dw, &db, &e_));
  report("linear 1000x768 -> 300 (fp32)", rel_err(&dy, &y), 1e-5);
  nn_tensor dy2 = to_dev(&y, 1);
  cmds_error e = {0};
  CHECK(nn_linear_forward(&gpu_tf32, &dy2, &dx, &dw, &db, &e) == 0, "tf32: %s", e.msg);
  report("linear 1000x768 -> 300 (TF32)", rel_err(&dy2, &y), 2e-3);
  nn_tensor dy3 = to_dev(&y, 1);
  CHECK(nn_linear_forward(&cpu, &y, &x, &w, NULL, &e) == 0 && nn_linear_forward(&gpu, &dy3, &dx, &dw, NULL, &e) == 0,
        "no bias: %s", e.msg);
  report("linear 1000x768 -> 300, no bias", rel_err(&dy3, &y), 1e-5);
  reset();
}

static void test_conv(void) {
  for (int k = 1; k <= 3; k += 2) {
    int64_t Cin = k == 1 ? 768 : 96, Cout = k == 1 ? 64 : 24;
    int64_t xs[4] = {2, Cin, 28, 28}, ws[4] = {Cout, Cin, k, k}, bs[1] = {Cout}, ys[4] = {2, Cout, 28, 28};
    nn_tensor x = host_random(k == 1 ? "c1.x" : "c3.x", 4, xs, 1), w = host_random(k == 1 ? "c1.w" : "c3.w", 4, ws, 0.05);
    nn_tensor b = host_random(k == 1 ? "c1.b" : "c3.b", 1, bs, 1), y = host_empty(4, ys);
    nn_tensor dx = to_dev(&x, 0), dw = to_dev(&w, 0), db = to_dev(&b, 0), dy = to_dev(&y, 1);
    RUN2(nn_conv2d_forward(&cpu, &y, &x, &w, &b, &e_), nn_conv2d_forward(&gpu, &dy, &dx, &dw, &db, &e_));
    report(k == 1 ? "conv1x1 768->64, 2x28x28" : "conv3x3 96->24, 2x28x28", rel_err(&dy, &y), 1e-5);
    reset();
  }
}

static void test_norms(void) {
  int64_t xs[2] = {3140, 768}, cs[1] = {768};
  nn_tensor x = host_random("ln.x", 2, xs, 2), g = host_random("ln.g", 1, cs, 1), b = host_random("ln.b", 1, cs, 1);
  float *xp = x.data;
  for (int64_t i = 0; i < nn_tensor_numel(&x); i++) xp[i] += 3.0f;  /* off-centre: the mean matters */
  nn_tensor y = host_empty(2, xs), dx = to_dev(&x, 0), dg = to_dev(&g, 0), db = to_dev(&b, 0), dy = to_dev(&y, 1);
  RUN2(nn_layernorm_forward(&cpu, &y, &x, &g, &b, 1e-6f, &e_), nn_layernorm_forward(&gpu, &dy, &dx, &dg, &db, 1e-6f, &e_));
  report("layernorm (3140, 768)", rel_err(&dy, &y), 1e-5);
  int64_t gs[4] = {2, 768, 28, 28};
  nn_tensor gx = host_random("gn.x", 4, gs, 1.5), gy = host_empty(4, gs), dgx = to_dev(&gx, 0), dgy = to_dev(&gy, 1);
  RUN2(nn_groupnorm_forward(&cpu, &gy, &gx, 32, &g, &b, 1e-5f, &e_),
       nn_groupnorm_forward(&gpu, &dgy, &dgx, 32, &dg, &db, 1e-5f, &e_));
  report("groupnorm 32 groups (2, 768, 28, 28)", rel_err(&dgy, &gy), 1e-5);
  reset();
}

static void test_activations(void) {
  int64_t n[1] = {1 << 20}, ss[2] = {1000, 785};
  nn_tensor x = host_random("gelu.x", 1, n, 3), y = host_empty(1, n), dx = to_dev(&x, 0), dy = to_dev(&y, 1);
  RUN2(nn_gelu_forward(&cpu, &y, &x, &e_), nn_gelu_forward(&gpu, &dy, &dx, &e_));
  report("gelu 1M", rel_err(&dy, &y), 1e-5);
  nn_tensor s = host_random("sm.x", 2, ss, 4), sy = host_empty(2, ss), ds = to_dev(&s, 0), dsy = to_dev(&sy, 1);
  RUN2(nn_softmax_forward(&cpu, &sy, &s, &e_), nn_softmax_forward(&gpu, &dsy, &ds, &e_));
  report("softmax (1000, 785)", rel_err(&dsy, &sy), 1e-5);
  reset();
}

static void test_attention(void) {
  const struct { int64_t B, N, H, D; const char *what; } cases[] = {
    {2, 785, 12, 64, "attention ViT-B/8 B=2 N=785 H=12 D=64"},
    {3, 100, 4, 32, "attention B=3 N=100 H=4 D=32"},
    {1, 70, 2, 128, "attention B=1 N=70 H=2 D=128"},
    {2, 33, 3, 40, "attention B=2 N=33 H=3 D=40"},
  };
  for (int c = 0; c < 4; c++) {
    int64_t s[3] = {cases[c].B, cases[c].N, cases[c].H * cases[c].D};
    char nq[64], nk[64], nv[64];
    snprintf(nq, sizeof nq, "att%d.q", c);
    snprintf(nk, sizeof nk, "att%d.k", c);
    snprintf(nv, sizeof nv, "att%d.v", c);
    nn_tensor q = host_random(nq, 3, s, 1), k = host_random(nk, 3, s, 1), v = host_random(nv, 3, s, 1);
    nn_tensor o = host_empty(3, s), dq = to_dev(&q, 0), dk = to_dev(&k, 0), dv = to_dev(&v, 0), dout = to_dev(&o, 1);
    RUN2(nn_attention_forward(&cpu, &o, &q, &k, &v, cases[c].H, &e_),
         nn_attention_forward(&gpu, &dout, &dq, &dk, &dv, cases[c].H, &e_));
    report(cases[c].what, rel_err(&dout, &o), 1e-5);
    reset();
  }
}

static void test_resize_blur_cosine(void) {
  int64_t xs[4] = {2, 64, 28, 28}, ys[4] = {2, 64, 224, 224}, ds[4] = {2, 64, 9, 13};
  nn_tensor x = host_random("rs.x", 4, xs, 1), dx = to_dev(&x, 0);
  for (int m = 0; m < 2; m++)
    for (int up = 0; up < 2; up++) {
      nn_tensor y = host_empty(4, up ? ys : ds), dy = to_dev(&y, 1);
      RUN2(nn_resize_forward(&cpu, &y, &x, (nn_resize_mode)m, &e_), nn_resize_forward(&gpu, &dy, &dx, (nn_resize_mode)m, &e_));
      report(m ? (up ? "bicubic 28->224" : "bicubic 28->9x13") : (up ? "bilinear 28->224" : "bilinear 28->9x13"),
             rel_err(&dy, &y), 1e-5);
    }
  reset();
  int64_t bs[4] = {2, 3, 224, 200}, ss[4] = {1, 2, 20, 17};
  const float sig[2] = {4.0f, 6.0f};
  for (int i = 0; i < 2; i++) {
    nn_tensor b = host_random(i ? "bl.small" : "bl.x", 4, i ? ss : bs, 1), by = host_empty(4, i ? ss : bs);
    nn_tensor db = to_dev(&b, 0), dby = to_dev(&by, 1);
    RUN2(nn_blur_forward(&cpu, &by, &b, sig[i], &e_), nn_blur_forward(&gpu, &dby, &db, sig[i], &e_));
    report(i ? "blur sigma 6 (1, 2, 20, 17)" : "blur sigma 4 (2, 3, 224, 200)", rel_err(&dby, &by), 1e-5);
  }
  reset();
  int64_t as[4] = {2, 768, 56, 56}, dsh[3] = {2, 56, 56};
  nn_tensor a = host_random("cos.a", 4, as, 1), b = host_random("cos.b", 4, as, 1), d = host_empty(3, dsh);
  nn_tensor da = to_dev(&a, 0), dbb = to_dev(&b, 0), dd = to_dev(&d, 1);
  RUN2(nn_cosine_distance_forward(&cpu, &d, &a, &b, &e_), nn_cosine_distance_forward(&gpu, &dd, &da, &dbb, &e_));
  report("cosine distance (2, 768, 56, 56)", rel_err(&dd, &d), 1e-5);
  reset();
}

/* --- the diffusion networks' ops --- */

static void test_diffusion_conv(void) {
  const struct { int64_t B, Cin, H, W, Cout, k; int s, pt, pb, pl, pr, bias; const char *what; } cases[] = {
    {1, 128, 97, 96, 128, 3, 2, 0, 1, 0, 1, 1, "conv_ex VAE down 128x97x96 s2 pad(0,1,0,1)"},
    {2, 64, 48, 40, 96, 3, 1, 1, 1, 1, 1, 1, "conv_ex 3x3 64->96, 2x48x40"},
    {2, 320, 24, 24, 640, 1, 1, 0, 0, 0, 0, 1, "conv_ex 1x1 320->640 (direct)"},
    {1, 32, 31, 29, 16, 1, 2, 0, 0, 0, 0, 0, "conv_ex 1x1 s2 32->16, no bias"},
    {2, 8, 33, 35, 4, 5, 3, 2, 0, 1, 3, 1, "conv_ex 5x5 s3 pad(2,0,1,3)"},
  };
  for (int pass = 0; pass < 2; pass++) {
    /* pass 1: bands of 3 output rows (several GEMMs per image) */
    for (int c = 0; c < 5; c++) {
      int64_t Ho = (cases[c].H + cases[c].pt + cases[c].pb - cases[c].k) / cases[c].s + 1;
      int64_t Wo = (cases[c].W + cases[c].pl + cases[c].pr - cases[c].k) / cases[c].s + 1;
      int64_t xs[4] = {cases[c].B, cases[c].Cin, cases[c].H, cases[c].W};
      int64_t ws[4] = {cases[c].Cout, cases[c].Cin, cases[c].k, cases[c].k}, bs[1] = {cases[c].Cout};
      int64_t ys[4] = {cases[c].B, cases[c].Cout, Ho, Wo};
      char name[64], what[128], band[32];
      snprintf(name, sizeof name, "cex%d", c);
      snprintf(what, sizeof what, "%s%s", cases[c].what, pass ? ", 3-row bands" : "");
      snprintf(band, sizeof band, "%lld", (long long)(cases[c].Cin * cases[c].k * cases[c].k * Wo * 3));
      if (pass) setenv("CMDS_NN_CONV_BAND_FLOATS", band, 1);
      nn_tensor x = host_random(name, 4, xs, 1), w = host_random("cex.w", 4, ws, 0.05), b = host_random("cex.b", 1, bs, 1);
      nn_tensor y = host_empty(4, ys), dx = to_dev(&x, 0), dw = to_dev(&w, 0), db = to_dev(&b, 0), dy = to_dev(&y, 1);
      const nn_tensor *hb = cases[c].bias ? &b : NULL, *gb = cases[c].bias ? &db : NULL;
      RUN2(nn_conv2d_ex_forward(&cpu, &y, &x, &w, hb, cases[c].s, cases[c].pt, cases[c].pb, cases[c].pl, cases[c].pr, &e_),
           nn_conv2d_ex_forward(&gpu, &dy, &dx, &dw, gb, cases[c].s, cases[c].pt, cases[c].pb, cases[c].pl, cases[c].pr, &e_));
      report(what, rel_err(&dy, &y), 1e-5);
      reset();
    }
  }
  unsetenv("CMDS_NN_CONV_BAND_FLOATS");
}

static void test_diffusion_activations(void) {
  int64_t n[1] = {1 << 20}, gs[2] = {4096, 2 * 640}, go[2] = {4096, 640};
  nn_tensor x = host_random("silu.x", 1, n, 4), y = host_empty(1, n), dx = to_dev(&x, 0), dy = to_dev(&y, 1);
  RUN2(nn_silu_forward(&cpu, &y, &x, &e_), nn_silu_forward(&gpu, &dy, &dx, &e_));
  report("silu 1M", rel_err(&dy, &y), 1e-5);
  nn_tensor dy2 = to_dev(&y, 1);
  RUN2(nn_quick_gelu_forward(&cpu, &y, &x, &e_), nn_quick_gelu_forward(&gpu, &dy2, &dx, &e_));
  report("quick_gelu 1M", rel_err(&dy2, &y), 1e-5);
  RUN2(nn_silu_forward(&cpu, &x, &x, &e_), nn_silu_forward(&gpu, &dx, &dx, &e_));
  report("silu 1M in place", rel_err(&dx, &x), 1e-5);
  nn_tensor g = host_random("geglu.x", 2, gs, 2), gy = host_empty(2, go), dg = to_dev(&g, 0), dgy = to_dev(&gy, 1);
  RUN2(nn_geglu_forward(&cpu, &gy, &g, &e_), nn_geglu_forward(&gpu, &dgy, &dg, &e_));
  report("geglu (4096, 1280) -> (4096, 640)", rel_err(&dgy, &gy), 1e-5);
  int64_t us[4] = {2, 64, 48, 41}, uo[4] = {2, 64, 96, 82};
  nn_tensor u = host_random("up.x", 4, us, 1), uy = host_empty(4, uo), du = to_dev(&u, 0), duy = to_dev(&uy, 1);
  RUN2(nn_upsample_nearest2x_forward(&cpu, &uy, &u, &e_), nn_upsample_nearest2x_forward(&gpu, &duy, &du, &e_));
  report("nearest 2x (2, 64, 48, 41)", rel_err(&duy, &uy), 1e-7);
  reset();
}

static void test_diffusion_attention(void) {
  const struct { int64_t B, N, M, H, D; int causal; const char *chunk; const char *what; } cases[] = {
    {2, 1024, 77, 5, 64, 0, NULL, "attention_ex cross N=1024 M=77 H=5 D=64"},
    {1, 2304, 2304, 5, 64, 0, NULL, "attention_ex self N=2304 H=5 D=64"},
    {2, 77, 77, 16, 64, 1, NULL, "attention_ex causal N=77 H=16 D=64 (CLIP)"},
    {1, 130, 130, 3, 96, 1, NULL, "attention_ex causal N=130 H=3 D=96"},
    {3, 50, 20, 2, 32, 0, NULL, "attention_ex cross N=50 M=20 H=2 D=32"},
    {1, 1024, 1024, 1, 512, 0, NULL, "attention_ex VAE mid N=1024 H=1 D=512"},
    {1, 1024, 1024, 1, 512, 0, "307200", "attention_ex VAE mid, 300-row chunks"},
    {2, 200, 200, 2, 160, 1, "32000", "attention_ex causal D=160, 80-row chunks"},
    {1, 90, 40, 2, 256, 0, "4000", "attention_ex cross D=256 M=40, 50-row chunks"},
  };
  for (int c = 0; c < 9; c++) {
    int64_t C = cases[c].H * cases[c].D, qs[3] = {cases[c].B, cases[c].N, C}, ks[3] = {cases[c].B, cases[c].M, C};
    char nq[32], nk[32], nv[32];
    snprintf(nq, sizeof nq, "atx%d.q", c);
    snprintf(nk, sizeof nk, "atx%d.k", c);
    snprintf(nv, sizeof nv, "atx%d.v", c);
    if (cases[c].chunk) setenv("CMDS_NN_ATTN_SCORE_FLOATS", cases[c].chunk, 1);
    nn_tensor q = host_random(nq, 3, qs, 1), k = host_random(nk, 3, ks, 1), v = host_random(nv, 3, ks, 1);
    nn_tensor o = host_empty(3, qs), dq = to_dev(&q, 0), dk = to_dev(&k, 0), dv = to_dev(&v, 0), dout = to_dev(&o, 1);
    RUN2(nn_attention_ex_forward(&cpu, &o, &q, &k, &v, cases[c].H, cases[c].causal, &e_),
         nn_attention_ex_forward(&gpu, &dout, &dq, &dk, &dv, cases[c].H, cases[c].causal, &e_));
    report(cases[c].what, rel_err(&dout, &o), 1e-5);
    unsetenv("CMDS_NN_ATTN_SCORE_FLOATS");
    reset();
  }
}

static void test_diffusion_elementwise(void) {
  int64_t s4[4] = {2, 320, 48, 40}, s2[2] = {2, 320};
  nn_tensor a = host_random("ax.a", 4, s4, 1), b = host_random("ax.b", 4, s4, 1), y = host_empty(4, s4);
  nn_tensor da = to_dev(&a, 0), db = to_dev(&b, 0), dy = to_dev(&y, 1);
  RUN2(nn_axpby_forward(&cpu, &y, 0.7f, &a, -1.3f, &b, &e_), nn_axpby_forward(&gpu, &dy, 0.7f, &da, -1.3f, &db, &e_));
  report("axpby (2, 320, 48, 40)", rel_err(&dy, &y), 1e-6);
  RUN2(nn_axpby_forward(&cpu, &y, 0.7f, &a, -1.3f, &b, &e_), nn_axpby_forward(&gpu, &da, 0.7f, &da, -1.3f, &db, &e_));
  report("axpby y = a", rel_err(&da, &y), 1e-6);
  da = to_dev(&a, 0);
  RUN2(nn_axpby_forward(&cpu, &y, 0.7f, &a, -1.3f, &b, &e_), nn_axpby_forward(&gpu, &db, 0.7f, &da, -1.3f, &db, &e_));
  report("axpby y = b", rel_err(&db, &y), 1e-6);
  RUN2(nn_scale_forward(&cpu, &y, &a, 0.18215f, &e_), nn_scale_forward(&gpu, &da, &da, 0.18215f, &e_));
  report("scale in place", rel_err(&da, &y), 1e-6);
  nn_tensor t = host_random("ac.b", 2, s2, 1), dt = to_dev(&t, 0);
  da = to_dev(&a, 0);
  RUN2(nn_add_channel_forward(&cpu, &y, &a, &t, &e_), nn_add_channel_forward(&gpu, &da, &da, &dt, &e_));
  report("add_channel in place (2, 320, 48, 40)", rel_err(&da, &y), 1e-6);
  reset();
  int64_t ca[4] = {2, 320, 24, 24}, cb[4] = {2, 640, 24, 24}, cy[4] = {2, 960, 24, 24};
  nn_tensor x1 = host_random("cc.a", 4, ca, 1), x2 = host_random("cc.b", 4, cb, 1), xc = host_empty(4, cy);
  nn_tensor d1 = to_dev(&x1, 0), d2 = to_dev(&x2, 0), dc = to_dev(&xc, 1);
  RUN2(nn_concat_channels_forward(&cpu, &xc, &x1, &x2, &e_), nn_concat_channels_forward(&gpu, &dc, &d1, &d2, &e_));
  report("concat 320 ++ 640 at 24x24", rel_err(&dc, &xc), 1e-7);
  reset();
  const int64_t tr[2][3] = {{2, 320, 2304}, {3, 321, 1001}};
  for (int i = 0; i < 2; i++) {
    int64_t ts[3] = {tr[i][0], tr[i][2], tr[i][1]};
    nn_tensor x = host_random(i ? "tr.odd" : "tr.x", 3, tr[i], 1), xt = host_empty(3, ts);
    nn_tensor dx = to_dev(&x, 0), dxt = to_dev(&xt, 1);
    RUN2(nn_transpose12_forward(&cpu, &xt, &x, &e_), nn_transpose12_forward(&gpu, &dxt, &dx, &e_));
    report(i ? "transpose12 (3, 321, 1001)" : "transpose12 (2, 320, 2304)", rel_err(&dxt, &xt), 1e-7);
    reset();
  }
}

int main(void) {
  int rc = cuda_pair_setup((size_t)1 << 30, (size_t)256 << 20);
  if (rc) return rc;
  cmds_error err = {0};
  if (nn_ctx_init(&gpu_tf32, NN_CUDA, &dev_scratch, NULL, 1, &err)) {
    fprintf(stderr, "setup: %s\n", err.msg);
    return 1;
  }
  double t0 = cmds_now();
  test_linear();
  test_conv();
  test_norms();
  test_activations();
  test_attention();
  test_resize_blur_cosine();
  test_diffusion_conv();
  test_diffusion_activations();
  test_diffusion_attention();
  test_diffusion_elementwise();
  printf("all ops compared in %.1f s\n", cmds_now() - t0);
  nn_ctx_free(&gpu_tf32);
  cuda_pair_release();
  return CHECK_DONE();
}
