/* cuda_fp16.h of the CUDA emulation (tests/cuda_emu): fp16 storage read back to float. */
#ifndef CMDS_CUDA_EMU_FP16_H
#define CMDS_CUDA_EMU_FP16_H

#include <string.h>

#include "cuda_runtime.h"

struct __half {
  unsigned short x;
};

static inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
static inline float __half2float(__half h) {
  uint32_t s = (uint32_t)(h.x >> 15) << 31, e = (h.x >> 10) & 31u, m = h.x & 1023u, u;
  if (e == 31) {
    u = s | 0x7f800000u | (m << 13);  // inf, NaN
  } else if (e) {
    u = s | ((e + 112u) << 23) | (m << 13);
  } else if (m) {  // subnormal: normalise
    int sh = 0;
    while (!(m & 1024u)) m <<= 1, sh++;
    u = s | ((uint32_t)(113 - sh) << 23) | ((m & 1023u) << 13);
  } else {
    u = s;
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

#endif
