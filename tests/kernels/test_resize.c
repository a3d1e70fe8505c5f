/* test_resize: kernels/image/resize against the libraries (tests/fixtures/gen_resize.py).
 *   bicubic: Pillow's Image.resize(BICUBIC) on every case of resize/cases.txt (800 -> 224,
 *            512 -> 224, up/down, non-square, 1x1, the pass-order shapes). Bit-exact: every
 *            output byte must equal Pillow's (tolerance 0).
 *   nearest: for each (in, out) pair of resize/nearest_pairs.npy, the source index that
 *            Pillow's NEAREST and PyTorch's F.interpolate(mode='nearest') pick per axis.
 *            Our 2D resizes run on index images (pixel = its flat index, as 4-byte ints and
 *            as 12-byte triples) and must reproduce idx_y[r] * sw + idx_x[c] exactly.
 *   identity: same size in and out copies the input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "npy.h"
#include "resize.h"

static const char *dir = "tests/fixtures/resize";

static npy_array load(const char *name) {
  char p[1024];
  npy_array a;
  snprintf(p, sizeof p, "%s/%s.npy", dir, name);
  if (npy_load(p, &a)) {
    fprintf(stderr, "cannot load fixture %s\n", p);
    exit(1);
  }
  return a;
}

static int test_bicubic(void) {
  char p[1024], name[128];
  snprintf(p, sizeof p, "%s/cases.txt", dir);
  FILE *f = fopen(p, "r");
  if (!f) {
    fprintf(stderr, "cannot open %s\n", p);
    exit(1);
  }
  int h, w, c, oh, ow, n = 0;
  while (fscanf(f, "%127s %d %d %d %d %d", name, &h, &w, &c, &oh, &ow) == 6) {
    char nm[160];
    snprintf(nm, sizeof nm, "%s_in", name);
    npy_array in = load(nm);
    snprintf(nm, sizeof nm, "%s_bicubic", name);
    npy_array want = load(nm);
    CHECK(in.count == (int64_t)h * w * c && want.count == (int64_t)oh * ow * c, "%s: fixture shapes", name);
    uint8_t *out = malloc((size_t)oh * (size_t)ow * (size_t)c);
    cmds_resize_bicubic_aa_u8(in.data, h, w, c, out, oh, ow);
    int64_t bad = 0, first = -1, maxd = 0;
    for (int64_t i = 0; i < want.count; i++) {
      int d = abs((int)out[i] - (int)((const uint8_t *)want.data)[i]);
      if (d && first < 0) first = i;
      bad += d != 0;
      if (d > maxd) maxd = d;
    }
    CHECK(bad == 0, "bicubic %s (%dx%d -> %dx%d, c %d): %lld of %lld bytes differ from Pillow (max %lld, first at %lld)",
          name, h, w, oh, ow, c, (long long)bad, (long long)want.count, (long long)maxd, (long long)first);
    free(out);
    npy_free(&in);
    npy_free(&want);
    n++;
  }
  fclose(f);
  CHECK(n >= 15, "%d bicubic cases read", n);
  return n;
}

typedef void (*nearest_fn)(const void *, int, int, size_t, void *, int, int);

/* Runs fn on an sh x sw index image and checks out[r][c] = iy[r] * sw + ix[c]. */
static int64_t nearest_2d(nearest_fn fn, int sh, int sw, int dh, int dw, const int32_t *iy, const int32_t *ix,
                          int triple) {
  size_t eb = triple ? 12 : 4, k = triple ? 3 : 1;
  int32_t *src = malloc(eb * (size_t)sh * (size_t)sw), *dst = malloc(eb * (size_t)dh * (size_t)dw);
  for (int64_t i = 0; i < (int64_t)sh * sw; i++)
    for (size_t j = 0; j < k; j++) src[(size_t)i * k + j] = (int32_t)(i * 3 + (int64_t)j);
  fn(src, sh, sw, eb, dst, dh, dw);
  int64_t bad = 0;
  for (int r = 0; r < dh; r++)
    for (int c = 0; c < dw; c++)
      for (size_t j = 0; j < k; j++)
        bad += dst[((size_t)r * (size_t)dw + (size_t)c) * k + j] != (int32_t)(((int64_t)iy[r] * sw + ix[c]) * 3 + (int64_t)j);
  free(src);
  free(dst);
  return bad;
}

static void test_nearest(void) {
  npy_array pairs = load("nearest_pairs"), pil = load("nearest_pil_idx"), tor = load("nearest_torch_idx");
  const int32_t *pr = pairs.data;
  int np_ = (int)pairs.shape[0];
  int64_t *off = malloc(sizeof(int64_t) * (size_t)(np_ + 1));
  off[0] = 0;
  for (int i = 0; i < np_; i++) off[i + 1] = off[i] + pr[2 * i + 1];
  CHECK(off[np_] == pil.count && off[np_] == tor.count, "index vectors cover all pairs");
  static const char *names[2] = {"Pillow NEAREST", "torch nearest"};
  nearest_fn fns[2] = {cmds_resize_nearest_pil, cmds_resize_nearest_torch};
  const int32_t *idx[2] = {pil.data, tor.data};
  for (int lib = 0; lib < 2; lib++)
    for (int i = 0; i < np_; i++) {
      /* The pair on the rows, then on the columns (the other axis: pair i+1, wrapped), as
       * 4-byte and 12-byte pixels. */
      int j = (i + 1) % np_;
      int in_a = pr[2 * i], out_a = pr[2 * i + 1], in_b = pr[2 * j], out_b = pr[2 * j + 1];
      const int32_t *va = idx[lib] + off[i], *vb = idx[lib] + off[j];
      if ((int64_t)in_a * in_b > 1000000) { /* keep images small: pair with a short axis */
        j = 11;                             /* (7, 3) */
        in_b = pr[2 * j], out_b = pr[2 * j + 1], vb = idx[lib] + off[j];
      }
      int64_t b1 = nearest_2d(fns[lib], in_a, in_b, out_a, out_b, va, vb, 0);
      int64_t b2 = nearest_2d(fns[lib], in_b, in_a, out_b, out_a, vb, va, 1);
      CHECK(b1 == 0 && b2 == 0, "%s %d -> %d (other axis %d -> %d): %lld + %lld pixels take another source", names[lib],
            in_a, out_a, in_b, out_b, (long long)b1, (long long)b2);
    }
  free(off);
  npy_free(&pairs);
  npy_free(&pil);
  npy_free(&tor);
}

static void test_identity(void) {
  uint8_t a[2 * 3 * 3], b[2 * 3 * 3];
  for (int i = 0; i < 18; i++) a[i] = (uint8_t)(i * 13);
  cmds_resize_bicubic_aa_u8(a, 2, 3, 3, b, 2, 3);
  CHECK(!memcmp(a, b, sizeof a), "bicubic same size copies");
  cmds_resize_nearest_pil(a, 2, 3, 3, b, 2, 3);
  CHECK(!memcmp(a, b, sizeof a), "Pillow nearest same size copies");
  cmds_resize_nearest_torch(a, 2, 3, 3, b, 2, 3);
  CHECK(!memcmp(a, b, sizeof a), "torch nearest same size copies");
}

int main(int argc, char **argv) {
  if (argc > 1) dir = argv[1];
  test_bicubic();
  test_nearest();
  test_identity();
  return CHECK_DONE();
}
