// conv_backward.cu: backward of the stride-1 "same" convolution (k = 1, 3) with cuBLAS, per
// image b (dY_b (Cout, HW), X_b the input columns (K, HW), K = Cin*k*k):
//   dW (Cout, K) += dY_b X_b^T, db += rowsum(dY_b), dX_b = col2im(W^T dY_b).
// k = 3 unfolds one image at a time into `cols`, which then receives W^T dY_b.
#include "nn_cuda_backward.h"
#include "nn_cuda_reduce.cuh"

__global__ static void convb_im2col3x3(float *cols, const float *x, int64_t Cin, int64_t H, int64_t W) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, HW = H * W;
  if (i >= Cin * 9 * HW) return;
  int64_t p = i % HW, r = i / HW;
  int64_t c = r / 9, sy = p / W + (r % 9) / 3 - 1, sx = p % W + r % 3 - 1;
  cols[i] = (sy >= 0 && sy < H && sx >= 0 && sx < W) ? x[c * HW + sy * W + sx] : 0.0f;
}

// dx[c, y, x] = sum over taps (ky, kx) of cols[(c, ky, kx), (y - ky + 1, x - kx + 1)]: a gather,
// so no atomics and a fixed summation order.
__global__ static void convb_col2im3x3(float *dx, const float *cols, int64_t Cin, int64_t H, int64_t W) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, HW = H * W;
  if (i >= Cin * HW) return;
  int64_t c = i / HW, y = (i % HW) / W, x = i % W;
  float s = 0.0f;
  for (int t = 0; t < 9; t++) {
    int64_t oy = y - (t / 3 - 1), ox = x - (t % 3 - 1);
    if (oy >= 0 && oy < H && ox >= 0 && ox < W) s += cols[(c * 9 + t) * HW + oy * W + ox];
  }
  dx[i] = s;
}

// One block per output channel: db[o] += sum over images and pixels of dy.
__global__ static void convb_bias(float *db, const float *dy, int64_t B, int64_t Cout, int64_t HW) {
  int64_t o = blockIdx.x;
  float s = 0.0f;
  for (int64_t b = 0; b < B; b++) {
    const float *row = dy + (b * Cout + o) * HW;
    for (int64_t p = threadIdx.x; p < HW; p += blockDim.x) s += row[p];
  }
  s = nn_block_sum(s);
  if (threadIdx.x == 0) db[o] += s;
}

extern "C" int nn_conv2d_backward_cuda(nn_ctx *c, float *dx, float *dw, float *db, const float *dy,
                                       const float *x, const float *w, int64_t B, int64_t Cin,
                                       int64_t Cout, int64_t H, int64_t W, int ksize, float *cols,
                                       cmds_error *err) {
  int64_t HW = H * W, K = Cin * ksize * ksize;
  if (B == 0 || HW == 0 || Cout == 0) return CMDS_OK;
  cublasHandle_t h = (cublasHandle_t)c->cublas;
  float one = 1.0f, zero = 0.0f;
  if (db) {
    convb_bias<<<(unsigned)Cout, 256, 0, nn_stream(c)>>>(db, dy, B, Cout, HW);
    CUDA_CHECK_LAUNCH();
  }
  for (int64_t b = 0; b < B; b++) {
    const float *dyb = dy + b * Cout * HW, *xb = x + b * Cin * HW, *xc = xb;
    if (ksize == 3) {
      convb_im2col3x3<<<nn_grid(K * HW, 256), 256, 0, nn_stream(c)>>>(cols, xb, Cin, H, W);
      CUDA_CHECK_LAUNCH();
      xc = cols;
    }
    // column-major: dW^T (K, Cout) += X_b (K, HW) dY_b^T (HW, Cout)
    CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)K, (int)Cout, (int)HW, &one, xc, (int)HW,
                             dyb, (int)HW, &one, dw, (int)K));
    if (!dx) continue;
    float *out = ksize == 3 ? cols : dx + b * Cin * HW;
    // column-major: dX_b^T (HW, K) = dY_b^T (HW, Cout) W (Cout, K)
    CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, (int)HW, (int)K, (int)Cout, &one, dyb, (int)HW,
                             w, (int)K, &zero, out, (int)HW));
    if (ksize == 3) {
      convb_col2im3x3<<<nn_grid(Cin * HW, 256), 256, 0, nn_stream(c)>>>(dx + b * Cin * HW, cols, Cin, H, W);
      CUDA_CHECK_LAUNCH();
    }
  }
  return CMDS_OK;
}
