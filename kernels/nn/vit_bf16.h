/* vit_bf16: the CUDA entry points the ViT forward uses beyond nn_cuda.h: a general
 * cuBLASLt GEMM (f32/bf16 operands, fused bias, accumulate into the output for residual
 * connections), the bf16 flash attention (flash_attention.cu), and the ViT's own small
 * kernels (vit_bf16.cu): embedding assembly, token gather, LayerNorm f32 -> bf16, in-place
 * bf16 GELU, f32 -> bf16 conversion. Only vit.c calls them, with CMDS_CUDA, on device
 * pointers whose shapes it has checked. Each returns 0 or a CMDS_E* code with *err set. */
#ifndef CMDS_NN_VIT_BF16_H
#define CMDS_NN_VIT_BF16_H

#include <stdint.h>

#include "nn_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y (M, N) = x (M, K) W^T (+ bias) (+ beta * y), row-major, one cuBLASLt call (linear.cu).
 * x, W: both NN_F32 (fp32, or TF32 when ctx->allow_tf32) or both NN_BF16 (fp32 accumulate);
 * y: NN_F32 or NN_BF16; bias (N) of y's dtype or NULL, added in the epilogue; beta 0 or 1
 * (1: y += x W^T + bias, the residual connection without a separate pass). */
int nn_lt_gemm_cuda(nn_ctx *c, void *y, nn_dtype y_type, const void *x, const void *w, nn_dtype xw_type,
                    const void *bias, int64_t M, int64_t K, int64_t N, float beta, cmds_error *err);

/* Flash attention on bf16 q, k, v (B, N, H*D) with row strides ld_* (elements, multiples of
 * 8, 16-byte aligned rows), o (B, N, H*D) bf16; tensor cores (mma.sync m16n8k16) with an
 * fp32 online softmax; D a multiple of 16 up to 128. */
int nn_flash_attention_bf16_cuda(nn_ctx *c, uint16_t *o, const uint16_t *q, const uint16_t *k,
                                 const uint16_t *v, int64_t B, int64_t N, int64_t H, int64_t D, int64_t ld_q,
                                 int64_t ld_k, int64_t ld_v, int64_t ld_o, cmds_error *err);

/* x (B, 1 + NP, D) = [cls; plin (B, NP, D)] + pos (1 + NP, D), f32. */
int nn_vit_embed_cuda(nn_ctx *c, float *x, const float *plin, const float *cls, const float *pos, int64_t B,
                      int64_t NP, int64_t D, cmds_error *err);
/* out rows: out[b * out_stride + p * D + d] = src[(b * T + 1 + p) * D + d] for p < T - 1: the
 * patch tokens of every image (no class token), f32. */
int nn_vit_gather_cuda(nn_ctx *c, float *out, int64_t out_stride, const float *src, int64_t B, int64_t T,
                       int64_t D, cmds_error *err);
/* LayerNorm over the last dim of x (rows, C) f32, statistics in f32 (two-pass), y bf16. C <= 2048. */
int nn_layernorm_bf16_cuda(nn_ctx *c, uint16_t *y, const float *x, const float *g, const float *b, int64_t rows,
                           int64_t C, float eps, cmds_error *err);
/* Exact (erf) GELU in place on n bf16 values, computed in f32. */
int nn_gelu_bf16_cuda(nn_ctx *c, uint16_t *y, int64_t n, cmds_error *err);
/* n f32 -> bf16 (round to nearest even), device to device. */
int nn_f32_to_bf16_cuda(nn_ctx *c, uint16_t *y, const float *x, int64_t n, cmds_error *err);

#ifdef __cplusplus
}
#endif

#endif
