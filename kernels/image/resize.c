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
  /* The Pillow the fixtures come from (13.0) runs the vertical pass first when the height
   * shrinks by more than twice as many pixels as the width; the 8-bit rounding between
   * passes makes the order visible in the output, so we follow the same rule (the order_*
   * fixtures sit on both sides of the boundary). */
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

/* Pillow's NEAREST source index per output index along one axis. Pillow maps output pixel
 * centres through its scaling transform incrementally: the position starts at 0.5 * scale
 * and grows by scale per output pixel, in double, truncated. The running sum is not
 * (o + 0.5) * scale: at 512 -> 224, o = 3 gives 7.999... by the sum and 8 by the product,
 * and Pillow picks 7; the fixtures pin the sum down. */
static int *nearest_pil_axis(int in, int out) {
  int *idx = cmds_xmalloc(sizeof(int) * (size_t)out);
  double scale = (double)in / out, pos = scale * 0.5;
  for (int o = 0; o < out; o++) {
    int v = (int)pos;
    idx[o] = v < in ? v : in - 1;
    pos += scale;
  }
  return idx;
}

/* PyTorch's F.interpolate(mode='nearest'): scale = (float)in / out, source =
 * min(floor(o * scale), in - 1), all in float32 as ATen's CPU kernel computes it. */
static int *nearest_torch_axis(int in, int out) {
  int *idx = cmds_xmalloc(sizeof(int) * (size_t)out);
  float scale = (float)in / (float)out;
  for (int o = 0; o < out; o++) {
    int v = (int)floorf((float)o * scale);
    idx[o] = v < in ? v : in - 1;
  }
  return idx;
}

/* Gathers dst[y][x] = src[ys[y]][xs[x]] for pixels of elem_bytes bytes. */
static void gather(const void *src, int sw, size_t elem_bytes, void *dst, int dh, int dw, const int *ys,
                   const int *xs) {
#pragma omp parallel for schedule(static) if ((size_t)dh * (size_t)dw * elem_bytes > (1u << 20))
  for (int y = 0; y < dh; y++) {
    const uint8_t *row = (const uint8_t *)src + (size_t)ys[y] * (size_t)sw * elem_bytes;
    uint8_t *out = (uint8_t *)dst + (size_t)y * (size_t)dw * elem_bytes;
    for (int x = 0; x < dw; x++) memcpy(out + (size_t)x * elem_bytes, row + (size_t)xs[x] * elem_bytes, elem_bytes);
  }
}

void cmds_resize_nearest_pil(const void *src, int sh, int sw, size_t elem_bytes, void *dst, int dh,
                             int dw) {
  int *xs = nearest_pil_axis(sw, dw), *ys = nearest_pil_axis(sh, dh);
  gather(src, sw, elem_bytes, dst, dh, dw, ys, xs);
  free(xs);
  free(ys);
}

void cmds_resize_nearest_torch(const void *src, int sh, int sw, size_t elem_bytes, void *dst, int dh,
                               int dw) {
  int *xs = nearest_torch_axis(sw, dw), *ys = nearest_torch_axis(sh, dh);
  gather(src, sw, elem_bytes, dst, dh, dw, ys, xs);
  free(xs);
  free(ys);
}
