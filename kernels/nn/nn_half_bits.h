/* nn_half_bits: fp16 -> f32 and bf16 <-> f32 on the bits (bf16 rounded to nearest even, NaN kept
 * quiet), header-only: tensor.c's nn_f16_to_f32 / nn_f32_to_bf16 / nn_bf16_to_f32 are these, and
 * the CUDA emulation's cuda_fp16.h / cuda_bf16.h and its cuBLASLt (tests/cuda_emu) use the same
 * ones. C and C++. */
#ifndef CMDS_NN_HALF_BITS_H
#define CMDS_NN_HALF_BITS_H

#include <stdint.h>
#include <string.h>

static inline float nn_bits_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, x;
  if (exp == 0) {
    float f = (float)mant * (1.0f / 16777216.0f); /* 2^-24 */
    memcpy(&x, &f, 4);
    x |= sign;
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (mant << 13);
  } else {
    x = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &x, 4);
  return f;
}

static inline uint16_t nn_bits_f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

static inline float nn_bits_bf16_to_f32(uint16_t h) {
  uint32_t x = (uint32_t)h << 16;
  float f;
  memcpy(&f, &x, 4);
  return f;
}

#endif
