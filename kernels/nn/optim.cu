// optim.cu: AdamW on one tensor, one thread per element, the scalars formed by optim.c.
#include "nn_cuda_train.h"

__global__ static void adamw_kernel(float *p, const float *g, float *m, float *v, int64_t n, float decay, float lr1,
                                    float beta2, float c1, float c2, float eps, float bc2s) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float pv = p[i] * decay, gv = g[i];
  float mv = m[i] + c1 * (gv - m[i]);
  float vv = v[i] * beta2 + c2 * gv * gv;
  m[i] = mv;
  v[i] = vv;
  p[i] = pv - lr1 * mv / (sqrtf(vv) / bc2s + eps);
}

extern "C" int nn_adamw_cuda(nn_ctx *c, float *p, const float *g, float *m, float *v, int64_t n, float decay,
                             float lr1, float beta2, float c1, float c2, float eps, float bc2_sqrt, cmds_error *err) {
  if (n == 0) return CMDS_OK;
  adamw_kernel<<<nn_grid(n, 256), 256, 0, nn_stream(c)>>>(p, g, m, v, n, decay, lr1, beta2, c1, c2, eps, bc2_sqrt);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}
