/* elementwise_backward: CPU references and dispatchers of the training glue in elementwise.h
 * (sum_hw, split_channels, mse, sumsq, sumsq_many). The two reductions to a double sum over a fixed
 * number of contiguous chunks, added in chunk order, so the result does not depend on the
 * thread count. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elementwise.h"

#ifdef CMDS_CUDA
#include "nn_cuda_train.h"
#endif

#define ELB_CHUNKS 64                    /* fixed CPU partition of the reductions */
#define ELB_CUDA_SCRATCH ((size_t)8192)  /* bytes of ctx->scratch the CUDA reductions take */

#define ELB_NO_CUDA(op) CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op)

int nn_sum_hw_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err) {
  const char *op = "nn_sum_hw_forward";
  if (!x || x->ndim != 4) return CMDS_FAIL(err, CMDS_EINPUT, "%s: x must be (B, C, H, W)", op);
  int64_t B = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3], yshape[2] = {B, C};
  int rc = nn_tensor_expect(x, op, "x", ctx->device, 4, x->shape, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, 2, yshape, err);
  if (rc) return rc;
  if (y->data == x->data) return CMDS_FAIL(err, CMDS_EINPUT, "%s: y must not alias x", op);
  if (ctx->device == NN_CPU) {
    const float *xd = x->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < B * C; p++) {
      double s = 0.0;
      for (int64_t i = 0; i < HW; i++) s += xd[p * HW + i];
      yd[p] = (float)s;
    }
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_sum_hw_cuda(ctx, y->data, x->data, B * C, HW, err);
#else
  return ELB_NO_CUDA(op);
#endif
}

int nn_split_channels_forward(nn_ctx *ctx, nn_tensor *a, nn_tensor *b, const nn_tensor *x, cmds_error *err) {
  const char *op = "nn_split_channels_forward";
  if (!x || x->ndim != 4) return CMDS_FAIL(err, CMDS_EINPUT, "%s: x must be (B, C, H, W)", op);
  if (!a && !b) return CMDS_FAIL(err, CMDS_EINPUT, "%s: a and b are both NULL (nothing to split into)", op);
  if ((a && a->ndim != 4) || (b && b->ndim != 4))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: a and b must be (B, C, H, W)", op);
  int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  int64_t Ca = a ? a->shape[1] : C - b->shape[1], Cb = C - Ca;
  if (Ca < 0 || Cb < 0)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s has %lld channels, more than x's %lld", op, a ? "a" : "b",
                     (long long)(a ? Ca : Cb + Ca + Cb), (long long)C);
  int64_t ashape[4] = {B, Ca, H, W}, bshape[4] = {B, Cb, H, W};
  int rc = nn_tensor_expect(x, op, "x", ctx->device, 4, x->shape, err);
  if (!rc && a) rc = nn_tensor_expect(a, op, "a", ctx->device, 4, ashape, err);
  if (!rc && b) rc = nn_tensor_expect(b, op, "b", ctx->device, 4, bshape, err);
  if (rc) return rc;
  if ((a && a->data == x->data) || (b && b->data == x->data))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: a and b must not alias x", op);
  int64_t HW = H * W;
  float *ad = a ? a->data : NULL, *bd = b ? b->data : NULL;
  if (ctx->device == NN_CPU) {
    const float *xd = x->data;
#pragma omp parallel for schedule(static)
    for (int64_t bi = 0; bi < B; bi++) {
      const float *xb = xd + bi * C * HW;
      if (ad) memcpy(ad + bi * Ca * HW, xb, (size_t)(Ca * HW) * sizeof(float));
      if (bd) memcpy(bd + bi * Cb * HW, xb + Ca * HW, (size_t)(Cb * HW) * sizeof(float));
    }
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_split_channels_cuda(ctx, ad, bd, x->data, B, Ca, Cb, HW, err);
#else
  return ELB_NO_CUDA(op);
#endif
}

/* sum over i of (a[i] - t[i])^2 (t NULL: a[i]^2), optionally writing d[i] = dscale (a[i] - t[i]). */
static double elb_sumsq_cpu(const float *a, const float *t, float *d, float dscale, int64_t n) {
  double part[ELB_CHUNKS];
  int64_t per = (n + ELB_CHUNKS - 1) / ELB_CHUNKS;
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < ELB_CHUNKS; ch++) {
    int64_t i0 = (int64_t)ch * per, i1 = i0 + per < n ? i0 + per : n;
    double s = 0.0;
    for (int64_t i = i0; i < i1; i++) {
      float e = t ? a[i] - t[i] : a[i];
      s += (double)e * (double)e;
      if (d) d[i] = dscale * e;
    }
    part[ch] = s;
  }
  double s = 0.0;
  for (int ch = 0; ch < ELB_CHUNKS; ch++) s += part[ch];
  return s;
}

int nn_mse_forward(nn_ctx *ctx, double *loss, nn_tensor *dp, const nn_tensor *p, const nn_tensor *t,
                   cmds_error *err) {
  const char *op = "nn_mse_forward";
  if (!loss || !p || !t) return CMDS_FAIL(err, CMDS_EINPUT, "%s: loss, p and t must be given", op);
  int rc = nn_tensor_expect(p, op, "p", ctx->device, p->ndim, p->shape, err);
  if (!rc) rc = nn_tensor_expect(t, op, "t", ctx->device, p->ndim, p->shape, err);
  if (!rc && dp) rc = nn_tensor_expect(dp, op, "dp", ctx->device, p->ndim, p->shape, err);
  if (rc) return rc;
  int64_t n = nn_tensor_numel(p);
  if (n == 0) return CMDS_FAIL(err, CMDS_EINPUT, "%s: p has no elements (the mean is undefined)", op);
  float dscale = (float)(2.0 / (double)n);
  float *dpd = dp ? dp->data : NULL;
  if (ctx->device == NN_CPU) {
    *loss = elb_sumsq_cpu(p->data, t->data, dpd, dscale, n) / (double)n;
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  if (!ctx->scratch) return CMDS_FAIL(err, CMDS_EINPUT, "%s: needs a scratch arena in the context", op);
  size_t mark = nn_arena_mark(ctx->scratch);
  void *ws = nn_arena_alloc(ctx->scratch, ELB_CUDA_SCRATCH, err);
  if (!ws) return cmds_error_wrap(err, "%s partial sums", op);
  double s = 0.0;
  rc = nn_sumsq_cuda(ctx, &s, p->data, t->data, dpd, dscale, n, ws, err);
  nn_arena_rewind(ctx->scratch, mark);
  if (!rc) *loss = s / (double)n;
  return rc;
#else
  return ELB_NO_CUDA(op);
#endif
}

int nn_sumsq_forward(nn_ctx *ctx, double *out, const nn_tensor *x, cmds_error *err) {
  const char *op = "nn_sumsq_forward";
  if (!out || !x) return CMDS_FAIL(err, CMDS_EINPUT, "%s: out and x must be given", op);
  int rc = nn_tensor_expect(x, op, "x", ctx->device, x->ndim, x->shape, err);
  if (rc) return rc;
  int64_t n = nn_tensor_numel(x);
  if (ctx->device == NN_CPU) {
    *out = elb_sumsq_cpu(x->data, NULL, NULL, 0.0f, n);
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  if (!ctx->scratch) return CMDS_FAIL(err, CMDS_EINPUT, "%s: needs a scratch arena in the context", op);
  size_t mark = nn_arena_mark(ctx->scratch);
  void *ws = nn_arena_alloc(ctx->scratch, ELB_CUDA_SCRATCH, err);
  if (!ws) return cmds_error_wrap(err, "%s partial sums", op);
  rc = nn_sumsq_cuda(ctx, out, x->data, NULL, NULL, 0.0f, n, ws, err);
  nn_arena_rewind(ctx->scratch, mark);
  return rc;
#else
  return ELB_NO_CUDA(op);
#endif
}

int nn_sumsq_many_forward(nn_ctx *ctx, double *out, const nn_tensor *const *xs, int count, cmds_error *err) {
  const char *op = "nn_sumsq_many_forward";
  if (!out || (count > 0 && !xs) || count < 0) return CMDS_FAIL(err, CMDS_EINPUT, "%s: out and xs must be given", op);
  for (int i = 0; i < count; i++) {
    char what[32];
    snprintf(what, sizeof what, "xs[%d]", i);
    if (!xs[i]) return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s is NULL", op, what);
    int rc = nn_tensor_expect(xs[i], op, what, ctx->device, xs[i]->ndim, xs[i]->shape, err);
    if (rc) return rc;
  }
  if (ctx->device == NN_CPU) {
    double s = 0.0;
    for (int i = 0; i < count; i++) s += elb_sumsq_cpu(xs[i]->data, NULL, NULL, 0.0f, nn_tensor_numel(xs[i]));
    *out = s;
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  if (!ctx->scratch) return CMDS_FAIL(err, CMDS_EINPUT, "%s: needs a scratch arena in the context", op);
  const float **x = malloc(sizeof *x * (size_t)(count ? count : 1));
  int64_t *n = malloc(sizeof *n * (size_t)(count ? count : 1));
  if (!x || !n) {
    free(x), free(n);
    return CMDS_FAIL(err, CMDS_ENOMEM, "%s: %d tensors", op, count);
  }
  int64_t chunks = 0;
  for (int i = 0; i < count; i++) {
    x[i] = xs[i]->data, n[i] = nn_tensor_numel(xs[i]);
    chunks += (n[i] + NN_SUMSQ_CHUNK - 1) / NN_SUMSQ_CHUNK;
  }
  size_t mark = nn_arena_mark(ctx->scratch);
  void *ws = nn_arena_alloc(ctx->scratch, NN_SUMSQ_MANY_SCRATCH(chunks), err);
  int rc = ws ? nn_sumsq_many_cuda(ctx, out, x, n, count, chunks, ws, err) : cmds_error_wrap(err, "%s chunks", op);
  nn_arena_rewind(ctx->scratch, mark);
  free(x), free(n);
  return rc;
#else
  return ELB_NO_CUDA(op);
#endif
}
