/* linear_backward: CPU reference (OpenBLAS) and the dispatcher of nn_linear_backward (see
 * backward.h). With X (R, in), dY (R, out), W (out, in):
 *   dX = dY W  (SET),   dW += dY^T X,   db += column sums of dY (double, fixed order). */
#include "nn_blas.h"

#include "backward.h"

#ifdef CMDS_CUDA
#include "nn_cuda_train.h"
#endif

int nn_linear_backward(nn_ctx *ctx, nn_tensor *dx, nn_tensor *dw, nn_tensor *db, const nn_tensor *dy,
                       const nn_tensor *x, const nn_tensor *w, cmds_error *err) {
  const char *op = "nn_linear_backward";
  if (!x || x->ndim < 1 || !w || w->ndim != 2 || !dy)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: x (..., in), W (out, in) and dy (..., out) must be given", op);
  int64_t K = x->shape[x->ndim - 1], N = w->shape[0], R = K ? nn_tensor_numel(x) / K : 0;
  int64_t wshape[2] = {N, K}, yshape[NN_MAX_DIMS];
  for (int i = 0; i < x->ndim; i++) yshape[i] = x->shape[i];
  yshape[x->ndim - 1] = N;
  int rc = nn_tensor_expect(x, op, "x", ctx->device, x->ndim, x->shape, err);
  if (!rc) rc = nn_tensor_expect(w, op, "W", ctx->device, 2, wshape, err);
  if (!rc) rc = nn_tensor_expect(dy, op, "dy", ctx->device, x->ndim, yshape, err);
  if (!rc && dx) rc = nn_tensor_expect(dx, op, "dx", ctx->device, x->ndim, x->shape, err);
  if (!rc && dw) rc = nn_tensor_expect(dw, op, "dW", ctx->device, 2, wshape, err);
  if (!rc && db) rc = nn_tensor_expect(db, op, "db", ctx->device, 1, &N, err);
  if (rc) return rc;
  if (dx && (dx->data == dy->data || dx->data == x->data || dx->data == w->data))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: dx must not alias dy, x or W", op);
  float *dxd = dx ? dx->data : NULL, *dwd = dw ? dw->data : NULL, *dbd = db ? db->data : NULL;
  const float *dyd = dy->data, *xd = x->data, *wd = w->data;
  if (ctx->device != NN_CPU) {
#ifdef CMDS_CUDA
    return nn_linear_backward_cuda(ctx, dxd, dwd, dbd, dyd, xd, wd, R, K, N, err);
#else
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
  }
  if (dxd && R > 0 && K > 0) {
    if (N > 0)
      nn_sgemm(CblasNoTrans, CblasNoTrans, R, K, N, 1.0f, dyd, N, wd, K, 0.0f, dxd, K);
    else
      for (int64_t i = 0; i < R * K; i++) dxd[i] = 0.0f;
  }
  if (dwd && R > 0 && N > 0 && K > 0)
    nn_sgemm(CblasTrans, CblasNoTrans, N, K, R, 1.0f, dyd, N, xd, K, 1.0f, dwd, K);
  if (dbd) {
    /* blocks of 16 columns per task, rows in order: deterministic whatever the threads */
#pragma omp parallel for schedule(static)
    for (int64_t j0 = 0; j0 < N; j0 += 16) {
      int64_t j1 = j0 + 16 < N ? j0 + 16 : N;
      double s[16] = {0};
      for (int64_t r = 0; r < R; r++)
        for (int64_t j = j0; j < j1; j++) s[j - j0] += dyd[r * N + j];
      for (int64_t j = j0; j < j1; j++) dbd[j] += (float)s[j - j0];
    }
  }
  return CMDS_OK;
}
