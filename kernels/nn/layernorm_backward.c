/* layernorm_backward: CPU reference and the dispatcher of nn_layernorm_backward (see
 * backward.h). Per row of C values, xh = (x - mean) * rstd, g = dy * gamma:
 *   dx = rstd * (g - mean(g) - xh * mean(g * xh)),  dgamma += sum_rows dy * xh,  dbeta += sum_rows dy.
 * CPU, three passes so that dx may overwrite dy: the row statistics (double, into scratch),
 * dgamma / dbeta by blocks of columns (every column summed over the rows in order: the result
 * does not depend on the thread count), then dx row by row. */
#include <math.h>

#include "backward.h"

#ifdef CMDS_CUDA
#include "nn_cuda_train.h"
#endif

#define LNB_CUDA_ROW_CHUNK 256 /* rows per partial-sum chunk of the CUDA dgamma / dbeta pass */

size_t nn_layernorm_backward_scratch_bytes(int64_t rows, int64_t C) {
  size_t cpu = (size_t)rows * 2 * sizeof(double);
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
  double *st = nn_arena_alloc(ctx->scratch, (size_t)rows * 2 * sizeof(double), err);
  if (!st) return cmds_error_wrap(err, "%s statistics", op);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = xd + r * C;
    double s = 0.0, v = 0.0;
    for (int64_t i = 0; i < C; i++) s += xr[i];
    double mean = s / (double)C;
    for (int64_t i = 0; i < C; i++) v += ((double)xr[i] - mean) * ((double)xr[i] - mean);
    st[2 * r] = mean;
    st[2 * r + 1] = 1.0 / sqrt(v / (double)C + (double)eps);
  }
  if (dg) {
#pragma omp parallel for schedule(static)
    for (int64_t c0 = 0; c0 < C; c0 += 16) {
      int64_t c1 = c0 + 16 < C ? c0 + 16 : C;
      double sg[16] = {0}, sb[16] = {0};
      for (int64_t r = 0; r < rows; r++) {
        const float *xr = xd + r * C, *dr = dyd + r * C;
        double mean = st[2 * r], rstd = st[2 * r + 1];
        for (int64_t c = c0; c < c1; c++) {
          sg[c - c0] += (double)dr[c] * (((double)xr[c] - mean) * rstd);
          sb[c - c0] += dr[c];
        }
      }
      for (int64_t c = c0; c < c1; c++) {
        dg[c] += (float)sg[c - c0];
        dbt[c] += (float)sb[c - c0];
      }
    }
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = xd + r * C, *dr = dyd + r * C;
    float *out = dxd + r * C;
    double mean = st[2 * r], rstd = st[2 * r + 1], sg = 0.0, sgx = 0.0;
    for (int64_t c = 0; c < C; c++) {
      double gg = (double)dr[c] * (g ? g[c] : 1.0f);
      sg += gg;
      sgx += gg * (((double)xr[c] - mean) * rstd);
    }
    double mg = sg / (double)C, mgx = sgx / (double)C;
    for (int64_t c = 0; c < C; c++) {
      double gg = (double)dr[c] * (g ? g[c] : 1.0f);
      out[c] = (float)(rstd * (gg - mg - ((double)xr[c] - mean) * rstd * mgx));
    }
  }
  nn_arena_rewind(ctx->scratch, mark);
  return CMDS_OK;
}
