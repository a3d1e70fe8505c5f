/* cuda_bf16.h of the CUDA emulation (tests/cuda_emu): bf16 storage and its conversions (round to
 * nearest even, as the CUDA intrinsics _rn do: kernels/nn/nn_half_bits.h). */
#ifndef CMDS_CUDA_EMU_BF16_H
#define CMDS_CUDA_EMU_BF16_H

#include "cuda_runtime.h"
#include "nn_half_bits.h"

struct __nv_bfloat16 {
  unsigned short x;
  __nv_bfloat16() = default;
  explicit __nv_bfloat16(float f) : x(nn_bits_f32_to_bf16(f)) {}
  explicit operator float() const { return nn_bits_bf16_to_f32(x); }
};
struct __nv_bfloat162 {
  __nv_bfloat16 x, y;
};

static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
static inline float __bfloat162float(__nv_bfloat16 h) { return (float)h; }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return __nv_bfloat162{__nv_bfloat16(a), __nv_bfloat16(b)};
}
static inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return __floats2bfloat162_rn(f.x, f.y); }
static inline float2 __bfloat1622float2(__nv_bfloat162 h) { return make_float2((float)h.x, (float)h.y); }

#endif
