// linear.cu: y (M, N) = x (M, K) W^T + b. Row-major y = x W^T is column-major
// y^T = W x^T: W (N, K) row-major read as column-major is (K, N), transposed gives (N, K).
// With a bias, cuBLASLt adds it in the GEMM epilogue (one pass over y instead of a fill
// kernel plus a beta = 1 read); without, plain cublasSgemm. Compute type 32F, or
// 32F_FAST_TF32 when ctx->allow_tf32.
#include <cublasLt.h>

#include "nn_cuda.h"

#define LT_WORKSPACE_BYTES ((size_t)32 << 20)

static int linear_lt_bias(nn_ctx *c, float *y, const float *x, const float *w, const float *b,
                          int64_t M, int64_t K, int64_t N, cmds_error *err) {
  // A cuBLAS handle may be used as a cuBLASLt handle (cuBLAS documentation, cublasLtHandle_t).
  cublasLtHandle_t lt = (cublasLtHandle_t)c->cublas;
  cublasLtMatmulDesc_t op = NULL;
  cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
  cublasLtMatmulPreference_t pref = NULL;
  void *ws = NULL;
  size_t ws_bytes = 0, mark = c->scratch ? nn_arena_mark(c->scratch) : 0;
  if (c->scratch) {  // workspace from the scratch arena when it has room, else none
    cmds_error quiet = {0};
    ws = nn_arena_alloc(c->scratch, LT_WORKSPACE_BYTES, &quiet);
    ws_bytes = ws ? LT_WORKSPACE_BYTES : 0;
  }
  cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
  float alpha = 1.0f, beta = 0.0f;
  int found = 0, rc = CMDS_OK;
  cublasLtMatmulHeuristicResult_t heur;
#define LT(call)                                                                               \
  do {                                                                                         \
    cublasStatus_t s_ = (call);                                                                \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
      rc = CMDS_FAIL(err, CMDS_EINTERNAL, "%s:%d: %s: cuBLAS status %d (%s)", __FILE__, __LINE__, \
                     #call, (int)s_, cublasGetStatusString(s_));                               \
      goto done;                                                                               \
    }                                                                                          \
  } while (0)
  LT(cublasLtMatmulDescCreate(&op, c->allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUDA_R_32F));
  LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
  LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof b));
  LT(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, (uint64_t)K, (uint64_t)N, K));  // W as (K, N) col-major
  LT(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, (uint64_t)K, (uint64_t)M, K));  // x as (K, M)
  LT(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, (uint64_t)N, (uint64_t)M, N));  // y as (N, M)
  LT(cublasLtMatmulPreferenceCreate(&pref));
  LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes));
  LT(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &heur, &found));
  if (!found) {
    rc = CMDS_FAIL(err, CMDS_EINTERNAL, "%s:%d: cuBLASLt found no algorithm for linear %lldx%lld -> %lld",
                   __FILE__, __LINE__, (long long)M, (long long)K, (long long)N);
    goto done;
  }
  LT(cublasLtMatmul(lt, op, &alpha, w, la, x, lb, &beta, y, lc, y, lc, &heur.algo, ws, ws_bytes, nn_stream(c)));
#undef LT
done:
  if (pref) cublasLtMatmulPreferenceDestroy(pref);
  if (lc) cublasLtMatrixLayoutDestroy(lc);
  if (lb) cublasLtMatrixLayoutDestroy(lb);
  if (la) cublasLtMatrixLayoutDestroy(la);
  if (op) cublasLtMatmulDescDestroy(op);
  if (c->scratch) nn_arena_rewind(c->scratch, mark);
  return rc;
}

extern "C" int nn_linear_cuda(nn_ctx *c, float *y, const float *x, const float *w, const float *b,
                              int64_t M, int64_t K, int64_t N, cmds_error *err) {
  if (M == 0 || N == 0) return CMDS_OK;
  if (b) return linear_lt_bias(c, y, x, w, b, M, K, N, err);
  float alpha = 1.0f, beta = 0.0f;
  CUBLAS_CHECK(cublasSgemm((cublasHandle_t)c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M,
                           (int)K, &alpha, w, (int)K, x, (int)K, &beta, y, (int)N));
  return CMDS_OK;
}
