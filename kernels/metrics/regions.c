/* regions: see regions.h. */
#include "regions.h"

#include <stdlib.h>

#include "cmds_error.h"

static int32_t uf_find(int32_t *parent, int32_t x) {
  while (parent[x] != x) {
    parent[x] = parent[parent[x]]; /* path halving */
    x = parent[x];
  }
  return x;
}

static void uf_union(int32_t *parent, int32_t a, int32_t b) {
  a = uf_find(parent, a);
  b = uf_find(parent, b);
  if (a < b) parent[b] = a;
  else if (b < a) parent[a] = b;
}

int32_t cmds_regions_label8(const uint8_t *mask, int h, int w, int32_t *labels,
                            int64_t **sizes) {
  /* provisional labels: a new one needs a background west neighbour, so at most about
   * one per two pixels of a row (grown to one per pixel for odd widths); parent[0] is the
   * background */
  int64_t npix = (int64_t)h * w;
  int64_t cap = npix / 2 + 2;
  int32_t *parent = cmds_xmalloc((size_t)cap * sizeof *parent);
  int32_t next = 1;
  parent[0] = 0;
  for (int y = 0; y < h; y++) {
    for (int x = 0; x < w; x++) {
      int64_t i = (int64_t)y * w + x;
      if (!mask[i]) {
        labels[i] = 0;
        continue;
      }
      int32_t nb[4], k = 0;
      if (x > 0 && labels[i - 1]) nb[k++] = labels[i - 1];
      if (y > 0) {
        const int32_t *up = labels + i - w;
        if (x > 0 && up[-1]) nb[k++] = up[-1];
        if (up[0]) nb[k++] = up[0];
        if (x + 1 < w && up[1]) nb[k++] = up[1];
      }
      if (k == 0) {
        if ((int64_t)next >= cap) {
          cap = npix + 2;
          parent = cmds_xrealloc(parent, (size_t)cap * sizeof *parent);
        }
        parent[next] = next;
        labels[i] = next++;
        continue;
      }
      int32_t m = nb[0];
      for (int q = 1; q < k; q++) m = nb[q] < m ? nb[q] : m;
      for (int q = 0; q < k; q++) uf_union(parent, m, nb[q]);
      labels[i] = m;
    }
  }
  /* final labels in raster order of first appearance: roots are visited in increasing
   * provisional order, and a root's provisional label is the smallest of its set, which
   * is the one given first in raster order */
  int32_t *final = cmds_xcalloc((size_t)next, sizeof *final);
  int32_t n = 0;
  for (int32_t p = 1; p < next; p++) {
    int32_t r = uf_find(parent, p);
    if (r == p) final[p] = ++n;
  }
  int64_t *sz = sizes ? cmds_xcalloc((size_t)n + 1, sizeof *sz) : NULL;
  for (int64_t i = 0; i < npix; i++) {
    if (!labels[i]) continue;
    labels[i] = final[uf_find(parent, labels[i])];
    if (sz) sz[labels[i]]++;
  }
  free(final);
  free(parent);
  if (sizes) *sizes = sz;
  return n;
}
