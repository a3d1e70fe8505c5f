/* layernorm_backward: CPU reference and the dispatcher of nn_layernorm_backward (see
 * backward.h). Per row of C values, xh = (x - mean) * rstd, g = dy * gamma:
 *   dx = rstd * (g - mean(g) - xh * mean(g * xh)),  dgamma += sum_rows dy * xh,  dbeta += sum_rows dy.
 * CPU, three passes so that dx may overwrite dy: the row statistics (two-pass mean / variance,
 * into scratch), dgamma / dbeta over a fixed partition of the rows into LNB_CPU_CHUNKS chunks
 * (fp32 partial sums per chunk, added in chunk order in double: the result does not depend on
 * the thread count), then dx row by row. Sums over a row run in 8 lanes so that the compiler
 * vectorises them. */
#include <math.h>

#include "backward.h"
#include "nn_fastexp.h"

#ifdef CMDS_CUDA
#include "nn_cuda_train.h"
#endif

#define LNB_CUDA_ROW_CHUNK 256 /* rows per partial-sum chunk of the CUDA dgamma / dbeta pass */

#define LNB_CPU_CHUNKS 64        /* fixed row partition of the CPU dgamma / dbeta sums */

/* sum (a - c)^2 */
static float lnb_sqdev(const float *a, float c, int64_t n) {
  float s[8] = {0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; l++) s[l] += (a[j + l] - c) * (a[j + l] - c);
  for (; j < n; j++) s[0] += (a[j] - c) * (a[j] - c);
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

size_t nn_layernorm_backward_scratch_bytes(int64_t rows, int64_t C) {
  size_t cpu = ((size_t)rows * 2 + (size_t)LNB_CPU_CHUNKS * 2 * (size_t)C + (size_t)C) * sizeof(float) + 512;
  size_t chunks = (size_t)((rows + LNB_CUDA_ROW_CHUNK - 1) / LNB_CUDA_ROW_CHUNK);
  size_t cuda = ((size_t)rows * 2 + chunks * 2 * (size_t)C) * sizeof(float) + 256;
  return cpu > cuda ? cpu : cuda;
}

int nn_layernorm_backward(nn_ctx *ctx, nn_tensor *dx, nn_tensor *dgamma, nn_tensor *dbeta, const nn_tensor *dy,
                          const nn_tensor *x, const nn_tensor *gamma, float eps, cmds_error *err) {
  const char *op = "nn_layernorm_backward";
  if (!x || x->ndim < 1 || !dy || !dx) return CMDS_FAIL(err, CMDS_EINPUT, "%s: x, dy and dx must be given", op);
  if (!gamma != !dgamma || !dgamma != !dbeta)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: gamma, dgamma and dbeta must be all given or all NULL", op);
  int64_t C = x->shape[x->ndim - 1], rows = C ? nn_tensor_numel(x) / C : 0;
  int rc = nn_tensor_expect(x, op, "x", ctx->device, x->ndim, x->shape, err);
  if (!rc) rc = nn_tensor_expect(dy, op, "dy", ctx->device, x->ndim, x->shape, err);
  if (!rc) rc = nn_tensor_expect(dx, op, "dx", ctx->device, x->ndim, x->shape, err);
  if (!rc && gamma) rc = nn_tensor_expect(gamma, op, "gamma", ctx->device, 1, &C, err);
  if (!rc && gamma) rc = nn_tensor_expect(dgamma, op, "dgamma", ctx->device, 1, &C, err);
  if (!rc && gamma) rc = nn_tensor_expect(dbeta, op, "dbeta", ctx->device, 1, &C, err);
  if (rc) return rc;
  if (dx->data == x->data) return CMDS_FAIL(err, CMDS_EINPUT, "%s: dx must not alias x", op);
  if (rows == 0 || C == 0) return CMDS_OK;
  const float *g = gamma ? gamma->data : NULL, *xd = x->data, *dyd = dy->data;
  float *dxd = dx->data, *dg = dgamma ? dgamma->data : NULL, *dbt = dbeta ? dbeta->data : NULL;
  if (!ctx->scratch) return CMDS_FAIL(err, CMDS_EINPUT, "%s: needs a scratch arena in the context", op);
  size_t mark = nn_arena_mark(ctx->scratch);
  if (ctx->device != NN_CPU) {
#ifdef CMDS_CUDA
    int64_t chunks = (rows + LNB_CUDA_ROW_CHUNK - 1) / LNB_CUDA_ROW_CHUNK;
    float *ws = nn_arena_alloc(ctx->scratch, ((size_t)rows * 2 + (size_t)(chunks * 2 * C)) * sizeof(float), err);
    if (!ws) return cmds_error_wrap(err, "%s statistics", op);
    rc = nn_layernorm_backward_cuda(ctx, dxd, dg, dbt, dyd, xd, g, rows, C, eps, LNB_CUDA_ROW_CHUNK, ws, err);
    nn_arena_rewind(ctx->scratch, mark);
    return rc;
#else
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
  }
  /* st: (mean, rstd) per row; part: per chunk of rows, sum dy * xh then sum dy, per column;
   * ones: gamma when there is none */
  float *st = nn_arena_alloc(ctx->scratch, (size_t)rows * 2 * sizeof(float), err);
  float *part = st ? nn_arena_alloc(ctx->scratch, (size_t)LNB_CPU_CHUNKS * 2 * (size_t)C * sizeof(float), err) : NULL;
  float *ones = part ? nn_arena_alloc(ctx->scratch, (size_t)C * sizeof(float), err) : NULL;
  if (!ones) {
    nn_arena_rewind(ctx->scratch, mark);
    return cmds_error_wrap(err, "%s statistics", op);
  }
  for (int64_t c = 0; c < C; c++) ones[c] = 1.0f;
  const float *gm = g ? g : ones;
  float inv_c = 1.0f / (float)C;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = xd + r * C;
    float mean = nn_fast_sum8(xr, C) * inv_c;
    st[2 * r] = mean;
    st[2 * r + 1] = 1.0f / sqrtf(lnb_sqdev(xr, mean, C) * inv_c + eps);
  }
  if (dg) {
    int64_t per = (rows + LNB_CPU_CHUNKS - 1) / LNB_CPU_CHUNKS;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < LNB_CPU_CHUNKS; ch++) {
      float *pg = part + (size_t)ch * 2 * (size_t)C, *pb = pg + C;
      for (int64_t c = 0; c < C; c++) pg[c] = pb[c] = 0.0f;
      int64_t r1 = (ch + 1) * per < rows ? (ch + 1) * per : rows;
      for (int64_t r = ch * per; r < r1; r++) {
        const float *xr = xd + r * C, *dr = dyd + r * C;
        float mean = st[2 * r], rstd = st[2 * r + 1];
        for (int64_t c = 0; c < C; c++) {
          pg[c] += dr[c] * ((xr[c] - mean) * rstd);
          pb[c] += dr[c];
        }
      }
    }
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < C; c++) {
      double sg = 0.0, sb = 0.0;
      for (int ch = 0; ch < LNB_CPU_CHUNKS; ch++) {
        sg += part[(size_t)ch * 2 * (size_t)C + (size_t)c];
        sb += part[(size_t)ch * 2 * (size_t)C + (size_t)(C + c)];
      }
      dg[c] += (float)sg;
      dbt[c] += (float)sb;
    }
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = xd + r * C, *dr = dyd + r * C;
    float *out = dxd + r * C;
    float mean = st[2 * r], rstd = st[2 * r + 1], s1[8] = {0}, s2[8] = {0};
    int64_t c = 0;
    for (; c + 8 <= C; c += 8)
      for (int l = 0; l < 8; l++) {
        float gg = dr[c + l] * gm[c + l];
        s1[l] += gg;
        s2[l] += gg * ((xr[c + l] - mean) * rstd);
      }
    for (; c < C; c++) {
      float gg = dr[c] * gm[c];
      s1[0] += gg;
      s2[0] += gg * ((xr[c] - mean) * rstd);
    }
    float mg = (((s1[0] + s1[1]) + (s1[2] + s1[3])) + ((s1[4] + s1[5]) + (s1[6] + s1[7]))) * inv_c;
    float mgx = (((s2[0] + s2[1]) + (s2[2] + s2[3])) + ((s2[4] + s2[5]) + (s2[6] + s2[7]))) * inv_c;
    for (c = 0; c < C; c++) out[c] = rstd * (dr[c] * gm[c] - mg - (xr[c] - mean) * rstd * mgx);
  }
  nn_arena_rewind(ctx->scratch, mark);
  return CMDS_OK;
}
