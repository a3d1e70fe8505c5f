/* cuda_bf16.h of the CUDA emulation (tests/cuda_emu): bf16 storage and its conversions (round to
 * nearest even, as the CUDA intrinsics _rn do). */
#ifndef CMDS_CUDA_EMU_BF16_H
#define CMDS_CUDA_EMU_BF16_H

#include <string.h>

#include "cuda_runtime.h"

struct __nv_bfloat16 {
  unsigned short x;
  __nv_bfloat16() = default;
  explicit __nv_bfloat16(float f) : x(cmds_emu_f2bf(f)) {}
  explicit operator float() const { return cmds_emu_bf2f(x); }
  static unsigned short cmds_emu_f2bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
  }
  static float cmds_emu_bf2f(unsigned short h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
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
