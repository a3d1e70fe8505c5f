/* hash: 64-bit FNV-1a over bytes, chained from h (start with CMDS_FNV64_INIT). The identities
 * and fingerprints the stages store (sample list and sample cache ids, cmds-run's stage
 * fingerprints and setting names, per-sample seeds) and the tests' digests use it; changing it
 * changes every stored identity. Not cryptographic: it tells files apart, it does not guard
 * against forgery. */
#ifndef CMDS_HASH_H
#define CMDS_HASH_H

#include <stddef.h>
#include <stdint.h>

#define CMDS_FNV64_INIT 0xcbf29ce484222325ull

static inline uint64_t cmds_fnv64(uint64_t h, const void *data, size_t n) {
  const unsigned char *p = (const unsigned char *)data; /* the cast: C++ (nvcc) includes it too */
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

#endif
