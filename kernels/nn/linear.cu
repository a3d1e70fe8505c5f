// linear.cu: y (M, N) = x (M, K) W^T + b. Row-major y = x W^T is column-major
// y^T = W x^T: W (N, K) row-major read as column-major is (K, N), transposed gives (N, K).
// With a bias, cuBLASLt adds it in the GEMM epilogue (one pass over y instead of a fill
// kernel plus a beta = 1 read); without, plain cublasSgemm. Compute type 32F, or
// 32F_FAST_TF32 when ctx->allow_tf32; bf16 operands (nn_lt_gemm_cuda, vit_bf16.h) always
// accumulate in 32F. beta = 1 adds x W^T + b onto y in the same pass (residual connections).
#include <cublasLt.h>
#include <cuda_bf16.h>

#include "vit_bf16.h"

static cudaDataType_t lt_type(nn_dtype t) { return t == NN_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// Fallback when cuBLASLt has no bias epilogue for a type combination: y[i, j] += b[j].
template <typename T>
__global__ static void add_bias_rows(T *y, const T *b, int64_t M, int64_t N) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < M * N) y[i] = (T)((float)y[i] + (float)b[i % N]);
}

extern "C" int nn_lt_gemm_cuda(nn_ctx *c, void *y, nn_dtype y_type, const void *x, const void *w,
                               nn_dtype xw_type, const void *bias, int64_t M, int64_t K, int64_t N, float beta,
                               cmds_error *err) {
  if (M == 0 || N == 0) return CMDS_OK;
  // A cuBLAS handle may be used as a cuBLASLt handle (cuBLAS documentation, cublasLtHandle_t).
  cublasLtHandle_t lt = (cublasLtHandle_t)c->cublas;
  cublasLtMatmulDesc_t op = NULL;
  cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
  cublasLtMatmulPreference_t pref = NULL;
  // The context's own workspace, always the same size (tensor.h: nn_ctx.lt_ws).
  void *ws = c->lt_ws;
  size_t ws_bytes = ws ? NN_LT_WORKSPACE_BYTES : 0;
  cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  cublasLtEpilogue_t epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  cublasComputeType_t ct = xw_type == NN_F32 && c->allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  cudaDataType_t ab = lt_type(xw_type), cd = lt_type(y_type);
  float alpha = 1.0f;
  int found = 0, rc = CMDS_OK, bias_apart = 0;
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
  LT(cublasLtMatmulDescCreate(&op, ct, CUDA_R_32F));
  LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
  if (bias) LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  LT(cublasLtMatrixLayoutCreate(&la, ab, (uint64_t)K, (uint64_t)N, K));  // W as (K, N) col-major
  LT(cublasLtMatrixLayoutCreate(&lb, ab, (uint64_t)K, (uint64_t)M, K));  // x as (K, M)
  LT(cublasLtMatrixLayoutCreate(&lc, cd, (uint64_t)N, (uint64_t)M, N));  // y as (N, M)
  LT(cublasLtMatmulPreferenceCreate(&pref));
  LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes));
  if (cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &heur, &found) != CUBLAS_STATUS_SUCCESS)
    found = 0;
  if (!found && bias) {  // no fused-bias kernel for these types: plain GEMM, then a bias pass
    bias_apart = 1;
    epi = CUBLASLT_EPILOGUE_DEFAULT;
    LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    LT(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &heur, &found));
  }
  if (!found) {
    rc = CMDS_FAIL(err, CMDS_EINTERNAL, "%s:%d: cuBLASLt found no algorithm for linear %lldx%lld -> %lld (%s -> %s)",
                   __FILE__, __LINE__, (long long)M, (long long)K, (long long)N, nn_dtype_name(xw_type),
                   nn_dtype_name(y_type));
    goto done;
  }
  LT(cublasLtMatmul(lt, op, &alpha, w, la, x, lb, &beta, y, lc, y, lc, &heur.algo, ws, ws_bytes, nn_stream(c)));
#undef LT
  if (bias_apart) {
    unsigned g = nn_grid(M * N, 256);
    if (y_type == NN_BF16)
      add_bias_rows<<<g, 256, 0, nn_stream(c)>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)bias, M, N);
    else
      add_bias_rows<<<g, 256, 0, nn_stream(c)>>>((float *)y, (const float *)bias, M, N);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
      rc = CMDS_FAIL(err, CMDS_EINTERNAL, "%s:%d: bias kernel: %s", __FILE__, __LINE__, cudaGetErrorString(e));
  }
done:
  if (pref) cublasLtMatmulPreferenceDestroy(pref);
  if (lc) cublasLtMatrixLayoutDestroy(lc);
  if (lb) cublasLtMatrixLayoutDestroy(lb);
  if (la) cublasLtMatrixLayoutDestroy(la);
  if (op) cublasLtMatmulDescDestroy(op);
  return rc;
}

extern "C" int nn_linear_cuda(nn_ctx *c, float *y, const float *x, const float *w, const float *b,
                              int64_t M, int64_t K, int64_t N, cmds_error *err) {
  if (M == 0 || N == 0) return CMDS_OK;
  if (b) return nn_lt_gemm_cuda(c, y, NN_F32, x, w, NN_F32, b, M, K, N, 0.0f, err);
  float alpha = 1.0f, beta = 0.0f;
  CUBLAS_CHECK(cublasSgemm((cublasHandle_t)c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M,
                           (int)K, &alpha, w, (int)K, x, (int)K, &beta, y, (int)N));
  return CMDS_OK;
}
