/* cosine: CPU reference and dispatcher (see cosine.h). */
#include "cosine.h"

#include <math.h>

#ifdef CMDS_CUDA
#include "nn_cuda.h"
#endif

int nn_cosine_distance_forward(nn_ctx *ctx, nn_tensor *d, const nn_tensor *a, const nn_tensor *b,
                               cmds_error *err) {
  const char *op = "nn_cosine_distance_forward";
  if (!a || a->ndim != 4) return CMDS_FAIL(err, CMDS_EINPUT, "%s: a must be (B, C, H, W)", op);
  int64_t B = a->shape[0], C = a->shape[1], HW = a->shape[2] * a->shape[3];
  int64_t dshape[3] = {B, a->shape[2], a->shape[3]};
  int rc = nn_tensor_expect(a, op, "a", ctx->device, 4, a->shape, err);
  if (!rc) rc = nn_tensor_expect(b, op, "b", ctx->device, 4, a->shape, err);
  if (!rc) rc = nn_tensor_expect(d, op, "d", ctx->device, 3, dshape, err);
  if (rc) return rc;
  if (ctx->device == NN_CPU) {
    const float *ad = a->data, *bd = b->data;
    float *dd = d->data;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < B * HW; p++) {
      const float *ap = ad + (p / HW) * C * HW + p % HW, *bp = bd + (p / HW) * C * HW + p % HW;
      double ab = 0, aa = 0, bb = 0;
      for (int64_t c = 0; c < C; c++) {
        double u = ap[c * HW], w = bp[c * HW];
        ab += u * w;
        aa += u * u;
        bb += w * w;
      }
      double na = fmax(sqrt(aa), NN_COSINE_EPS), nb = fmax(sqrt(bb), NN_COSINE_EPS);
      dd[p] = (float)(1.0 - ab / (na * nb));
    }
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_cosine_distance_cuda(ctx, d->data, a->data, b->data, B, C, HW, NN_COSINE_EPS, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}
