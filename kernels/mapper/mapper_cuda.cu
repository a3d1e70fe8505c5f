// mapper_cuda.cu: the mapper's own element-wise and reduction steps on the GPU (see
// mapper_ops.c, mapper_train.c and mapper_io.c for what each computes; the CPU versions
// there are the reference). Reductions use one block per plane / pixel and a fixed order,
// so results do not vary run to run.
#include <cuda_fp16.h>

#include "mapper_cuda.h"
#include "nn_cuda.h"
#include "nn_cuda_reduce.cuh"

#define GRID1(n) nn_grid((n), 256), 256, 0, nn_stream(c)
#define LAUNCHED() \
  do {             \
    CUDA_CHECK_LAUNCH(); \
    return CMDS_OK; \
  } while (0)

// With a NULL stream (calls without a context: mapper_zero_grad, init) the whole device is
// synchronised around the memset, so it is ordered with work on any stream, blocking or not.
extern "C" int mapper_cuda_zero(nn_ctx *c, float *p, int64_t n, cmds_error *err) {
  if (!c->stream) CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemsetAsync(p, 0, (size_t)n * sizeof(float), nn_stream(c)));
  if (!c->stream) CUDA_CHECK(cudaDeviceSynchronize());
  return CMDS_OK;
}

// One block per plane: row means (over W) then column means (over H).
__global__ static void k_pool(float *y, const float *f, int64_t H, int64_t W) {
  const float *fq = f + blockIdx.x * H * W;
  float *yq = y + blockIdx.x * (H + W);
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    float s = 0.0f;
    for (int64_t j = 0; j < W; j++) s += fq[i * W + j];
    yq[i] = s / (float)W;
  }
  for (int64_t j = threadIdx.x; j < W; j += blockDim.x) {
    float s = 0.0f;
    for (int64_t i = 0; i < H; i++) s += fq[i * W + j];
    yq[H + j] = s / (float)H;
  }
}
extern "C" int mapper_cuda_pool(nn_ctx *c, float *y, const float *f, int64_t BC, int64_t H, int64_t W,
                                cmds_error *err) {
  k_pool<<<(unsigned)BC, 128, 0, nn_stream(c)>>>(y, f, H, W);
  LAUNCHED();
}

__global__ static void k_pool_bwd(float *df, const float *dy, int64_t BC, int64_t H, int64_t W) {
  int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= BC * H * W) return;
  int64_t q = k / (H * W), i = (k / W) % H, j = k % W;
  df[k] += dy[q * (H + W) + i] / (float)W + dy[q * (H + W) + H + j] / (float)H;
}
extern "C" int mapper_cuda_pool_bwd(nn_ctx *c, float *df, const float *dy, int64_t BC, int64_t H, int64_t W,
                                    cmds_error *err) {
  k_pool_bwd<<<GRID1(BC * H * W)>>>(df, dy, BC, H, W);
  LAUNCHED();
}

__device__ static inline float hswish(float v) { return v * fminf(fmaxf(v + 3.0f, 0.0f), 6.0f) / 6.0f; }
__device__ static inline float hswish_grad(float v) { return v < -3.0f ? 0.0f : v <= 3.0f ? v / 3.0f + 0.5f : 1.0f; }

__global__ static void k_hswish_split(float *zh, float *zw, const float *zn, int64_t BM, int64_t H, int64_t W) {
  int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= BM * (H + W)) return;
  int64_t q = k / (H + W), r = k % (H + W);
  float v = hswish(zn[k]);
  if (r < H)
    zh[q * H + r] = v;
  else
    zw[q * W + r - H] = v;
}
extern "C" int mapper_cuda_hswish_split(nn_ctx *c, float *zh, float *zw, const float *zn, int64_t BM,
                                        int64_t H, int64_t W, cmds_error *err) {
  k_hswish_split<<<GRID1(BM * (H + W))>>>(zh, zw, zn, BM, H, W);
  LAUNCHED();
}

__global__ static void k_hswish_bwd(float *dz, const float *dzh, const float *dzw, const float *zn, int64_t BM,
                                    int64_t H, int64_t W) {
  int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= BM * (H + W)) return;
  int64_t q = k / (H + W), r = k % (H + W);
  float d = r < H ? dzh[q * H + r] : dzw[q * W + r - H];
  dz[k] = d * hswish_grad(zn[k]);
}
extern "C" int mapper_cuda_hswish_bwd(nn_ctx *c, float *dz, const float *dzh, const float *dzw, const float *zn,
                                      int64_t BM, int64_t H, int64_t W, cmds_error *err) {
  k_hswish_bwd<<<GRID1(BM * (H + W))>>>(dz, dzh, dzw, zn, BM, H, W);
  LAUNCHED();
}

__global__ static void k_sigmoid(float *y, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = 1.0f / (1.0f + expf(-y[i]));
}
extern "C" int mapper_cuda_sigmoid(nn_ctx *c, float *y, int64_t n, cmds_error *err) {
  k_sigmoid<<<GRID1(n)>>>(y, n);
  LAUNCHED();
}

__global__ static void k_relu(float *y, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = fmaxf(y[i], 0.0f);
}
extern "C" int mapper_cuda_relu(nn_ctx *c, float *y, int64_t n, cmds_error *err) {
  k_relu<<<GRID1(n)>>>(y, n);
  LAUNCHED();
}

__global__ static void k_relu_bwd(float *dy, const float *y, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n && !(y[i] > 0.0f)) dy[i] = 0.0f;
}
extern "C" int mapper_cuda_relu_bwd(nn_ctx *c, float *dy, const float *y, int64_t n, cmds_error *err) {
  k_relu_bwd<<<GRID1(n)>>>(dy, y, n);
  LAUNCHED();
}

__global__ static void k_ca_apply(float *ft, const float *f, const float *ah, const float *aw, int64_t BC,
                                  int64_t H, int64_t W) {
  int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= BC * H * W) return;
  int64_t q = k / (H * W), i = (k / W) % H, j = k % W;
  ft[k] = f[k] * ah[q * H + i] * aw[q * W + j];
}
extern "C" int mapper_cuda_ca_apply(nn_ctx *c, float *ft, const float *f, const float *ah, const float *aw,
                                    int64_t BC, int64_t H, int64_t W, cmds_error *err) {
  k_ca_apply<<<GRID1(BC * H * W)>>>(ft, f, ah, aw, BC, H, W);
  LAUNCHED();
}

// One block per plane: dF += dFt ah aw; dah / daw the sums over W / H of dFt F times the
// other gate, times the sigmoid's derivative.
__global__ static void k_ca_apply_bwd(float *df, float *dah, float *daw, const float *dft, const float *f,
                                      const float *ah, const float *aw, int64_t H, int64_t W) {
  int64_t q = blockIdx.x, HW = H * W;
  const float *dq = dft + q * HW, *fq = f + q * HW, *ahq = ah + q * H, *awq = aw + q * W;
  float *dfq = df + q * HW;
  for (int64_t k = threadIdx.x; k < HW; k += blockDim.x) dfq[k] += dq[k] * ahq[k / W] * awq[k % W];
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    float s = 0.0f;
    for (int64_t j = 0; j < W; j++) s += dq[i * W + j] * fq[i * W + j] * awq[j];
    dah[q * H + i] = s * ahq[i] * (1.0f - ahq[i]);
  }
  for (int64_t j = threadIdx.x; j < W; j += blockDim.x) {
    float s = 0.0f;
    for (int64_t i = 0; i < H; i++) s += dq[i * W + j] * fq[i * W + j] * ahq[i];
    daw[q * W + j] = s * awq[j] * (1.0f - awq[j]);
  }
}
extern "C" int mapper_cuda_ca_apply_bwd(nn_ctx *c, float *df, float *dah, float *daw, const float *dft,
                                        const float *f, const float *ah, const float *aw, int64_t BC, int64_t H,
                                        int64_t W, cmds_error *err) {
  k_ca_apply_bwd<<<(unsigned)BC, 256, 0, nn_stream(c)>>>(df, dah, daw, dft, f, ah, aw, H, W);
  LAUNCHED();
}

__global__ static void k_softmax_ch(float *w, int64_t B, int64_t L, int64_t HW) {
  int64_t q = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (q >= B * HW) return;
  float *wb = w + (q / HW) * L * HW + q % HW;
  float mx = wb[0], s = 0.0f;
  for (int64_t l = 1; l < L; l++) mx = fmaxf(mx, wb[l * HW]);
  for (int64_t l = 0; l < L; l++) s += (wb[l * HW] = expf(wb[l * HW] - mx));
  for (int64_t l = 0; l < L; l++) wb[l * HW] /= s;
}
extern "C" int mapper_cuda_softmax_ch(nn_ctx *c, float *w, int64_t B, int64_t L, int64_t HW, cmds_error *err) {
  k_softmax_ch<<<GRID1(B * HW)>>>(w, B, L, HW);
  LAUNCHED();
}

__global__ static void k_softmax_ch_bwd(float *dw, const float *w, int64_t B, int64_t L, int64_t HW) {
  int64_t q = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (q >= B * HW) return;
  int64_t o = (q / HW) * L * HW + q % HW;
  float s = 0.0f;
  for (int64_t l = 0; l < L; l++) s += w[o + l * HW] * dw[o + l * HW];
  for (int64_t l = 0; l < L; l++) dw[o + l * HW] = w[o + l * HW] * (dw[o + l * HW] - s);
}
extern "C" int mapper_cuda_softmax_ch_bwd(nn_ctx *c, float *dw, const float *w, int64_t B, int64_t L, int64_t HW,
                                          cmds_error *err) {
  k_softmax_ch_bwd<<<GRID1(B * HW)>>>(dw, w, B, L, HW);
  LAUNCHED();
}

__global__ static void k_fuse(float *s, const float *w, const float *f, int64_t B, int64_t L, int64_t D,
                              int64_t HW) {
  int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= B * D * HW) return;
  int64_t b = k / (D * HW), c = (k / HW) % D, p = k % HW;
  float acc = 0.0f;
  for (int64_t l = 0; l < L; l++) acc += w[(b * L + l) * HW + p] * f[((b * L + l) * D + c) * HW + p];
  s[k] = acc;
}
extern "C" int mapper_cuda_fuse(nn_ctx *c, float *s, const float *w, const float *f, int64_t B, int64_t L,
                                int64_t D, int64_t HW, cmds_error *err) {
  k_fuse<<<GRID1(B * D * HW)>>>(s, w, f, B, L, D, HW);
  LAUNCHED();
}

__global__ static void k_fuse_bwd_f(float *df, const float *ds, const float *w, int64_t B, int64_t L, int64_t D,
                                    int64_t HW) {
  int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= B * L * D * HW) return;
  int64_t bl = k / (D * HW), b = bl / L, c = (k / HW) % D, p = k % HW;
  df[k] = w[bl * HW + p] * ds[(b * D + c) * HW + p];
}
__global__ static void k_fuse_bwd_w(float *dw, const float *ds, const float *f, int64_t B, int64_t L, int64_t D,
                                    int64_t HW) {
  int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= B * L * HW) return;
  int64_t bl = k / HW, b = bl / L, p = k % HW;
  float acc = 0.0f;
  for (int64_t c = 0; c < D; c++) acc += ds[(b * D + c) * HW + p] * f[(bl * D + c) * HW + p];
  dw[k] = acc;
}
extern "C" int mapper_cuda_fuse_bwd(nn_ctx *c, float *df, float *dw, const float *ds, const float *w,
                                    const float *f, int64_t B, int64_t L, int64_t D, int64_t HW, cmds_error *err) {
  k_fuse_bwd_f<<<GRID1(B * L * D * HW)>>>(df, ds, w, B, L, D, HW);
  CUDA_CHECK_LAUNCH();
  k_fuse_bwd_w<<<GRID1(B * L * HW)>>>(dw, ds, f, B, L, D, HW);
  LAUNCHED();
}

typedef struct {
  float w[16];
} layer_weights;

// One thread per pixel: the weighted masked distance of every layer into part[q], and dP.
__global__ static void k_loss(float *part, float *dp, const float *p, const float *t, const float *mask,
                              layer_weights lw, int64_t B, int64_t L, int64_t D, int64_t HW, double denom) {
  int64_t q = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (q >= B * HW) return;
  int64_t b = q / HW, px = q % HW;
  float m = mask ? mask[q] : 1.0f, acc = 0.0f;
  const float eps = 1e-8f;
  for (int64_t l = 0; l < L; l++) {
    int64_t o = (b * L * D + l * D) * HW + px;
    float dot = 0.0f, pp = 0.0f, tt = 0.0f;
    for (int64_t k = 0; k < D; k++) {
      float u = p[o + k * HW], v = t[o + k * HW];
      dot += u * v;
      pp += u * u;
      tt += v * v;
    }
    float np = fmaxf(sqrtf(pp), eps), nt = fmaxf(sqrtf(tt), eps), cosv = dot / (np * nt);
    float wgt = (float)((double)lw.w[l] * m / denom);
    acc += wgt * (1.0f - cosv);
    if (!dp) continue;
    float a1 = -wgt / (np * nt), a2 = sqrtf(pp) > eps ? wgt * cosv / (np * np) : 0.0f;
    for (int64_t k = 0; k < D; k++) dp[o + k * HW] = a1 * t[o + k * HW] + a2 * p[o + k * HW];
  }
  part[q] = acc;
}

__global__ static void k_sum(double *out, const float *part, int64_t n) {
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += part[i];
  s = nn_block_sum(s);
  if (threadIdx.x == 0) *out = s;
}

extern "C" int mapper_cuda_loss(nn_ctx *c, double *loss, float *dp, const float *p, const float *t,
                                const float *mask, const float *layer_w_host, int64_t B, int64_t L, int64_t D,
                                int64_t HW, double denom, float *tmp, cmds_error *err) {
  if (L > 16) return CMDS_FAIL(err, CMDS_EINPUT, "mapper_loss: at most 16 layers on CUDA, got %lld", (long long)L);
  layer_weights lw;
  for (int64_t l = 0; l < 16; l++) lw.w[l] = l < L ? layer_w_host[l] : 0.0f;
  int64_t n = B * HW;
  double *sum = (double *)(tmp + ((n + 1) & ~(int64_t)1));
  k_loss<<<GRID1(n)>>>(tmp, dp, p, t, mask, lw, B, L, D, HW, denom);
  CUDA_CHECK_LAUNCH();
  k_sum<<<1, 1024, 0, nn_stream(c)>>>(sum, tmp, n);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaMemcpyAsync(loss, sum, sizeof(double), cudaMemcpyDeviceToHost, nn_stream(c)));
  CUDA_CHECK(cudaStreamSynchronize(nn_stream(c)));
  return CMDS_OK;
}

__global__ static void k_adamw(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1,
                               float b2, float eps, float wd, float bc1, float bc2s) {
  int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= n) return;
  float pv = p[j] * (1.0f - lr * wd), gj = g[j];
  float mj = b1 * m[j] + (1.0f - b1) * gj, vj = b2 * v[j] + (1.0f - b2) * gj * gj;
  m[j] = mj;
  v[j] = vj;
  p[j] = pv - (lr / bc1) * mj / (sqrtf(vj) / bc2s + eps);
}
extern "C" int mapper_cuda_adamw(nn_ctx *c, float *p, const float *g, float *m, float *v, int64_t n, float lr,
                                 float beta1, float beta2, float eps, float wd, float bc1, float bc2_sqrt,
                                 cmds_error *err) {
  k_adamw<<<GRID1(n)>>>(p, g, m, v, n, lr, beta1, beta2, eps, wd, bc1, bc2_sqrt);
  LAUNCHED();
}

// rows (B, L, G, G, D) f16 -> x (B, L*D, G, G) f32; one thread per output value.
__global__ static void k_f16_rows(float *x, const uint16_t *rows, int64_t B, int64_t L, int64_t GG, int64_t D) {
  int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= B * L * D * GG) return;
  int64_t bl = k / (D * GG), d = (k / GG) % D, pix = k % GG;
  x[k] = __half2float(__ushort_as_half(rows[(bl * GG + pix) * D + d]));
}
extern "C" int mapper_cuda_f16_rows(nn_ctx *c, float *x, const uint16_t *rows, int64_t B, int64_t L, int64_t G,
                                    int64_t D, cmds_error *err) {
  k_f16_rows<<<GRID1(B * L * D * G * G)>>>(x, rows, B, L, G * G, D);
  LAUNCHED();
}
