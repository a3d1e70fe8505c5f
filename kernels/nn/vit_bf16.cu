// vit_bf16.cu: the ViT forward's own small kernels (entry points in vit_bf16.h): embedding
// assembly and patch-token gather in f32 (one launch each instead of a copy per image), and
// the bf16 path's LayerNorm (f32 residual in, f32 statistics, bf16 out), in-place GELU and
// the f32 -> bf16 weight conversion. All memory-bound: 16-byte accesses where the shapes allow.
#include <cuda_bf16.h>

#include "vit_bf16.h"

// x[b, t, :] = (t == 0 ? cls : plin[b, t - 1, :]) + pos[t, :]
__global__ static void vit_embed(float *x, const float *plin, const float *cls, const float *pos, int64_t B,
                                 int64_t T, int64_t D) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= B * T * D) return;
  int64_t d = i % D, t = (i / D) % T, b = i / (D * T);
  float v = t == 0 ? cls[d] : plin[(b * (T - 1) + t - 1) * D + d];
  x[i] = v + pos[t * D + d];
}

extern "C" int nn_vit_embed_cuda(nn_ctx *c, float *x, const float *plin, const float *cls, const float *pos,
                                 int64_t B, int64_t NP, int64_t D, cmds_error *err) {
  int64_t n = B * (NP + 1) * D;
  if (n == 0) return CMDS_OK;
  vit_embed<<<nn_grid(n, 256), 256, 0, nn_stream(c)>>>(x, plin, cls, pos, B, NP + 1, D);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}

// One float4 per thread: D4 = D / 4 vectors per token.
__global__ static void vit_gather4(float4 *out, int64_t out_stride4, const float4 *src, int64_t B, int64_t T,
                                   int64_t D4) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, per = (T - 1) * D4;
  if (i >= B * per) return;
  int64_t b = i / per, r = i % per;
  out[b * out_stride4 + r] = src[(b * T + 1) * D4 + r];
}

__global__ static void vit_gather1(float *out, int64_t out_stride, const float *src, int64_t B, int64_t T,
                                   int64_t D) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, per = (T - 1) * D;
  if (i >= B * per) return;
  int64_t b = i / per, r = i % per;
  out[b * out_stride + r] = src[(b * T + 1) * D + r];
}

extern "C" int nn_vit_gather_cuda(nn_ctx *c, float *out, int64_t out_stride, const float *src, int64_t B, int64_t T,
                                  int64_t D, cmds_error *err) {
  int64_t n = B * (T - 1) * D;
  if (n == 0) return CMDS_OK;
  if (D % 4 == 0 && out_stride % 4 == 0 && ((uintptr_t)out | (uintptr_t)src) % 16 == 0)
    vit_gather4<<<nn_grid(n / 4, 256), 256, 0, nn_stream(c)>>>((float4 *)out, out_stride / 4, (const float4 *)src, B,
                                                                T, D / 4);
  else
    vit_gather1<<<nn_grid(n, 256), 256, 0, nn_stream(c)>>>(out, out_stride, src, B, T, D);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}

// One warp per row; the row stays in registers (VPL float4 per lane, C <= 128 * VPL), mean
// then centred variance from the registers, so x is read once.
#define LN_VPL 16
__global__ static void __launch_bounds__(256) vit_layernorm_bf16(__nv_bfloat16 *y, const float *x, const float *g,
                                                                 const float *b, int64_t rows, int C, float eps) {
  int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x & 31, C4 = C / 4;
  if (row >= rows) return;
  const float4 *xr = (const float4 *)(x + row * C);
  float4 v[LN_VPL];
  float s = 0.0f;
#pragma unroll
  for (int k = 0; k < LN_VPL; k++) {
    int i = lane + 32 * k;
    v[k] = i < C4 ? xr[i] : make_float4(0.f, 0.f, 0.f, 0.f);
    s += v[k].x + v[k].y + v[k].z + v[k].w;
  }
  for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  float mean = s / (float)C, q = 0.0f;
#pragma unroll
  for (int k = 0; k < LN_VPL; k++) {
    if (lane + 32 * k < C4) {
      float a = v[k].x - mean, bb = v[k].y - mean, cc = v[k].z - mean, d = v[k].w - mean;
      q += a * a + bb * bb + cc * cc + d * d;
    }
  }
  for (int o = 16; o; o >>= 1) q += __shfl_xor_sync(0xffffffffu, q, o);
  float rstd = rsqrtf(q / (float)C + eps);
  __nv_bfloat162 *yr = (__nv_bfloat162 *)(y + row * C);
  const float4 *g4 = (const float4 *)g, *b4 = (const float4 *)b;
#pragma unroll
  for (int k = 0; k < LN_VPL; k++) {
    int i = lane + 32 * k;
    if (i < C4) {
      float4 gg = g4[i], bv = b4[i];
      float2 lo = make_float2((v[k].x - mean) * rstd * gg.x + bv.x, (v[k].y - mean) * rstd * gg.y + bv.y);
      float2 hi = make_float2((v[k].z - mean) * rstd * gg.z + bv.z, (v[k].w - mean) * rstd * gg.w + bv.w);
      yr[2 * i] = __float22bfloat162_rn(lo);
      yr[2 * i + 1] = __float22bfloat162_rn(hi);
    }
  }
}

extern "C" int nn_layernorm_bf16_cuda(nn_ctx *c, uint16_t *y, const float *x, const float *g, const float *b,
                                      int64_t rows, int64_t C, float eps, cmds_error *err) {
  if (C % 4 || C > 128 * LN_VPL || ((uintptr_t)x | (uintptr_t)g | (uintptr_t)b) % 16 || (uintptr_t)y % 8)
    return CMDS_FAIL(err, CMDS_EINPUT,
                     "layernorm (bf16, cuda): width %lld must be a multiple of 4 and <= %d, rows 16-byte aligned",
                     (long long)C, 128 * LN_VPL);
  if (rows == 0) return CMDS_OK;
  vit_layernorm_bf16<<<nn_grid(rows, 8), 256, 0, nn_stream(c)>>>((__nv_bfloat16 *)y, x, g, b, rows, (int)C, eps);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}

__device__ static inline float gelu_erf(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }

// 8 bf16 (16 bytes) per thread; n8 = n / 8 vectors, the tail (n % 8) by thread 0..7 of the last block.
__global__ static void vit_gelu_bf16(__nv_bfloat16 *y, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, n8 = n / 8;
  if (i < n8) {
    uint4 u = ((uint4 *)y)[i];
    __nv_bfloat162 *h = (__nv_bfloat162 *)&u;
#pragma unroll
    for (int k = 0; k < 4; k++) {
      float2 f = __bfloat1622float2(h[k]);
      h[k] = __float22bfloat162_rn(make_float2(gelu_erf(f.x), gelu_erf(f.y)));
    }
    ((uint4 *)y)[i] = u;
  } else if (i - n8 < n % 8) {
    int64_t j = n8 * 8 + (i - n8);
    y[j] = __float2bfloat16_rn(gelu_erf(__bfloat162float(y[j])));
  }
}

extern "C" int nn_gelu_bf16_cuda(nn_ctx *c, uint16_t *y, int64_t n, cmds_error *err) {
  if ((uintptr_t)y % 16) return CMDS_FAIL(err, CMDS_EINPUT, "gelu (bf16, cuda): data not 16-byte aligned");
  if (n == 0) return CMDS_OK;
  vit_gelu_bf16<<<nn_grid(n / 8 + 8, 256), 256, 0, nn_stream(c)>>>((__nv_bfloat16 *)y, n);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}

__global__ static void to_bf16(__nv_bfloat16 *y, const float *x, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = __float2bfloat16_rn(x[i]);
}

extern "C" int nn_f32_to_bf16_cuda(nn_ctx *c, uint16_t *y, const float *x, int64_t n, cmds_error *err) {
  if (n == 0) return CMDS_OK;
  to_bf16<<<nn_grid(n, 256), 256, 0, nn_stream(c)>>>((__nv_bfloat16 *)y, x, n);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}
