/* test_nn_backward2_cuda: the training ops of the LoRA fine-tune (backward.h's diffusion
 * entries, elementwise.h's training glue, optim.h) on the GPU against the CPU path (which
 * test_nn_backward2 pins to PyTorch autograd), on random inputs at SD UNet sizes: linear
 * 320 -> 320 over 2 x 1024 tokens, layer norm, SiLU, GEGLU 2560 -> 1280, attention (self
 * N = M = 1024 and cross M = 77 with 5 heads of 64, CLIP-like causal, one 512-wide head, and
 * forced small query chunks), conv backward (3x3 same, the UNet's stride-2 downsampler with
 * padding 1, the VAE's with (0, 1, 0, 1), 1x1, forced one-row bands, dW not wanted), sum over
 * H, W, channel split, MSE and sum of squares, three AdamW steps.
 * GPU outputs are poisoned with NaN before each run, so an unwritten value fails; parameter
 * gradients start from the same non-zero values on both sides (they accumulate).
 * Pass: ||gpu - cpu|| / ||cpu|| < 1e-5 (fp32 GEMMs; 1e-6 elementwise), the double sums to
 * 1e-9 relative. Exits 77 (skip) when the build has no CUDA or no GPU is visible.
 *   test_nn_backward2_cuda */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cmds_mpi.h"
#include "nn.h"
#include "rng.h"

#include "cuda_pair.h"

static void test_linear(void) {
  int64_t xs[3] = {2, 1024, 320}, ws[2] = {640, 320}, bs[1] = {640}, ys[3] = {2, 1024, 640};
  nn_tensor x = host_random("lb.x", 3, xs, 1), w = host_random("lb.w", 2, ws, 0.05), dy = host_random("lb.dy", 3, ys, 1);
  nn_tensor gw = host_random("lb.gw", 2, ws, 1), gb = host_random("lb.gb", 1, bs, 1), gx = host_empty(3, xs);
  nn_tensor x_d = to_dev(&x, 0), w_d = to_dev(&w, 0), dy_d = to_dev(&dy, 0), gx_d = to_dev(&gx, 1);
  nn_tensor gw_d = to_dev(&gw, 0), gb_d = to_dev(&gb, 0);
  RUN2(nn_linear_backward(&cpu, &gx, &gw, &gb, &dy, &x, &w, &e_),
       nn_linear_backward(&gpu, &gx_d, &gw_d, &gb_d, &dy_d, &x_d, &w_d, &e_));
  report("linear bwd dx (2, 1024, 320) -> 640", rel_err(&gx_d, &gx), 1e-5);
  report("linear bwd dW += (640, 320)", rel_err(&gw_d, &gw), 1e-5);
  report("linear bwd db += (640)", rel_err(&gb_d, &gb), 1e-5);
  reset();
}

static void test_layernorm(void) {
  int64_t xs[3] = {2, 1024, 320}, cs[1] = {320};
  nn_tensor x = host_random("ln.x", 3, xs, 2), dy = host_random("ln.dy", 3, xs, 1), g = host_random("ln.g", 1, cs, 1);
  nn_tensor dg = host_random("ln.dg", 1, cs, 1), db = host_random("ln.db", 1, cs, 1), dx = host_empty(3, xs);
  float *xp = x.data;
  for (int64_t i = 0; i < nn_tensor_numel(&x); i++) xp[i] += 0.5f; /* an offset mean */
  nn_tensor x_d = to_dev(&x, 0), dy_d = to_dev(&dy, 0), g_d = to_dev(&g, 0), dg_d = to_dev(&dg, 0);
  nn_tensor db_d = to_dev(&db, 0), dx_d = to_dev(&dx, 1);
  RUN2(nn_layernorm_backward(&cpu, &dx, &dg, &db, &dy, &x, &g, 1e-5f, &e_),
       nn_layernorm_backward(&gpu, &dx_d, &dg_d, &db_d, &dy_d, &x_d, &g_d, 1e-5f, &e_));
  report("layernorm bwd dx (2, 1024, 320)", rel_err(&dx_d, &dx), 1e-5);
  report("layernorm bwd dgamma +=", rel_err(&dg_d, &dg), 1e-5);
  report("layernorm bwd dbeta +=", rel_err(&db_d, &db), 1e-5);
  /* no affine, dx = dy */
  RUN2(nn_layernorm_backward(&cpu, &dx, NULL, NULL, &dy, &x, NULL, 1e-6f, &e_),
       nn_layernorm_backward(&gpu, &dy_d, NULL, NULL, &dy_d, &x_d, NULL, 1e-6f, &e_));
  report("layernorm bwd plain, dx = dy", rel_err(&dy_d, &dx), 1e-5);
  reset();
}

static void test_gates(void) {
  int64_t s4[4] = {2, 320, 32, 32};
  nn_tensor x = host_random("sb.x", 4, s4, 3), dy = host_random("sb.dy", 4, s4, 1), dx = host_empty(4, s4);
  nn_tensor x_d = to_dev(&x, 0), dy_d = to_dev(&dy, 0), dx_d = to_dev(&dx, 1);
  RUN2(nn_silu_backward(&cpu, &dx, &dy, &x, &e_), nn_silu_backward(&gpu, &dx_d, &dy_d, &x_d, &e_));
  report("silu bwd (2, 320, 32, 32)", rel_err(&dx_d, &dx), 1e-6);
  RUN2(0, nn_silu_backward(&gpu, &dy_d, &dy_d, &x_d, &e_));
  report("silu bwd dx = dy", rel_err(&dy_d, &dx), 1e-6);
  reset();
  int64_t gs[3] = {2, 1024, 2560}, ys[3] = {2, 1024, 1280};
  x = host_random("gb.x", 3, gs, 2);
  dy = host_random("gb.dy", 3, ys, 1);
  dx = host_empty(3, gs);
  x_d = to_dev(&x, 0);
  dy_d = to_dev(&dy, 0);
  dx_d = to_dev(&dx, 1);
  RUN2(nn_geglu_backward(&cpu, &dx, &dy, &x, &e_), nn_geglu_backward(&gpu, &dx_d, &dy_d, &x_d, &e_));
  report("geglu bwd (2, 1024, 2560)", rel_err(&dx_d, &dx), 1e-6);
  reset();
}

static void test_attention(void) {
  struct {
    int64_t B, N, M, H, D;
    int causal;
    const char *chunk_env, *name;
  } cases[] = {
    {2, 1024, 1024, 5, 64, 0, NULL, "attention bwd self N=M=1024 H=5 D=64"},
    {2, 1024, 77, 5, 64, 0, NULL, "attention bwd cross N=1024 M=77 H=5 D=64"},
    {1, 77, 77, 16, 64, 1, NULL, "attention bwd causal N=77 H=16 D=64"},
    {1, 256, 256, 1, 512, 0, NULL, "attention bwd one head D=512 (VAE)"},
    {2, 300, 77, 5, 64, 0, "15400", "attention bwd cross, 20-row chunks"},
    {1, 77, 77, 4, 32, 1, "2464", "attention bwd causal, 4-row chunks"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (cases[i].chunk_env) setenv("CMDS_NN_ATTN_SCORE_FLOATS", cases[i].chunk_env, 1);
    int64_t C = cases[i].H * cases[i].D, qs[3] = {cases[i].B, cases[i].N, C}, ks[3] = {cases[i].B, cases[i].M, C};
    nn_tensor q = host_random("ab.q", 3, qs, 1), k = host_random("ab.k", 3, ks, 1), v = host_random("ab.v", 3, ks, 1);
    nn_tensor dout = host_random("ab.do", 3, qs, 1), dq = host_empty(3, qs), dk = host_empty(3, ks), dv = host_empty(3, ks);
    nn_tensor q_d = to_dev(&q, 0), k_d = to_dev(&k, 0), v_d = to_dev(&v, 0), do_d = to_dev(&dout, 0);
    nn_tensor dq_d = to_dev(&dq, 1), dk_d = to_dev(&dk, 1), dv_d = to_dev(&dv, 1);
    RUN2(nn_attention_ex_backward(&cpu, &dq, &dk, &dv, &dout, &q, &k, &v, cases[i].H, cases[i].causal, &e_),
         nn_attention_ex_backward(&gpu, &dq_d, &dk_d, &dv_d, &do_d, &q_d, &k_d, &v_d, cases[i].H, cases[i].causal, &e_));
    char what[128];
    snprintf(what, sizeof what, "%s dq", cases[i].name);
    report(what, rel_err(&dq_d, &dq), 1e-5);
    snprintf(what, sizeof what, "%s dk", cases[i].name);
    report(what, rel_err(&dk_d, &dk), 1e-5);
    snprintf(what, sizeof what, "%s dv", cases[i].name);
    report(what, rel_err(&dv_d, &dv), 1e-5);
    unsetenv("CMDS_NN_ATTN_SCORE_FLOATS");
    reset();
  }
}

static void test_conv(void) {
  struct {
    int64_t B, Cin, H, W, Cout, k;
    int s, pt, pb, pl, pr, bias;
    const char *band_env, *name;
  } cases[] = {
    {2, 64, 32, 32, 64, 3, 1, 1, 1, 1, 1, 1, NULL, "conv bwd 3x3 same 64->64 at 32x32"},
    {2, 64, 32, 32, 64, 3, 2, 1, 1, 1, 1, 1, NULL, "conv bwd UNet down 3x3 s2 pad 1"},
    {1, 32, 33, 31, 32, 3, 2, 0, 1, 0, 1, 0, NULL, "conv bwd VAE down 3x3 s2 (0,1,0,1), odd"},
    {2, 128, 16, 16, 64, 1, 1, 0, 0, 0, 0, 1, NULL, "conv bwd 1x1 128->64 at 16x16"},
    {1, 16, 20, 18, 8, 3, 1, 1, 1, 1, 1, 1, "1", "conv bwd 3x3 same, 1-row bands"},
    {2, 8, 17, 15, 6, 5, 3, 2, 0, 1, 3, 1, "1", "conv bwd 5x5 s3 asym, 1-row bands"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (cases[i].band_env) setenv("CMDS_NN_CONV_BAND_FLOATS", cases[i].band_env, 1);
    int64_t k = cases[i].k, s = cases[i].s;
    int64_t Ho = (cases[i].H + cases[i].pt + cases[i].pb - k) / s + 1, Wo = (cases[i].W + cases[i].pl + cases[i].pr - k) / s + 1;
    int64_t xs[4] = {cases[i].B, cases[i].Cin, cases[i].H, cases[i].W}, ws[4] = {cases[i].Cout, cases[i].Cin, k, k};
    int64_t ys[4] = {cases[i].B, cases[i].Cout, Ho, Wo}, bs[1] = {cases[i].Cout};
    nn_tensor x = host_random("cb.x", 4, xs, 1), w = host_random("cb.w", 4, ws, 0.05), dy = host_random("cb.dy", 4, ys, 1);
    nn_tensor gw = host_random("cb.gw", 4, ws, 1), gb = host_random("cb.gb", 1, bs, 1), gx = host_empty(4, xs);
    nn_tensor x_d = to_dev(&x, 0), w_d = to_dev(&w, 0), dy_d = to_dev(&dy, 0), gx_d = to_dev(&gx, 1);
    nn_tensor gw_d = to_dev(&gw, 0), gb_d = to_dev(&gb, 0), gx2_d = to_dev(&gx, 1);
    int bias = cases[i].bias;
    RUN2(nn_conv2d_ex_backward(&cpu, &gx, &gw, bias ? &gb : NULL, &dy, &x, &w, (int)s, cases[i].pt, cases[i].pb,
                               cases[i].pl, cases[i].pr, &e_),
         nn_conv2d_ex_backward(&gpu, &gx_d, &gw_d, bias ? &gb_d : NULL, &dy_d, &x_d, &w_d, (int)s, cases[i].pt,
                               cases[i].pb, cases[i].pl, cases[i].pr, &e_));
    char what[128];
    snprintf(what, sizeof what, "%s dx", cases[i].name);
    report(what, rel_err(&gx_d, &gx), 1e-5);
    snprintf(what, sizeof what, "%s dW +=", cases[i].name);
    report(what, rel_err(&gw_d, &gw), 1e-5);
    if (bias) {
      snprintf(what, sizeof what, "%s db +=", cases[i].name);
      report(what, rel_err(&gb_d, &gb), 1e-5);
    }
    RUN2(0, nn_conv2d_ex_backward(&gpu, &gx2_d, NULL, NULL, &dy_d, &x_d, &w_d, (int)s, cases[i].pt, cases[i].pb,
                                  cases[i].pl, cases[i].pr, &e_));
    snprintf(what, sizeof what, "%s dx only", cases[i].name);
    report(what, rel_err(&gx2_d, &gx), 1e-5);
    unsetenv("CMDS_NN_CONV_BAND_FLOATS");
    reset();
  }
}

static void test_glue(void) {
  int64_t s4[4] = {2, 320, 32, 32}, s2[2] = {2, 320};
  nn_tensor x = host_random("gl.x", 4, s4, 1), y = host_empty(2, s2);
  nn_tensor x_d = to_dev(&x, 0), y_d = to_dev(&y, 1);
  RUN2(nn_sum_hw_forward(&cpu, &y, &x, &e_), nn_sum_hw_forward(&gpu, &y_d, &x_d, &e_));
  report("sum_hw (2, 320, 32, 32)", rel_err(&y_d, &y), 1e-6);
  int64_t sa[4] = {2, 120, 32, 32}, sb[4] = {2, 200, 32, 32};
  nn_tensor a = host_empty(4, sa), b = host_empty(4, sb), a_d = to_dev(&a, 1), b_d = to_dev(&b, 1);
  RUN2(nn_split_channels_forward(&cpu, &a, &b, &x, &e_), nn_split_channels_forward(&gpu, &a_d, &b_d, &x_d, &e_));
  report("split 320 -> 120 + 200, a", rel_err(&a_d, &a), 1e-7);
  report("split 320 -> 120 + 200, b", rel_err(&b_d, &b), 1e-7);
  nn_tensor b2_d = to_dev(&b, 1);
  RUN2(0, nn_split_channels_forward(&gpu, NULL, &b2_d, &x_d, &e_));
  report("split b only", rel_err(&b2_d, &b), 1e-7);
  nn_tensor t = host_random("gl.t", 4, s4, 1), t_d = to_dev(&t, 0), dp = host_empty(4, s4), dp_d = to_dev(&dp, 1);
  double lc = 0, lg = 0, sc = 0, sg = 0;
  RUN2(nn_mse_forward(&cpu, &lc, &dp, &x, &t, &e_), nn_mse_forward(&gpu, &lg, &dp_d, &x_d, &t_d, &e_));
  printf("  %-48s cpu %.12g gpu %.12g\n", "mse (2, 320, 32, 32)", lc, lg);
  CHECK(fabs(lc - lg) <= 1e-9 * fabs(lc), "mse: cpu %.15g gpu %.15g", lc, lg);
  report("mse dp", rel_err(&dp_d, &dp), 1e-6);
  RUN2(nn_sumsq_forward(&cpu, &sc, &x, &e_), nn_sumsq_forward(&gpu, &sg, &x_d, &e_));
  CHECK(fabs(sc - sg) <= 1e-9 * fabs(sc), "sumsq: cpu %.15g gpu %.15g", sc, sg);
  double sg2 = 0;
  RUN2(0, nn_sumsq_forward(&gpu, &sg2, &x_d, &e_));
  CHECK(sg2 == sg, "sumsq on the GPU differs between two runs: %.17g vs %.17g", sg, sg2);
  /* sumsq_many: sizes around the 8192-value chunk, x among them */
  int64_t sz[5][1] = {{1}, {8191}, {8192}, {8193}, {100003}};
  nn_tensor mh[6], md[6];
  const nn_tensor *lh[6], *ld[6];
  for (int i = 0; i < 5; i++) {
    char name[16];
    snprintf(name, sizeof name, "gl.m%d", i);
    mh[i] = host_random(name, 1, sz[i], 1), md[i] = to_dev(&mh[i], 0);
  }
  mh[5] = x, md[5] = x_d;
  for (int i = 0; i < 6; i++) lh[i] = &mh[i], ld[i] = &md[i];
  RUN2(nn_sumsq_many_forward(&cpu, &sc, lh, 6, &e_), nn_sumsq_many_forward(&gpu, &sg, ld, 6, &e_));
  printf("  %-48s cpu %.12g gpu %.12g\n", "sumsq_many (6 tensors, 1 .. 655360 values)", sc, sg);
  CHECK(fabs(sc - sg) <= 1e-9 * fabs(sc), "sumsq_many: cpu %.15g gpu %.15g", sc, sg);
  RUN2(0, nn_sumsq_many_forward(&gpu, &sg2, ld, 6, &e_));
  CHECK(sg2 == sg, "sumsq_many on the GPU differs between two runs: %.17g vs %.17g", sg, sg2);
  reset();
}

static void test_adamw(void) {
  int64_t s[2] = {320, 16};
  nn_tensor p = host_random("aw.p", 2, s, 1), m = host_random("aw.m0", 2, s, 0), v = host_random("aw.v0", 2, s, 0);
  nn_tensor p_d = to_dev(&p, 0), m_d = to_dev(&m, 0), v_d = to_dev(&v, 0);
  for (int step = 1; step <= 3; step++) {
    char name[16];
    snprintf(name, sizeof name, "aw.g%d", step);
    nn_tensor g = host_random(name, 2, s, 0.1), g_d = to_dev(&g, 0);
    RUN2(nn_adamw_update(&cpu, &p, &g, &m, &v, 1e-4f, 0.9f, 0.999f, 1e-8f, 1e-2f, step, &e_),
         nn_adamw_update(&gpu, &p_d, &g_d, &m_d, &v_d, 1e-4f, 0.9f, 0.999f, 1e-8f, 1e-2f, step, &e_));
  }
  report("adamw 3 steps p", rel_err(&p_d, &p), 1e-6);
  report("adamw 3 steps m", rel_err(&m_d, &m), 1e-6);
  report("adamw 3 steps v", rel_err(&v_d, &v), 1e-6);
  reset();
}

int main(void) {
  unsetenv("CMDS_NN_CONV_BAND_FLOATS");
  unsetenv("CMDS_NN_ATTN_SCORE_FLOATS");
  int rc = cuda_pair_setup((size_t)1 << 30, (size_t)256 << 20);
  if (rc) return rc;
  double t0 = cmds_now();
  test_linear();
  test_layernorm();
  test_gates();
  test_attention();
  test_conv();
  test_glue();
  test_adamw();
  printf("all training ops compared in %.1f s\n", cmds_now() - t0);
  cuda_pair_release();
  return CHECK_DONE();
}
