/* norm_backward: CPU reference and dispatcher of nn_groupnorm_backward (see backward.h).
 * With xh = (x - mean) * rstd over a group of n values and g = dy * gamma:
 *   dx = rstd * (g - mean(g) - xh * mean(g * xh)),  dgamma += sum dy * xh,  dbeta += sum dy */
#include <math.h>

#include "backward.h"

#ifdef CMDS_CUDA
#include "nn_cuda_backward.h"
#endif

int nn_groupnorm_backward(nn_ctx *ctx, nn_tensor *dx, nn_tensor *dgamma, nn_tensor *dbeta,
                          const nn_tensor *dy, const nn_tensor *x, int64_t groups,
                          const nn_tensor *gamma, float eps, cmds_error *err) {
  const char *op = "nn_groupnorm_backward";
  if (!x || x->ndim != 4 || !dy || !dx) return CMDS_FAIL(err, CMDS_EINPUT, "%s: x, dy, dx must be (B, C, H, W)", op);
  int64_t B = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
  if (groups < 1 || C % groups)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %lld groups do not divide %lld channels", op,
                     (long long)groups, (long long)C);
  if (!gamma != !dgamma || !dgamma != !dbeta)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: gamma, dgamma and dbeta must be all given or all NULL", op);
  int rc = nn_tensor_expect(x, op, "x", ctx->device, 4, x->shape, err);
  if (!rc) rc = nn_tensor_expect(dy, op, "dy", ctx->device, 4, x->shape, err);
  if (!rc) rc = nn_tensor_expect(dx, op, "dx", ctx->device, 4, x->shape, err);
  if (!rc && gamma) rc = nn_tensor_expect(gamma, op, "gamma", ctx->device, 1, &C, err);
  if (!rc && gamma) rc = nn_tensor_expect(dgamma, op, "dgamma", ctx->device, 1, &C, err);
  if (!rc && gamma) rc = nn_tensor_expect(dbeta, op, "dbeta", ctx->device, 1, &C, err);
  if (rc) return rc;
  const float *g = gamma ? gamma->data : NULL, *xd = x->data, *dyd = dy->data;
  float *dxd = dx->data, *dg = dgamma ? dgamma->data : NULL, *dbt = dbeta ? dbeta->data : NULL;
  int64_t cpg = C / groups, n = cpg * HW;
  if (ctx->device == NN_CPU) {
    /* images one after another: the groups of one image touch disjoint channels */
    for (int64_t b = 0; b < B; b++) {
#pragma omp parallel for schedule(static)
      for (int64_t gi = 0; gi < groups; gi++) {
        int64_t off = (b * groups + gi) * n, c0 = gi * cpg;
        const float *xs = xd + off, *dys = dyd + off;
        double s = 0.0, v = 0.0;
        for (int64_t i = 0; i < n; i++) s += xs[i];
        double mean = s / (double)n;
        for (int64_t i = 0; i < n; i++) v += ((double)xs[i] - mean) * ((double)xs[i] - mean);
        double rstd = 1.0 / sqrt(v / (double)n + (double)eps);
        double sg = 0.0, sgx = 0.0;
        for (int64_t c = 0; c < cpg; c++) {
          double gam = g ? g[c0 + c] : 1.0, sdy = 0.0, sdyx = 0.0;
          for (int64_t p = 0; p < HW; p++) {
            double xh = ((double)xs[c * HW + p] - mean) * rstd, d = dys[c * HW + p];
            sdy += d;
            sdyx += d * xh;
          }
          sg += gam * sdy;
          sgx += gam * sdyx;
          if (dg) {
            dg[c0 + c] += (float)sdyx;
            dbt[c0 + c] += (float)sdy;
          }
        }
        double mg = sg / (double)n, mgx = sgx / (double)n;
        float *dxs = dxd + off;
        for (int64_t c = 0; c < cpg; c++) {
          double gam = g ? g[c0 + c] : 1.0;
          for (int64_t p = 0; p < HW; p++) {
            int64_t i = c * HW + p;
            double xh = ((double)xs[i] - mean) * rstd;
            dxs[i] = (float)(rstd * (gam * dys[i] - mg - xh * mgx));
          }
        }
      }
    }
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  if (!ctx->scratch) return CMDS_FAIL(err, CMDS_EINPUT, "%s: needs a scratch arena in the context", op);
  size_t mark = nn_arena_mark(ctx->scratch);
  float *stats = nn_arena_alloc(ctx->scratch, (size_t)(2 * B * groups) * sizeof(float), err);
  if (!stats) return cmds_error_wrap(err, "%s statistics", op);
  rc = nn_groupnorm_backward_cuda(ctx, dxd, dg, dbt, dyd, xd, g, B, C, HW, groups, eps, stats, err);
  nn_arena_rewind(ctx->scratch, mark);
  return rc;
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}
