/* test_vit_bf16_ops: the CUDA kernels of the ViT's bf16 path against the f32 CPU path, on
 * fresh random inputs rounded to bf16 first (so the reference sees the same operands):
 * flash attention (ViT-B/8's 785 tokens x 12 heads of 64, odd sizes, every supported head
 * dim: the multiples of 16 up to 128, peaky and flat softmaxes, q/k/v as column blocks of one
 * fused qkv matrix), the cuBLASLt bf16 GEMM (bf16 out with bias; f32 out accumulated onto y, the residual form),
 * LayerNorm f32 -> bf16, in-place bf16 GELU, and the f32 embedding / token gather kernels.
 * Outputs are poisoned with NaN before each run, so an unwritten value fails. Bounds:
 * ||gpu - cpu|| / ||cpu|| < 1e-2 for bf16 results (bf16 operands land between 1e-3 and
 * 1e-2), 1e-6 for the f32 copies. Exits 77 without a GPU. In the CUDA emulation
 * (tests/cuda_emu) the flash attention runs on the emulation's ldmatrix, mma.sync and cp.async.
 *   test_vit_bf16_ops */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "nn.h"
#include "nn/vit_bf16.h"
#include "rng.h"

static nn_ctx gpu;
static uint64_t seed = 1;

static void die_on(int rc, const cmds_error *err) {
  if (rc) {
    fprintf(stderr, "%s\n", err->msg);
    exit(1);
  }
}

/* n values N(0, scale^2), rounded through bf16 when `round`. */
static float *host_random(int64_t n, double scale, int round) {
  float *p = malloc(sizeof(float) * (size_t)n);
  cmds_rng r;
  cmds_rng_seed(&r, seed++ * 7919);
  for (int64_t i = 0; i < n; i++) {
    p[i] = (float)(cmds_rng_normal(&r) * scale);
    if (round) p[i] = nn_bf16_to_f32(nn_f32_to_bf16(p[i]));
  }
  return p;
}

static void *dev_alloc(size_t bytes) {
  void *d = NULL;
  cmds_error err = {0};
  die_on(nn_cuda_malloc(&d, bytes, &err), &err);
  return d;
}

static void *dev_f32(const float *h, int64_t n) {
  cmds_error err = {0};
  void *d = dev_alloc(sizeof(float) * (size_t)n);
  die_on(nn_cuda_memcpy(d, h, sizeof(float) * (size_t)n, &err), &err);
  return d;
}

static uint16_t *dev_bf16(const float *h, int64_t n) {
  cmds_error err = {0};
  uint16_t *u = malloc(2 * (size_t)n);
  for (int64_t i = 0; i < n; i++) u[i] = nn_f32_to_bf16(h[i]);
  void *d = dev_alloc(2 * (size_t)n);
  die_on(nn_cuda_memcpy(d, u, 2 * (size_t)n, &err), &err);
  free(u);
  return d;
}

/* NaN everywhere (0xffff is a bf16 NaN; 0xffffffff an f32 NaN). */
static void poison(void *d, size_t bytes) {
  cmds_error err = {0};
  void *h = malloc(bytes);
  memset(h, 0xff, bytes);
  die_on(nn_cuda_memcpy(d, h, bytes, &err), &err);
  free(h);
}

static float *back_bf16(const uint16_t *d, int64_t n) {
  cmds_error err = {0};
  die_on(nn_ctx_sync(&gpu, &err), &err);
  uint16_t *u = malloc(2 * (size_t)n);
  die_on(nn_cuda_memcpy(u, d, 2 * (size_t)n, &err), &err);
  float *f = malloc(sizeof(float) * (size_t)n);
  for (int64_t i = 0; i < n; i++) f[i] = nn_bf16_to_f32(u[i]);
  free(u);
  return f;
}

static float *back_f32(const float *d, int64_t n) {
  cmds_error err = {0};
  die_on(nn_ctx_sync(&gpu, &err), &err);
  float *f = malloc(sizeof(float) * (size_t)n);
  die_on(nn_cuda_memcpy(f, d, sizeof(float) * (size_t)n, &err), &err);
  return f;
}

/* q, k, v as column blocks of one (B, N, 3C) matrix when fused, else three (B, N, C). */
static void check_attention(int64_t B, int64_t N, int64_t H, int64_t D, int fused, double qscale) {
  cmds_error err = {0};
  int64_t C = H * D, ld = fused ? 3 * C : C;
  float *q = host_random(B * N * ld, qscale, 1), *k = host_random(B * N * ld, 1.0, 1),
        *v = host_random(B * N * ld, 1.0, 1);
  const float *kq = fused ? q + C : k, *vq = fused ? q + 2 * C : v; /* fused: all three inside q */
  float *ref = malloc(sizeof(float) * (size_t)(B * N * C));
  float *scratch = malloc(sizeof(float) * nn_attention_cpu_scratch_floats(N, H, D));
  nn_attention_cpu(ref, q, kq, vq, B, N, H, D, ld, ld, ld, C, scratch);
  uint16_t *dq = dev_bf16(q, B * N * ld), *dk = fused ? dq + C : dev_bf16(k, B * N * ld),
           *dv = fused ? dq + 2 * C : dev_bf16(v, B * N * ld), *dout = dev_alloc(2 * (size_t)(B * N * C));
  poison(dout, 2 * (size_t)(B * N * C));
  die_on(nn_flash_attention_bf16_cuda(&gpu, dout, dq, dk, dv, B, N, H, D, ld, ld, ld, C, &err), &err);
  float *got = back_bf16(dout, B * N * C);
  double e = check_rel_l2(got, ref, B * N * C);
  printf("flash attention bf16 B %lld N %lld H %lld D %lld%s q scale %.1f: rel L2 %.2e\n", (long long)B,
         (long long)N, (long long)H, (long long)D, fused ? " (fused qkv)" : "", qscale, e);
  CHECK(e < 1e-2, "flash attention B %lld N %lld H %lld D %lld: %.2e", (long long)B, (long long)N, (long long)H,
        (long long)D, e);
  nn_cuda_free(dq);
  if (!fused) {
    nn_cuda_free(dk);
    nn_cuda_free(dv);
  }
  nn_cuda_free(dout);
  free(q), free(k), free(v), free(ref), free(scratch), free(got);
}

static void check_gemm(int64_t M, int64_t K, int64_t N) {
  cmds_error err = {0};
  float *x = host_random(M * K, 1.0, 1), *w = host_random(N * K, 0.05, 1), *b = host_random(N, 0.5, 1),
        *y0 = host_random(M * N, 1.0, 0);
  /* bf16 out with bias */
  float *ref = malloc(sizeof(float) * (size_t)(M * N));
  for (int64_t i = 0; i < M; i++) memcpy(ref + i * N, b, sizeof(float) * (size_t)N);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, x, (int)K, w, (int)K, 1.0f, ref,
              (int)N);
  uint16_t *dx = dev_bf16(x, M * K), *dw = dev_bf16(w, N * K), *db = dev_bf16(b, N), *dy = dev_alloc(2 * (size_t)(M * N));
  poison(dy, 2 * (size_t)(M * N));
  die_on(nn_lt_gemm_cuda(&gpu, dy, NN_BF16, dx, dw, NN_BF16, db, M, K, N, 0.0f, &err), &err);
  float *got = back_bf16(dy, M * N);
  double e = check_rel_l2(got, ref, M * N);
  printf("gemm bf16 -> bf16 + bias %lld x %lld -> %lld: rel L2 %.2e\n", (long long)M, (long long)K, (long long)N, e);
  CHECK(e < 1e-2, "gemm bf16 out: %.2e", e);
  /* f32 out: y += x W^T + b (residual form), bias f32 */
  for (int64_t i = 0; i < M * N; i++) ref[i] += y0[i];
  float *dyf = dev_f32(y0, M * N), *dbf = dev_f32(b, N);
  die_on(nn_lt_gemm_cuda(&gpu, dyf, NN_F32, dx, dw, NN_BF16, dbf, M, K, N, 1.0f, &err), &err);
  float *gotf = back_f32(dyf, M * N);
  e = check_rel_l2(gotf, ref, M * N);
  printf("gemm bf16 -> f32, y += x W^T + b, %lld x %lld -> %lld: rel L2 %.2e\n", (long long)M, (long long)K,
         (long long)N, e);
  CHECK(e < 1e-3, "gemm residual f32 out: %.2e", e);
  nn_cuda_free(dx), nn_cuda_free(dw), nn_cuda_free(db), nn_cuda_free(dy), nn_cuda_free(dyf), nn_cuda_free(dbf);
  free(x), free(w), free(b), free(y0), free(ref), free(got), free(gotf);
}

static void check_layernorm_gelu(int64_t rows, int64_t C) {
  cmds_error err = {0};
  float *x = host_random(rows * C, 2.0, 0), *g = host_random(C, 1.0, 0), *b = host_random(C, 1.0, 0);
  for (int64_t i = 0; i < rows * C; i++) x[i] += 3.0f; /* an offset: the variance must not cancel */
  float *ref = malloc(sizeof(float) * (size_t)(rows * C));
  for (int64_t r = 0; r < rows; r++) {
    double m = 0, v = 0;
    for (int64_t c = 0; c < C; c++) m += x[r * C + c];
    m /= (double)C;
    for (int64_t c = 0; c < C; c++) v += (x[r * C + c] - m) * (x[r * C + c] - m);
    double rstd = 1.0 / sqrt(v / (double)C + 1e-6);
    for (int64_t c = 0; c < C; c++) ref[r * C + c] = (float)((x[r * C + c] - m) * rstd * g[c] + b[c]);
  }
  float *dx = dev_f32(x, rows * C), *dg = dev_f32(g, C), *db = dev_f32(b, C);
  uint16_t *dy = dev_alloc(2 * (size_t)(rows * C) + 16);
  poison(dy, 2 * (size_t)(rows * C) + 16);
  die_on(nn_layernorm_bf16_cuda(&gpu, dy, dx, dg, db, rows, C, 1e-6f, &err), &err);
  float *got = back_bf16(dy, rows * C);
  double e = check_rel_l2(got, ref, rows * C);
  printf("layernorm f32 -> bf16 %lld x %lld: rel L2 %.2e\n", (long long)rows, (long long)C, e);
  CHECK(e < 1e-2, "layernorm bf16: %.2e", e);
  /* GELU in place on the bf16 LayerNorm output; reference from the same bf16 inputs. An odd
   * count exercises the tail after the 8-wide vectors. */
  int64_t n = rows * C - 3;
  for (int64_t i = 0; i < n; i++) {
    double t = got[i];
    ref[i] = (float)(0.5 * t * (1.0 + erf(t / sqrt(2.0))));
  }
  die_on(nn_gelu_bf16_cuda(&gpu, dy, n, &err), &err);
  float *gg = back_bf16(dy, rows * C);
  e = check_rel_l2(gg, ref, n);
  printf("gelu bf16 in place, %lld values: rel L2 %.2e\n", (long long)n, e);
  CHECK(e < 1e-2, "gelu bf16: %.2e", e);
  CHECK(gg[n] == got[n] && gg[n + 2] == got[n + 2], "gelu wrote past its %lld values", (long long)n);
  nn_cuda_free(dx), nn_cuda_free(dg), nn_cuda_free(db), nn_cuda_free(dy);
  free(x), free(g), free(b), free(ref), free(got), free(gg);
}

static void check_embed_gather(int64_t B, int64_t NP, int64_t D) {
  cmds_error err = {0};
  int64_t T = NP + 1;
  float *plin = host_random(B * NP * D, 1.0, 0), *cls = host_random(D, 1.0, 0), *pos = host_random(T * D, 1.0, 0);
  float *ref = malloc(sizeof(float) * (size_t)(B * T * D));
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++)
      for (int64_t d = 0; d < D; d++)
        ref[(b * T + t) * D + d] = (t ? plin[(b * NP + t - 1) * D + d] : cls[d]) + pos[t * D + d];
  float *dp = dev_f32(plin, B * NP * D), *dc = dev_f32(cls, D), *dpos = dev_f32(pos, T * D);
  float *dx = dev_alloc(sizeof(float) * (size_t)(B * T * D));
  poison(dx, sizeof(float) * (size_t)(B * T * D));
  die_on(nn_vit_embed_cuda(&gpu, dx, dp, dc, dpos, B, NP, D, &err), &err);
  float *got = back_f32(dx, B * T * D);
  double e = check_rel_l2(got, ref, B * T * D);
  CHECK(e < 1e-6, "embed: %.2e", e);
  /* gather into slot 1 of an (B, 2, NP, D) output */
  float *dout = dev_alloc(sizeof(float) * (size_t)(B * 2 * NP * D));
  poison(dout, sizeof(float) * (size_t)(B * 2 * NP * D));
  die_on(nn_vit_gather_cuda(&gpu, dout + NP * D, 2 * NP * D, dx, B, T, D, &err), &err);
  float *o = back_f32(dout, B * 2 * NP * D);
  int ok = 1;
  for (int64_t b = 0; b < B; b++)
    for (int64_t i = 0; i < NP * D; i++) {
      ok &= o[(b * 2 + 1) * NP * D + i] == ref[(b * T + 1) * D + i];
      ok &= isnan(o[(b * 2) * NP * D + i]); /* slot 0 untouched */
    }
  CHECK(ok, "gather B %lld NP %lld D %lld: wrong or stray values", (long long)B, (long long)NP, (long long)D);
  nn_cuda_free(dp), nn_cuda_free(dc), nn_cuda_free(dpos), nn_cuda_free(dx), nn_cuda_free(dout);
  free(plin), free(cls), free(pos), free(ref), free(got), free(o);
}

int main(void) {
  if (!nn_cuda_available()) {
    printf("skipped: no GPU\n");
    return 77;
  }
  cmds_error err = {0};
  static nn_arena scratch;
  die_on(nn_arena_init(&scratch, NN_CUDA, (size_t)64 << 20, &err), &err);
  die_on(nn_ctx_init(&gpu, NN_CUDA, &scratch, NULL, 0, &err), &err);
  check_attention(2, 785, 12, 64, 1, 1.0);  /* ViT-B/8 sizes, fused qkv */
  check_attention(1, 785, 2, 64, 0, 4.0);   /* peaky softmax: the running max moves a lot */
  check_attention(3, 100, 4, 32, 1, 1.0);
  check_attention(1, 70, 2, 128, 0, 1.0);
  check_attention(2, 33, 3, 16, 1, 1.0);
  check_attention(2, 17, 2, 16, 1, 0.1);   /* the test ViT's shape; nearly flat softmax */
  check_attention(2, 785, 2, 48, 1, 1.0);  /* the features stage's random stand-in (width 96, 2 heads) */
  check_attention(1, 130, 2, 80, 0, 1.0);
  check_attention(1, 97, 1, 96, 1, 1.0);
  check_attention(1, 65, 2, 112, 0, 1.0);
  check_attention(1, 64, 1, 64, 0, 1.0);   /* exactly one tile */
  check_attention(1, 1, 1, 64, 0, 1.0);    /* one token */
  CHECK(nn_flash_attention_bf16_cuda(&gpu, NULL, NULL, NULL, NULL, 1, 8, 1, 40, 40, 40, 40, 40, &err) == CMDS_EINPUT &&
            strstr(err.msg, "head dim"),
        "unsupported head dim refused: %s", err.msg);
  check_gemm(1000, 768, 300);
  check_gemm(785 * 2, 768, 2304);
  check_gemm(34, 32, 96);
  check_layernorm_gelu(3140, 768);
  check_layernorm_gelu(37, 32);
  check_embed_gather(3, 784, 768);
  check_embed_gather(2, 16, 30); /* D not a multiple of 4: the scalar gather */
  nn_ctx_free(&gpu);
  nn_arena_free(&scratch);
  return CHECK_DONE();
}
