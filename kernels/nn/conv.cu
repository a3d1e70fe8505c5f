// conv.cu: stride-1 "same" convolution for k = 1, 3 as one strided-batched cuBLAS GEMM
// over the images: y_b (Cout, HW) = W (Cout, K) cols_b (K, HW), K = Cin*k*k, where
// cols_b is x_b itself for k = 1 and the im2col unfolding for k = 3.
#include "nn_cuda.h"

// cols (B, Cin*9, H*W): row (c, ky, kx) holds x[b, c, y+ky-1, x+kx-1], zero outside.
__global__ static void conv_im2col3x3(float *cols, const float *x, int64_t B, int64_t Cin,
                                      int64_t H, int64_t W) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, HW = H * W;
  if (i >= B * Cin * 9 * HW) return;
  int64_t p = i % HW, r = (i / HW) % (Cin * 9), b = i / (HW * Cin * 9);
  int64_t c = r / 9, sy = p / W + (r % 9) / 3 - 1, sx = p % W + r % 3 - 1;
  cols[i] = (sy >= 0 && sy < H && sx >= 0 && sx < W) ? x[(b * Cin + c) * HW + sy * W + sx] : 0.0f;
}

__global__ static void conv_bias_fill(float *y, const float *b, int64_t B, int64_t Cout, int64_t HW) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < B * Cout * HW) y[i] = b[(i / HW) % Cout];
}

extern "C" int nn_conv2d_cuda(nn_ctx *c, float *y, const float *x, const float *w, const float *b,
                              int64_t B, int64_t Cin, int64_t Cout, int64_t H, int64_t W, int ksize,
                              float *cols, cmds_error *err) {
  int64_t HW = H * W, K = Cin * ksize * ksize;
  if (B == 0 || HW == 0 || Cout == 0) return CMDS_OK;
  const float *a = x;
  if (ksize == 3) {
    int64_t n = B * K * HW;
    conv_im2col3x3<<<nn_grid(n, 256), 256, 0, nn_stream(c)>>>(cols, x, B, Cin, H, W);
    CUDA_CHECK_LAUNCH();
    a = cols;
  }
  float alpha = 1.0f, beta = 0.0f;
  if (b) {
    conv_bias_fill<<<nn_grid(B * Cout * HW, 256), 256, 0, nn_stream(c)>>>(y, b, B, Cout, HW);
    CUDA_CHECK_LAUNCH();
    beta = 1.0f;
  }
  // column-major: y_b^T (HW, Cout) = cols_b^T (HW, K) W^T (K, Cout)
  CUBLAS_CHECK(cublasSgemmStridedBatched((cublasHandle_t)c->cublas, CUBLAS_OP_N, CUBLAS_OP_N,
                                         (int)HW, (int)Cout, (int)K, &alpha, a, (int)HW, K * HW,
                                         w, (int)K, 0, &beta, y, (int)HW, Cout * HW, (int)B));
  return CMDS_OK;
}

// --- general square kernel, stride, zero padding (conv.h: nn_conv2d_ex_forward) ---

// cols (K = Cin*k*k, rows*Wo) for output rows [r0, r0 + rows) of image x (Cin, H, W):
// row (c, ky, kx), column (oi - r0, oj) holds x[c, oi*s - pt + ky, oj*s - pl + kx], 0 outside.
__global__ static void conv_ex_im2col(float *cols, const float *x, int64_t Cin, int64_t H, int64_t W,
                                      int k, int s, int pt, int pl, int64_t r0, int64_t rows, int64_t Wo) {
  int64_t nc = rows * Wo, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= Cin * k * k * nc) return;
  int64_t col = i % nc, r = i / nc;
  int64_t c = r / (k * k), ky = (r / k) % k, kx = r % k;
  int64_t si = (r0 + col / Wo) * s - pt + ky, sj = (col % Wo) * s - pl + kx;
  cols[i] = (si >= 0 && si < H && sj >= 0 && sj < W) ? x[(c * H + si) * W + sj] : 0.0f;
}

extern "C" int nn_conv2d_ex_cuda(nn_ctx *c, float *y, const float *x, const float *w, const float *b,
                                 int64_t B, int64_t Cin, int64_t Cout, int64_t H, int64_t W, int ksize,
                                 int stride, int pad_top, int pad_left, int64_t Ho, int64_t Wo,
                                 int64_t band_rows, float *cols, cmds_error *err) {
  int64_t P = Ho * Wo, K = Cin * ksize * ksize;
  if (B == 0 || P == 0 || Cout == 0) return CMDS_OK;
  cublasHandle_t h = (cublasHandle_t)c->cublas;
  float alpha = 1.0f, beta = 0.0f;
  if (b) {
    conv_bias_fill<<<nn_grid(B * Cout * P, 256), 256, 0, nn_stream(c)>>>(y, b, B, Cout, P);
    CUDA_CHECK_LAUNCH();
    beta = 1.0f;
  }
  if (!cols) {  // k = 1, stride 1, no padding: x_b is already (Cin, HW); all images in one call
    CUBLAS_CHECK(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, (int)P, (int)Cout, (int)K, &alpha, x,
                                           (int)P, Cin * P, w, (int)K, 0, &beta, y, (int)P, Cout * P, (int)B));
    return CMDS_OK;
  }
  for (int64_t bi = 0; bi < B; bi++) {
    const float *xb = x + bi * Cin * H * W;
    float *yb = y + bi * Cout * P;
    for (int64_t r0 = 0; r0 < Ho; r0 += band_rows) {
      int64_t rows = Ho - r0 < band_rows ? Ho - r0 : band_rows, nc = rows * Wo;
      conv_ex_im2col<<<nn_grid(K * nc, 256), 256, 0, nn_stream(c)>>>(cols, xb, Cin, H, W, ksize, stride,
                                                                      pad_top, pad_left, r0, rows, Wo);
      CUDA_CHECK_LAUNCH();
      // column-major: y_b[:, band]^T (nc, Cout), ld P = cols^T (nc, K) W^T (K, Cout)
      CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, (int)nc, (int)Cout, (int)K, &alpha, cols, (int)nc,
                               w, (int)K, &beta, yb + r0 * Wo, (int)P));
    }
  }
  return CMDS_OK;
}
