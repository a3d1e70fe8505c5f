/* attention: CPU reference and dispatcher (see attention.h). */
#include "attention.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#include "activation.h"

#ifdef CMDS_CUDA
#include "nn_cuda.h"
#endif

void nn_attention_cpu(float *o, const float *q, const float *k, const float *v, int64_t B,
                      int64_t N, int64_t H, int64_t D, int64_t ld_q, int64_t ld_k, int64_t ld_v,
                      int64_t ld_o, float *scratch) {
  float scale = 1.0f / sqrtf((float)D);
#pragma omp parallel
  {
    float *s = scratch + (int64_t)omp_get_thread_num() * N;  /* (N) scores of one query */
#pragma omp for schedule(static)
    for (int64_t r = 0; r < B * H * N; r++) {
      int64_t b = r / (H * N), h = (r / N) % H, i = r % N;
      const float *qi = q + (b * N + i) * ld_q + h * D;
      const float *kb = k + b * N * ld_k + h * D, *vb = v + b * N * ld_v + h * D;
      for (int64_t j = 0; j < N; j++) {
        const float *kj = kb + j * ld_k;
        float acc = 0.0f;
        for (int64_t d = 0; d < D; d++) acc += qi[d] * kj[d];
        s[j] = acc * scale;
      }
      nn_softmax_row_cpu(s, s, N);
      float *oi = o + (b * N + i) * ld_o + h * D;
      memset(oi, 0, (size_t)D * sizeof *oi);
      for (int64_t j = 0; j < N; j++) {
        const float *vj = vb + j * ld_v;
        float p = s[j];
        for (int64_t d = 0; d < D; d++) oi[d] += p * vj[d];
      }
    }
  }
}

int nn_attention_forward(nn_ctx *ctx, nn_tensor *o, const nn_tensor *q, const nn_tensor *k,
                         const nn_tensor *v, int64_t heads, cmds_error *err) {
  const char *op = "nn_attention_forward";
  if (!q || q->ndim != 3) return CMDS_FAIL(err, CMDS_EINPUT, "%s: q must be (B, N, C)", op);
  int64_t B = q->shape[0], N = q->shape[1], C = q->shape[2];
  if (heads < 1 || C % heads)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %lld heads do not divide width %lld", op,
                     (long long)heads, (long long)C);
  int64_t D = C / heads;
  int rc = nn_tensor_expect(q, op, "q", ctx->device, 3, q->shape, err);
  if (!rc) rc = nn_tensor_expect(k, op, "k", ctx->device, 3, q->shape, err);
  if (!rc) rc = nn_tensor_expect(v, op, "v", ctx->device, 3, q->shape, err);
  if (!rc) rc = nn_tensor_expect(o, op, "o", ctx->device, 3, q->shape, err);
  if (rc) return rc;
  if (ctx->device == NN_CPU) {
    if (!ctx->scratch) return CMDS_FAIL(err, CMDS_EINPUT, "%s: needs a scratch arena in the context", op);
    size_t mark = nn_arena_mark(ctx->scratch);
    float *s = nn_arena_alloc(ctx->scratch, (size_t)omp_get_max_threads() * (size_t)N * sizeof(float), err);
    if (!s) return cmds_error_wrap(err, "%s scores", op);
    nn_attention_cpu(o->data, q->data, k->data, v->data, B, N, heads, D, C, C, C, C, s);
    nn_arena_rewind(ctx->scratch, mark);
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_attention_cuda(ctx, o->data, q->data, k->data, v->data, B, N, heads, D, C, C, C, C, err);
#else
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: cuda tensors in a build without CUDA", op);
#endif
}
