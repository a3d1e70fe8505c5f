// cosine.cu: per-pixel 1 - cos(a, b) over channels, one thread per pixel; consecutive
// threads read consecutive pixels of a channel plane, so loads coalesce. Sums in double
// because 1 - cos cancels when the vectors are nearly parallel.
#include "nn_cuda.h"

__global__ static void cosine_kernel(float *d, const float *a, const float *b, int64_t B, int64_t C,
                                     int64_t HW, float eps) {
  int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= B * HW) return;
  const float *ap = a + (p / HW) * C * HW + p % HW, *bp = b + (p / HW) * C * HW + p % HW;
  double ab = 0, aa = 0, bb = 0;
  for (int64_t c = 0; c < C; c++) {
    double u = ap[c * HW], w = bp[c * HW];
    ab += u * w;
    aa += u * u;
    bb += w * w;
  }
  double na = fmax(sqrt(aa), (double)eps), nb = fmax(sqrt(bb), (double)eps);
  d[p] = (float)(1.0 - ab / (na * nb));
}

extern "C" int nn_cosine_distance_cuda(nn_ctx *c, float *d, const float *a, const float *b, int64_t B,
                                       int64_t C, int64_t HW, float eps, cmds_error *err) {
  if (B * HW == 0) return CMDS_OK;
  cosine_kernel<<<nn_grid(B * HW, 256), 256, 0, nn_stream(c)>>>(d, a, b, B, C, HW, eps);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}
