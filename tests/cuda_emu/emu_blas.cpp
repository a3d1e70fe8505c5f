// emu_blas.cpp: cuBLAS and cuBLASLt of the CUDA emulation (tests/cuda_emu), on the CPU with
// OpenBLAS. Arguments are checked as cuBLAS checks them (sizes, leading dimensions: status
// INVALID_VALUE) and every matrix must lie inside one device allocation (the emulation's own
// check). beta = 0 never reads C, as in cuBLAS. TF32 math is computed in fp32.
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "cublasLt.h"
#include "nn_half_bits.h"

bool cmds_emu_check_range(const char *what, const void *p, size_t n);
cudaError_t cmds_emu_sticky(void);

struct cmds_emu_blas {
  cudaStream_t stream;
  cublasMath_t math;
};
struct cmds_emu_lt_desc {
  cublasComputeType_t compute;
  cublasOperation_t ta, tb;
  cublasLtEpilogue_t epi;
  const void *bias;
};
struct cmds_emu_lt_layout {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};
struct cmds_emu_lt_pref {
  size_t ws;
};

namespace {

// Elements a column-major rows x cols matrix with leading dimension ld spans.
size_t span(int64_t rows, int64_t cols, int64_t ld) {
  return rows && cols ? (size_t)(ld * (cols - 1) + rows) : 0;
}

cublasStatus_t gemm_checks(const char *who, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           int lda, int ldb, int ldc) {
  int ar = ta == CUBLAS_OP_N ? m : k, br = tb == CUBLAS_OP_N ? k : n;
  if (m < 0 || n < 0 || k < 0 || lda < (ar > 1 ? ar : 1) || ldb < (br > 1 ? br : 1) || ldc < (m > 1 ? m : 1) ||
      ta > CUBLAS_OP_C || tb > CUBLAS_OP_C) {
    fprintf(stderr, "cuda-emu: %s: m %d n %d k %d lda %d ldb %d ldc %d ta %d tb %d: invalid\n", who, m, n, k, lda,
            ldb, ldc, (int)ta, (int)tb);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  return CUBLAS_STATUS_SUCCESS;
}

CBLAS_TRANSPOSE tr(cublasOperation_t t) { return t == CUBLAS_OP_N ? CblasNoTrans : CblasTrans; }

void sgemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const float *A, int lda,
           const float *B, int ldb, float beta, float *C, int ldc) {
  if (!m || !n) return;
  if (beta == 0.0f)
    for (int j = 0; j < n; j++) memset(C + (size_t)j * ldc, 0, sizeof(float) * (size_t)m);
  if (!k) {
    if (beta != 0.0f)
      for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) C[(size_t)j * ldc + i] *= beta;
    return;
  }
  cblas_sgemm(CblasColMajor, tr(ta), tr(tb), m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace

extern "C" {

cublasStatus_t cublasCreate(cublasHandle_t *h) {
  *h = new cmds_emu_blas{nullptr, CUBLAS_DEFAULT_MATH};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->math = m;
  return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "unknown cuBLAS status";
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float *alpha, const float *A, int lda, long long sA,
                                         const float *B, int ldb, long long sB, const float *beta, float *C, int ldc,
                                         long long sC, int batch) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  cublasStatus_t st = gemm_checks("cublasSgemm", ta, tb, m, n, k, lda, ldb, ldc);
  if (st != CUBLAS_STATUS_SUCCESS || batch < 0) return batch < 0 ? CUBLAS_STATUS_INVALID_VALUE : st;
  if (cmds_emu_sticky()) return CUBLAS_STATUS_EXECUTION_FAILED;
  int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
  int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
  for (int i = 0; i < batch; i++) {
    const float *a = A + (ptrdiff_t)i * sA, *b = B + (ptrdiff_t)i * sB;
    float *c = C + (ptrdiff_t)i * sC;
    bool use_ab = k && m && n && *alpha != 0.0f;
    if ((use_ab && !cmds_emu_check_range("cuBLAS gemm A", a, sizeof(float) * span(ar, ac, lda))) ||
        (use_ab && !cmds_emu_check_range("cuBLAS gemm B", b, sizeof(float) * span(br, bc, ldb))) ||
        !cmds_emu_check_range("cuBLAS gemm C", c, sizeof(float) * span(m, n, ldc))) {
      fprintf(stderr, "cuda-emu: cublasSgemm batch %d of %d: m %d n %d k %d lda %d ldb %d ldc %d\n", i, batch, m, n,
              k, lda, ldb, ldc);
      return CUBLAS_STATUS_EXECUTION_FAILED;
    }
    sgemm(ta, tb, m, n, k, *alpha, a, lda, b, ldb, *beta, c, ldc);
  }
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc) {
  return cublasSgemmStridedBatched(h, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

// ---- cuBLASLt ---------------------------------------------------------------------------------
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t ct, cudaDataType_t scale) {
  if (scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  *d = new cmds_emu_lt_desc{ct, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, nullptr};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  delete d;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a,
                                              const void *buf, size_t bytes) {
  switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
      if (bytes != sizeof(cublasOperation_t)) return CUBLAS_STATUS_INVALID_VALUE;
      memcpy(&d->ta, buf, bytes);
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_TRANSB:
      if (bytes != sizeof(cublasOperation_t)) return CUBLAS_STATUS_INVALID_VALUE;
      memcpy(&d->tb, buf, bytes);
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
      if (bytes != sizeof(cublasLtEpilogue_t)) return CUBLAS_STATUS_INVALID_VALUE;
      memcpy(&d->epi, buf, bytes);
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      if (bytes != sizeof(void *)) return CUBLAS_STATUS_INVALID_VALUE;
      memcpy(&d->bias, buf, bytes);
      return CUBLAS_STATUS_SUCCESS;
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t t, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
  if (ld < (int64_t)rows || ld < 1) return CUBLAS_STATUS_INVALID_VALUE;
  *l = new cmds_emu_lt_layout{t, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  delete l;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
  *p = new cmds_emu_lt_pref{0};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  delete p;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t a, const void *buf,
                                                    size_t bytes) {
  if (a != CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES || bytes != sizeof(size_t)) return CUBLAS_STATUS_INVALID_VALUE;
  memcpy(&p->ws, buf, bytes);
  return CUBLAS_STATUS_SUCCESS;
}

static bool lt_type_ok(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_16BF; }

static bool lt_shapes(cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                      cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d, uint64_t *m, uint64_t *n, uint64_t *k) {
  uint64_t ar = op->ta == CUBLAS_OP_N ? a->rows : a->cols, ak = op->ta == CUBLAS_OP_N ? a->cols : a->rows;
  uint64_t bk = op->tb == CUBLAS_OP_N ? b->rows : b->cols, bc = op->tb == CUBLAS_OP_N ? b->cols : b->rows;
  *m = ar, *n = bc, *k = ak;
  return ak == bk && c->rows == ar && c->cols == bc && d->rows == ar && d->cols == bc && a->type == b->type &&
         c->type == d->type && lt_type_ok(a->type) && lt_type_ok(d->type);
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t d, cublasLtMatmulPreference_t pref,
                                              int requested, cublasLtMatmulHeuristicResult_t *results, int *found) {
  (void)pref;
  uint64_t m, n, k;
  *found = 0;
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (requested < 1 || !lt_shapes(op, a, b, c, d, &m, &n, &k)) return CUBLAS_STATUS_INVALID_VALUE;
  memset(results, 0, sizeof *results);
  *found = 1;
  return CUBLAS_STATUS_SUCCESS;
}

static size_t lt_bytes(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }

static float lt_get(const void *p, cudaDataType_t t, size_t i) {
  return t == CUDA_R_32F ? ((const float *)p)[i] : nn_bits_bf16_to_f32(((const uint16_t *)p)[i]);
}

static void lt_put(void *p, cudaDataType_t t, size_t i, float f) {
  if (t == CUDA_R_32F)
    ((float *)p)[i] = f;
  else
    ((uint16_t *)p)[i] = nn_bits_f32_to_bf16(f);
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t op, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t la, const void *B, cublasLtMatrixLayout_t lb, const void *beta,
                              const void *C, cublasLtMatrixLayout_t lc, void *D, cublasLtMatrixLayout_t ld,
                              const cublasLtMatmulAlgo_t *algo, void *ws, size_t ws_bytes, cudaStream_t s) {
  (void)algo, (void)s;
  uint64_t m, n, k;
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!lt_shapes(op, la, lb, lc, ld, &m, &n, &k)) return CUBLAS_STATUS_INVALID_VALUE;
  if (op->epi != CUBLASLT_EPILOGUE_DEFAULT && op->epi != CUBLASLT_EPILOGUE_BIAS) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (cmds_emu_sticky()) return CUBLAS_STATUS_EXECUTION_FAILED;
  float al = *(const float *)alpha, be = *(const float *)beta;
  if (!m || !n) return CUBLAS_STATUS_SUCCESS;
  bool ok = cmds_emu_check_range("cuBLASLt A", A, lt_bytes(la->type) * span((int64_t)la->rows, (int64_t)la->cols, la->ld)) &&
            cmds_emu_check_range("cuBLASLt B", B, lt_bytes(lb->type) * span((int64_t)lb->rows, (int64_t)lb->cols, lb->ld)) &&
            cmds_emu_check_range("cuBLASLt D", D, lt_bytes(ld->type) * span((int64_t)m, (int64_t)n, ld->ld)) &&
            (be == 0.0f ||
             cmds_emu_check_range("cuBLASLt C", C, lt_bytes(lc->type) * span((int64_t)m, (int64_t)n, lc->ld))) &&
            (op->epi != CUBLASLT_EPILOGUE_BIAS ||
             cmds_emu_check_range("cuBLASLt bias", op->bias, lt_bytes(ld->type) * m)) &&
            (!ws_bytes || cmds_emu_check_range("cuBLASLt workspace", ws, ws_bytes));
  if (!ok) return CUBLAS_STATUS_EXECUTION_FAILED;
  // fp32 copies of the operands as column-major, a product in fp32, then the epilogue and D's type.
  std::vector<float> a((size_t)(la->rows * la->cols)), b((size_t)(lb->rows * lb->cols)), d((size_t)(m * n));
  for (uint64_t j = 0; j < la->cols; j++)
    for (uint64_t i = 0; i < la->rows; i++) a[j * la->rows + i] = lt_get(A, la->type, j * (uint64_t)la->ld + i);
  for (uint64_t j = 0; j < lb->cols; j++)
    for (uint64_t i = 0; i < lb->rows; i++) b[j * lb->rows + i] = lt_get(B, lb->type, j * (uint64_t)lb->ld + i);
  sgemm(op->ta, op->tb, (int)m, (int)n, (int)k, al, a.data(), (int)la->rows, b.data(), (int)lb->rows, 0.0f,
        d.data(), (int)m);
  for (uint64_t j = 0; j < n; j++)
    for (uint64_t i = 0; i < m; i++) {
      float v = d[j * m + i];
      if (be != 0.0f) v += be * lt_get(C, lc->type, j * (uint64_t)lc->ld + i);
      if (op->epi == CUBLASLT_EPILOGUE_BIAS) v += lt_get(op->bias, ld->type, i);
      lt_put(D, ld->type, j * (uint64_t)ld->ld + i, v);
    }
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
