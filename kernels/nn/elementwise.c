/* elementwise: CPU reference and dispatcher (see elementwise.h). */
#include "elementwise.h"

#include <string.h>

#ifdef CMDS_CUDA
#include "nn_cuda.h"
#endif

int nn_add_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *a, const nn_tensor *b, cmds_error *err) {
  const char *op = "nn_add_forward";
  if (!a || !b) return CMDS_FAIL(err, CMDS_EINPUT, "%s: a or b missing", op);
  int rc = nn_tensor_expect(a, op, "a", ctx->device, a->ndim, a->shape, err);
  if (!rc) rc = nn_tensor_expect(b, op, "b", ctx->device, b->ndim, b->shape, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, a->ndim, a->shape, err);
  if (rc) return rc;
  int64_t n = nn_tensor_numel(a), nb = nn_tensor_numel(b);
  if (nb == 0 || n % nb)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: b has %lld elements, which do not tile a's %lld", op,
                     (long long)nb, (long long)n);
  if (ctx->device == NN_CPU) {
    const float *ad = a->data, *bd = b->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) yd[i] = ad[i] + bd[i % nb];
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_add_cuda(ctx, y->data, a->data, b->data, n, nb, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}

#define ELEM_NO_CUDA(op) CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op)

/* One side's f32/device check without a shape (the caller checks the element counts). */
static int elem_expect_any(const nn_tensor *t, const char *op, const char *arg, nn_device d, cmds_error *err) {
  if (!t) return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s is missing", op, arg);
  return nn_tensor_expect(t, op, arg, d, t->ndim, t->shape, err);
}

int nn_axpby_forward(nn_ctx *ctx, nn_tensor *y, float alpha, const nn_tensor *a, float beta,
                     const nn_tensor *b, cmds_error *err) {
  const char *op = "nn_axpby_forward";
  int rc = elem_expect_any(a, op, "a", ctx->device, err);
  if (!rc) rc = elem_expect_any(b, op, "b", ctx->device, err);
  if (!rc) rc = elem_expect_any(y, op, "y", ctx->device, err);
  if (rc) return rc;
  int64_t n = nn_tensor_numel(a);
  if (nn_tensor_numel(b) != n || nn_tensor_numel(y) != n) {
    char sa[96], sb[96], sy[96];
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: a %s, b %s and y %s must have the same number of elements", op,
                     nn_tensor_shape_str(a, sa, sizeof sa), nn_tensor_shape_str(b, sb, sizeof sb),
                     nn_tensor_shape_str(y, sy, sizeof sy));
  }
  if (ctx->device == NN_CPU) {
    const float *ad = a->data, *bd = b->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) yd[i] = alpha * ad[i] + beta * bd[i];
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_axpby_cuda(ctx, y->data, alpha, a->data, beta, b->data, n, err);
#else
  return ELEM_NO_CUDA(op);
#endif
}

int nn_scale_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, float s, cmds_error *err) {
  const char *op = "nn_scale_forward";
  if (!x) return CMDS_FAIL(err, CMDS_EINPUT, "%s: x missing", op);
  int rc = nn_tensor_expect(x, op, "x", ctx->device, x->ndim, x->shape, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, x->ndim, x->shape, err);
  if (rc) return rc;
  int64_t n = nn_tensor_numel(x);
  if (ctx->device == NN_CPU) {
    const float *xd = x->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) yd[i] = s * xd[i];
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_axpby_cuda(ctx, y->data, s, x->data, 0.0f, NULL, n, err);
#else
  return ELEM_NO_CUDA(op);
#endif
}

int nn_add_channel_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *a, const nn_tensor *b,
                           cmds_error *err) {
  const char *op = "nn_add_channel_forward";
  if (!a || a->ndim != 4) return CMDS_FAIL(err, CMDS_EINPUT, "%s: a must be (B, C, H, W)", op);
  int64_t B = a->shape[0], C = a->shape[1], HW = a->shape[2] * a->shape[3], bshape[2] = {B, C};
  int rc = nn_tensor_expect(a, op, "a", ctx->device, 4, a->shape, err);
  if (!rc) rc = nn_tensor_expect(b, op, "b", ctx->device, 2, bshape, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, 4, a->shape, err);
  if (rc) return rc;
  if (ctx->device == NN_CPU) {
    const float *ad = a->data, *bd = b->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < B * C; p++) {
      float add = bd[p];
      for (int64_t i = 0; i < HW; i++) yd[p * HW + i] = ad[p * HW + i] + add;
    }
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_add_channel_cuda(ctx, y->data, a->data, b->data, B * C, HW, err);
#else
  return ELEM_NO_CUDA(op);
#endif
}

int nn_concat_channels_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *a, const nn_tensor *b,
                               cmds_error *err) {
  const char *op = "nn_concat_channels_forward";
  if (!a || a->ndim != 4 || !b || b->ndim != 4)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: a and b must be (B, C, H, W)", op);
  int64_t B = a->shape[0], Ca = a->shape[1], H = a->shape[2], W = a->shape[3], Cb = b->shape[1];
  int64_t bshape[4] = {B, Cb, H, W}, yshape[4] = {B, Ca + Cb, H, W};
  int rc = nn_tensor_expect(a, op, "a", ctx->device, 4, a->shape, err);
  if (!rc) rc = nn_tensor_expect(b, op, "b", ctx->device, 4, bshape, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, 4, yshape, err);
  if (rc) return rc;
  if (y->data == a->data || y->data == b->data)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: y must not alias a or b", op);
  int64_t HW = H * W;
  if (ctx->device == NN_CPU) {
    const float *ad = a->data, *bd = b->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static)
    for (int64_t bi = 0; bi < B; bi++) {
      float *yb = yd + bi * (Ca + Cb) * HW;
      memcpy(yb, ad + bi * Ca * HW, (size_t)(Ca * HW) * sizeof(float));
      memcpy(yb + Ca * HW, bd + bi * Cb * HW, (size_t)(Cb * HW) * sizeof(float));
    }
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_concat_channels_cuda(ctx, y->data, a->data, b->data, B, Ca, Cb, HW, err);
#else
  return ELEM_NO_CUDA(op);
#endif
}

int nn_transpose12_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, cmds_error *err) {
  const char *op = "nn_transpose12_forward";
  if (!x || x->ndim != 3) return CMDS_FAIL(err, CMDS_EINPUT, "%s: x must be (B, R, S)", op);
  int64_t B = x->shape[0], R = x->shape[1], S = x->shape[2], yshape[3] = {B, S, R};
  int rc = nn_tensor_expect(x, op, "x", ctx->device, 3, x->shape, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, 3, yshape, err);
  if (rc) return rc;
  if (y->data == x->data) return CMDS_FAIL(err, CMDS_EINPUT, "%s: y must not alias x", op);
  if (ctx->device == NN_CPU) {
    const float *xd = x->data;
    float *yd = y->data;
    const int64_t T = 32; /* tiles keep both sides' cache lines in use */
    int64_t tr = (R + T - 1) / T, ts = (S + T - 1) / T;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < B * tr * ts; t++) {
      int64_t bi = t / (tr * ts), r0 = (t / ts) % tr * T, s0 = t % ts * T;
      const float *xb = xd + bi * R * S;
      float *yb = yd + bi * R * S;
      int64_t r1 = r0 + T < R ? r0 + T : R, s1 = s0 + T < S ? s0 + T : S;
      for (int64_t s = s0; s < s1; s++)
        for (int64_t r = r0; r < r1; r++) yb[s * R + r] = xb[r * S + s];
    }
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_transpose12_cuda(ctx, y->data, x->data, B, R, S, err);
#else
  return ELEM_NO_CUDA(op);
#endif
}
