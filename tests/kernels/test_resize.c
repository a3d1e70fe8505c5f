/* test_resize: kernels/image/resize against Pillow (BICUBIC antialiased, NEAREST) and
 * PyTorch (nearest) on the fixtures of tests/fixtures/gen_resize.py. Bit-exact: every
 * output byte must equal the library's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "npy.h"
#include "resize.h"

static void load(const char *dir, const char *name, const char *kind, npy_array *a) {
  char p[1024];
  snprintf(p, sizeof p, "%s/%s_%s.npy", dir, name, kind);
  if (npy_load(p, a)) exit(1);
}

static void compare(const char *what, const char *name, const uint8_t *got, const npy_array *want) {
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < want->count; i++)
    if (got[i] != ((const uint8_t *)want->data)[i]) {
      if (first < 0) first = i;
      bad++;
    }
  CHECK(bad == 0, "%s %s: %lld of %lld bytes differ (first at %lld: got %d want %d)", what, name,
        (long long)bad, (long long)want->count, (long long)first, first >= 0 ? got[first] : 0,
        first >= 0 ? ((const uint8_t *)want->data)[first] : 0);
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "tests/fixtures/resize";
  char p[1024], name[128];
  snprintf(p, sizeof p, "%s/cases.txt", dir);
  FILE *f = fopen(p, "r");
  if (!f) {
    fprintf(stderr, "cannot open %s\n", p);
    return 1;
  }
  int h, w, c, oh, ow, n = 0;
  while (fscanf(f, "%127s %d %d %d %d %d", name, &h, &w, &c, &oh, &ow) == 6) {
    npy_array in, bic, np_, nt;
    load(dir, name, "in", &in);
    load(dir, name, "bicubic", &bic);
    load(dir, name, "nearest_pil", &np_);
    load(dir, name, "nearest_torch", &nt);
    uint8_t *out = malloc((size_t)oh * (size_t)ow * (size_t)c);
    cmds_resize_bicubic_aa_u8(in.data, h, w, c, out, oh, ow);
    compare("bicubic", name, out, &bic);
    cmds_resize_nearest_pil(in.data, h, w, (size_t)c, out, oh, ow);
    compare("nearest_pil", name, out, &np_);
    cmds_resize_nearest_torch(in.data, h, w, (size_t)c, out, oh, ow);
    compare("nearest_torch", name, out, &nt);
    free(out);
    npy_free(&in);
    npy_free(&bic);
    npy_free(&np_);
    npy_free(&nt);
    n++;
  }
  fclose(f);
  CHECK(n >= 8, "%d cases read", n);
  return CHECK_DONE();
}
