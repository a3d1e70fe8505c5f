/* test_nn_cuda: every nn op on the GPU against the CPU path (the reference the unit
 * tests pin to PyTorch), on fresh random inputs at the sizes the pipeline uses (ViT-B/8
 * attention: 785 tokens, 12 heads of 64; mapper convs on 28 x 28). GPU outputs are
 * poisoned with NaN before each run, so an unwritten value fails. Pass: ||gpu - cpu|| /
 * ||cpu|| < 1e-5 in fp32; the TF32 GEMM (ctx.allow_tf32) < 2e-3 (TF32 lands near 3e-4).
 * Exits 77 (skip) when the build has no CUDA or no GPU is visible.
 *   test_nn_cuda */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cmds_mpi.h"
#include "nn.h"
#include "rng.h"

static nn_arena host, dev, host_scratch, dev_scratch;
static nn_ctx cpu, gpu, gpu_tf32;


static void die_on(int rc, const cmds_error *err) {
  if (rc) {
    fprintf(stderr, "%s\n", err->msg);
    exit(1);
  }
}

/* A host tensor of N(0,1) * scale values keyed by the case name (never by rank). */
static nn_tensor host_random(const char *name, int ndim, const int64_t *shape, double scale) {
  cmds_error err = {0};
  nn_tensor t;
  die_on(nn_tensor_alloc(&t, &host, NN_F32, ndim, shape, &err), &err);
  cmds_rng r;
  cmds_rng_seed(&r, cmds_hash_str(name));
  float *p = t.data;
  for (int64_t i = 0; i < nn_tensor_numel(&t); i++) p[i] = (float)(cmds_rng_normal(&r) * scale);
  return t;
}

static nn_tensor host_empty(int ndim, const int64_t *shape) {
  cmds_error err = {0};
  nn_tensor t;
  die_on(nn_tensor_alloc(&t, &host, NN_F32, ndim, shape, &err), &err);
  return t;
}

/* A device copy of a host tensor (or of its shape, NaN-filled when `poison`). */
static nn_tensor to_dev(const nn_tensor *h, int poison) {
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
static double rel_err(const nn_tensor *d, const nn_tensor *ref) {
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

static void report(const char *op, double err, double tol) {
  printf("  %-34s rel L2 err %.3e (tol %.0e)\n", op, err, tol);
  CHECK(err < tol, "%s: relative error %.3e above %.0e", op, err, tol);
}

static void reset(void) {
  nn_arena_reset(&host);
  nn_arena_reset(&dev);
}

#define RUN2(call_cpu, call_gpu)                                \
  do {                                                          \
    cmds_error e_ = {0};                                        \
    int rc_ = (call_cpu);                                       \
    CHECK(rc_ == 0, "cpu: %s", e_.msg);                         \
    rc_ = (call_gpu);                                           \
    CHECK(rc_ == 0, "gpu: %s", e_.msg);                         \
  } while (0)

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

int main(void) {
  if (!nn_cuda_available()) {
    printf("no CUDA backend or no GPU: skipped\n");
    return 77;
  }
  cmds_error err = {0};
  int rc = nn_arena_init(&host, NN_CPU, (size_t)1 << 30, &err);
  if (!rc) rc = nn_arena_init(&host_scratch, NN_CPU, (size_t)256 << 20, &err);
  if (!rc) rc = nn_arena_init(&dev, NN_CUDA, (size_t)1 << 30, &err);
  if (!rc) rc = nn_arena_init(&dev_scratch, NN_CUDA, (size_t)256 << 20, &err);
  if (!rc) rc = nn_ctx_init(&cpu, NN_CPU, &host_scratch, NULL, 0, &err);
  if (!rc) rc = nn_ctx_init(&gpu, NN_CUDA, &dev_scratch, NULL, 0, &err);
  if (!rc) rc = nn_ctx_init(&gpu_tf32, NN_CUDA, &dev_scratch, NULL, 1, &err);
  if (rc) {
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
  printf("all ops compared in %.1f s\n", cmds_now() - t0);
  nn_ctx_free(&cpu);
  nn_ctx_free(&gpu);
  nn_ctx_free(&gpu_tf32);
  nn_arena_free(&host);
  nn_arena_free(&host_scratch);
  nn_arena_free(&dev);
  nn_arena_free(&dev_scratch);
  return CHECK_DONE();
}
