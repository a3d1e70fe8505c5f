/* backward: the hand-written backward passes of the nn ops the mapper trains through
 * (conv 1x1/3x3, group norm, GELU), beside their forwards in conv.h, norm.h and
 * activation.h. Same conventions as the forwards: every call runs on ctx's device, shapes
 * are checked, scratch comes from ctx->scratch and is handed back. Parameter gradients
 * are ACCUMULATED (+=), so micro-batches and several uses of one weight add up; input
 * gradients are SET.
 *
 *   conv:  x (B, Cin, H, W), W (Cout, Cin, k, k), dy (B, Cout, H, W)
 *          dx (B, Cin, H, W) or NULL (not wanted); dw += dL/dW; db (Cout) += dL/db or NULL.
 *          k = 3 needs Cin*9*H*W floats of scratch (one image at a time, on both devices).
 *   group norm: x (B, C, H, W) the forward's INPUT, gamma (C) or NULL; dy (B, C, H, W)
 *          dx (may alias dy); dgamma, dbeta (C) += (both NULL when gamma is NULL).
 *          Statistics are recomputed from x (double on the CPU, fp32 two-pass on CUDA);
 *          CUDA takes 2*B*groups floats of scratch.
 *   gelu:  dx = dy * GELU'(x), exact erf form; dx may alias dy.
 *
 * The diffusion networks' backward passes (LoRA fine-tuning through the UNet):
 *   linear:    x (..., in) (R = numel / in rows), W (out, in), dy (..., out) -> dx (..., in) SET,
 *              dW (out, in) += dy^T x, db (out) += column sums of dy. No scratch.
 *   layernorm: over the last dim C; x the forward's INPUT, gamma (C) or NULL (no affine);
 *              dx may alias dy; dgamma, dbeta (C) += (both NULL when gamma is NULL).
 *              Statistics recomputed from x. Scratch: nn_layernorm_backward_scratch_bytes.
 *   silu:      dx = dy * s (1 + x (1 - s)), s = sigmoid(x); dx may alias dy.
 *   geglu:     x (..., 2F) the forward input, dy (..., F) -> dx (..., 2F) SET (must not alias
 *              dy or x): d hidden = dy * gelu(gate), d gate = dy * hidden * GELU'(gate).
 *   attention_ex: shapes as nn_attention_ex_forward (q (B, N, C), k, v (B, M, C), dout (B, N, C));
 *              dq (B, N, C), dk, dv (B, M, C) SET (each may be NULL); none may alias an input.
 *              The probabilities are recomputed block by block (nothing N x M is saved):
 *              dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(P * dP)), dQ = dS K / sqrt(D),
 *              dK = dS^T Q / sqrt(D). Scratch: nn_attention_ex_backward_scratch_bytes.
 *              nn_attention_ex_backward_lse takes the forward's o and log-sum-exp too (faster).
 *   conv2d_ex: the forward's geometry (any square k, stride, asymmetric zero padding):
 *              x (B, Cin, H, W), W (Cout, Cin, k, k), dy (B, Cout, Ho, Wo) -> dx (B, Cin, H, W) SET
 *              or NULL, dW += , db (Cout) += or NULL. Bands of output rows as the forward
 *              (im2col / col2im around two GEMMs); scratch: nn_conv2d_ex_backward_scratch_bytes.
 * The *_scratch_bytes functions give what the call takes from ctx->scratch on the tensors'
 * device (the larger of the CPU and CUDA needs where there is no tensor to say which); add 256
 * for the arena's alignment. */
#ifndef CMDS_NN_BACKWARD_H
#define CMDS_NN_BACKWARD_H

#include "tensor.h"

int nn_conv2d_backward(nn_ctx *ctx, nn_tensor *dx, nn_tensor *dw, nn_tensor *db, const nn_tensor *dy,
                       const nn_tensor *x, const nn_tensor *w, cmds_error *err);
int nn_groupnorm_backward(nn_ctx *ctx, nn_tensor *dx, nn_tensor *dgamma, nn_tensor *dbeta,
                          const nn_tensor *dy, const nn_tensor *x, int64_t groups,
                          const nn_tensor *gamma, float eps, cmds_error *err);
int nn_gelu_backward(nn_ctx *ctx, nn_tensor *dx, const nn_tensor *dy, const nn_tensor *x,
                     cmds_error *err);

int nn_linear_backward(nn_ctx *ctx, nn_tensor *dx, nn_tensor *dw, nn_tensor *db, const nn_tensor *dy,
                       const nn_tensor *x, const nn_tensor *w, cmds_error *err);
int nn_layernorm_backward(nn_ctx *ctx, nn_tensor *dx, nn_tensor *dgamma, nn_tensor *dbeta, const nn_tensor *dy,
                          const nn_tensor *x, const nn_tensor *gamma, float eps, cmds_error *err);
/* rows = numel(x) / C. */
size_t nn_layernorm_backward_scratch_bytes(int64_t rows, int64_t C);
int nn_silu_backward(nn_ctx *ctx, nn_tensor *dx, const nn_tensor *dy, const nn_tensor *x, cmds_error *err);
int nn_geglu_backward(nn_ctx *ctx, nn_tensor *dx, const nn_tensor *dy, const nn_tensor *x, cmds_error *err);
int nn_attention_ex_backward(nn_ctx *ctx, nn_tensor *dq, nn_tensor *dk, nn_tensor *dv, const nn_tensor *dout,
                             const nn_tensor *q, const nn_tensor *k, const nn_tensor *v, int64_t heads,
                             int causal, cmds_error *err);
/* The same with what the forward can keep (nn_attention_ex_forward_lse, attention.h): o (B, N, C)
 * its output and lse (B, heads, N) its per-row log-sum-exp; both NULL = nn_attention_ex_backward,
 * lse without o is an error. CPU: the fast path (P = exp(S - lse) in L2-sized query x key tiles,
 * rowsum(P * dP) = rowsum(dO * O); no softmax pass over full rows). CUDA: o and lse are
 * checked and not used (the recomputing path). Same results to float rounding. */
int nn_attention_ex_backward_lse(nn_ctx *ctx, nn_tensor *dq, nn_tensor *dk, nn_tensor *dv, const nn_tensor *dout,
                                 const nn_tensor *q, const nn_tensor *k, const nn_tensor *v, const nn_tensor *o,
                                 const nn_tensor *lse, int64_t heads, int causal, cmds_error *err);
/* Bytes of ctx->scratch either form takes (add 256 for alignment). */
size_t nn_attention_ex_backward_scratch_bytes(int64_t B, int64_t N, int64_t M, int64_t C, int64_t heads);
int nn_conv2d_ex_backward(nn_ctx *ctx, nn_tensor *dx, nn_tensor *dw, nn_tensor *db, const nn_tensor *dy,
                          const nn_tensor *x, const nn_tensor *w, int stride, int pad_top, int pad_bottom,
                          int pad_left, int pad_right, cmds_error *err);
size_t nn_conv2d_ex_backward_scratch_bytes(const nn_tensor *x, const nn_tensor *w, int stride, int pad_top,
                                           int pad_bottom, int pad_left, int pad_right);

#endif
