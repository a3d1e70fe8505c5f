/* optim: CPU reference and dispatcher of nn_adamw_update (see optim.h). The arithmetic is
 * the mapper's AdamW (kernels/mapper/mapper_train.c), one tensor at a time. */
#include "optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef CMDS_CUDA
#include "nn_cuda_train.h"
#endif

/* The shortest decimal that rounds to b, as a double: the value the configuration wrote
 * (0.999f -> 0.999). torch forms 1 - beta2 and 1 - beta2^t from the Python (double) betas;
 * from the float 0.999f, 1 - beta2 would be 1.3e-5 relative off theirs (and so would v). */
static double adamw_decimal(float b) {
  char buf[32];
  for (int prec = 1; prec <= 9; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, (double)b);
    double d = strtod(buf, NULL);
    if ((float)d == b) return d;
  }
  return (double)b;
}

int nn_adamw_update(nn_ctx *ctx, nn_tensor *p, const nn_tensor *g, nn_tensor *m, nn_tensor *v, float lr,
                    float beta1, float beta2, float eps, float weight_decay, int64_t step, cmds_error *err) {
  const char *op = "nn_adamw_update";
  if (!p || !g || !m || !v) return CMDS_FAIL(err, CMDS_EINPUT, "%s: p, g, m and v must be given", op);
  if (step < 1) return CMDS_FAIL(err, CMDS_EINPUT, "%s: step %lld, the first step is 1", op, (long long)step);
  if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f) || !(eps >= 0.0f) || !(lr >= 0.0f) ||
      !(weight_decay >= 0.0f))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: lr %g, betas (%g, %g), eps %g, weight decay %g: betas must be in [0, 1), "
                     "the others >= 0", op, (double)lr, (double)beta1, (double)beta2, (double)eps, (double)weight_decay);
  int rc = nn_tensor_expect(p, op, "p", ctx->device, p->ndim, p->shape, err);
  if (!rc) rc = nn_tensor_expect(g, op, "g", ctx->device, p->ndim, p->shape, err);
  if (!rc) rc = nn_tensor_expect(m, op, "m", ctx->device, p->ndim, p->shape, err);
  if (!rc) rc = nn_tensor_expect(v, op, "v", ctx->device, p->ndim, p->shape, err);
  if (rc) return rc;
  int64_t n = nn_tensor_numel(p);
  /* the scalars as torch forms them (double, from the decimal betas), then rounded to float */
  double b1d = adamw_decimal(beta1), b2d = adamw_decimal(beta2);
  float decay = (float)(1.0 - (double)lr * (double)weight_decay);
  float lr1 = (float)((double)lr / (1.0 - pow(b1d, (double)step)));
  float bc2s = (float)sqrt(1.0 - pow(b2d, (double)step));
  float c1 = (float)(1.0 - b1d), c2 = (float)(1.0 - b2d);
  float *pd = p->data, *md = m->data, *vd = v->data;
  const float *gd = g->data;
  if (ctx->device == NN_CPU) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
      float pv = pd[i] * decay, gv = gd[i];
      md[i] = md[i] + c1 * (gv - md[i]); /* torch: exp_avg.lerp_(grad, 1 - beta1) */
      vd[i] = vd[i] * beta2 + c2 * gv * gv;
      pd[i] = pv - lr1 * md[i] / (sqrtf(vd[i]) / bc2s + eps);
    }
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_adamw_cuda(ctx, pd, gd, md, vd, n, decay, lr1, beta2, c1, c2, eps, bc2s, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}
