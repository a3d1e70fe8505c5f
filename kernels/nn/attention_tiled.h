/* attention_tiled: the CPU attention forward's fast path (internal to kernels/nn; attention.c
 * dispatches to it). Flash-attention style: K packed once per (image, head), query blocks of 96
 * rows walking key tiles of 256 with an online softmax, AVX2/FMA micro-kernels (6 rows x 16 keys
 * for the scores, 6 rows x 16 columns for P V); no (rows, M) score block and no repacking of K
 * and V per query block, which is where the OpenBLAS path spends a third of its time at large M.
 * Used when the CPU has AVX2 and FMA (checked at run time: one binary for every node) and the head
 * dim is a multiple of 8 up to 256; CMDS_NN_ATTN_KERNEL=blas in the environment forces the GEMM
 * path (comparisons). Same inputs, outputs and masks as attention.c's GEMM path; results agree
 * to float rounding (the sums run in another order), and do not depend on the thread count.
 * The backward's lse path (attention_backward.c) runs its five products per (query block, key
 * tile) on the same kernels: nn_attention_tiled_backward_rows. */
#ifndef CMDS_NN_ATTENTION_TILED_H
#define CMDS_NN_ATTENTION_TILED_H

#include <stddef.h>
#include <stdint.h>

/* 1 when nn_attention_tiled can run head dim D on this CPU. */
int nn_attention_tiled_usable(int64_t D);
/* Floats of scratch: K of every head packed (H x round_up(M, 16) x D) and per thread the scaled
 * query block, its output accumulator, a score tile and the row statistics. */
size_t nn_attention_tiled_floats(int64_t M, int64_t H, int64_t D);
/* q (B, N) rows, k and v (B, M) rows of H heads of D columns at the given row strides; o likewise;
 * lse (B, H, N) or NULL; causal needs N == M. */
void nn_attention_tiled(float *o, float *lse, const float *q, const float *k, const float *v, int64_t B, int64_t N,
                        int64_t M, int64_t H, int64_t D, int64_t ld_q, int64_t ld_k, int64_t ld_v, int64_t ld_o,
                        int causal, float *scratch);

/* Query rows per block of the tiled kernels (callers splitting rows over threads use multiples). */
#define NN_ATTN_TILED_ROWS 96
/* M rows of D (row stride ld_k) into 16-key panels: nn_attention_tiled_packed_floats(M, D) floats. */
void nn_attention_tiled_pack(float *kp, const float *k, int64_t M, int64_t D, int64_t ld_k);
size_t nn_attention_tiled_packed_floats(int64_t M, int64_t D);
/* The backward with the forward's lse for query rows [r0, r1) of one (image, head), as
 * attention_backward.c's attnb_lse_rows: q, k, dout, dq at the head's first column, row stride C;
 * dq rows SET; dk, dv (either may be NULL) ADDED to, row stride ld_kv; lse and dr (rowsum(dO * O))
 * indexed by query row; kp, vp: the head's K and V packed; ws: nn_attention_tiled_backward_floats(D)
 * floats of this thread's. */
size_t nn_attention_tiled_backward_floats(int64_t D);
void nn_attention_tiled_backward_rows(float *dq, float *dk, float *dv, const float *q, const float *k,
                                      const float *dout, const float *lse, const float *dr, const float *kp,
                                      const float *vp, int64_t M, int64_t D, int64_t C, int64_t ld_kv, int64_t r0,
                                      int64_t r1, int causal, float scale, float *ws);

#endif
