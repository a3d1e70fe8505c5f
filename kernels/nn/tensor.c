/* tensor: arenas, tensor views, copies, half-precision conversion and the op context
 * (see tensor.h). CUDA memory goes through nn_cuda.h when built with CMDS_CUDA. */
#include "tensor.h"
#include "nn_half_bits.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef CMDS_CUDA
#include "nn_cuda.h"
#endif

size_t nn_dtype_size(nn_dtype t) { return t == NN_F32 ? 4 : 2; }

const char *nn_dtype_name(nn_dtype t) {
  return t == NN_F32 ? "f32" : t == NN_F16 ? "f16" : t == NN_BF16 ? "bf16" : "?";
}

const char *nn_device_name(nn_device d) { return d == NN_CPU ? "cpu" : "cuda"; }

int nn_cuda_available(void) {
#ifdef CMDS_CUDA
  return nn_cuda_device_count() > 0;
#else
  return 0;
#endif
}

int nn_cuda_emulated(void) {
#ifdef CMDS_CUDA_EMU
  return 1;
#else
  return 0;
#endif
}

int nn_cuda_select(int local_rank) {
#ifdef CMDS_CUDA
  int n = nn_cuda_device_count();
  if (n <= 0) return -1;
  int d = local_rank % n;
  return nn_cuda_set_device(d) == 0 ? d : -1;
#else
  (void)local_rank;
  return -1;
#endif
}

int nn_device_pick(const char *want, int local_rank, int rank, nn_device *dev, cmds_error *err) {
  *dev = NN_CPU;
  if (!strcmp(want, "cpu")) return CMDS_OK;
  if (nn_cuda_select(local_rank) >= 0) *dev = NN_CUDA;
  else if (!strcmp(want, "cuda")) return CMDS_FAIL(err, CMDS_EINPUT, "--device cuda: no GPU visible to rank %d", rank);
  return CMDS_OK;
}

#ifdef CMDS_CUDA
/* tensor.cu */
void nn_cuda_device_name(char *buf, size_t n);
#endif

const char *nn_device_describe(nn_device d, char *buf, size_t n) {
  if (n == 0) return buf;
  snprintf(buf, n, "%s", d == NN_CPU ? "cpu" : "cuda (no backend in this build)");
  if (d == NN_CUDA) {
#ifdef CMDS_CUDA
    nn_cuda_device_name(buf, n);
#endif
    return buf;
  }
  char line[512], model[256] = "unknown cpu";
  FILE *f = fopen("/proc/cpuinfo", "r");
  while (f && fgets(line, sizeof line, f)) {
    char *colon = strchr(line, ':');
    if (!strncmp(line, "model name", 10) && colon) {
      snprintf(model, sizeof model, "%s", colon + 2);
      model[strcspn(model, "\n")] = 0;
      break;
    }
  }
  if (f) fclose(f);
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
  snprintf(buf, n, "%s (%d OpenMP threads)", model, threads);
  return buf;
}

#ifndef CMDS_CUDA
static int nn_no_cuda(cmds_error *err, const char *what) {
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: this build has no CUDA backend (configure with -DCMDS_CUDA=ON)", what);
}
#endif

int nn_arena_init(nn_arena *a, nn_device device, size_t size_bytes, cmds_error *err) {
  memset(a, 0, sizeof *a);
  a->device = device;
  size_bytes = (size_bytes + 255) & ~(size_t)255;
  if (size_bytes == 0) size_bytes = 256;
  if (device == NN_CPU) {
    a->base = aligned_alloc(64, size_bytes);
    if (!a->base)
      return CMDS_FAIL(err, CMDS_ENOMEM, "nn arena: cannot allocate %zu bytes on the cpu", size_bytes);
  } else {
#ifdef CMDS_CUDA
    void *p = NULL;
    if (nn_cuda_malloc(&p, size_bytes, err)) return cmds_error_wrap(err, "nn arena of %zu bytes", size_bytes);
    a->base = p;
#else
    return nn_no_cuda(err, "nn arena on cuda");
#endif
  }
  a->size_bytes = size_bytes;
  return CMDS_OK;
}

void nn_arena_free(nn_arena *a) {
  if (!a->base) return;
  if (a->device == NN_CPU) free(a->base);
#ifdef CMDS_CUDA
  else nn_cuda_free(a->base);
#endif
  memset(a, 0, sizeof *a);
}

void *nn_arena_alloc(nn_arena *a, size_t bytes, cmds_error *err) {
  size_t start = (a->used_bytes + 255) & ~(size_t)255;
  if (!a->base || start > a->size_bytes || bytes > a->size_bytes - start) {
    CMDS_FAIL(err, CMDS_ENOMEM,
              "nn arena (%s): %zu bytes asked, %zu of %zu left: make the arena larger",
              nn_device_name(a->device), bytes, a->size_bytes - (start < a->size_bytes ? start : a->size_bytes),
              a->size_bytes);
    return NULL;
  }
  a->used_bytes = start + bytes;
  if (a->used_bytes > a->peak_bytes) a->peak_bytes = a->used_bytes;
  return a->base + start;
}

int64_t nn_tensor_numel(const nn_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

size_t nn_tensor_bytes(const nn_tensor *t) {
  return (size_t)nn_tensor_numel(t) * nn_dtype_size(t->dtype);
}

nn_tensor nn_tensor_view(void *data, nn_dtype dtype, nn_device device, int64_t d0, int64_t d1,
                         int64_t d2, int64_t d3) {
  nn_tensor t = {dtype, device, 0, {0, 0, 0, 0}, data};
  int64_t d[4] = {d0, d1, d2, d3};
  for (int i = 0; i < 4 && d[i] >= 0; i++) t.shape[t.ndim++] = d[i];
  return t;
}

int nn_tensor_alloc(nn_tensor *t, nn_arena *a, nn_dtype dtype, int ndim, const int64_t *shape,
                    cmds_error *err) {
  if (ndim < 1 || ndim > NN_MAX_DIMS)
    return CMDS_FAIL(err, CMDS_EINPUT, "nn tensor: %d dims asked, 1..%d supported", ndim, NN_MAX_DIMS);
  memset(t, 0, sizeof *t);
  t->dtype = dtype;
  t->device = a->device;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return CMDS_FAIL(err, CMDS_EINPUT, "nn tensor: dim %d is %lld", i, (long long)shape[i]);
    t->shape[i] = shape[i];
  }
  t->data = nn_arena_alloc(a, nn_tensor_bytes(t), err);
  return t->data ? CMDS_OK : err->code;
}

int nn_tensor_copy(nn_tensor *dst, const nn_tensor *src, cmds_error *err) {
  if (dst->dtype != src->dtype || nn_tensor_numel(dst) != nn_tensor_numel(src))
    return CMDS_FAIL(err, CMDS_EINPUT, "nn tensor copy: %s[%lld] into %s[%lld]",
                     nn_dtype_name(src->dtype), (long long)nn_tensor_numel(src),
                     nn_dtype_name(dst->dtype), (long long)nn_tensor_numel(dst));
  size_t n = nn_tensor_bytes(src);
  if (dst->device == NN_CPU && src->device == NN_CPU) {
    memmove(dst->data, src->data, n);
    return CMDS_OK;
  }
#ifdef CMDS_CUDA
  return nn_cuda_memcpy(dst->data, src->data, n, err);
#else
  return nn_no_cuda(err, "nn tensor copy");
#endif
}

const char *nn_tensor_shape_str(const nn_tensor *t, char *buf, size_t n) {
  size_t k = (size_t)snprintf(buf, n, "(");
  for (int i = 0; i < t->ndim && k < n; i++)
    k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
  if (k < n) snprintf(buf + k, n - k, ")");
  return buf;
}

int nn_tensor_expect(const nn_tensor *t, const char *op, const char *arg, nn_device device,
                     int ndim, const int64_t *shape, cmds_error *err) {
  char got[96], want[96];
  if (!t || !t->data) return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s is missing", op, arg);
  if (t->dtype != NN_F32)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s is %s, f32 expected", op, arg, nn_dtype_name(t->dtype));
  if (t->device != device)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s is on %s, the context runs on %s", op, arg,
                     nn_device_name(t->device), nn_device_name(device));
  nn_tensor w = *t;
  w.ndim = ndim;
  for (int i = 0; i < ndim; i++) w.shape[i] = shape[i];
  int same = t->ndim == ndim;
  for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
  if (!same)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s has shape %s, %s expected", op, arg,
                     nn_tensor_shape_str(t, got, sizeof got), nn_tensor_shape_str(&w, want, sizeof want));
  return CMDS_OK;
}

/* IEEE half: 1 sign, 5 exponent, 10 mantissa bits; round to nearest even. */
uint16_t nn_f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u, absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0));
  if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds past 65504: inf */
  if (absx < 0x38800000u) {                                   /* subnormal or zero in half */
    float a;
    memcpy(&a, &absx, 4);
    /* adding 0.5 moves the value's bits into the mantissa with the FPU's rounding */
    float r = a + 0.5f;
    uint32_t rb;
    memcpy(&rb, &r, 4);
    return (uint16_t)(sign | (rb - 0x3f000000u));
  }
  uint32_t mant_odd = (absx >> 13) & 1u;
  absx += 0xc8000fffu + mant_odd; /* rebias exponent (-112 << 23) and round */
  return (uint16_t)(sign | (absx >> 13));
}

float nn_f16_to_f32(uint16_t h) { return nn_bits_f16_to_f32(h); }

uint16_t nn_f32_to_bf16(float f) { return nn_bits_f32_to_bf16(f); }

float nn_bf16_to_f32(uint16_t h) { return nn_bits_bf16_to_f32(h); }

void nn_half_to_f32_n(float *dst, const void *src, int64_t n, nn_dtype src_dtype) {
  const unsigned char *p = src;
  int bf16 = src_dtype == NN_BF16;
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; i++) {
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    dst[i] = bf16 ? nn_bf16_to_f32(h) : nn_f16_to_f32(h);
  }
}

int nn_ctx_init(nn_ctx *ctx, nn_device device, nn_arena *scratch, void *stream, int allow_tf32,
                cmds_error *err) {
  memset(ctx, 0, sizeof *ctx);
  ctx->device = device;
  ctx->scratch = scratch;
  ctx->stream = stream;
  ctx->allow_tf32 = allow_tf32;
  if (scratch && scratch->device != device)
    return CMDS_FAIL(err, CMDS_EINPUT, "nn context on %s with a scratch arena on %s",
                     nn_device_name(device), nn_device_name(scratch->device));
  if (device == NN_CUDA) {
#ifdef CMDS_CUDA
    int rc = nn_cuda_blas_create(&ctx->cublas, stream, allow_tf32, err);
    if (!rc) rc = nn_cuda_malloc(&ctx->lt_ws, NN_LT_WORKSPACE_BYTES, err);
    if (rc) nn_ctx_free(ctx);
    return rc;
#else
    return nn_no_cuda(err, "nn context on cuda");
#endif
  }
  return CMDS_OK;
}

void nn_ctx_free(nn_ctx *ctx) {
#ifdef CMDS_CUDA
  if (ctx->cublas) nn_cuda_blas_destroy(ctx->cublas);
  if (ctx->lt_ws) nn_cuda_free(ctx->lt_ws);
#endif
  ctx->cublas = NULL;
  ctx->lt_ws = NULL;
}

int nn_ctx_sync(nn_ctx *ctx, cmds_error *err) {
#ifdef CMDS_CUDA
  if (ctx->device == NN_CUDA) return nn_cuda_sync(ctx->stream, err);
#endif
  return CMDS_OK;
}
