/* cuda_fp16.h of the CUDA emulation (tests/cuda_emu): fp16 storage read back to float. */
#ifndef CMDS_CUDA_EMU_FP16_H
#define CMDS_CUDA_EMU_FP16_H

#include "cuda_runtime.h"
#include "nn_half_bits.h"

struct __half {
  unsigned short x;
};

static inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
static inline float __half2float(__half h) { return nn_bits_f16_to_f32(h.x); }

#endif
