/* optim: optimiser updates on single tensors, for trainers that keep their own parameter
 * lists (the SD LoRA fine-tune); the mapper's AdamW (kernels/mapper/mapper.h) uses the same
 * formula over its own parameter set.
 *
 * nn_adamw_update: one step of torch.optim.AdamW (amsgrad off, maximize off, foreach or not:
 * the same arithmetic) on one tensor, in this order:
 *   p -= lr * weight_decay * p
 *   m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
 *   p -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
 * step >= 1 is the number of the step being taken (the caller counts; 1 on the first call).
 * p, g, m, v: f32, the same shape, on ctx's device; m and v start at zero and are the state a
 * checkpoint saves. g is not modified (gradient clipping is the caller's: scale g first). */
#ifndef CMDS_NN_OPTIM_H
#define CMDS_NN_OPTIM_H

#include "tensor.h"

int nn_adamw_update(nn_ctx *ctx, nn_tensor *p, const nn_tensor *g, nn_tensor *m, nn_tensor *v, float lr,
                    float beta1, float beta2, float eps, float weight_decay, int64_t step /* >= 1 */,
                    cmds_error *err);

#endif
