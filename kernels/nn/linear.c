/* linear: CPU reference through OpenBLAS and the dispatcher (see linear.h). */
#include "linear.h"

#include "nn_blas.h"

#ifdef CMDS_CUDA
#include "nn_cuda.h"
#endif

void nn_linear_cpu(float *y, int64_t ld_y, const float *x, int64_t ld_x, const float *w,
                   const float *b, int64_t M, int64_t K, int64_t N) {
  if (M == 0 || N == 0) return;
  float beta = 0.0f;
  if (b) {  /* start from the bias in every row, then accumulate x W^T onto it */
#pragma omp parallel for schedule(static) if (M * N > 65536)
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) y[i * ld_y + j] = b[j];
    beta = 1.0f;
  }
  nn_sgemm(CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, ld_x, w, K, beta, y, ld_y);
}

int nn_linear_forward(nn_ctx *ctx, nn_tensor *y, const nn_tensor *x, const nn_tensor *w,
                      const nn_tensor *b, cmds_error *err) {
  const char *op = "nn_linear_forward";
  if (!x || x->ndim < 1 || !w || w->ndim != 2)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: x must have >= 1 dims and W 2 dims (N, K)", op);
  int64_t K = x->shape[x->ndim - 1], N = w->shape[0], M = nn_tensor_numel(x) / (K ? K : 1);
  int64_t wshape[2] = {N, K}, yshape[NN_MAX_DIMS];
  for (int i = 0; i < x->ndim; i++) yshape[i] = x->shape[i];
  yshape[x->ndim - 1] = N;
  int rc = nn_tensor_expect(x, op, "x", ctx->device, x->ndim, x->shape, err);
  if (!rc) rc = nn_tensor_expect(w, op, "W", ctx->device, 2, wshape, err);
  if (!rc && b) rc = nn_tensor_expect(b, op, "b", ctx->device, 1, &N, err);
  if (!rc) rc = nn_tensor_expect(y, op, "y", ctx->device, x->ndim, yshape, err);
  if (rc) return rc;
  const float *bias = b ? (const float *)b->data : NULL;
  if (ctx->device == NN_CPU) {
    nn_linear_cpu(y->data, N, x->data, K, w->data, bias, M, K, N);
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_linear_cuda(ctx, y->data, x->data, w->data, bias, M, K, N, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}
