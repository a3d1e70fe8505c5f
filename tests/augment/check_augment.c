/* check_augment: assertions on the sample caches cmds-augment leaves.
 *   check_augment ok CACHE.h5 N SHOTS [AUG_DIR]  an augmented group of N rows per k of SHOTS
 *                                   (comma list, ascending) as the schema says: row i * N + j
 *                                   is image j of k = SHOTS[i]: label 0, defect_type
 *                                   "augmented", sample_id "augmented/k<k>/<support id of row
 *                                   j mod k>/<j>", pad and native_hw of that support row, xyz /
 *                                   normals / masks zero, RGB neither blank nor the support
 *                                   image itself, augmented_id set and naming shots=SHOTS;
 *                                   with AUG_DIR: every k<k>/images/<j>.png (R x R)
 *                                   Pillow-bicubic-resized to S is the cached row
 *   check_augment rgb same|differ A.h5 A0 B.h5 B0 N   augmented RGB rows [A0, A0 + N) of A
 *                                   equal / differ from (every row) rows [B0, B0 + N) of B
 *   check_augment absent CACHE.h5   no augmented group
 *   check_augment same A.h5 B.h5    the augmented groups are byte-identical (rows and id)
 *   check_augment differ A.h5 B.h5  the augmented RGB differs somewhere */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cmds_mpi.h"
#include "formats.h"
#include "h5io.h"
#include "resize.h"
#include "sample_cache.h"

typedef struct aug_rows {
  int64_t n;
  int S;
  char id[CMDS_SC_AUG_ID_LEN];
  cmds_sample_batch b;
} aug_rows;

/* The augmented rows of a cache (n = 0 when absent). */
static int read_aug(const char *path, aug_rows *a) {
  memset(a, 0, sizeof *a);
  cmds_error err = {0};
  hid_t f;
  int rc = cmds_h5_open_read(&f, path, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, &err);
  if (!rc) rc = cmds_sc_aug_status(f, path, &a->n, a->id, sizeof a->id, &err);
  CHECK(rc == 0, "%s", err.msg);
  if (rc) return rc;
  if (a->n > 0) {
    cmds_sc_group g;
    memset(&g, 0, sizeof g);
    rc = cmds_sc_group_open(f, "augmented", path, &g, &err);
    if (!rc) {
      a->S = g.size;
      cmds_sample_batch_alloc(&a->b, a->n, g.size);
      rc = cmds_sc_group_read(&g, 0, a->n, &a->b, &err);
      cmds_sc_group_close(&g);
    }
    CHECK(rc == 0, "%s", err.msg);
  }
  H5Fclose(f);
  return rc;
}

static void check_ok(const char *path, int64_t per_k, const char *shots_s, const char *images) {
  aug_rows a;
  if (read_aug(path, &a)) return;
  int64_t shots[16];
  int nshots = 0;
  for (const char *p = shots_s; *p && nshots < 16;) {
    char *end = NULL;
    shots[nshots++] = strtoll(p, &end, 10);
    p = *end ? end + 1 : end;
  }
  const int64_t want = per_k * nshots;
  CHECK(a.n == want, "%s: %lld augmented rows, want %lld", path, (long long)a.n, (long long)want);
  CHECK(a.id[0] != 0, "%s: augmented_id empty", path);
  char shots_field[200];
  snprintf(shots_field, sizeof shots_field, ";shots=%s;", shots_s);
  CHECK(strstr(a.id, shots_field) != NULL, "%s: augmented_id '%s' does not name %s", path, a.id, shots_field);
  cmds_error err = {0};
  hid_t f;
  cmds_sc_group sg;
  memset(&sg, 0, sizeof sg);
  int rc = cmds_h5_open_read(&f, path, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, &err);
  if (!rc) rc = cmds_sc_group_open(f, "support", path, &sg, &err);
  CHECK(rc == 0, "%s", err.msg);
  if (rc || a.n != want) return;
  const int S = a.S;
  const size_t px = (size_t)S * (size_t)S;
  cmds_sample_batch s;
  cmds_sample_batch_alloc(&s, 1, S);
  for (int64_t r = 0; r < a.n; r++) {
    const int64_t k = shots[r / per_k], j = r % per_k, src = j % k;
    CHECK(cmds_sc_group_read(&sg, src, 1, &s, &err) == 0, "%s", err.msg);
    char sid[CMDS_SC_ID_LEN + 1], want_id[CMDS_SC_ID_LEN + 64], got[CMDS_SC_ID_LEN + 1], defect[CMDS_SC_DEFECT_LEN + 1];
    memcpy(sid, s.sample_id, CMDS_SC_ID_LEN);
    sid[CMDS_SC_ID_LEN] = 0;
    memcpy(got, a.b.sample_id + (size_t)r * CMDS_SC_ID_LEN, CMDS_SC_ID_LEN);
    got[CMDS_SC_ID_LEN] = 0;
    memcpy(defect, a.b.defect_type + (size_t)r * CMDS_SC_DEFECT_LEN, CMDS_SC_DEFECT_LEN);
    defect[CMDS_SC_DEFECT_LEN] = 0;
    snprintf(want_id, sizeof want_id, "augmented/k%lld/%s/%lld", (long long)k, sid, (long long)j);
    CHECK(!strcmp(got, want_id), "row %lld: sample_id '%s', want '%s'", (long long)r, got, want_id);
    CHECK(!strcmp(defect, "augmented") && a.b.label[r] == 0, "row %lld: defect '%s', label %d", (long long)r, defect,
          a.b.label[r]);
    CHECK(!memcmp(a.b.pad + 3 * r, s.pad, 3 * sizeof(int32_t)) && !memcmp(a.b.native_hw + 2 * r, s.native_hw, 2 * sizeof(int32_t)),
          "row %lld: pad / native_hw of the source row", (long long)r);
    int zero3d = 1;
    for (size_t p = 0; p < px * 3; p++)
      if (a.b.xyz[r * (int64_t)px * 3 + (int64_t)p] != 0 || a.b.normals[r * (int64_t)px * 3 + (int64_t)p] != 0) zero3d = 0;
    for (size_t p = 0; p < px; p++)
      if (a.b.fg_mask[(size_t)r * px + p] || a.b.gt_mask[(size_t)r * px + p]) zero3d = 0;
    CHECK(zero3d, "row %lld: 3D data and masks zero", (long long)r);
    const uint8_t *rgb = a.b.rgb + (size_t)r * px * 3;
    size_t nonzero = 0, diff = 0;
    for (size_t p = 0; p < px * 3; p++) {
      nonzero += rgb[p] != 0;
      diff += rgb[p] != s.rgb[p];
    }
    CHECK(nonzero > px, "row %lld: blank RGB (%zu non-zero values)", (long long)r, nonzero);
    CHECK(diff > px / 4, "row %lld: RGB is (nearly) the support image itself (%zu values differ)", (long long)r, diff);
    if (images) {
      char png[4200];
      snprintf(png, sizeof png, "%s/k%lld/images/%06lld.png", images, (long long)k, (long long)j);
      cmds_image img;
      rc = cmds_png_read(png, &img, &err);
      CHECK(rc == 0, "%s", err.msg);
      if (!rc) {
        CHECK(img.channels == 3 && img.bit_depth == 8 && img.width == img.height, "%s: %dx%dx%d", png, img.width,
              img.height, img.channels);
        uint8_t *small = malloc(px * 3);
        cmds_resize_bicubic_aa_u8(img.data, img.height, img.width, 3, small, S, S);
        CHECK(!memcmp(small, rgb, px * 3), "%s resized to %d is not cached row %lld", png, S, (long long)r);
        free(small);
        cmds_image_free(&img);
      }
    }
  }
  cmds_sample_batch_free(&s);
  cmds_sc_group_close(&sg);
  H5Fclose(f);
  cmds_sample_batch_free(&a.b);
  printf("%s: %lld augmented rows as the schema says; augmented_id '%s'\n", path, (long long)a.n, a.id);
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_h5_quiet();
  const char *mode = argc > 2 ? argv[1] : "";
  if (!strcmp(mode, "ok") && argc >= 5) {
    check_ok(argv[2], atoll(argv[3]), argv[4], argc > 5 ? argv[5] : NULL);
  } else if (!strcmp(mode, "rgb") && argc >= 8) {
    aug_rows a, b;
    int ra = read_aug(argv[3], &a), rb = read_aug(argv[5], &b);
    int64_t a0 = atoll(argv[4]), b0 = atoll(argv[6]), n = atoll(argv[7]);
    int same = !strcmp(argv[2], "same");
    if (!ra && !rb) {
      CHECK(a.S == b.S && a0 >= 0 && b0 >= 0 && n > 0 && a0 + n <= a.n && b0 + n <= b.n, "rows out of range");
      size_t px = (size_t)a.S * (size_t)a.S * 3;
      for (int64_t i = 0; i < n && a.S == b.S && a0 + n <= a.n && b0 + n <= b.n; i++) {
        int eq = !memcmp(a.b.rgb + (size_t)(a0 + i) * px, b.b.rgb + (size_t)(b0 + i) * px, px);
        CHECK(eq == same, "%s row %lld vs %s row %lld: RGB %s", argv[3], (long long)(a0 + i), argv[5], (long long)(b0 + i),
              eq ? "identical" : "differs");
      }
    }
    if (!ra && a.n) cmds_sample_batch_free(&a.b);
    if (!rb && b.n) cmds_sample_batch_free(&b.b);
  } else if (!strcmp(mode, "absent")) {
    aug_rows a;
    if (!read_aug(argv[2], &a)) CHECK(a.n == 0 && !a.id[0], "%s has %lld augmented rows", argv[2], (long long)a.n);
    if (a.n) cmds_sample_batch_free(&a.b);
  } else if ((!strcmp(mode, "same") || !strcmp(mode, "differ")) && argc >= 4) {
    aug_rows a, b;
    int ra = read_aug(argv[2], &a), rb = read_aug(argv[3], &b);
    if (!ra && !rb) {
      CHECK(a.n > 0 && a.n == b.n && a.S == b.S, "rows %lld vs %lld", (long long)a.n, (long long)b.n);
      size_t px = (size_t)a.S * (size_t)a.S;
      int same_rgb = a.n == b.n && a.S == b.S && !memcmp(a.b.rgb, b.b.rgb, (size_t)a.n * px * 3);
      if (!strcmp(mode, "same")) {
        CHECK(same_rgb, "augmented RGB differs");
        CHECK(a.n == b.n && !memcmp(a.b.sample_id, b.b.sample_id, (size_t)a.n * CMDS_SC_ID_LEN), "sample ids differ");
        CHECK(!strcmp(a.id, b.id), "augmented_id differs:\n  %s\n  %s", a.id, b.id);
      } else {
        CHECK(!same_rgb, "augmented RGB identical");
      }
    }
    if (!ra && a.n) cmds_sample_batch_free(&a.b);
    if (!rb && b.n) cmds_sample_batch_free(&b.b);
  } else {
    fprintf(stderr, "usage: check_augment ok FILE N SHOTS [AUG_DIR] | absent FILE | same|differ A B | rgb same|differ A A0 B B0 N\n");
    check_failed_++;
  }
  if (check_failed_) fprintf(stderr, "%d passed, %d failed\n", check_passed_, check_failed_);
  return cmds_mpi_finalize(&mpi, check_failed_ ? 1 : 0);
}
