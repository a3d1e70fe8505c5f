// test_cuda_emu: the CUDA emulation itself (tests/cuda_emu), built only with CMDS_CUDA_EMU.
//   - right results: warp shuffles (xor, down, up, idx, widths 8 and 32) against their CUDA
//     definitions, block sums through shared memory and __syncthreads on 1-D and 3-D blocks,
//     threadIdx / blockIdx over a 3-D grid, a kernel template deduced from its arguments;
//     cuBLAS sgemm (every transpose, padded leading dimensions, beta 0 over NaN, strided
//     batches) and cuBLASLt (bias epilogue, bf16 operands) against a double loop; the sm_80
//     instructions: mma.sync m16n8k16 bf16 on fragments from ldmatrix (plain and .trans) out of
//     dynamic shared memory filled by cp.async, against a double loop; a cp.async copy read
//     before its wait is seen landed by some threads and not by others, and by all after it;
//   - every misuse reported as CUDA would fail, each in its own child process (a kernel failure
//     is sticky): __syncthreads reached by part of a block (deadlock), a full-mask shuffle after
//     a lane has exited, a shuffle on a lane a block does not have, a host pointer as a kernel
//     argument, a grid of 0 blocks, 1025 threads, a kernel writing past its cudaMalloc block
//     (found at cudaFree), cudaMemcpy past a block, a cuBLAS matrix past its block, ldmatrix and
//     mma reached by half a warp, a misaligned cp.async, over 48 KiB of dynamic shared memory
//     without cudaFuncSetAttribute, and a missing __syncthreads (a race): its result changes with
//     CMDS_CUDA_EMU_SEED.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

#ifndef CMDS_CUDA_EMU
#error "test_cuda_emu is built only against the CUDA emulation (CMDS_CUDA_EMU)"
#endif

// ---- kernels ------------------------------------------------------------------------------------
__global__ static void k_shuffles(int *out, int width) {
  int lane = threadIdx.x & 31, base = threadIdx.x * 4;
  out[base + 0] = __shfl_xor_sync(0xffffffffu, lane * 10, 5, width);
  out[base + 1] = __shfl_down_sync(0xffffffffu, lane * 10, 3, width);
  out[base + 2] = __shfl_up_sync(0xffffffffu, lane * 10, 2, width);
  out[base + 3] = __shfl_sync(0xffffffffu, lane * 10, 7, width);
}

__global__ static void k_block_sum(float *out, const float *x, int n) {
  __shared__ float part[32];
  int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  int nt = blockDim.x * blockDim.y * blockDim.z;
  float v = 0.0f;
  for (int i = t; i < n; i += nt) v += x[blockIdx.x * n + i];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((t & 31) == 0) part[t >> 5] = v;
  __syncthreads();
  if (t == 0) {
    float s = 0.0f;
    for (int w = 0; w < nt / 32; w++) s += part[w];
    out[blockIdx.x] = s;
  }
}

__global__ static void k_index(int *out) {
  int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  int i = b * blockDim.x * blockDim.y * blockDim.z + t;
  out[2 * i] = b;
  out[2 * i + 1] = t;
}

template <typename T>
__global__ static void k_scale(T *y, T s, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = y[i] * s;
}

__global__ static void k_partial_barrier(float *y) {
  if (threadIdx.x < 16) __syncthreads();  // not every thread of the block reaches it
  y[threadIdx.x] = 1.0f;
}

__global__ static void k_exit_then_shuffle(float *y) {
  if (threadIdx.x == 3) return;
  float v = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
  y[threadIdx.x] = v;
}

__global__ static void k_plain(float *y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = 2.0f;
}

__global__ static void k_overrun(float *y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) y[i] = 2.0f;  // one past the end
}

// Thread 0 writes, the others read without a barrier between: the read is racy.
__global__ static void k_race(int *out) {
  __shared__ int flag;
  if (threadIdx.x == 0) flag = 0;
  __syncthreads();
  if (threadIdx.x == 0) flag = 1;
  out[threadIdx.x] = flag;
}

// D = A B + C (16 x 16), bf16 A, B in global memory staged to dynamic shared memory by cp.async;
// A by ldmatrix, B both from the rows of B^T (ldmatrix, as a K tile in attention) and from the
// rows of B (ldmatrix.trans, as a V tile): d and d_t.
__global__ static void k_mma(float *d, float *d_t, const __nv_bfloat16 *a, const __nv_bfloat16 *b,
                             const __nv_bfloat16 *bt, const float *c) {
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16 *sa = (__nv_bfloat16 *)smem, *sb = sa + 256, *sbt = sb + 256;
  const int lane = threadIdx.x, g = lane / 4, q = lane % 4;
  for (int i = lane; i < 96; i += 32) {  // 3 matrices x 16 rows x two 16-byte halves
    int m = i / 32, r = i % 32 / 2, h = i % 2;
    const __nv_bfloat16 *src = (m == 0 ? a : m == 1 ? b : bt) + r * 16 + h * 8;
    cmds_emu::cp_async16(sa + m * 256 + r * 16 + h * 8, src, true);
  }
  cmds_emu::cp_async_commit();
  cmds_emu::cp_async_wait(0);
  __syncthreads();
  uint32_t af[4], bf[4], bft[4];
  cmds_emu::ldmatrix_x4(af, sa + (lane % 16) * 16 + (lane / 16) * 8, false);
  cmds_emu::ldmatrix_x4(bf, sbt + ((lane / 16) * 8 + lane % 8) * 16 + (lane / 8 % 2) * 8, false);
  cmds_emu::ldmatrix_x4(bft, sb + (lane % 8 + (lane / 8 % 2) * 8) * 16 + (lane / 16) * 8, true);
  for (int nt = 0; nt < 2; nt++) {
    float acc[4], acc_t[4];
    for (int e = 0; e < 4; e++) acc[e] = acc_t[e] = c[(g + e / 2 * 8) * 16 + nt * 8 + 2 * q + e % 2];
    cmds_emu::mma_m16n8k16_bf16(acc, af, bf[2 * nt], bf[2 * nt + 1]);
    cmds_emu::mma_m16n8k16_bf16(acc_t, af, bft[2 * nt], bft[2 * nt + 1]);
    for (int e = 0; e < 4; e++) {
      int i = (g + e / 2 * 8) * 16 + nt * 8 + 2 * q + e % 2;
      d[i] = acc[e];
      d_t[i] = acc_t[e];
    }
  }
}

// Each thread copies 16 bytes of ones with cp.async and reads its first float before the wait
// (early) and after it (late).
__global__ static void k_early_read(float *early, float *late, const float *ones) {
  extern __shared__ __align__(16) float buf[];
  int t = threadIdx.x;
  cmds_emu::cp_async16(buf + 4 * t, ones + 4 * t, true);
  cmds_emu::cp_async_commit();
  early[t] = buf[4 * t];
  cmds_emu::cp_async_wait(0);
  late[t] = buf[4 * t];
}

__global__ static void k_half_warp_mma(float *y) {
  float d[4] = {0, 0, 0, 0};
  const uint32_t a[4] = {0, 0, 0, 0};
  if (threadIdx.x < 16) cmds_emu::mma_m16n8k16_bf16(d, a, 0u, 0u);
  y[threadIdx.x] = d[0];
}

__global__ static void k_half_warp_ldmatrix(float *y) {
  extern __shared__ __align__(16) unsigned char rows[];
  uint32_t r[4] = {0, 0, 0, 0};
  if (threadIdx.x >= 16) cmds_emu::ldmatrix_x4(r, rows + 16 * (threadIdx.x % 8), false);
  y[threadIdx.x] = (float)r[0];
}

__global__ static void k_cp_async_misaligned(const float *src) {
  extern __shared__ __align__(16) unsigned char dst[];
  cmds_emu::cp_async16(dst + 8, src, true);
}

template <int tag>  // two kernels: the attribute is set for k_big_smem<0> only
__global__ static void k_big_smem(float *y) {
  extern __shared__ float big[];
  big[threadIdx.x] = 1.0f;
  y[threadIdx.x] = big[threadIdx.x];
}

// ---- helpers ------------------------------------------------------------------------------------
template <typename T>
static T *dev(size_t n) {
  void *p = NULL;
  if (cudaMalloc(&p, n * sizeof(T)) != cudaSuccess) abort();
  return (T *)p;
}

template <typename T>
static void up(T *d, const T *h, size_t n) {
  cudaMemcpy(d, h, n * sizeof(T), cudaMemcpyHostToDevice);
}

template <typename T>
static void down(T *h, const T *d, size_t n) {
  cudaMemcpy(h, d, n * sizeof(T), cudaMemcpyDeviceToHost);
}

// Runs body(arg) in a child process; returns the child's exit status (body's result & 0xff), or -1
// when it did not exit (crashed).
static int in_child(int (*body)(void *), void *arg) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) _exit(body(arg) & 0xff);
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// A misuse (arg: its function), then what CUDA says after a sync.
static int misuse_error(void *arg) {
  (*(void (**)(void))arg)();
  cudaError_t e = cudaDeviceSynchronize();
  return (int)(e == cudaSuccess ? cudaGetLastError() : e);
}

// ---- right results ---------------------------------------------------------------------------------
static void shuffles(int width) {
  int *d = dev<int>(64 * 4), h[64 * 4];
  k_shuffles<<<1, 64>>>(d, width);
  CHECK(cudaGetLastError() == cudaSuccess, "shuffle launch");
  down(h, d, 64 * 4);
  int bad = 0;
  for (int t = 0; t < 64; t++) {
    int lane = t & 31, seg = lane & ~(width - 1);
    int x = lane ^ 5, want_x = (x >= seg && x < seg + width ? x : lane) * 10;
    int want_d = (lane + 3 < seg + width ? lane + 3 : lane) * 10;
    int want_u = (lane - 2 >= seg ? lane - 2 : lane) * 10;
    int want_i = (seg + (7 & (width - 1))) * 10;
    bad += h[4 * t] != want_x || h[4 * t + 1] != want_d || h[4 * t + 2] != want_u || h[4 * t + 3] != want_i;
  }
  CHECK(bad == 0, "shuffles of width %d: %d threads wrong", width, bad);
  cudaFree(d);
}

static void block_sums() {
  const int B = 3, n = 1000;
  float *h = (float *)malloc(sizeof(float) * B * n), got[B];
  double want[B] = {0};
  for (int i = 0; i < B * n; i++) h[i] = (float)((i * 37) % 101) - 50.0f, want[i / n] += h[i];
  float *dx = dev<float>(B * n), *dy = dev<float>(B);
  up(dx, h, B * n);
  dim3 shapes[3] = {dim3(256), dim3(32, 4, 2), dim3(64, 1, 16)};
  for (int s = 0; s < 3; s++) {
    k_block_sum<<<B, shapes[s]>>>(dy, dx, n);
    down(got, dy, B);
    for (int b = 0; b < B; b++)
      CHECK_CLOSE(got[b], want[b], 1e-3, 1e-6, "block sum");
  }
  cudaFree(dx), cudaFree(dy), free(h);
}

static void indices() {
  dim3 g(3, 2, 2), b(4, 2, 3);
  int nb = 12, nt = 24, *d = dev<int>(2 * nb * nt), *h = (int *)malloc(sizeof(int) * 2 * nb * nt);
  k_index<<<g, b>>>(d);
  down(h, d, 2 * nb * nt);
  int bad = 0;
  for (int i = 0; i < nb * nt; i++) bad += h[2 * i] != i / nt || h[2 * i + 1] != i % nt;
  CHECK(bad == 0, "3-D grid and block indices: %d wrong", bad);
  cudaFree(d), free(h);
}

static void template_launch() {
  float h[300], *d = dev<float>(300);
  for (int i = 0; i < 300; i++) h[i] = (float)i;
  up(d, h, 300);
  k_scale<<<2, 256>>>(d, 0.5f, 300);  // T deduced from the arguments
  down(h, d, 300);
  int bad = 0;
  for (int i = 0; i < 300; i++) bad += h[i] != 0.5f * (float)i;
  CHECK(bad == 0, "template kernel: %d wrong", bad);
  cudaFree(d);
}

// C (m x n, ldc) = alpha op(A) op(B) + beta C in double, column-major.
static void ref_gemm(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda, const float *B,
                     int ldb, float beta, float *C, int ldc) {
  for (int j = 0; j < n; j++)
    for (int i = 0; i < m; i++) {
      double s = 0;
      for (int p = 0; p < k; p++) {
        double a = ta ? A[i * lda + p] : A[p * lda + i], b = tb ? B[p * ldb + j] : B[j * ldb + p];
        s += a * b;
      }
      C[j * ldc + i] = (float)(alpha * s + (beta != 0.0f ? beta * C[j * ldc + i] : 0.0));
    }
}

static void gemms() {
  cublasHandle_t h;
  CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
  const int m = 7, n = 5, k = 9, batch = 3;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (int bz = 0; bz < 2; bz++) {
        int lda = (ta ? k : m) + 2, ldb = (tb ? n : k) + 1, ldc = m + 3;
        size_t sa = (size_t)lda * (ta ? m : k), sb = (size_t)ldb * (tb ? k : n), sc = (size_t)ldc * n;
        float *A = (float *)malloc(sizeof(float) * sa * batch), *B = (float *)malloc(sizeof(float) * sb * batch);
        float *C = (float *)malloc(sizeof(float) * sc * batch), *W = (float *)malloc(sizeof(float) * sc * batch);
        for (size_t i = 0; i < sa * batch; i++) A[i] = (float)((i * 13) % 17) / 8.0f - 1.0f;
        for (size_t i = 0; i < sb * batch; i++) B[i] = (float)((i * 7) % 11) / 5.0f - 1.0f;
        for (size_t i = 0; i < sc * batch; i++) C[i] = W[i] = bz ? NAN : (float)(i % 5);
        float *dA = dev<float>(sa * batch), *dB = dev<float>(sb * batch), *dC = dev<float>(sc * batch);
        up(dA, A, sa * batch), up(dB, B, sb * batch), up(dC, C, sc * batch);
        float alpha = 0.75f, beta = bz ? 0.0f : 0.5f;
        CHECK(cublasSgemmStridedBatched(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k,
                                        &alpha, dA, lda, (long long)sa, dB, ldb, (long long)sb, &beta, dC, ldc,
                                        (long long)sc, batch) == CUBLAS_STATUS_SUCCESS,
              "strided batched gemm");
        down(C, dC, sc * batch);
        double worst = 0;
        for (int b = 0; b < batch; b++) {
          ref_gemm(ta, tb, m, n, k, alpha, A + b * sa, lda, B + b * sb, ldb, beta, W + b * sc, ldc);
          for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
              size_t at = b * sc + (size_t)j * ldc + i;
              worst = fmax(worst, isnan(C[at]) ? INFINITY : fabs(C[at] - W[at]));
            }
        }
        CHECK(worst < 1e-5, "gemm ta %d tb %d beta %g: worst %g", ta, tb, beta, worst);
        cudaFree(dA), cudaFree(dB), cudaFree(dC), free(A), free(B), free(C), free(W);
      }
  // cuBLASLt: y (N x M col-major) = W^T x + bias, bf16 operands and output
  const int M = 6, K = 10, N = 4;
  float x[M * K], w[N * K], bias[N], want[M * N];
  for (int i = 0; i < M * K; i++) x[i] = (float)(i % 9) / 4.0f - 1.0f;
  for (int i = 0; i < N * K; i++) w[i] = (float)(i % 7) / 3.0f - 1.0f;
  for (int i = 0; i < N; i++) bias[i] = (float)i - 1.5f;
  for (int r = 0; r < M; r++)
    for (int c = 0; c < N; c++) {
      double s = bias[c];
      for (int p = 0; p < K; p++)
        s += (double)(float)__float2bfloat16_rn(x[r * K + p]) * (double)(float)__float2bfloat16_rn(w[c * K + p]);
      want[r * N + c] = (float)s;
    }
  __nv_bfloat16 hx[M * K], hw[N * K], hb[N], hy[M * N];
  for (int i = 0; i < M * K; i++) hx[i] = __float2bfloat16_rn(x[i]);
  for (int i = 0; i < N * K; i++) hw[i] = __float2bfloat16_rn(w[i]);
  for (int i = 0; i < N; i++) hb[i] = __float2bfloat16_rn(bias[i]);
  __nv_bfloat16 *dx = dev<__nv_bfloat16>(M * K), *dw = dev<__nv_bfloat16>(N * K), *db = dev<__nv_bfloat16>(N),
                *dy = dev<__nv_bfloat16>(M * N);
  up(dx, hx, M * K), up(dw, hw, N * K), up(db, hb, N);
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t la, lb, lc;
  cublasOperation_t tA = CUBLAS_OP_T, tB = CUBLAS_OP_N;
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
  const void *bp = db;
  cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA);
  cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof tB);
  cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
  cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp);
  cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, K, N, K);
  cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, K, M, K);
  cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, N, M, N);
  float one = 1.0f, zero = 0.0f;
  CHECK(cublasLtMatmul((cublasLtHandle_t)h, op, &one, dw, la, dx, lb, &zero, dy, lc, dy, lc, NULL, NULL, 0, NULL) ==
            CUBLAS_STATUS_SUCCESS,
        "cublasLtMatmul");
  down(hy, dy, M * N);
  double worst = 0;
  for (int i = 0; i < M * N; i++) worst = fmax(worst, fabs((float)hy[i] - want[i]) / (fabs(want[i]) + 1e-3));
  CHECK(worst < 8e-3, "cuBLASLt bf16 + bias: worst relative %g (bf16 output rounding)", worst);
  cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb), cublasLtMatrixLayoutDestroy(lc);
  cublasLtMatmulDescDestroy(op);
  cudaFree(dx), cudaFree(dw), cudaFree(db), cudaFree(dy);
  cublasDestroy(h);
}

static float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

static void sm80_instructions() {
  __nv_bfloat16 ha[256], hb[256], hbt[256];
  float fa[256], fb[256], hc[256], want[256], got[256], got_t[256];
  srand(7);
  for (int i = 0; i < 256; i++) {
    fa[i] = round_bf16((float)rand() / RAND_MAX * 2.0f - 1.0f);
    fb[i] = round_bf16((float)rand() / RAND_MAX * 2.0f - 1.0f);
    hc[i] = (float)rand() / RAND_MAX - 0.5f;
    ha[i] = __float2bfloat16_rn(fa[i]);
    hb[i] = __float2bfloat16_rn(fb[i]);
  }
  for (int k = 0; k < 16; k++)
    for (int n = 0; n < 16; n++) hbt[n * 16 + k] = hb[k * 16 + n];
  for (int m = 0; m < 16; m++)
    for (int n = 0; n < 16; n++) {
      double acc = hc[m * 16 + n];
      for (int k = 0; k < 16; k++) acc += (double)fa[m * 16 + k] * fb[k * 16 + n];
      want[m * 16 + n] = (float)acc;
    }
  __nv_bfloat16 *da = dev<__nv_bfloat16>(256), *db = dev<__nv_bfloat16>(256), *dbt = dev<__nv_bfloat16>(256);
  float *dc = dev<float>(256), *dd = dev<float>(256), *ddt = dev<float>(256);
  up(da, ha, 256), up(db, hb, 256), up(dbt, hbt, 256), up(dc, hc, 256);
  k_mma<<<1, 32, 3 * 256 * sizeof(__nv_bfloat16)>>>(dd, ddt, da, db, dbt, dc);
  CHECK(cudaDeviceSynchronize() == cudaSuccess, "mma kernel");
  down(got, dd, 256), down(got_t, ddt, 256);
  double worst = 0, worst_t = 0;
  for (int i = 0; i < 256; i++) {
    worst = fmax(worst, fabs(got[i] - want[i]));
    worst_t = fmax(worst_t, fabs(got_t[i] - want[i]));
  }
  CHECK(worst < 1e-6 && worst_t < 1e-6, "mma.sync from ldmatrix / ldmatrix.trans fragments: worst %g / %g", worst,
        worst_t);

  // cp.async: before the wait some copies have landed and some not; after it all have.
  float ones[128], early[32], late[32];
  for (int i = 0; i < 128; i++) ones[i] = 1.0f;
  float *d1 = dev<float>(128), *de = dev<float>(32), *dl = dev<float>(32);
  up(d1, ones, 128);
  k_early_read<<<1, 32, 128 * sizeof(float)>>>(de, dl, d1);
  down(early, de, 32), down(late, dl, 32);
  int landed = 0, after = 0;
  for (int t = 0; t < 32; t++) landed += early[t] == 1.0f, after += late[t] == 1.0f;
  CHECK(landed > 0 && landed < 32 && after == 32, "cp.async: %d of 32 landed before the wait, %d after", landed, after);

  // Over 48 KiB of dynamic shared memory with the attribute set: runs.
  float *dy = dev<float>(64), hy[64];
  CHECK(cudaFuncSetAttribute(k_big_smem<0>, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024) == cudaSuccess,
        "cudaFuncSetAttribute 64 KiB");
  k_big_smem<0><<<1, 64, 64 * 1024>>>(dy);
  down(hy, dy, 64);
  CHECK(cudaGetLastError() == cudaSuccess && hy[63] == 1.0f, "64 KiB of dynamic shared memory after the attribute");
  cudaFree(da), cudaFree(db), cudaFree(dbt), cudaFree(dc), cudaFree(dd), cudaFree(ddt);
  cudaFree(d1), cudaFree(de), cudaFree(dl), cudaFree(dy);
}

// ---- misuses (each in a child) -------------------------------------------------------------------
static void bad_barrier() { k_partial_barrier<<<1, 64>>>(dev<float>(64)); }
static void bad_shuffle_exit() { k_exit_then_shuffle<<<1, 32>>>(dev<float>(32)); }
static void bad_shuffle_lanes() { k_shuffles<<<1, 48>>>(dev<int>(48 * 4), 32); }  // the second warp has 16 lanes
static void bad_host_pointer() {
  static float host[64];
  k_plain<<<1, 64>>>(host, 64);
}
static void bad_half_warp_mma() { k_half_warp_mma<<<1, 32>>>(dev<float>(32)); }
static void bad_half_warp_ldmatrix() { k_half_warp_ldmatrix<<<1, 32, 128>>>(dev<float>(32)); }
static void bad_cp_async_align() { k_cp_async_misaligned<<<1, 32, 64>>>(dev<float>(4)); }
static void bad_big_smem() { k_big_smem<1><<<1, 64, 64 * 1024>>>(dev<float>(64)); }  // no attribute
static void bad_zero_grid() { k_plain<<<0, 64>>>(dev<float>(1), 0); }
static void bad_block_size() { k_plain<<<1, 1025>>>(dev<float>(1025), 1025); }
static void bad_overrun() {
  float *d = dev<float>(100);
  k_overrun<<<1, 128>>>(d, 100);
  cudaDeviceSynchronize();
  cudaFree(d);
}
static void bad_memcpy() {
  float h[101] = {0}, *d = dev<float>(100);
  cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice);
}
static void bad_gemm() {
  cublasHandle_t h;
  cublasCreate(&h);
  float *a = dev<float>(16), *b = dev<float>(16), *c = dev<float>(16), one = 1.0f;
  // 5 x 4 with ld 5 needs 20 floats of C
  if (cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 5, 4, 1, &one, a, 5, b, 1, &one, c, 5) != CUBLAS_STATUS_SUCCESS)
    _exit(200);
}

// With CMDS_CUDA_EMU_SEED = *seed (in a child): how many threads read thread 0's write.
static int race_ones(void *seed) {
  char s[32];
  snprintf(s, sizeof s, "%u", *(unsigned *)seed);
  setenv("CMDS_CUDA_EMU_SEED", s, 1);
  int *d = dev<int>(128), h[128], ones = 0;
  k_race<<<1, 128>>>(d);
  down(h, d, 128);
  for (int i = 1; i < 128; i++) ones += h[i];
  return ones;
}

static int race_outcome(unsigned seed) { return in_child(race_ones, &seed); }

int main(void) {
  setenv("CMDS_CUDA_EMU_ABORT", "0", 1);
  int n = 0;
  CHECK(cudaGetDeviceCount(&n) == cudaSuccess && n == 1, "one emulated device");
  shuffles(32);
  shuffles(8);
  block_sums();
  indices();
  template_launch();
  gemms();
  sm80_instructions();
  const int fail = (int)cudaErrorLaunchFailure & 0xff;
  struct {
    const char *what;
    void (*f)(void);
    int want;
  } bad[] = {
      {"__syncthreads reached by half the block", bad_barrier, fail},
      {"full-mask shuffle after a lane exited", bad_shuffle_exit, fail},
      {"full-mask shuffle in a warp of 16 threads", bad_shuffle_lanes, fail},
      {"host pointer as a kernel argument", bad_host_pointer, (int)cudaErrorInvalidDevicePointer},
      {"grid of 0 blocks", bad_zero_grid, (int)cudaErrorInvalidConfiguration},
      {"block of 1025 threads", bad_block_size, (int)cudaErrorInvalidConfiguration},
      {"kernel writing one past its block", bad_overrun, fail},
      {"cudaMemcpy past a block", bad_memcpy, (int)cudaErrorInvalidValue},
      {"cuBLAS C past its block", bad_gemm, 200},
      {"mma.sync reached by half a warp", bad_half_warp_mma, fail},
      {"ldmatrix reached by half a warp", bad_half_warp_ldmatrix, fail},
      {"cp.async to a shared address 8 bytes off", bad_cp_async_align, fail},
      {"64 KiB of dynamic shared memory without cudaFuncSetAttribute", bad_big_smem, (int)cudaErrorInvalidValue},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fprintf(stderr, "-- expecting an error: %s\n", bad[i].what);
    int got = in_child(misuse_error, &bad[i].f);
    CHECK(got == bad[i].want, "%s: child ended with %d, want %d", bad[i].what, got, bad[i].want);
  }
  // A missing barrier: how many threads see thread 0's write depends on the order, so on the seed.
  int lo = 1 << 30, hi = -1;
  for (unsigned seed = 1; seed <= 8; seed++) {
    int o = race_outcome(seed);
    lo = o < lo ? o : lo, hi = o > hi ? o : hi;
  }
  CHECK(lo >= 0 && lo < hi, "a race between threads of a block gives the same result for 8 seeds (%d)", lo);
  CHECK(race_outcome(3) == race_outcome(3), "the same seed gives the same order");
  return CHECK_DONE();
}
