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
