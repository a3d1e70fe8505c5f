/* nn_fastexp: an exp for the CPU inner loops of the training ops (the softmax recomputed in the
 * attention backward, the SiLU backward), written without branches or calls so that the
 * compiler vectorises the loops that use it (libm's expf is a call per element, and GCC does
 * not vectorise a floating-point clamp in OpenMP builds, so the clamp here is on integers).
 *   n = round(x log2 e), r = x - n ln 2 (two-constant Cody-Waite reduction), e^r by its degree-7
 *   Taylor polynomial (|r| <= ln 2 / 2), times 2^n with n clamped to [-126, 127].
 * Relative error <= 1.2e-7 for x in [-87, 88]; finite x below give about 1.6e-38 (never 0),
 * above about 1.65e38 (never inf): guaranteed for |x| < 2.9e6 (the rounding trick needs
 * |x log2 e| < 2^22) and seen up to |x| = 1e38 on x86-64; +-inf give NaN. Internal to kernels/nn.
 * Also the softmax row built on it (attention forward and backward) and an 8-lane float sum
 * (softmax, layer norm backward). */
#ifndef CMDS_NN_FASTEXP_H
#define CMDS_NN_FASTEXP_H

#include <stdint.h>

static inline float nn_fast_exp(float x) {
  union {
    float f;
    uint32_t u;
  } rn = {x * 1.44269504088896341f + 12582912.0f}; /* + 1.5 * 2^23 rounds to an integer */
  float n = rn.f - 12582912.0f;
  float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t ni = (int32_t)(rn.u - 0x4B400000u); /* n as an integer, from the mantissa bits */
  ni = ni < -126 ? -126 : ni;
  ni = ni > 127 ? 127 : ni;
  union {
    uint32_t u;
    float f;
  } s = {(uint32_t)(ni + 127) << 23};
  return p * s.f;
}

/* Sum of n floats in 8 running lanes, which the compiler vectorises (a single float accumulator
 * it may not reorder); the same order on every call. */
static inline float nn_fast_sum8(const float *a, int64_t n) {
  float s[8] = {0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; l++) s[l] += a[j + l];
  for (; j < n; j++) s[0] += a[j];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* In-place softmax of one row of n scores with nn_fast_exp; entries [valid, n) are masked (set
 * to 0; valid >= 1). Sums with nn_fast_sum8. The attention forward and its backward's recomputation
 * share it, so both see the same probabilities. */
static inline void nn_fast_softmax_row(float *r, int64_t n, int64_t valid) {
  float mx = r[0];
  for (int64_t j = 1; j < valid; j++) mx = r[j] > mx ? r[j] : mx;
  for (int64_t j = 0; j < valid; j++) r[j] = nn_fast_exp(r[j] - mx); /* vectorised */
  float inv = 1.0f / nn_fast_sum8(r, valid);
  for (int64_t j = 0; j < valid; j++) r[j] *= inv;
  for (int64_t j = valid; j < n; j++) r[j] = 0.0f;
}

#endif
