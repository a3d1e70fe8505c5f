/* attention: multi-head scaled dot-product attention, o = softmax(q k^T / sqrt(D)) v per
 * head, no mask, no dropout (a ViT block's core).
 *   q, k, v (B, N, C) with C = H * D; head h is columns [h*D, (h+1)*D) (the layout a
 *   linear produces and the output projection reads)   ->   o (B, N, C)
 * CPU, on AVX2/FMA CPUs with D a multiple of 8 up to 256: key tiles with an online softmax and our
 * own micro-kernels (attention_tiled.h). Otherwise (and with CMDS_NN_ATTN_KERNEL=blas):
 * per (batch, head, block of nn_attention_cpu_qb(N) query rows) two GEMMs through OpenBLAS,
 * S = Q K^T / sqrt(D) into a per-thread (QB, N) scratch block, a row softmax, O = P V.
 * OpenMP runs the blocks in parallel with OpenBLAS single-threaded inside (small GEMMs
 * scale better over blocks than inside one GEMM; measured in analysis/kernels_gpu.md);
 * CMDS_NN_ATTN_THREADS=blas in the environment runs the blocks in turn with OpenBLAS
 * threading each GEMM instead (kept for that comparison).
 * CUDA, fp32: one fused kernel with an online (running max / running sum) softmax over key
 * tiles held in shared memory; the N x N score matrix never exists in global memory.
 * Head dim D <= 128 on CUDA. The bf16 tensor-core kernel is nn_flash_attention_bf16_cuda
 * (flash_attention.cu, vit_bf16.h). */
#ifndef CMDS_NN_ATTENTION_H
#define CMDS_NN_ATTENTION_H

#include <stddef.h>

#include "tensor.h"

/* Query rows per CPU block for M keys: the largest of 256, 128, 64 whose (QB, M) f32 score block
 * fits 1 MiB. K and V are packed by OpenBLAS once per block, so larger blocks pay less packing
 * per flop (the head dim is small): at ViT-B/8's 785 tokens 256 rows ran the attention 5-10 %
 * faster than 64 on the 2-core VM; the diffusion UNet's 4096 tokens stay at 64. */
int64_t nn_attention_cpu_qb(int64_t M); /* CMDS_NN_ATTN_QB=n in the environment sets n (tests) */

/* nn_attention_ex_forward: the general form the diffusion networks need.
 *   q (B, N, C), k and v (B, M, C), C = heads * D, any D  ->  o (B, N, C)
 * N != M (cross-attention to a text encoding), scale 1 / sqrt(D); causal (needs N == M):
 * key j > query i is masked (CLIP's text encoder). o must not alias q, k or v.
 * CPU: as nn_attention_forward, with per-thread (QB, M) score blocks.
 * CUDA: D <= 128: the fused online-softmax kernel (no N x M scores in global memory);
 * D > 128 (the VAE's single 512-wide head): chunks of query rows, per chunk a batched
 * cuBLAS GEMM for the scores (heads, rows, M) into scratch, a row softmax, and a batched
 * GEMM with V; the chunk is sized so the scores stay within NN_ATTN_CUDA_SCORE_FLOATS.
 * Scratch from ctx->scratch: nn_attention_ex_scratch_bytes (CMDS_NN_ATTN_SCORE_FLOATS in the
 * environment overrides the chunk cap, for tests). */
#define NN_ATTN_CUDA_SCORE_FLOATS ((size_t)32 << 20) /* 128 MiB of scores per chunk at most */

int nn_attention_ex_forward(nn_ctx *ctx, nn_tensor *o, const nn_tensor *q, const nn_tensor *k,
                            const nn_tensor *v, int64_t heads, int causal, cmds_error *err);
/* The same, also writing lse (B, heads, N): per query row and head the natural log of
 * sum_j exp(s_ij), s = q k^T / sqrt(D) (masked keys left out), for the backward's fast path
 * (nn_attention_ex_backward_lse, backward.h). lse NULL = nn_attention_ex_forward; o is the
 * same either way. CPU only: on CUDA lse must be NULL (a clear error otherwise). */
int nn_attention_ex_forward_lse(nn_ctx *ctx, nn_tensor *o, nn_tensor *lse, const nn_tensor *q, const nn_tensor *k,
                                const nn_tensor *v, int64_t heads, int causal, cmds_error *err);
/* Bytes of ctx->scratch nn_attention_ex_forward(_lse) takes on `device` (add 256 for alignment). */
size_t nn_attention_ex_scratch_bytes(nn_device device, int64_t N, int64_t M, int64_t heads, int64_t D);

int nn_attention_forward(nn_ctx *ctx, nn_tensor *o, const nn_tensor *q, const nn_tensor *k,
                         const nn_tensor *v, int64_t heads, cmds_error *err);

/* Raw form with row strides (elements between consecutive tokens), so q, k, v can be
 * column blocks of one fused (B, N, 3C) qkv matrix. scratch: nn_attention_cpu_scratch_floats(N, H, D). */
void nn_attention_cpu(float *o, const float *q, const float *k, const float *v, int64_t B,
                      int64_t N, int64_t H, int64_t D, int64_t ld_q, int64_t ld_k, int64_t ld_v,
                      int64_t ld_o, float *scratch);
/* Floats of CPU scratch for M keys of H heads of D: omp_get_max_threads() * QB(M) * M for the
 * GEMM path, or attention_tiled.h's nn_attention_tiled_floats where that path runs, the larger. */
size_t nn_attention_cpu_scratch_floats(int64_t M, int64_t H, int64_t D);

#endif
