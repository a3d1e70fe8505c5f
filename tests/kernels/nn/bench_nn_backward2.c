/* bench_nn_backward2: times the training ops of the LoRA fine-tune at the sizes of SD 2.1's UNet
 * at 512 x 512 (latent 64 x 64, batch 1): the first down block's self-attention (4096 tokens,
 * 5 heads of 64) and cross-attention (77 text tokens), its 3x3 convs (320 channels) with and
 * without the weight gradient, the stride-2 downsampler, a 320 -> 320 projection, layer norm,
 * GEGLU 2560 -> 1280 and SiLU. The attentions also with the forward's log-sum-exp kept
 * (attention_*_bwd_lse, CPU; PyTorch's SDPA backward always has it: the same torch time). Also the
 * attention forward at 4096 tokens and at Marigold's 9216 (latent 96 x 96 at 768 px):
 * attention_{4096,9216}_fwd, the 3x3 conv's forward (conv3x3_fwd), and on the CPU the attention through the OpenBLAS GEMM path
 * (attention_*_fwd_gemm, CMDS_NN_ATTN_KERNEL=blas) beside the key-tiled default; PyTorch's time is
 * its SDPA forward under both names. One line per op: "<op> <min ms> ms (median <ms>)" over REPS runs
 * after one warm-up (the minimum is the steadier figure on a shared machine);
 * bench_nn_backward2.sh runs PyTorch's autograd on the same ops and prints the ratios.
 *   bench_nn_backward2 cpu|cuda REPS [OP_PREFIX]   (only the ops whose names start with OP_PREFIX) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds_mpi.h"
#include "nn.h"
#include "rng.h"

static nn_arena data, scratch;
static nn_ctx ctx;

static void die_on(int rc, const cmds_error *err) {
  if (rc) {
    fprintf(stderr, "%s\n", err->msg);
    exit(1);
  }
}

static nn_tensor tensor(int ndim, const int64_t *shape, uint64_t seed) {
  cmds_error err = {0};
  nn_tensor t, h;
  die_on(nn_tensor_alloc(&t, &data, NN_F32, ndim, shape, &err), &err);
  float *p = malloc(nn_tensor_bytes(&t));
  cmds_rng r;
  cmds_rng_seed(&r, seed);
  for (int64_t i = 0; i < nn_tensor_numel(&t); i++) p[i] = (float)(cmds_rng_normal(&r) * 0.5);
  h = t;
  h.device = NN_CPU;
  h.data = p;
  die_on(nn_tensor_copy(&t, &h, &err), &err);
  free(p);
  return t;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef int (*op_fn)(void *);

static const char *only = ""; /* OP_PREFIX */

static void timeit(const char *name, op_fn fn, void *arg, int reps) {
  cmds_error err = {0};
  if (strncmp(name, only, strlen(only))) return;
  double t[64];
  if (reps > 64) reps = 64;
  for (int r = -1; r < reps; r++) {
    double t0 = cmds_now();
    int rc = fn(arg);
    die_on(nn_ctx_sync(&ctx, &err), &err);
    if (rc) {
      fprintf(stderr, "%s failed\n", name);
      exit(1);
    }
    if (r >= 0) t[r] = cmds_now() - t0;
  }
  qsort(t, (size_t)reps, sizeof t[0], cmp_d);
  double med = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
  printf("%-28s %10.3f ms (median %.3f)\n", name, t[0] * 1e3, med * 1e3);
  fflush(stdout);
}

typedef struct {
  nn_tensor q, k, v, dout, dq, dk, dv;
  int64_t heads;
  nn_tensor *o, *lse; /* the forward's output and log-sum-exp (the _lse ops), or NULL */
} attn_args;
static int run_attn(void *p) {
  attn_args *a = p;
  cmds_error err = {0};
  int rc = nn_attention_ex_backward_lse(&ctx, &a->dq, &a->dk, &a->dv, &a->dout, &a->q, &a->k, &a->v, a->o, a->lse,
                                        a->heads, 0, &err);
  if (rc) fprintf(stderr, "%s\n", err.msg);
  return rc;
}

typedef struct {
  nn_tensor q, k, v, o;
  int64_t heads;
  int gemm; /* the CPU's OpenBLAS path (CMDS_NN_ATTN_KERNEL=blas) */
} fwd_args;
static int run_attn_fwd(void *p) {
  fwd_args *a = p;
  cmds_error err = {0};
  if (a->gemm) setenv("CMDS_NN_ATTN_KERNEL", "blas", 1);
  int rc = nn_attention_ex_forward(&ctx, &a->o, &a->q, &a->k, &a->v, a->heads, 0, &err);
  if (a->gemm) unsetenv("CMDS_NN_ATTN_KERNEL");
  if (rc) fprintf(stderr, "%s\n", err.msg);
  return rc;
}

typedef struct {
  nn_tensor x, w, dy, dx, dw;
  int with_dw, s, pad;
} conv_args;
static int run_conv_fwd(void *p) {
  conv_args *a = p;
  cmds_error err = {0};
  int rc = nn_conv2d_ex_forward(&ctx, &a->dy, &a->x, &a->w, NULL, a->s, a->pad, a->pad, a->pad, a->pad, &err);
  if (rc) fprintf(stderr, "%s\n", err.msg);
  return rc;
}
static int run_conv(void *p) {
  conv_args *a = p;
  cmds_error err = {0};
  int rc = nn_conv2d_ex_backward(&ctx, &a->dx, a->with_dw ? &a->dw : NULL, NULL, &a->dy, &a->x, &a->w, a->s, a->pad,
                                 a->pad, a->pad, a->pad, &err);
  if (rc) fprintf(stderr, "%s\n", err.msg);
  return rc;
}

typedef struct {
  nn_tensor x, w, dy, dx, dw, db, g, dg, dbt;
  int kind; /* 0 linear dx, 1 linear dx + dW + db, 2 layernorm, 3 geglu, 4 silu */
} misc_args;
static int run_misc(void *p) {
  misc_args *a = p;
  cmds_error err = {0};
  int rc = 0;
  switch (a->kind) {
    case 0: rc = nn_linear_backward(&ctx, &a->dx, NULL, NULL, &a->dy, &a->x, &a->w, &err); break;
    case 1: rc = nn_linear_backward(&ctx, &a->dx, &a->dw, &a->db, &a->dy, &a->x, &a->w, &err); break;
    case 2: rc = nn_layernorm_backward(&ctx, &a->dx, &a->dg, &a->dbt, &a->dy, &a->x, &a->g, 1e-5f, &err); break;
    case 3: rc = nn_geglu_backward(&ctx, &a->dx, &a->dy, &a->x, &err); break;
    default: rc = nn_silu_backward(&ctx, &a->dx, &a->dy, &a->x, &err); break;
  }
  if (rc) fprintf(stderr, "%s\n", err.msg);
  return rc;
}

int main(int argc, char **argv) {
  if ((argc != 3 && argc != 4) || (strcmp(argv[1], "cpu") && strcmp(argv[1], "cuda"))) {
    fprintf(stderr, "usage: %s cpu|cuda REPS [OP_PREFIX]\n", argv[0]);
    return 2;
  }
  nn_device d = strcmp(argv[1], "cpu") ? NN_CUDA : NN_CPU;
  int reps = atoi(argv[2]);
  if (argc == 4) only = argv[3];
  if (reps < 1) reps = 1;
  if (d == NN_CUDA && !nn_cuda_available()) {
    printf("no CUDA backend or no GPU: skipped\n");
    return 77;
  }
  cmds_error err = {0};
  die_on(nn_arena_init(&data, d, (size_t)1 << 30, &err), &err);
  die_on(nn_arena_init(&scratch, d, (size_t)512 << 20, &err), &err);
  die_on(nn_ctx_init(&ctx, d, &scratch, NULL, 0, &err), &err);
  char desc[256];
  printf("device: %s\n", nn_device_describe(d, desc, sizeof desc));

  const int64_t N = 4096, C = 320, H = 5;
  for (int cross = 0; cross < 2; cross++) {
    int64_t M = cross ? 77 : N, qs[3] = {1, N, C}, ks[3] = {1, M, C};
    attn_args a = {tensor(3, qs, 1), tensor(3, ks, 2), tensor(3, ks, 3), tensor(3, qs, 4), tensor(3, qs, 5),
                   tensor(3, ks, 6), tensor(3, ks, 7), H, NULL, NULL};
    timeit(cross ? "attention_cross_bwd" : "attention_self_bwd", run_attn, &a, reps);
    if (d == NN_CPU) { /* with the forward's o and log-sum-exp kept (the UNet tape's CPU path) */
      int64_t ls[3] = {1, H, N};
      nn_tensor o = tensor(3, qs, 8), lse = tensor(3, ls, 9);
      die_on(nn_attention_ex_forward_lse(&ctx, &o, &lse, &a.q, &a.k, &a.v, H, 0, &err), &err);
      a.o = &o;
      a.lse = &lse;
      timeit(cross ? "attention_cross_bwd_lse" : "attention_self_bwd_lse", run_attn, &a, reps);
    }
    nn_arena_reset(&data);
  }
  for (int big = 0; big < 2; big++) { /* the forward: SD at 512 (4096 tokens), Marigold at 768 (9216) */
    int64_t T = big ? 9216 : N, s3[3] = {1, T, C};
    fwd_args a = {tensor(3, s3, 1), tensor(3, s3, 2), tensor(3, s3, 3), tensor(3, s3, 4), H, 0};
    timeit(big ? "attention_9216_fwd" : "attention_4096_fwd", run_attn_fwd, &a, reps);
    if (d == NN_CPU) {
      a.gemm = 1;
      timeit(big ? "attention_9216_fwd_gemm" : "attention_4096_fwd_gemm", run_attn_fwd, &a, reps);
    }
    nn_arena_reset(&data);
  }
  for (int v = 0; v < 3; v++) {
    int64_t xs[4] = {1, C, 64, 64}, ws[4] = {C, C, 3, 3}, ys[4] = {1, C, v == 2 ? 32 : 64, v == 2 ? 32 : 64};
    conv_args a = {tensor(4, xs, 8), tensor(4, ws, 9), tensor(4, ys, 10), tensor(4, xs, 11), tensor(4, ws, 12),
                   v == 1, v == 2 ? 2 : 1, 1};
    timeit(v == 0 ? "conv3x3_bwd_dx" : v == 1 ? "conv3x3_bwd_dx_dw" : "conv3x3_s2_bwd_dx", run_conv, &a, reps);
    if (v == 0) timeit("conv3x3_fwd", run_conv_fwd, &a, reps);
    nn_arena_reset(&data);
  }
  const char *names[] = {"linear_bwd_dx", "linear_bwd_dx_dw_db", "layernorm_bwd", "geglu_bwd", "silu_bwd"};
  for (int kind = 0; kind < 5; kind++) {
    int64_t xs[2] = {N, kind == 3 ? 2560 : C}, ws[2] = {C, C}, ys[2] = {N, kind == 3 ? 1280 : C}, cs[1] = {C};
    misc_args a = {tensor(2, xs, 13), tensor(2, ws, 14), tensor(2, ys, 15), tensor(2, xs, 16), tensor(2, ws, 17),
                   tensor(1, cs, 18), tensor(1, cs, 19), tensor(1, cs, 20), tensor(1, cs, 21), kind};
    if (kind == 4) { /* SiLU on (1, 320, 64, 64) */
      int64_t s4[4] = {1, C, 64, 64};
      a.x = tensor(4, s4, 22);
      a.dy = tensor(4, s4, 23);
      a.dx = tensor(4, s4, 24);
    }
    timeit(names[kind], run_misc, &a, reps);
    nn_arena_reset(&data);
  }
  nn_ctx_free(&ctx);
  nn_arena_free(&data);
  nn_arena_free(&scratch);
  return 0;
}
