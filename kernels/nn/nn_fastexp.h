/* nn_fastexp: an exp for the CPU inner loops of the training ops (the softmax recomputed in the
 * attention backward, the SiLU backward), written without branches or calls so that the
 * compiler vectorises the loops that use it (libm's expf is a call per element, and GCC does
 * not vectorise a floating-point clamp in OpenMP builds, so the clamp here is on integers).
 *   n = round(x log2 e), r = x - n ln 2 (two-constant Cody-Waite reduction), e^r by its degree-7
 *   Taylor polynomial (|r| <= ln 2 / 2), times 2^n with n clamped to [-126, 127].
 * Relative error <= 1.2e-7 for x in [-87, 88]; finite x below give about 1.6e-38 (never 0),
 * above about 1.65e38 (never inf): guaranteed for |x| < 2.9e6 (the rounding trick needs
 * |x log2 e| < 2^22) and seen up to |x| = 1e38 on x86-64; +-inf give NaN. Internal to kernels/nn.
 * Also the softmax row built on it (attention forward and backward), an 8-lane float sum
 * (softmax, layer norm backward), and the standard normal CDF and density built on it
 * (nn_fast_phi, nn_fast_gauss: GELU, GEGLU and their backwards; libm's erff is a call per
 * element). */
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

/* The largest of a[0..n) (n >= 1), as the scalar loop m = a[j] > m ? a[j] : m from m = a[0]
 * gives it (a NaN a[0] gives NaN, later NaNs are skipped), in 8 independent lanes so that it
 * vectorises: the scalar loop's compare chain was a fifth of the attention's softmax time. */
static inline float nn_fast_max8(const float *a, int64_t n) {
  float m[8];
  for (int l = 0; l < 8; l++) m[l] = a[0];
  int64_t j = 1;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; l++) m[l] = a[j + l] > m[l] ? a[j + l] : m[l];
  for (; j < n; j++) m[0] = a[j] > m[0] ? a[j] : m[0];
  for (int l = 1; l < 8; l++) m[0] = m[l] > m[0] ? m[l] : m[0];
  return m[0];
}

/* In-place softmax of one row of n scores with nn_fast_exp; entries [valid, n) are masked (set
 * to 0; valid >= 1). Sums with nn_fast_sum8. The attention forward and its backward's recomputation
 * share it, so both see the same probabilities. */
static inline void nn_fast_softmax_row(float *r, int64_t n, int64_t valid) {
  float mx = nn_fast_max8(r, valid);
  for (int64_t j = 0; j < valid; j++) r[j] = nn_fast_exp(r[j] - mx); /* vectorised */
  float inv = 1.0f / nn_fast_sum8(r, valid);
  for (int64_t j = 0; j < valid; j++) r[j] *= inv;
  for (int64_t j = valid; j < n; j++) r[j] = 0.0f;
}

/* exp(-x^2 / 2), vectorisable: x^2 is clamped (on its bits, as integers: see above) to 200,
 * whose exp(-100) is below float's normal range anyway (the result is then nn_fast_exp's floor,
 * about 1.6e-38); so +-inf and huge x give that floor, not NaN. Relative error about 1e-6 at
 * |x| = 13 (x^2's rounding, amplified by x^2 / 2), less below. */
static inline float nn_fast_gauss(float x) {
  union {
    float f;
    int32_t i;
  } u = {x * x};
  u.i = u.i > 0x43480000 ? 0x43480000 : u.i; /* 200.0f; NaN's bits are larger too */
  return nn_fast_exp(-0.5f * u.f);
}

/* Phi(x), the standard normal CDF (1 + erf(x / sqrt 2)) / 2, without branches or calls:
 *   |x| <= 1: 1/2 + x S(x^2);   |x| > 1: Phi(-|x|) = exp(-x^2 / 2) Q(1 / (1 + |x| / 2)),
 * Phi(|x|) = 1 - Phi(-|x|). S (degree 5) and Q (degree 9) are relative least-squares fits
 * derived by kernels/nn/fit_fast_phi.py (the constants below are its output). In float32 the
 * result is within 2.5e-7 relative of Phi for x >= -1 (1e-7 for x >= 0); below, within 3e-7
 * plus about x^2 / 2 ulps from the rounding of x^2 in the exponent (1e-6 at -5, 4e-6 at -12);
 * below -13, where Phi is under float's normal range, it is a positive number under 1e-37
 * (Q is held at 14).
 * tests/kernels/nn/test_nn_fastmath.c measures all of this against libm's erfc in double. */
static inline float nn_fast_phi(float x) {
  static const float s[6] = {3.989422917e-01f, -6.649036705e-02f, 9.973350912e-03f,
                             -1.186398091e-03f, 1.135575585e-04f, -7.680883755e-06f};
  static const float q[10] = {-1.822705144e-06f, 1.995396167e-01f, 1.983558238e-01f, 1.599558890e-01f,
                              -1.056970190e-02f, 1.676531136e-01f, -6.781124473e-01f, 8.039352894e-01f,
                              -4.340116978e-01f, 9.325590730e-02f};
  union {
    float f;
    uint32_t u;
  } a = {x};
  a.u &= 0x7fffffffu; /* |x| */
  float u = x * x, ps = s[5];
  for (int i = 4; i >= 0; i--) ps = ps * u + s[i];
  union {
    float f;
    int32_t i;
  } t = {1.0f / (1.0f + 0.5f * a.f)};
  t.i = t.i < 0x3e000000 ? 0x3e000000 : t.i; /* t >= 1/8, |x| <= 14: the fitted range, where Q > 0 */
  float pq = q[9];
  for (int i = 8; i >= 0; i--) pq = pq * t.f + q[i];
  /* The choices as bit masks: with a branch GCC moves a float operation under it, and may not
   * move it back out to vectorise (floating-point operations may trap). */
  union {
    float f;
    int32_t i;
  } tail = {nn_fast_gauss(x) * pq}, upper = {1.0f - tail.f}, small = {0.5f + x * ps}, xi = {x}, r;
  int32_t neg = xi.i >> 31;                               /* all ones for x < 0 */
  int32_t in = (int32_t)(a.u - 0x3f800001u) >> 31;        /* all ones for |x| <= 1 */
  int32_t big = (tail.i & neg) | (upper.i & ~neg);        /* Phi(-|x|), or 1 - Phi(-|x|) */
  r.i = (small.i & in) | (big & ~in);
  return r.f;
}

#endif
