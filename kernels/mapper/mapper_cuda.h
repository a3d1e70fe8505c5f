/* mapper_cuda: C-callable CUDA entry points of the mapper's own ops (mapper_cuda.cu).
 * Only the mapper's C files call them (mapper_ops.c, mapper_train.c, mapper_io.c, and
 * mapper_model.c's zeroing), with raw device pointers whose shapes they have checked; each
 * returns 0 or a CMDS_E* code with *err naming the call, file and line. Shapes:
 * BC = B*C planes of H x W, F/Ft (B, C, H, W), Y (B, C, H+W), ah (B, C, H), aw (B, C, W). */
#ifndef CMDS_MAPPER_CUDA_H
#define CMDS_MAPPER_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "cmds_error.h"
#include "tensor.h"

int mapper_cuda_zero(nn_ctx *c, float *p, int64_t n, cmds_error *err);
int mapper_cuda_pool(nn_ctx *c, float *y, const float *f, int64_t BC, int64_t H, int64_t W, cmds_error *err);
int mapper_cuda_pool_bwd(nn_ctx *c, float *df, const float *dy, int64_t BC, int64_t H, int64_t W, cmds_error *err);
int mapper_cuda_hswish_split(nn_ctx *c, float *zh, float *zw, const float *zn, int64_t BM, int64_t H,
                             int64_t W, cmds_error *err);
int mapper_cuda_hswish_bwd(nn_ctx *c, float *dz, const float *dzh, const float *dzw, const float *zn,
                           int64_t BM, int64_t H, int64_t W, cmds_error *err);
int mapper_cuda_sigmoid(nn_ctx *c, float *y, int64_t n, cmds_error *err);
int mapper_cuda_ca_apply(nn_ctx *c, float *ft, const float *f, const float *ah, const float *aw,
                         int64_t BC, int64_t H, int64_t W, cmds_error *err);
int mapper_cuda_ca_apply_bwd(nn_ctx *c, float *df, float *dah, float *daw, const float *dft,
                             const float *f, const float *ah, const float *aw, int64_t BC, int64_t H,
                             int64_t W, cmds_error *err);
int mapper_cuda_relu(nn_ctx *c, float *y, int64_t n, cmds_error *err);
int mapper_cuda_relu_bwd(nn_ctx *c, float *dy, const float *y, int64_t n, cmds_error *err);
int mapper_cuda_softmax_ch(nn_ctx *c, float *w, int64_t B, int64_t L, int64_t HW, cmds_error *err);
int mapper_cuda_softmax_ch_bwd(nn_ctx *c, float *dw, const float *w, int64_t B, int64_t L, int64_t HW,
                               cmds_error *err);
int mapper_cuda_fuse(nn_ctx *c, float *s, const float *w, const float *f, int64_t B, int64_t L,
                     int64_t D, int64_t HW, cmds_error *err);
int mapper_cuda_fuse_bwd(nn_ctx *c, float *df, float *dw, const float *ds, const float *w,
                         const float *f, int64_t B, int64_t L, int64_t D, int64_t HW, cmds_error *err);
/* tmp: B*HW floats + 1 double of device scratch (8-byte aligned). */
int mapper_cuda_loss(nn_ctx *c, double *loss, float *dp, const float *p, const float *t,
                     const float *mask, const float *layer_w_host, int64_t B, int64_t L, int64_t D,
                     int64_t HW, double denom, float *tmp, cmds_error *err);
int mapper_cuda_adamw(nn_ctx *c, float *p, const float *g, float *m, float *v, int64_t n, float lr,
                      float beta1, float beta2, float eps, float wd, float bc1, float bc2_sqrt,
                      cmds_error *err);
/* rows (B, L, G, G, D) f16 on the device -> x (B, L*D, G, G) f32. */
int mapper_cuda_f16_rows(nn_ctx *c, float *x, const uint16_t *rows, int64_t B, int64_t L, int64_t G,
                         int64_t D, cmds_error *err);

#ifdef __cplusplus
}
#endif

#endif
