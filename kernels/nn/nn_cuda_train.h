/* nn_cuda_train: C-callable CUDA entry points of the training ops (the diffusion backward
 * passes of backward.h, the training glue of elementwise.h, optim.h), implemented in
 * linear_backward.cu, layernorm_backward.cu, gate_backward.cu, attention_backward.cu,
 * conv_ex_backward.cu, elementwise_backward.cu and optim.cu. Raw device pointers; shapes and
 * scratch sizes are checked by the dispatchers in the matching .c files. */
#ifndef CMDS_NN_CUDA_TRAIN_H
#define CMDS_NN_CUDA_TRAIN_H

#include "nn_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* x (R, K), W (N, K), dy (R, N); any of dx, dw, db NULL. */
int nn_linear_backward_cuda(nn_ctx *c, float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, int64_t R, int64_t K, int64_t N, cmds_error *err);
/* ws: 2*rows + 2*C*ceil(rows / row_chunk) floats of device scratch. */
int nn_layernorm_backward_cuda(nn_ctx *c, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                               const float *gamma, int64_t rows, int64_t C, float eps, int64_t row_chunk, float *ws,
                               cmds_error *err);
int nn_silu_backward_cuda(nn_ctx *c, float *dx, const float *dy, const float *x, int64_t n, cmds_error *err);
int nn_geglu_backward_cuda(nn_ctx *c, float *dx, const float *dy, const float *x, int64_t rows, int64_t F,
                           cmds_error *err);
/* s: 2*H*rows*M + H*rows floats of device scratch (rows = query rows per chunk). */
int nn_attention_ex_backward_cuda(nn_ctx *c, float *dq, float *dk, float *dv, const float *dout, const float *q,
                                  const float *k, const float *v, int64_t B, int64_t N, int64_t M, int64_t H,
                                  int64_t D, int causal, int64_t rows, float *s, cmds_error *err);
/* cols: Cin*k*k*band_rows*Wo floats of device scratch (unused when k = 1, stride 1, no padding). */
int nn_conv2d_ex_backward_cuda(nn_ctx *c, float *dx, float *dw, float *db, const float *dy, const float *x,
                               const float *w, int64_t B, int64_t Cin, int64_t Cout, int64_t H, int64_t W, int ksize,
                               int stride, int pad_top, int pad_left, int64_t Ho, int64_t Wo, int64_t band_rows,
                               float *cols, cmds_error *err);
int nn_sum_hw_cuda(nn_ctx *c, float *y, const float *x, int64_t BC, int64_t HW, cmds_error *err);
int nn_split_channels_cuda(nn_ctx *c, float *a, float *b, const float *x, int64_t B, int64_t Ca, int64_t Cb,
                           int64_t HW, cmds_error *err);
/* *out = sum (a - t)^2 (t NULL: a^2); d (or NULL) = dscale (a - t). ws: 8 KiB of device scratch.
 * Waits for the stream. */
int nn_sumsq_cuda(nn_ctx *c, double *out, const float *a, const float *t, float *d, float dscale, int64_t n,
                  void *ws, cmds_error *err);
/* *out = sum over the count arrays x[i] (n[i] floats each) of x^2, in chunks of NN_SUMSQ_CHUNK
 * values; ws: NN_SUMSQ_MANY_SCRATCH(chunks) bytes of device scratch, chunks = sum of
 * ceil(n[i] / NN_SUMSQ_CHUNK). Waits for the stream. */
#define NN_SUMSQ_CHUNK 8192
#define NN_SUMSQ_MANY_SCRATCH(chunks) ((size_t)(chunks) * 24 + 8)
int nn_sumsq_many_cuda(nn_ctx *c, double *out, const float *const *x, const int64_t *n, int count, int64_t chunks,
                       void *ws, cmds_error *err);
/* The scalars as optim.c forms them: p = p*decay; m += c1 (g - m); v = v*beta2 + c2 g^2;
 * p -= lr1 * m / (sqrt(v) / bc2_sqrt + eps). */
int nn_adamw_cuda(nn_ctx *c, float *p, const float *g, float *m, float *v, int64_t n, float decay, float lr1,
                  float beta2, float c1, float c2, float eps, float bc2_sqrt, cmds_error *err);

#ifdef __cplusplus
}
#endif

#endif
