// emu_left_out.cpp: the entry points of the .cu files the emulation leaves out (CMDS_CUDA_EMU_SKIP
// in cmake/CmdsCuda.cmake: kernels written in inline PTX), as calls that fail and say so.
#include "vit_bf16.h"

extern "C" int nn_flash_attention_bf16_cuda(nn_ctx *c, uint16_t *o, const uint16_t *q, const uint16_t *k,
                                            const uint16_t *v, int64_t B, int64_t N, int64_t H, int64_t D,
                                            int64_t ld_q, int64_t ld_k, int64_t ld_v, int64_t ld_o,
                                            cmds_error *err) {
  (void)c, (void)o, (void)q, (void)k, (void)v, (void)B, (void)N, (void)H, (void)D;
  (void)ld_q, (void)ld_k, (void)ld_v, (void)ld_o;
  return CMDS_FAIL(err, CMDS_EINTERNAL,
                   "flash attention (bf16, cuda): inline PTX (mma.sync, ldmatrix, cp.async), which the CUDA "
                   "emulation does not run; it needs a GPU");
}
