/* elementwise: CPU reference and dispatcher (see elementwise.h). */
#include "elementwise.h"

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
