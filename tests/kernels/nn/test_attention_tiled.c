/* test_attention_tiled: the CPU attention's key-tiled path (kernels/nn/attention_tiled.c) against
 * its GEMM path (OpenBLAS, CMDS_NN_ATTN_KERNEL=blas), which the fixture tests pin to PyTorch, on
 * random inputs at the sizes where the tiling has edges: query blocks of 96 and the 6-row kernels
 * (N = 1, 5, 97, 600), key tiles of 256 and panels of 16 (M = 1, 17, 77, 300, 600), head dims
 * 8 .. 256 (16-wide and 8-wide column tiles), causal masks, q/k/v as column blocks of one fused
 * qkv matrix (row stride 3C), and the log-sum-exp output. Outputs start as NaN. Bounds: relative
 * L2 2e-6 for o (float rounding of a different summation order), 2e-5 absolute for lse. Also: the
 * same bits on 1 and 3 threads. The backward with the forward's lse likewise (its key-tiled kernels
 * against its OpenBLAS tiles, both thread layouts), bound 1e-5. Exits 77 where the tiled path cannot
 * run (no AVX2/FMA). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "nn/attention.h"
#include "nn/backward.h"
#include "nn/attention_tiled.h"
#include "rng.h"

/* attention over B images of N queries and M keys, H heads of D; fused: q, k, v interleaved in one
 * (B, N, 3C) matrix (needs N == M). */
static void check_case(int64_t B, int64_t N, int64_t M, int64_t H, int64_t D, int causal, int fused) {
  int64_t C = H * D, ldq = fused ? 3 * C : C, ldk = ldq;
  size_t nq = (size_t)(B * N * ldq), nk = (size_t)(B * M * ldk);
  float *qb = malloc(sizeof(float) * nq), *kb = fused ? qb : malloc(sizeof(float) * nk),
        *vb = fused ? qb : malloc(sizeof(float) * nk);
  cmds_rng r;
  cmds_rng_seed(&r, (uint64_t)(N * 1000003 + M * 1009 + D * 17 + causal));
  for (size_t i = 0; i < nq; i++) qb[i] = (float)(cmds_rng_uniform(&r) * 4.0 - 2.0);
  if (!fused)
    for (size_t i = 0; i < nk; i++) kb[i] = (float)(cmds_rng_uniform(&r) * 4.0 - 2.0), vb[i] = (float)cmds_rng_normal(&r);
  const float *q = qb, *k = fused ? qb + C : kb, *v = fused ? qb + 2 * C : vb;
  size_t no = (size_t)(B * N * C), nl = (size_t)(B * H * N);
  float *o_t = malloc(sizeof(float) * no), *o_g = malloc(sizeof(float) * no), *o_1 = malloc(sizeof(float) * no);
  float *l_t = malloc(sizeof(float) * nl), *l_g = malloc(sizeof(float) * nl), *l_1 = malloc(sizeof(float) * nl);
  omp_set_num_threads(3); /* the scratch is sized for omp_get_max_threads() */
  float *scratch = malloc(sizeof(float) * nn_attention_cpu_scratch_floats(M, H, D));
  for (size_t i = 0; i < no; i++) o_t[i] = o_g[i] = o_1[i] = NAN;
  for (size_t i = 0; i < nl; i++) l_t[i] = l_g[i] = l_1[i] = NAN;

  nn_attention_tiled(o_t, l_t, q, k, v, B, N, M, H, D, ldq, ldk, ldk, C, causal, scratch);
  omp_set_num_threads(1);
  nn_attention_tiled(o_1, l_1, q, k, v, B, N, M, H, D, ldq, ldk, ldk, C, causal, scratch);
  omp_set_num_threads(2);
  /* the GEMM path: nn_attention_cpu for the fused layout (self-attention, no mask, no lse), else
   * nn_attention_ex_forward_lse on (B, N, C) tensors */
  setenv("CMDS_NN_ATTN_KERNEL", "blas", 1);
  CHECK(!nn_attention_tiled_usable(D), "CMDS_NN_ATTN_KERNEL=blas turns the tiled path off");
  if (fused) {
    nn_attention_cpu(o_g, q, k, v, B, N, H, D, ldq, ldk, ldk, C, scratch);
  } else {
    cmds_error err = {0};
    nn_arena ar;
    nn_ctx ctx;
    int rc = nn_arena_init(&ar, NN_CPU, nn_attention_ex_scratch_bytes(NN_CPU, N, M, H, D) + 4096, &err);
    if (!rc) rc = nn_ctx_init(&ctx, NN_CPU, &ar, NULL, 0, &err);
    nn_tensor tq = nn_tensor_view(qb, NN_F32, NN_CPU, B, N, C, -1), tk = nn_tensor_view(kb, NN_F32, NN_CPU, B, M, C, -1),
              tv = nn_tensor_view(vb, NN_F32, NN_CPU, B, M, C, -1), to = nn_tensor_view(o_g, NN_F32, NN_CPU, B, N, C, -1),
              tl = nn_tensor_view(l_g, NN_F32, NN_CPU, B, H, N, -1);
    if (!rc) rc = nn_attention_ex_forward_lse(&ctx, &to, &tl, &tq, &tk, &tv, H, causal, &err);
    CHECK(rc == 0, "GEMM path: %s", err.msg);
    nn_ctx_free(&ctx);
    nn_arena_free(&ar);
  }
  unsetenv("CMDS_NN_ATTN_KERNEL");
  double e = check_rel_l2(o_t, o_g, (long long)no), el = 0;
  if (!fused)
    for (size_t i = 0; i < nl; i++) el = fmax(el, fabs((double)l_t[i] - l_g[i]));
  printf("B %lld N %4lld M %4lld H %lld D %3lld%s%s: o rel L2 %.2e%s", (long long)B, (long long)N, (long long)M,
         (long long)H, (long long)D, causal ? " causal" : "", fused ? " fused qkv" : "", e, fused ? "\n" : "");
  if (!fused) printf(", lse max abs %.2e\n", el);
  CHECK(e < 2e-6, "B %lld N %lld M %lld D %lld causal %d fused %d: o rel L2 %.3g", (long long)B, (long long)N,
        (long long)M, (long long)D, causal, fused, e);
  CHECK(el < 2e-5 && !isnan(el), "N %lld M %lld D %lld: lse %.3g", (long long)N, (long long)M, (long long)D, el);
  CHECK(!memcmp(o_t, o_1, sizeof(float) * no) && !memcmp(l_t, l_1, sizeof(float) * nl),
        "N %lld M %lld D %lld: 1 and 3 threads give different bits", (long long)N, (long long)M, (long long)D);
  free(scratch);
  free(o_t), free(o_g), free(o_1), free(l_t), free(l_g), free(l_1), free(qb);
  if (!fused) free(kb), free(vb);
}

/* The backward with the forward's lse (nn_attention_ex_backward_lse): the key-tiled kernels
 * against the OpenBLAS tiles, dq, dk, dv, on `threads` threads (1: one loop; 3 with one (image,
 * head): a head's query blocks spread over the threads, private dK / dV added up). */
static void check_backward(int64_t B, int64_t N, int64_t M, int64_t H, int64_t D, int causal, int threads) {
  int64_t C = H * D;
  size_t nq = (size_t)(B * N * C), nk = (size_t)(B * M * C);
  cmds_rng r;
  cmds_rng_seed(&r, (uint64_t)(N * 7919 + M * 31 + D + causal));
  float *buf[12];
  size_t len[12] = {nq, nk, nk, nq, nq, (size_t)(B * H * N), nq, nk, nk, nq, nk, nk};
  for (int i = 0; i < 12; i++) buf[i] = malloc(sizeof(float) * len[i]);
  for (int i = 0; i < 4; i++)
    for (size_t e = 0; e < len[i]; e++) buf[i][e] = (float)(cmds_rng_uniform(&r) * 4.0 - 2.0);
  omp_set_num_threads(threads);
  cmds_error err = {0};
  nn_arena ar;
  nn_ctx ctx;
  size_t need = nn_attention_ex_backward_scratch_bytes(B, N, M, C, H) + nn_attention_ex_scratch_bytes(NN_CPU, N, M, H, D);
  int rc = nn_arena_init(&ar, NN_CPU, need + 8192, &err);
  if (!rc) rc = nn_ctx_init(&ctx, NN_CPU, &ar, NULL, 0, &err);
  nn_tensor t[12];
  int64_t shp[12][3] = {{B, N, C}, {B, M, C}, {B, M, C}, {B, N, C}, {B, N, C}, {B, H, N},
                        {B, N, C}, {B, M, C}, {B, M, C}, {B, N, C}, {B, M, C}, {B, M, C}};
  for (int i = 0; i < 12; i++) t[i] = nn_tensor_view(buf[i], NN_F32, NN_CPU, shp[i][0], shp[i][1], shp[i][2], -1);
  /* 0 q, 1 k, 2 v, 3 dout, 4 o, 5 lse; 6-8 dq, dk, dv (tiled); 9-11 the same (OpenBLAS) */
  if (!rc) rc = nn_attention_ex_forward_lse(&ctx, &t[4], &t[5], &t[0], &t[1], &t[2], H, causal, &err);
  for (int i = 6; i < 12; i++)
    for (size_t e = 0; e < len[i]; e++) buf[i][e] = NAN;
  if (!rc) rc = nn_attention_ex_backward_lse(&ctx, &t[6], &t[7], &t[8], &t[3], &t[0], &t[1], &t[2], &t[4], &t[5], H, causal, &err);
  setenv("CMDS_NN_ATTN_KERNEL", "blas", 1);
  if (!rc) rc = nn_attention_ex_backward_lse(&ctx, &t[9], &t[10], &t[11], &t[3], &t[0], &t[1], &t[2], &t[4], &t[5], H, causal, &err);
  unsetenv("CMDS_NN_ATTN_KERNEL");
  CHECK(rc == 0, "backward N %lld M %lld D %lld: %s", (long long)N, (long long)M, (long long)D, err.msg);
  double e[3];
  for (int i = 0; i < 3; i++) e[i] = check_rel_l2(buf[6 + i], buf[9 + i], (long long)len[6 + i]);
  printf("backward B %lld N %4lld M %4lld H %lld D %3lld%s, %d threads: dq %.2e dk %.2e dv %.2e\n", (long long)B,
         (long long)N, (long long)M, (long long)H, (long long)D, causal ? " causal" : "", threads, e[0], e[1], e[2]);
  CHECK(e[0] < 1e-5 && e[1] < 1e-5 && e[2] < 1e-5, "backward N %lld M %lld D %lld: dq %.3g dk %.3g dv %.3g",
        (long long)N, (long long)M, (long long)D, e[0], e[1], e[2]);
  nn_ctx_free(&ctx);
  nn_arena_free(&ar);
  for (int i = 0; i < 12; i++) free(buf[i]);
  omp_set_num_threads(2);
}

int main(void) {
  if (!nn_attention_tiled_usable(64)) {
    printf("skipped: this CPU has no AVX2/FMA (the GEMM path runs everywhere)\n");
    return 77;
  }
  check_case(1, 1, 1, 1, 64, 0, 0);     /* one query, one key */
  check_case(2, 5, 5, 3, 64, 1, 0);     /* fewer rows than a 6-row kernel; causal */
  check_case(1, 97, 77, 5, 64, 0, 0);   /* cross-attention to a text encoding: one partial tile */
  check_case(1, 600, 600, 2, 64, 0, 0); /* several query blocks and key tiles, both with remainders */
  check_case(1, 600, 600, 2, 64, 1, 0); /* the same, causal: tiles past a block's last row skipped */
  check_case(1, 300, 17, 2, 8, 0, 0);   /* D 8: one 8-wide column tile */
  check_case(2, 130, 300, 2, 24, 0, 0); /* D 24: a 16- and an 8-wide tile */
  check_case(1, 97, 97, 3, 40, 1, 0);
  check_case(1, 200, 260, 1, 136, 0, 0);
  check_case(1, 50, 50, 1, 256, 0, 0);
  check_case(2, 197, 197, 4, 16, 0, 1); /* q, k, v column blocks of one fused qkv (the ViT's layout) */
  check_case(1, 785, 785, 2, 64, 0, 1); /* ViT-B/8's token count */
  CHECK(!nn_attention_tiled_usable(12) && !nn_attention_tiled_usable(264), "head dims 12 and 264 take the GEMM path");
  check_backward(2, 97, 77, 3, 64, 0, 3);   /* (image, head) tasks across the threads; cross-attention */
  check_backward(1, 600, 600, 1, 64, 0, 3); /* one head: its query blocks over the threads, private dK / dV */
  check_backward(1, 600, 600, 1, 64, 1, 3);
  check_backward(1, 300, 17, 2, 24, 0, 1);  /* D 24: a 16- and an 8-wide column tile */
  check_backward(2, 13, 13, 2, 40, 1, 2);
  return CHECK_DONE();
}
