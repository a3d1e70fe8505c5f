/* test_unet_lora: the LoRA path of kernels/diffusion/unet against diffusers + peft + torch
 * autograd on the tiny SD-like UNets of tests/fixtures/diffusion_unet_lora
 * (gen_diffusion_unet_lora.py; the reference is float64 on the stored values):
 *   - unet_lora_attach: one adapter per to_q / to_k / to_v / to_out.0 of attn1 and attn2 of
 *     every transformer block, named and ordered as peft's named_modules(); A ~ N(0, 1/r) (std),
 *     B = 0, gradients 0, scale alpha / r;
 *   - unet_forward with the fixture's adapters = diffusers' output (per item: one t each);
 *   - unet_forward_train (batch 2 with two different t in case a) = the same output, and
 *     loss = mse(out, target) = torch's;
 *   - unet_backward: dL/dA, dL/dB of every adapter = torch autograd's in float64 (1e-4 of each
 *     tensor's largest value; or, for a tensor whose float32 gradient is ill-conditioned, twice
 *     torch's own float32 error there, torch32_rel.npy), accumulated by a second call (x2),
 *     zeroed by unet_lora_zero_grad;
 *   - case a: linear projections, r 4 alpha 4, 3 levels; case b: 1x1 conv projections, two
 *     transformer layers per block, r 4 alpha 8 (scale 2), 8 x 12;
 *   - sizes: the scratch sized by unet_train_workspace_bytes is enough and handed back; a
 *     smaller one, a size that does not halve, a backward without a forward or without
 *     adapters are refused with a message;
 *   - with --cuda: the same on the GPU, and its gradients equal the CPU's within the bound
 *     each meets against torch (exit 77 without). */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "difftest.h"
#include "npy.h"
#include "nn/tensor.h"
#include "safetensors.h"
#include "unet.h"

static const char *g_root;

typedef struct fixture {
  npy_array x, enc, target, out, loss, t, rel32;
  cmds_st_file lora, grads;
  char names[512][160];
  int n_names;
} fixture;

static int load_fixture(const char *c, fixture *f) {
  char p[PATH_MAX];
  const char *nm[7] = {"x", "enc", "target", "out", "loss", "t", "torch32_rel"};
  npy_array *dst[7] = {&f->x, &f->enc, &f->target, &f->out, &f->loss, &f->t, &f->rel32};
  cmds_error err = {0};
  for (int i = 0; i < 7; i++) {
    snprintf(p, sizeof p, "%s/%s/%s.npy", g_root, c, nm[i]);
    if (npy_load(p, dst[i])) { CHECK(0, "read %s", p); return 1; }
  }
  snprintf(p, sizeof p, "%s/%s/lora.safetensors", g_root, c);
  if (cmds_st_open(&f->lora, p, &err)) { CHECK(0, "%s", err.msg); return 1; }
  snprintf(p, sizeof p, "%s/%s/grads.safetensors", g_root, c);
  if (cmds_st_open(&f->grads, p, &err)) { CHECK(0, "%s", err.msg); return 1; }
  snprintf(p, sizeof p, "%s/%s/names.txt", g_root, c);
  FILE *fp = fopen(p, "r");
  if (!fp) { CHECK(0, "read %s", p); return 1; }
  f->n_names = 0;
  while (f->n_names < 512 && fgets(f->names[f->n_names], 160, fp)) {
    f->names[f->n_names][strcspn(f->names[f->n_names], "\n")] = 0;
    f->n_names++;
  }
  fclose(fp);
  return 0;
}

static void free_fixture(fixture *f) {
  npy_free(&f->x), npy_free(&f->enc), npy_free(&f->target), npy_free(&f->out), npy_free(&f->loss), npy_free(&f->t);
  npy_free(&f->rel32);
  cmds_st_close(&f->lora), cmds_st_close(&f->grads);
}

/* host copy of a (possibly device) tensor */
static float *to_host(const nn_tensor *t) {
  float *h = malloc(nn_tensor_bytes(t));
  nn_tensor hv = *t;
  hv.device = NN_CPU, hv.data = h;
  cmds_error err = {0};
  if (nn_tensor_copy(&hv, t, &err)) CHECK(0, "copy to host: %s", err.msg);
  return h;
}

static int set_from_st(nn_tensor *dst, const cmds_st_file *f, const char *name) {
  cmds_error err = {0};
  const cmds_st_tensor *t;
  int64_t shape[2] = {dst->shape[0], dst->shape[1]};
  if (cmds_st_get(f, name, CMDS_ST_F32, 2, shape, &t, &err)) { CHECK(0, "%s", err.msg); return 1; }
  nn_tensor hv = nn_tensor_view((void *)t->data, NN_F32, NN_CPU, shape[0], shape[1], -1, -1);
  return nn_tensor_copy(dst, &hv, &err);
}

/* max |got - want| / max |want| (difftest_rel_err on two float arrays) */
static double rel_err(const float *got, const float *want, int64_t n, int64_t *worst) {
  npy_array w = difftest_f32_array((float *)want, n);
  return difftest_rel_err(got, &w, n, worst);
}

/* The bound adapter i's dA (ab 0) or dB (ab 1) is held to: 1e-4 of the tensor's scale, or twice
 * torch's own float32 error on it (torch32_rel.npy) where that is larger. */
static double grad_bound(const fixture *f, int i, int ab) {
  return fmax(1e-4, 2.0 * ((const float *)f->rel32.data)[2 * i + ab]);
}

/* Compares every adapter's gradients with the fixture (float64 autograd) times `factor`:
 * max |diff| <= tol * max |want| per tensor, tol = 1e-4, or twice torch's own float32 error on
 * that tensor where that is larger (a gradient formed by cancellation is only as accurate in
 * float32 as its conditioning allows; the fixture measures it). Returns the worst error. */
static double check_grads(const unet_model *m, const fixture *f, double factor, const char *what) {
  double worst = 0;
  int loose = 0;
  const float *r32 = f->rel32.data;
  CHECK(f->rel32.count == 2 * (int64_t)m->lora->n, "torch32_rel.npy: %lld values for %d adapters",
        (long long)f->rel32.count, m->lora->n);
  if (f->rel32.count != 2 * (int64_t)m->lora->n) return 1;
  for (int i = 0; i < m->lora->n; i++)
    for (int ab = 0; ab < 2; ab++) {
      const nn_tensor *g = ab ? &m->lora->items[i].dB : &m->lora->items[i].dA;
      char nm[200];
      snprintf(nm, sizeof nm, "%s.lora_%c.weight", m->lora->names[i], ab ? 'B' : 'A');
      const cmds_st_tensor *t;
      cmds_error err = {0};
      int64_t shape[2] = {g->shape[0], g->shape[1]};
      if (cmds_st_get(&f->grads, nm, CMDS_ST_F32, 2, shape, &t, &err)) {
        CHECK(0, "%s", err.msg);
        continue;
      }
      int64_t n = shape[0] * shape[1], at = 0;
      float *want = malloc((size_t)n * sizeof(float)), *got = to_host(g);
      for (int64_t e = 0; e < n; e++) want[e] = (float)(factor * ((const float *)t->data)[e]);
      double r = rel_err(got, want, n, &at), tol = grad_bound(f, i, ab);
      if (tol > 1e-4 && r > 1e-4) {
        loose++;
        printf("  %s %s: %.3g of the tensor's scale (torch float32: %.3g)\n", what, nm, r, (double)r32[2 * i + ab]);
      }
      CHECK(r <= tol, "%s: grad %s: element %lld got %.8g want %.8g (%.3g of the tensor's scale, allowed %.3g)", what,
            nm, (long long)at, got[at], want[at], r, tol);
      worst = r > worst ? r : worst;
      free(want), free(got);
    }
  if (loose) printf("  %s: %d tensor(s) past 1e-4, within twice torch float32's own error\n", what, loose);
  return worst;
}

typedef struct run_result {
  float **dA, **dB; /* host copies of every gradient after one backward */
  int64_t *nA, *nB;
  double *tA, *tB; /* the bound each is held to against torch: 1e-4, or twice torch float32's error */
  int n;
} run_result;

static void run_case(const char *c, int rank, float alpha, nn_device dev, run_result *res) {
  fixture f;
  memset(&f, 0, sizeof f);
  if (load_fixture(c, &f)) return;
  char root[PATH_MAX];
  snprintf(root, sizeof root, "%s/%s", g_root, c);
  cmds_error err = {0};
  unet_model m;
  int rc = unet_load(&m, root, "unet", dev, &err);
  CHECK(rc == 0, "load %s: %s", root, err.msg);
  if (rc) {
    free_fixture(&f);
    return;
  }
  const char *devn = nn_device_name(dev);

  /* attach: names, order, init */
  rc = unet_lora_attach(&m, rank, alpha, 7, &err);
  CHECK(rc == 0, "attach: %s", err.msg);
  if (rc) {
    unet_free(&m), free_fixture(&f);
    return;
  }
  unet_lora_set *L = m.lora;
  CHECK(L->n == f.n_names, "%s: %d adapters, peft has %d", c, L->n, f.n_names);
  int same = L->n == f.n_names;
  for (int i = 0; same && i < L->n; i++)
    if (strcmp(L->names[i], f.names[i]) != 0) {
      CHECK(0, "%s: adapter %d is %s, peft's is %s", c, i, L->names[i], f.names[i]);
      same = 0;
    }
  CHECK(L->rank == rank && L->alpha == alpha && fabsf(L->items[0].scale - alpha / (float)rank) < 1e-7f, "rank/scale");
  {
    double s = 0, s2 = 0, bmax = 0, gmax = 0;
    int64_t n = 0;
    for (int i = 0; i < L->n; i++) {
      float *a = to_host(&L->items[i].A), *b = to_host(&L->items[i].B), *da = to_host(&L->items[i].dA),
            *db = to_host(&L->items[i].dB);
      int64_t na = nn_tensor_numel(&L->items[i].A), nb = nn_tensor_numel(&L->items[i].B);
      for (int64_t e = 0; e < na; e++) s += a[e], s2 += (double)a[e] * a[e], n++, gmax = fmax(gmax, fabs(da[e]));
      for (int64_t e = 0; e < nb; e++) bmax = fmax(bmax, fabs(b[e])), gmax = fmax(gmax, fabs(db[e]));
      CHECK(L->items[i].A.shape[0] == rank && L->items[i].B.shape[1] == rank, "%s shapes", L->names[i]);
      free(a), free(b), free(da), free(db);
    }
    double mean = s / (double)n, sd = sqrt(s2 / (double)n - mean * mean);
    printf("%s [%s]: %d adapters, A mean %.4f std %.4f (want 0, %.4f over %lld), max |B| %g, max |grad| %g\n", c, devn,
           L->n, mean, sd, 1.0 / rank, (long long)n, bmax, gmax);
    CHECK(fabs(mean) < 4.0 / rank / sqrt((double)n) && fabs(sd * rank - 1) < 0.1 && bmax == 0 && gmax == 0,
          "init: A ~ N(0, 1/r), B = 0, grads 0");
  }
  /* the fixture's adapters */
  for (int i = 0; i < L->n && same; i++) {
    char nm[200];
    snprintf(nm, sizeof nm, "%s.lora_A.weight", L->names[i]);
    set_from_st(&L->items[i].A, &f.lora, nm);
    snprintf(nm, sizeof nm, "%s.lora_B.weight", L->names[i]);
    set_from_st(&L->items[i].B, &f.lora, nm);
  }
  CHECK(unet_lora_find(&m, f.names[3]) == 3 && unet_lora_find(&m, "nope") == -1, "unet_lora_find");

  int64_t B = f.x.shape[0], C = f.x.shape[1], h = f.x.shape[2], w = f.x.shape[3], S = f.enc.shape[1],
          X = f.enc.shape[2], Co = f.out.shape[1];
  const double *tt = f.t.data;
  int64_t nout = f.out.count;
  nn_arena io;
  nn_arena_init(&io, dev, 4 * (size_t)(f.x.count + f.enc.count + 2 * nout) * sizeof(float) + 8192, &err);
  nn_tensor tx, te, to, tdo, t1x, t1e, t1o;
  nn_tensor_alloc(&tx, &io, NN_F32, 4, (int64_t[]){B, C, h, w}, &err);
  nn_tensor_alloc(&te, &io, NN_F32, 3, (int64_t[]){B, S, X}, &err);
  nn_tensor_alloc(&to, &io, NN_F32, 4, (int64_t[]){B, Co, h, w}, &err);
  nn_tensor_alloc(&tdo, &io, NN_F32, 4, (int64_t[]){B, Co, h, w}, &err);
  nn_tensor_alloc(&t1x, &io, NN_F32, 4, (int64_t[]){1, C, h, w}, &err);
  nn_tensor_alloc(&t1e, &io, NN_F32, 3, (int64_t[]){1, S, X}, &err);
  nn_tensor_alloc(&t1o, &io, NN_F32, 4, (int64_t[]){1, Co, h, w}, &err);
  nn_tensor hx = nn_tensor_view(f.x.data, NN_F32, NN_CPU, B, C, h, w);
  nn_tensor he = nn_tensor_view(f.enc.data, NN_F32, NN_CPU, B, S, X, -1);
  nn_tensor_copy(&tx, &hx, &err);
  nn_tensor_copy(&te, &he, &err);
  const float *want = f.out.data;

  /* inference forward with the adapters, item by item (one t each) */
  {
    size_t ws = unet_workspace_bytes(&m, 1, h, w, S);
    nn_arena scratch;
    nn_ctx ctx;
    nn_arena_init(&scratch, dev, ws, &err);
    nn_ctx_init(&ctx, dev, &scratch, NULL, 0, &err);
    double worst = 0;
    for (int64_t b = 0; b < B; b++) {
      nn_tensor hx1 = nn_tensor_view((float *)f.x.data + b * C * h * w, NN_F32, NN_CPU, 1, C, h, w);
      nn_tensor he1 = nn_tensor_view((float *)f.enc.data + b * S * X, NN_F32, NN_CPU, 1, S, X, -1);
      nn_tensor_copy(&t1x, &hx1, &err);
      nn_tensor_copy(&t1e, &he1, &err);
      rc = unet_forward(&m, &ctx, &t1o, &t1x, tt[b], &t1e, &err);
      CHECK(rc == 0, "forward: %s", err.msg);
      if (rc) break;
      float *got = to_host(&t1o);
      int64_t at = 0;
      double r = rel_err(got, want + b * Co * h * w, Co * h * w, &at);
      worst = r > worst ? r : worst;
      CHECK(r <= 1e-4, "%s forward item %lld: element %lld got %.8g want %.8g (%.3g)", c, (long long)b, (long long)at,
            got[at], want[b * Co * h * w + at], r);
      free(got);
    }
    printf("%s [%s]: unet_forward with LoRA vs diffusers+peft: %.3g of the output's scale\n", c, devn, worst);
    nn_ctx_free(&ctx);
    nn_arena_free(&scratch);
  }

  /* training forward + backward */
  size_t ws = unet_train_workspace_bytes(&m, B, h, w, S), tb = unet_tape_bytes(&m, B, h, w, S);
  printf("%s [%s]: tape %zu bytes, training scratch %zu bytes, inference scratch %zu bytes\n", c, devn, tb, ws,
         unet_workspace_bytes(&m, B, h, w, S));
  nn_arena scratch;
  nn_ctx ctx;
  nn_arena_init(&scratch, dev, ws, &err);
  nn_ctx_init(&ctx, dev, &scratch, NULL, 0, &err);
  unet_tape *tape = unet_tape_new(&m, B, h, w, S, &err);
  CHECK(tape != NULL, "tape: %s", err.msg);
  rc = unet_backward(&m, &ctx, tape, &tdo, &err);
  CHECK(rc == CMDS_EINPUT && strstr(err.msg, "unet_forward_train"), "backward before a forward: %d %s", rc, err.msg);
  rc = unet_forward_train(&m, &ctx, tape, &to, &tx, tt, &te, &err);
  CHECK(rc == 0, "forward_train: %s", err.msg);
  if (!rc) {
    float *got = to_host(&to);
    int64_t at = 0;
    double r = rel_err(got, want, nout, &at);
    CHECK(r <= 1e-4, "%s forward_train: element %lld got %.8g want %.8g (%.3g)", c, (long long)at, got[at], want[at], r);
    /* loss and dL/dout = 2 (out - target) / numel */
    const float *tg = f.target.data;
    double loss = 0;
    float *dout = malloc((size_t)nout * sizeof(float));
    for (int64_t i = 0; i < nout; i++) {
      double d = (double)got[i] - tg[i];
      loss += d * d;
      dout[i] = (float)(2.0 * d / (double)nout);
    }
    loss /= (double)nout;
    double wl = ((const float *)f.loss.data)[0];
    printf("%s [%s]: forward_train (t", c, devn);
    for (int64_t b = 0; b < B; b++) printf(" %g", tt[b]);
    printf(") %.3g of the output's scale; loss %.8f vs torch %.8f\n", r, loss, wl);
    CHECK(fabs(loss - wl) <= 1e-5 * fabs(wl), "loss %.8g want %.8g", loss, wl);
    nn_tensor hd = nn_tensor_view(dout, NN_F32, NN_CPU, B, Co, h, w);
    nn_tensor_copy(&tdo, &hd, &err);
    free(got), free(dout);

    rc = unet_backward(&m, &ctx, tape, &tdo, &err);
    CHECK(rc == 0, "backward: %s", err.msg);
    CHECK(scratch.peak_bytes <= ws && scratch.used_bytes == 0, "scratch peak %zu of %zu, %zu in use",
          scratch.peak_bytes, ws, scratch.used_bytes);
    if (!rc) {
      double e1 = check_grads(&m, &f, 1.0, c);
      printf("%s [%s]: dL/dA, dL/dB of %d adapters vs torch autograd: worst %.3g of a tensor's scale\n", c, devn, L->n,
             e1);
      if (res) {
        res->n = L->n;
        res->dA = calloc((size_t)L->n, sizeof(float *));
        res->dB = calloc((size_t)L->n, sizeof(float *));
        res->nA = calloc((size_t)L->n, sizeof(int64_t));
        res->nB = calloc((size_t)L->n, sizeof(int64_t));
        res->tA = calloc((size_t)L->n, sizeof(double));
        res->tB = calloc((size_t)L->n, sizeof(double));
        for (int i = 0; i < L->n && f.rel32.count == 2 * (int64_t)L->n; i++) {
          res->tA[i] = grad_bound(&f, i, 0);
          res->tB[i] = grad_bound(&f, i, 1);
        }
        for (int i = 0; i < L->n; i++) {
          res->dA[i] = to_host(&L->items[i].dA), res->dB[i] = to_host(&L->items[i].dB);
          res->nA[i] = nn_tensor_numel(&L->items[i].dA), res->nB[i] = nn_tensor_numel(&L->items[i].dB);
        }
      }
      /* a second backward adds */
      rc = unet_backward(&m, &ctx, tape, &tdo, &err);
      CHECK(rc == 0, "second backward: %s", err.msg);
      if (!rc) check_grads(&m, &f, 2.0, "accumulated");
      unet_lora_zero_grad(&m);
      float *z = to_host(&L->items[L->n - 1].dB);
      CHECK(z[0] == 0 && z[nn_tensor_numel(&L->items[L->n - 1].dB) - 1] == 0, "zero_grad");
      free(z);
    }
  }

  /* refusals */
  {
    /* a scratch arena too small for the backward (half) and for the forward (8 KiB) */
    nn_arena small, tiny;
    nn_ctx sctx, tctx;
    nn_arena_init(&small, dev, ws / 2, &err);
    nn_ctx_init(&sctx, dev, &small, NULL, 0, &err);
    rc = unet_backward(&m, &sctx, tape, &tdo, &err);
    CHECK(rc == CMDS_ENOMEM && strstr(err.msg, "unet_train_workspace_bytes") && small.peak_bytes == 0,
          "small scratch for the backward: %d %s", rc, err.msg);
    nn_arena_init(&tiny, dev, 8192, &err);
    nn_ctx_init(&tctx, dev, &tiny, NULL, 0, &err);
    rc = unet_forward_train(&m, &tctx, tape, &to, &tx, tt, &te, &err);
    CHECK(rc == CMDS_ENOMEM && strstr(err.msg, "unet_train_workspace_bytes") && tiny.peak_bytes == 0,
          "small scratch for the forward: %d %s", rc, err.msg);
    nn_ctx_free(&sctx), nn_ctx_free(&tctx);
    nn_arena_free(&small), nn_arena_free(&tiny);
    /* a tape made for a smaller batch */
    if (B > 1) {
      unet_tape *t1 = unet_tape_new(&m, 1, h, w, S, &err);
      rc = unet_forward_train(&m, &ctx, t1, &to, &tx, tt, &te, &err);
      CHECK(rc == CMDS_ENOMEM && strstr(err.msg, "unet_tape_new"), "tape for B 1: %d %s", rc, err.msg);
      unet_tape_free(t1);
    }
    unet_tape *odd = unet_tape_new(&m, B, h + 1, w, S, &err);
    CHECK(odd == NULL && strstr(err.msg, "divisible"), "odd size: %s", err.msg);
    unet_tape_free(odd);
    unet_lora_detach(&m);
    CHECK(m.lora == NULL && m.down[0].attns[0].blocks[0].attn1.to_q.lora == NULL, "detach");
    rc = unet_backward(&m, &ctx, tape, &tdo, &err);
    CHECK(rc == CMDS_EINPUT && strstr(err.msg, "no LoRA"), "backward without adapters: %d %s", rc, err.msg);
  }
  unet_tape_free(tape);
  nn_ctx_free(&ctx);
  nn_arena_free(&scratch);
  nn_arena_free(&io);
  unet_free(&m);
  free_fixture(&f);
}

int main(int argc, char **argv) {
  int cuda = 0, rc = difftest_args(argc, argv, &g_root, &cuda);
  if (rc >= 0) return rc;
  if (cuda) {
    const char *cs[2] = {"a", "b"};
    float al[2] = {4, 8};
    for (int k = 0; k < 2; k++) {
      run_result cpu = {0}, gpu = {0};
      run_case(cs[k], 4, al[k], NN_CPU, &cpu);
      run_case(cs[k], 4, al[k], NN_CUDA, &gpu);
      CHECK(cpu.n == gpu.n && cpu.n > 0, "%s: both runs", cs[k]);
      double worst = 0;
      for (int i = 0; i < cpu.n && cpu.n == gpu.n; i++) {
        int64_t at = 0;
        double ra = rel_err(gpu.dA[i], cpu.dA[i], cpu.nA[i], &at), rb = rel_err(gpu.dB[i], cpu.dB[i], cpu.nB[i], &at);
        /* the bound each path meets against torch: a gradient torch float32 itself gets only to
         * 4e-4 (ill-conditioned) may differ that much between two float32 summation orders */
        CHECK(ra <= cpu.tA[i] && rb <= cpu.tB[i], "%s adapter %d: GPU vs CPU gradients %.3g / %.3g (allowed %.3g / %.3g)",
              cs[k], i, ra, rb, cpu.tA[i], cpu.tB[i]);
        worst = fmax(worst, fmax(ra, rb));
        free(cpu.dA[i]), free(gpu.dA[i]), free(cpu.dB[i]), free(gpu.dB[i]);
      }
      printf("%s: GPU vs CPU dL/dA, dL/dB: worst %.3g of a tensor's scale\n", cs[k], worst);
      free(cpu.nA), free(cpu.nB), free(gpu.nA), free(gpu.nB);
      free(cpu.tA), free(cpu.tB), free(gpu.tA), free(gpu.tB);
      free(cpu.dA), free(cpu.dB), free(gpu.dA), free(gpu.dB);
    }
    return CHECK_DONE();
  }
  run_case("a", 4, 4, NN_CPU, NULL);
  run_case("b", 4, 8, NN_CPU, NULL);
  return CHECK_DONE();
}
