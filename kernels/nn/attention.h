/* attention: multi-head scaled dot-product attention, o = softmax(q k^T / sqrt(D)) v per
 * head, no mask, no dropout (a ViT block's core).
 *   q, k, v (B, N, C) with C = H * D; head h is columns [h*D, (h+1)*D) (the layout a
 *   linear produces and the output projection reads)   ->   o (B, N, C)
 * CPU: per (batch, head, query row) scores over all N keys in a per-thread scratch row
 * (threads x N floats from ctx->scratch), softmax, weighted sum of v.
 * CUDA: one fused kernel with an online (running max / running sum) softmax over key
 * tiles held in shared memory; the N x N score matrix never exists in global memory.
 * Head dim D <= 128 on CUDA. */
#ifndef CMDS_NN_ATTENTION_H
#define CMDS_NN_ATTENTION_H

#include "tensor.h"

int nn_attention_forward(nn_ctx *ctx, nn_tensor *o, const nn_tensor *q, const nn_tensor *k,
                         const nn_tensor *v, int64_t heads, cmds_error *err);

/* Raw form with row strides (elements between consecutive tokens), so q, k, v can be
 * column blocks of one fused (B, N, 3C) qkv matrix. Scratch: omp_get_max_threads() * N floats. */
void nn_attention_cpu(float *o, const float *q, const float *k, const float *v, int64_t B,
                      int64_t N, int64_t H, int64_t D, int64_t ld_q, int64_t ld_k, int64_t ld_v,
                      int64_t ld_o, float *scratch);

#endif
