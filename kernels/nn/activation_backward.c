/* activation_backward: CPU reference and dispatcher of nn_gelu_backward (see backward.h):
 * GELU'(x) = Phi(x) + x phi(x), Phi the standard normal CDF and phi its density (nn_fast_phi,
 * nn_fast_gauss: vectorised, see nn_fastexp.h). */
#include <math.h>

#include "backward.h"
#include "nn_fastexp.h"

#ifdef CMDS_CUDA
#include "nn_cuda_backward.h"
#endif

int nn_gelu_backward(nn_ctx *ctx, nn_tensor *dx, const nn_tensor *dy, const nn_tensor *x,
                     cmds_error *err) {
  const char *op = "nn_gelu_backward";
  if (!x || !dy || !dx) return CMDS_FAIL(err, CMDS_EINPUT, "%s: dx, dy and x must be given", op);
  int rc = nn_tensor_expect(x, op, "x", ctx->device, x->ndim, x->shape, err);
  if (!rc) rc = nn_tensor_expect(dy, op, "dy", ctx->device, x->ndim, x->shape, err);
  if (!rc) rc = nn_tensor_expect(dx, op, "dx", ctx->device, x->ndim, x->shape, err);
  if (rc) return rc;
  int64_t n = nn_tensor_numel(x);
  const float *xd = x->data, *dyd = dy->data;
  float *dxd = dx->data;
  if (ctx->device == NN_CPU) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
      float v = xd[i];
      float cdf = nn_fast_phi(v), pdf = 0.39894228040143268f * nn_fast_gauss(v);
      dxd[i] = dyd[i] * (cdf + v * pdf);
    }
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_gelu_backward_cuda(ctx, dxd, dyd, xd, n, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}
