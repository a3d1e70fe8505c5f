/* rng: the project's deterministic random numbers (SplitMix64 for seeding, xoshiro256**
 * for streams). Every random choice in cmds derives from a seed and a stable key (a
 * sample's name, a task id), never from the rank or the clock, so results do not
 * depend on how work is spread over ranks. Header-only: tiny and hot. */
#ifndef CMDS_RNG_H
#define CMDS_RNG_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "hash.h" /* comm/: cmds_fnv64 */

typedef struct cmds_rng {
  uint64_t s[4];
} cmds_rng;

static inline uint64_t cmds_splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* FNV-1a of a string: turns a stable key (file name) into a seed component. */
static inline uint64_t cmds_hash_str(const char *s) { return cmds_fnv64(CMDS_FNV64_INIT, s, strlen(s)); }

static inline void cmds_rng_seed(cmds_rng *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = cmds_splitmix64(&x);
}

static inline uint64_t cmds_rng_u64(cmds_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = ((s[1] * 5) << 7 | (s[1] * 5) >> 57) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = (s[3] << 45) | (s[3] >> 19);
  return result;
}

/* Uniform in [0, 1) with 53 bits. */
static inline double cmds_rng_uniform(cmds_rng *r) {
  return (double)(cmds_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform integer in [0, n) (Lemire's method without bias worth caring about here). */
static inline uint64_t cmds_rng_below(cmds_rng *r, uint64_t n) {
  return (uint64_t)(((__uint128_t)cmds_rng_u64(r) * n) >> 64);
}

/* Standard normal (Box-Muller; one value per call, the other discarded for simplicity). */
static inline double cmds_rng_normal(cmds_rng *r) {
  double u1 = cmds_rng_uniform(r), u2 = cmds_rng_uniform(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
