/* test_score_table: the integer building blocks of the metrics kernels.
 * - score keys preserve float order (negatives, zeros of both signs, denormals, infinities)
 * - the radix sorts agree with qsort and are stable; compaction merges equal keys and keeps
 *   counts and fixed-point weights exact, also when counts overflow 32 bits per row
 * - fixed point: 1/d rounds to the nearest 2^-96, sums of d copies of 1/d stay within d/2
 *   ulps of 1, double round trip
 * - thresholds:N positions equal numpy's linspace(0, n_ok - 1, N, dtype=int) (fixture)
 * - 8-connected regions: diagonal contact joins, 4-neighbours of a hole do not split
 * - AUROC on scores with ties equals the pairwise count (brute force)
 *   test_score_table FIXTURE_DIR */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "npy.h"
#include "regions.h"
#include "rng.h"
#include "score_table.h"

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

static void test_keys(void) {
  float v[] = {-INFINITY, -3.4e38f, -1.0f, -1e-40f, -0.0f, 0.0f, 1e-45f, 1e-40f, 0.5f, 1.0f, 3.4e38f, INFINITY};
  int n = (int)(sizeof v / sizeof *v);
  for (int i = 0; i + 1 < n; i++) {
    uint32_t a = cmds_score_key(v[i]), b = cmds_score_key(v[i + 1]);
    if (v[i] == v[i + 1]) CHECK(a == b, "key(%g) != key(%g) for equal floats", v[i], v[i + 1]);
    else CHECK(a < b, "key(%g) = %u not below key(%g) = %u", v[i], a, v[i + 1], b);
    CHECK(cmds_score_from_key(a) == v[i], "key round trip of %g", v[i]);
  }
}

static void test_sorts(void) {
  cmds_rng rng;
  cmds_rng_seed(&rng, 11 ^ cmds_hash_str("score_table"));
  size_t n = 200000;
  uint64_t *a = malloc(n * sizeof *a), *tmp = malloc(n * sizeof *tmp);
  uint32_t *k = malloc(n * sizeof *k);
  for (size_t i = 0; i < n; i++) {
    uint32_t key = (uint32_t)cmds_rng_below(&rng, i % 2 ? 1000 : 4000000000u);
    a[i] = ((uint64_t)key << 32) | (uint32_t)i; /* payload = original index: checks stability */
    k[i] = key;
  }
  cmds_sort_packed_by_key(a, tmp, n);
  qsort(k, n, sizeof *k, cmp_u32);
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    if ((uint32_t)(a[i] >> 32) != k[i]) bad++;
    if (i && (a[i] >> 32) == (a[i - 1] >> 32) && (uint32_t)a[i] < (uint32_t)a[i - 1]) bad++;
  }
  CHECK(bad == 0, "packed radix sort: %d rows out of order or unstable", bad);
  free(a);
  free(tmp);
  free(k);

  /* table: random rows, compaction vs brute-force totals per key */
  cmds_score_table t;
  cmds_table_init(&t);
  int64_t nn[64] = {0}, na[64] = {0};
  cmds_fix128 w[64] = {0};
  for (int i = 0; i < 50000; i++) {
    uint32_t key = 1000 + (uint32_t)cmds_rng_below(&rng, 64);
    if (cmds_rng_below(&rng, 3)) {
      cmds_table_add_normal(&t, key, 1);
      nn[key - 1000]++;
    } else {
      cmds_fix128 wi = cmds_fix_recip(1 + cmds_rng_below(&rng, 50));
      cmds_table_add_anom(&t, key, 1, wi);
      na[key - 1000]++;
      w[key - 1000] += wi;
    }
  }
  /* counts that overflow one row's 32 bits */
  cmds_table_add_normal(&t, 1000, 0xfffffff0u);
  cmds_table_add_normal(&t, 1000, 0x20u);
  nn[0] += 0xfffffff0ll + 0x20;
  cmds_table_compact(&t);
  cmds_table_iter it;
  cmds_key_group g;
  int groups = 0, ok = 1;
  uint32_t last = 0xffffffffu;
  cmds_table_iter_begin(&it, &t, 1);
  while (cmds_table_iter_next(&it, &g)) {
    int q = (int)g.key - 1000;
    ok &= q >= 0 && q < 64 && g.n_normal == nn[q] && g.n_anom == na[q] && g.w == w[q];
    ok &= g.key < last;
    last = g.key;
    groups++;
  }
  CHECK(ok, "descending walk: per-key counts or weights differ from brute force");
  CHECK(groups == 64, "walk visited %d distinct keys, want 64", groups);
  cmds_table_free(&t);
}

static void test_fixed(void) {
  for (uint64_t d = 1; d < 5000; d += 7) {
    cmds_fix128 r = cmds_fix_recip(d), s = r * d, one = (cmds_fix128)1 << 96;
    cmds_fix128 diff = s > one ? s - one : one - s;
    CHECK(diff <= d, "d copies of 1/%llu miss 1 by %llu ulps", (unsigned long long)d, (unsigned long long)diff);
  }
  double xs[] = {0.0, 1.0, 0.3, 1e-20, 0.123456789012345, 7.5};
  for (int i = 0; i < 6; i++)
    CHECK_CLOSE(cmds_fix_to_double(cmds_fix_from_double(xs[i])), xs[i], 1e-27, 1e-15, "fixed round trip");
}

static void test_linspace(const char *dir) {
  char p1[4096], p2[4096];
  snprintf(p1, sizeof p1, "%s/linspace_cases.npy", dir);
  snprintf(p2, sizeof p2, "%s/linspace_pos.npy", dir);
  npy_array cases, pos;
  if (npy_load(p1, &cases) || npy_load(p2, &pos)) {
    CHECK(0, "cannot load the linspace fixture");
    return;
  }
  int64_t off = 0;
  for (int64_t c = 0; c < cases.shape[0]; c++) {
    int64_t n_ok = (int64_t)npy_get(&cases, 2 * c);
    int n = (int)npy_get(&cases, 2 * c + 1);
    int64_t *got = malloc((size_t)n * sizeof *got);
    cmds_thresholds_positions(n_ok, n, got);
    int bad = 0;
    for (int i = 0; i < n; i++) bad += got[i] != ((const int64_t *)pos.data)[off + i];
    CHECK(bad == 0, "linspace(0, %lld, %d): %d positions differ from numpy", (long long)(n_ok - 1), n, bad);
    off += n;
    free(got);
  }
  npy_free(&cases);
  npy_free(&pos);
}

static void test_regions(void) {
  /* two squares touching at a corner, a diagonal line, a ring around a hole */
  const char *img[] = {
      "11.......1",
      "11......1.",
      "..11...1..",
      "..11......",
      "..........",
      "111.......",
      "1.1......1",
      "111.......",
  };
  int h = 8, w = 10;
  uint8_t m[80];
  int32_t lab[80];
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) m[y * w + x] = img[y][x] == '1';
  int64_t *sizes = NULL;
  int32_t n = cmds_regions_label8(m, h, w, lab, &sizes);
  CHECK(n == 4, "regions: got %d, want 4", n);
  if (n == 4) {
    CHECK(sizes[1] == 8 && sizes[2] == 3 && sizes[3] == 8 && sizes[4] == 1,
          "region sizes %lld %lld %lld %lld, want 8 3 8 1", (long long)sizes[1], (long long)sizes[2],
          (long long)sizes[3], (long long)sizes[4]);
    CHECK(lab[0] == 1 && lab[9] == 2 && lab[50] == 3 && lab[69] == 4, "labels not in raster order");
  }
  free(sizes);
}

static void test_auroc(void) {
  cmds_rng rng;
  cmds_rng_seed(&rng, 5 ^ cmds_hash_str("auroc"));
  int n = 300;
  float s[300];
  uint8_t l[300];
  for (int i = 0; i < n; i++) {
    l[i] = (uint8_t)cmds_rng_below(&rng, 2);
    s[i] = (float)cmds_rng_below(&rng, 7) * 0.5f - 1.0f + (l[i] ? 0.5f : 0.0f);
  }
  double pairs = 0, wins = 0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++)
      if (l[i] && !l[j]) {
        pairs++;
        wins += s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0;
      }
  double auc;
  const char *why;
  CHECK(cmds_auroc_scores(s, l, n, &auc, &why) == 0, "auroc undefined");
  CHECK_CLOSE(auc, wins / pairs, 1e-12, 0, "auroc vs pair count");
  memset(l, 0, sizeof l);
  CHECK(cmds_auroc_scores(s, l, n, &auc, &why) == -1 && isnan(auc), "one class must be undefined");
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s FIXTURE_DIR\n", argv[0]);
    return 2;
  }
  test_keys();
  test_sorts();
  test_fixed();
  test_linspace(argv[1]);
  test_regions();
  test_auroc();
  return CHECK_DONE();
}
