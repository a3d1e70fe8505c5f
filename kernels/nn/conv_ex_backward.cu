// conv_ex_backward.cu: backward of the general convolution (any square k, stride, asymmetric
// zero padding) with cuBLAS, per image and per band of output rows as the forward:
//   dW (Cout, K) += dY_band cols^T (cols: the band's im2col), cols' = W^T dY_band,
//   dx += col2im(cols') as a gather (each input pixel sums the taps that read it: no atomics,
//   a fixed order); db += row sums of dY. k = 1, stride 1, no padding: two GEMMs per image.
#include "nn_cuda_train.h"
#include "nn_cuda_reduce.cuh"

// cols (K, rows*Wo) of output rows [r0, r0 + rows); row (c, ky, kx).
__global__ static void convxb_im2col(float *cols, const float *x, int64_t Cin, int64_t H, int64_t W, int k, int s,
                                     int pt, int pl, int64_t r0, int64_t rows, int64_t Wo) {
  int64_t nc = rows * Wo, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= Cin * k * k * nc) return;
  int64_t r = i / nc, p = i % nc, oi = r0 + p / Wo, oj = p % Wo;
  int64_t c = r / (k * k), ky = (r / k) % k, kx = r % k;
  int64_t si = oi * s - pt + ky, sj = oj * s - pl + kx;
  cols[i] = (si >= 0 && si < H && sj >= 0 && sj < W) ? x[(c * H + si) * W + sj] : 0.0f;
}

// dx[c, si, sj] += sum over taps of cols'[(c, ky, kx), (oi - r0, oj)] with oi s - pt + ky = si,
// oj s - pl + kx = sj, oi in the band.
__global__ static void convxb_col2im(float *dx, const float *cols, int64_t Cin, int64_t H, int64_t W, int k, int s,
                                     int pt, int pl, int64_t r0, int64_t rows, int64_t Wo) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, nc = rows * Wo;
  if (i >= Cin * H * W) return;
  int64_t c = i / (H * W), si = (i / W) % H, sj = i % W;
  float acc = 0.0f;
  int any = 0;
  for (int ky = 0; ky < k; ky++) {
    int64_t ni = si + pt - ky;
    if (ni < 0 || ni % s) continue;
    int64_t oi = ni / s;
    if (oi < r0 || oi >= r0 + rows) continue;
    for (int kx = 0; kx < k; kx++) {
      int64_t nj = sj + pl - kx;
      if (nj < 0 || nj % s) continue;
      int64_t oj = nj / s;
      if (oj >= Wo) continue;
      acc += cols[((c * k + ky) * k + kx) * nc + (oi - r0) * Wo + oj];
      any = 1;
    }
  }
  if (any) dx[i] += acc;
}

// One block per output channel: db[o] += sum over images and pixels of dy.
__global__ static void convxb_bias(float *db, const float *dy, int64_t B, int64_t Cout, int64_t P) {
  int64_t o = blockIdx.x;
  double s = 0.0;
  for (int64_t b = 0; b < B; b++) {
    const float *row = dy + (b * Cout + o) * P;
    for (int64_t p = threadIdx.x; p < P; p += blockDim.x) s += row[p];
  }
  s = nn_block_sum(s);
  if (threadIdx.x == 0) db[o] += (float)s;
}

extern "C" int nn_conv2d_ex_backward_cuda(nn_ctx *c, float *dx, float *dw, float *db, const float *dy, const float *x,
                                          const float *w, int64_t B, int64_t Cin, int64_t Cout, int64_t H, int64_t W,
                                          int ksize, int stride, int pad_top, int pad_left, int64_t Ho, int64_t Wo,
                                          int64_t band, float *cols, cmds_error *err) {
  int64_t P = Ho * Wo, K = Cin * ksize * ksize;
  if (B == 0 || P == 0) return CMDS_OK;
  cublasHandle_t h = (cublasHandle_t)c->cublas;
  float one = 1.0f, zero = 0.0f;
  int direct = ksize == 1 && stride == 1 && pad_top == 0 && pad_left == 0 && Ho == H && Wo == W;
  if (db && Cout > 0) {
    convxb_bias<<<(unsigned)Cout, 256, 0, nn_stream(c)>>>(db, dy, B, Cout, P);
    CUDA_CHECK_LAUNCH();
  }
  if (!dx && !dw) return CMDS_OK;
  for (int64_t b = 0; b < B; b++) {
    const float *xb = x + b * Cin * H * W, *dyb = dy + b * Cout * P;
    float *dxb = dx ? dx + b * Cin * H * W : NULL;
    if (direct) {
      if (dw && Cout > 0 && Cin > 0)  // column-major: dW^T (Cin, Cout) += X_b^T... = X (Cin, P) dY^T (P, Cout)
        CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)Cin, (int)Cout, (int)P, &one, xb, (int)P, dyb,
                                 (int)P, &one, dw, (int)Cin));
      if (dxb && Cin > 0) {
        if (Cout > 0)  // column-major: dX_b^T (P, Cin) = dY_b^T (P, Cout) W (Cout, Cin)
          CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, (int)P, (int)Cin, (int)Cout, &one, dyb, (int)P, w,
                                   (int)Cin, &zero, dxb, (int)P));
        else
          CUDA_CHECK(cudaMemsetAsync(dxb, 0, (size_t)(Cin * P) * sizeof(float), nn_stream(c)));
      }
      continue;
    }
    if (dxb) CUDA_CHECK(cudaMemsetAsync(dxb, 0, (size_t)(Cin * H * W) * sizeof(float), nn_stream(c)));
    for (int64_t r0 = 0; r0 < Ho && K > 0; r0 += band) {
      int64_t rows = Ho - r0 < band ? Ho - r0 : band, nc = rows * Wo;
      const float *dyc = dyb + r0 * Wo;
      if (dw && Cout > 0) {
        convxb_im2col<<<nn_grid(K * nc, 256), 256, 0, nn_stream(c)>>>(cols, xb, Cin, H, W, ksize, stride, pad_top,
                                                                       pad_left, r0, rows, Wo);
        CUDA_CHECK_LAUNCH();
        // column-major: dW^T (K, Cout) += cols^T-view (K, nc) dY_band^T (nc, Cout)
        CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)K, (int)Cout, (int)nc, &one, cols, (int)nc, dyc,
                                 (int)P, &one, dw, (int)K));
      }
      if (dxb && Cout > 0) {
        // column-major: cols'^T (nc, K) = dY_band^T (nc, Cout) W (Cout, K)
        CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, (int)nc, (int)K, (int)Cout, &one, dyc, (int)P, w,
                                 (int)K, &zero, cols, (int)nc));
        convxb_col2im<<<nn_grid(Cin * H * W, 256), 256, 0, nn_stream(c)>>>(dxb, cols, Cin, H, W, ksize, stride,
                                                                           pad_top, pad_left, r0, rows, Wo);
        CUDA_CHECK_LAUNCH();
      }
    }
  }
  return CMDS_OK;
}
