/* resize: see resize.h. The bicubic path follows Pillow's documented behaviour (separable
 * convolution with a support scaled by max(1, in/out), weights normalised per output
 * pixel, fixed-point 8-bit arithmetic); fixtures from Pillow pin it down bit for bit. */
#include "resize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmds_error.h"

#define PRECISION_BITS (32 - 8 - 2)

static double bicubic(double x) {
  const double a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/* For each output index: first input index, tap count and fixed-point weights. */
typedef struct taps {
  int ksize;
  int *first, *count;
  int32_t *w; /* (out, ksize) */
} taps;

static void taps_make(taps *t, int in, int out) {
  double scale = (double)in / out, fs = scale > 1 ? scale : 1, support = 2.0 * fs;
  t->ksize = (int)ceil(support) * 2 + 1;
  t->first = cmds_xmalloc(sizeof(int) * (size_t)out);
  t->count = cmds_xmalloc(sizeof(int) * (size_t)out);
  t->w = cmds_xcalloc((size_t)out * (size_t)t->ksize, sizeof(int32_t));
  double *k = cmds_xmalloc(sizeof(double) * (size_t)t->ksize);
  for (int o = 0; o < out; o++) {
    double center = (o + 0.5) * scale;
    int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
    if (lo < 0) lo = 0;
    if (hi > in) hi = in;
    int n = hi - lo;
    double sum = 0;
    for (int x = 0; x < n; x++) {
      k[x] = bicubic((x + lo - center + 0.5) / fs);
      sum += k[x];
    }
    for (int x = 0; x < n; x++) {
      double v = sum != 0 ? k[x] / sum : 0;
      t->w[(size_t)o * (size_t)t->ksize + (size_t)x] =
          (int32_t)(v < 0 ? -0.5 + v * (1 << PRECISION_BITS) : 0.5 + v * (1 << PRECISION_BITS));
    }
    t->first[o] = lo;
    t->count[o] = n;
  }
  free(k);
}

static void taps_free(taps *t) {
  free(t->first);
  free(t->count);
  free(t->w);
}

static uint8_t clip8(int64_t v) {
  v >>= PRECISION_BITS;
  return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* One separable pass along rows (horizontal: (h, sw) -> (h, dw)) or columns (vertical:
 * (sh, w) -> (dh, w)), 8-bit in and out, as Pillow rounds between passes. */
static void pass_h(const uint8_t *src, int h, int sw, int c, uint8_t *dst, int dw) {
  taps t;
  taps_make(&t, sw, dw);
#pragma omp parallel for schedule(static)
  for (int y = 0; y < h; y++)
    for (int x = 0; x < dw; x++) {
      const int32_t *w = t.w + (size_t)x * (size_t)t.ksize;
      for (int ch = 0; ch < c; ch++) {
        int64_t acc = 1 << (PRECISION_BITS - 1);
        for (int k = 0; k < t.count[x]; k++)
          acc += (int64_t)src[((size_t)y * (size_t)sw + (size_t)(t.first[x] + k)) * (size_t)c + (size_t)ch] * w[k];
        dst[((size_t)y * (size_t)dw + (size_t)x) * (size_t)c + (size_t)ch] = clip8(acc);
      }
    }
  taps_free(&t);
}

static void pass_v(const uint8_t *src, int sh, int w, int c, uint8_t *dst, int dh) {
  taps t;
  taps_make(&t, sh, dh);
#pragma omp parallel for schedule(static)
  for (int y = 0; y < dh; y++) {
    const int32_t *wt = t.w + (size_t)y * (size_t)t.ksize;
    for (int x = 0; x < w; x++)
      for (int ch = 0; ch < c; ch++) {
        int64_t acc = 1 << (PRECISION_BITS - 1);
        for (int k = 0; k < t.count[y]; k++)
          acc += (int64_t)src[((size_t)(t.first[y] + k) * (size_t)w + (size_t)x) * (size_t)c + (size_t)ch] * wt[k];
        dst[((size_t)y * (size_t)w + (size_t)x) * (size_t)c + (size_t)ch] = clip8(acc);
      }
  }
  taps_free(&t);
}

void cmds_resize_bicubic_aa_u8(const uint8_t *src, int sh, int sw, int c, uint8_t *dst, int dh,
                               int dw) {
  int need_h = sw != dw, need_v = sh != dh;
  if (!need_h && !need_v) {
    memcpy(dst, src, (size_t)sh * (size_t)sw * (size_t)c);
    return;
  }
  if (!need_v) {
    pass_h(src, sh, sw, c, dst, dw);
    return;
  }
  if (!need_h) {
    pass_v(src, sh, sw, c, dst, dh);
    return;
  }
  /* Pillow (since its 2026 releases) runs the vertical pass first when the height shrinks
   * by more than twice as many pixels as the width; the 8-bit rounding between passes
   * makes the order visible in the output, so we follow the same rule. */
  uint8_t *tmp;
  if (dh < sh && (sh - dh) > 2 * (sw - dw)) {
    tmp = cmds_xmalloc((size_t)dh * (size_t)sw * (size_t)c);
    pass_v(src, sh, sw, c, tmp, dh);
    pass_h(tmp, dh, sw, c, dst, dw);
  } else {
    tmp = cmds_xmalloc((size_t)sh * (size_t)dw * (size_t)c);
    pass_h(src, sh, sw, c, tmp, dw);
    pass_v(tmp, sh, dw, c, dst, dh);
  }
  free(tmp);
}

void cmds_resize_nearest_pil(const void *src, int sh, int sw, size_t elem_bytes, void *dst, int dh,
                             int dw) {
  /* Pillow maps output pixel centres through the affine transform: src = (o + 0.5) * in / out,
   * truncated. */
  double sx = (double)sw / dw, sy = (double)sh / dh;
  int *xs = cmds_xmalloc(sizeof(int) * (size_t)dw);
  for (int x = 0; x < dw; x++) {
    int v = (int)((x + 0.5) * sx);
    xs[x] = v < sw ? v : sw - 1;
  }
  for (int y = 0; y < dh; y++) {
    int yy = (int)((y + 0.5) * sy);
    if (yy >= sh) yy = sh - 1;
    const uint8_t *row = (const uint8_t *)src + (size_t)yy * (size_t)sw * elem_bytes;
    uint8_t *out = (uint8_t *)dst + (size_t)y * (size_t)dw * elem_bytes;
    for (int x = 0; x < dw; x++) memcpy(out + (size_t)x * elem_bytes, row + (size_t)xs[x] * elem_bytes, elem_bytes);
  }
  free(xs);
}

void cmds_resize_nearest_torch(const void *src, int sh, int sw, size_t elem_bytes, void *dst, int dh,
                               int dw) {
  /* PyTorch: scale = (float)in / out, src = min(floor(o * scale), in - 1), in float32. */
  float sx = (float)sw / (float)dw, sy = (float)sh / (float)dh;
  int *xs = cmds_xmalloc(sizeof(int) * (size_t)dw);
  for (int x = 0; x < dw; x++) {
    int v = (int)floorf((float)x * sx);
    xs[x] = v < sw ? v : sw - 1;
  }
  for (int y = 0; y < dh; y++) {
    int yy = (int)floorf((float)y * sy);
    if (yy >= sh) yy = sh - 1;
    const uint8_t *row = (const uint8_t *)src + (size_t)yy * (size_t)sw * elem_bytes;
    uint8_t *out = (uint8_t *)dst + (size_t)y * (size_t)dw * elem_bytes;
    for (int x = 0; x < dw; x++) memcpy(out + (size_t)x * elem_bytes, row + (size_t)xs[x] * elem_bytes, elem_bytes);
  }
  free(xs);
}
