/* mapper_train: what a training step needs besides forward and backward (see mapper.h):
 * the decoupled multi-scale mask-aware loss with its gradient, AdamW as torch.optim.AdamW,
 * and CosineAnnealingLR's closed form (METHOD.md section 5). CPU here, CUDA through
 * mapper_cuda.cu. */
#include <math.h>
#include <string.h>

#include "mapper_internal.h"
#include "nn.h"

/* ---------------------------------------------------------------- loss */

int mapper_loss(nn_ctx *ctx, const nn_tensor *P, const nn_tensor *T, const nn_tensor *mask,
                int64_t layers, const float *layer_w, double denom, double *loss, nn_tensor *dp,
                cmds_error *err) {
  const char *op = "mapper_loss";
  if (!P || P->ndim != 4 || layers < 1 || P->shape[1] % layers)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: P must be (B, L*D, H, W) with L = %lld", op, (long long)layers);
  if (!(denom > 0.0)) return CMDS_FAIL(err, CMDS_EINPUT, "%s: denominator %g must be > 0", op, denom);
  int64_t B = P->shape[0], C = P->shape[1], H = P->shape[2], W = P->shape[3], HW = H * W, D = C / layers;
  int64_t ms[3] = {B, H, W};
  int rc = nn_tensor_expect(P, op, "P", ctx->device, 4, P->shape, err);
  if (!rc) rc = nn_tensor_expect(T, op, "T", ctx->device, 4, P->shape, err);
  if (!rc && mask) rc = nn_tensor_expect(mask, op, "mask", ctx->device, 3, ms, err);
  if (!rc && dp) rc = nn_tensor_expect(dp, op, "dP", ctx->device, 4, P->shape, err);
  if (rc) return rc;
  const float *pd = P->data, *td = T->data, *md = mask ? mask->data : NULL;
  float *dd = dp ? dp->data : NULL;
  if (ctx->device != NN_CPU) {
#ifdef CMDS_CUDA
    if (!ctx->scratch) return mapper_no_scratch(op, err);
    size_t mark = nn_arena_mark(ctx->scratch);
    float *tmp = nn_arena_alloc(ctx->scratch, (size_t)(B * HW + 4) * sizeof(float), err);
    if (!tmp) return cmds_error_wrap(err, "%s", op);
    rc = mapper_cuda_loss(ctx, loss, dd, pd, td, md, layer_w, B, layers, D, HW, denom, tmp, err);
    nn_arena_rewind(ctx->scratch, mark);
    return rc;
#else
    return MAPPER_NO_CUDA(err, op);
#endif
  }
  const double eps = NN_COSINE_EPS;
  double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (int64_t q = 0; q < B * HW; q++) {
    int64_t b = q / HW, px = q % HW;
    double m = md ? md[q] : 1.0;
    for (int64_t l = 0; l < layers; l++) {
      const float *pl = pd + (b * C + l * D) * HW + px, *tl = td + (b * C + l * D) * HW + px;
      double dot = 0.0, pp = 0.0, tt = 0.0;
      for (int64_t k = 0; k < D; k++) {
        double u = pl[k * HW], v = tl[k * HW];
        dot += u * v;
        pp += u * u;
        tt += v * v;
      }
      double np = fmax(sqrt(pp), eps), nt = fmax(sqrt(tt), eps), cosv = dot / (np * nt);
      double wgt = (double)layer_w[l] * m / denom;
      total += wgt * (1.0 - cosv);
      if (!dd) continue;
      float *dl = dd + (b * C + l * D) * HW + px;
      /* d(1 - cos)/dP = -(T / (|P||T|) - cos P / |P|^2) (norm clamp as a constant) */
      double a1 = -wgt / (np * nt), a2 = sqrt(pp) > eps ? wgt * cosv / (np * np) : 0.0;
      for (int64_t k = 0; k < D; k++) dl[k * HW] = (float)(a1 * tl[k * HW] + a2 * pl[k * HW]);
    }
  }
  *loss = total;
  return CMDS_OK;
}

/* ---------------------------------------------------------------- AdamW, schedule */

int mapper_adamw_init(mapper_adamw *o, const mapper_model *m, float weight_decay, cmds_error *err) {
  memset(o, 0, sizeof *o);
  o->beta1 = 0.9f;
  o->beta2 = 0.999f;
  o->eps = 1e-8f;
  o->weight_decay = weight_decay;
  size_t bytes = 256;
  for (int i = 0; i < m->nparams; i++) bytes += 2 * round256(nn_tensor_bytes(&m->params[i].value));
  int rc = nn_arena_init(&o->store, m->device, bytes, err);
  if (rc) return cmds_error_wrap(err, "AdamW state");
  nn_ctx c = {0};
  c.device = m->device;
  for (int i = 0; i < m->nparams && !rc; i++) {
    const nn_tensor *v = &m->params[i].value;
    rc = nn_tensor_alloc(&o->m[i], &o->store, NN_F32, v->ndim, v->shape, err);
    if (!rc) rc = nn_tensor_alloc(&o->v[i], &o->store, NN_F32, v->ndim, v->shape, err);
    if (!rc) rc = mapper_dev_zero(&c, &o->m[i], err);
    if (!rc) rc = mapper_dev_zero(&c, &o->v[i], err);
  }
  if (rc) mapper_adamw_free(o);
  return rc;
}

void mapper_adamw_free(mapper_adamw *o) {
  if (!o) return;
  nn_arena_free(&o->store);
  memset(o, 0, sizeof *o);
}

int mapper_adamw_step(mapper_adamw *o, mapper_model *m, nn_ctx *ctx, float lr, cmds_error *err) {
  if (ctx->device != m->device || o->store.device != m->device)
    return CMDS_FAIL(err, CMDS_EINPUT, "mapper_adamw_step: model, optimiser state and context on different devices");
  o->step++;
  float bc1 = (float)(1.0 - pow((double)o->beta1, (double)o->step));
  float bc2s = (float)sqrt(1.0 - pow((double)o->beta2, (double)o->step));
  float b1 = o->beta1, b2 = o->beta2, eps = o->eps, wd = o->weight_decay;
  for (int i = 0; i < m->nparams; i++) {
    int64_t n = nn_tensor_numel(&m->params[i].value);
    float *p = m->params[i].value.data, *mm = o->m[i].data, *vv = o->v[i].data;
    const float *g = m->params[i].grad.data;
    if (ctx->device != NN_CPU) {
#ifdef CMDS_CUDA
      int rc = mapper_cuda_adamw(ctx, p, g, mm, vv, n, lr, b1, b2, eps, wd, bc1, bc2s, err);
      if (rc) return rc;
      continue;
#else
      return MAPPER_NO_CUDA(err, "mapper_adamw_step");
#endif
    }
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < n; j++) {
      float pv = p[j] * (1.0f - lr * wd);
      mm[j] = b1 * mm[j] + (1.0f - b1) * g[j];
      vv[j] = b2 * vv[j] + (1.0f - b2) * g[j] * g[j];
      p[j] = pv - (lr / bc1) * mm[j] / (sqrtf(vv[j]) / bc2s + eps);
    }
  }
  return CMDS_OK;
}

double mapper_cosine_lr(int64_t step, int64_t total, double lr_max, double lr_min) {
  if (total <= 0 || step <= 0) return lr_max;
  if (step >= total) return lr_min;
  return lr_min + (lr_max - lr_min) * 0.5 * (1.0 + cos(3.14159265358979323846 * (double)step / (double)total));
}
