/* test_sc_aug: the sample cache's augmented group (comm/sample_cache.h, cmds_sc_aug_*,
 * cmds_sc_est_aug_*) on any number of ranks. On a copy of a sample cache: absent at first;
 * cmds_sc_aug_write from a batch that only rank 0 holds (the others pass NULL) gives the same
 * rows back on every rank, with augmented_id; rows breaking the layout are refused on every
 * rank with the row and field named, and leave the group as it was; normals_est of the
 * augmented rows go through prepare / write in rounds / state (ABSENT, PARTIAL, COMPLETE,
 * STALE after augmented_id changes, reset by a second prepare); a replacing write drops
 * them; n = 0 removes the group and the attribute; an attribute without its group is a
 * schema error; the support/test normals_est status ignores the augmented group.
 *   test_sc_aug SRC.h5 DST.h5 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cmds_mpi.h"
#include "h5io.h"
#include "sample_cache.h"

static void copy_bytes(const char *src, const char *dst) {
  FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
  CHECK(in && out, "copy %s -> %s", src, dst);
  char buf[65536];
  size_t k;
  while (in && out && (k = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, k, out);
  if (in) fclose(in);
  if (out) fclose(out);
}

/* n augmented rows of side S, row i's rgb a pattern keyed by (i, salt). */
static void make_rows(cmds_sample_batch *b, int64_t n, int S, int salt) {
  cmds_sample_batch_alloc(b, n, S);
  size_t px = (size_t)S * (size_t)S;
  for (int64_t i = 0; i < n; i++) {
    for (size_t p = 0; p < px * 3; p++) b->rgb[(size_t)i * px * 3 + p] = (uint8_t)((p * 7 + (size_t)i * 31 + (size_t)salt) & 255);
    snprintf(b->defect_type + (size_t)i * CMDS_SC_DEFECT_LEN, CMDS_SC_DEFECT_LEN, "augmented");
    snprintf(b->sample_id + (size_t)i * CMDS_SC_ID_LEN, CMDS_SC_ID_LEN, "augmented/k%d/train/good/%03d/%lld", (int)(i % 2) + 1,
             (int)(i % 2), (long long)i);
    b->native_hw[i * 2] = 400 + (int32_t)i, b->native_hw[i * 2 + 1] = 300;
    b->pad[i * 3] = 400 + (int32_t)i, b->pad[i * 3 + 1] = 0, b->pad[i * 3 + 2] = 50;
  }
}

/* Writes the augmented normals_est rows of the group in rounds, rank r its block; rows >= upto stay undone. */
static void write_est(hid_t f, const cmds_mpi *mpi, int64_t n, int64_t upto, int S) {
  cmds_error err = {0};
  int64_t b0, e0, most = 0;
  cmds_block_range(upto, mpi->rank, mpi->size, &b0, &e0);
  int64_t mine = e0 - b0;
  MPI_Allreduce(&mine, &most, 1, MPI_INT64_T, MPI_MAX, mpi->comm);
  size_t px = (size_t)S * (size_t)S * 3;
  float *row = malloc(sizeof(float) * px);
  for (int64_t i = 0; i < most; i++) {
    int has = i < mine;
    for (size_t p = 0; p < px; p++) row[p] = (float)(b0 + i) + (float)p * 1e-3f;
    CHECK(cmds_sc_est_write_rows(f, CMDS_SC_AUGMENTED, has ? b0 + i : 0, has, row, &err) == 0, "%s", err.msg);
  }
  (void)n;
  free(row);
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_h5_quiet();
  if (argc < 3) {
    fprintf(stderr, "usage: test_sc_aug SRC.h5 DST.h5\n");
    return cmds_mpi_finalize(&mpi, 2);
  }
  const char *dst = argv[2];
  if (mpi.rank == 0) copy_bytes(argv[1], dst);
  MPI_Barrier(mpi.comm);
  cmds_error err = {0};
  hid_t f;
  int rc = cmds_sc_open_rw(&f, dst, mpi.comm, &err);
  CHECK(rc == 0, "%s", err.msg);
  if (rc) return cmds_mpi_finalize(&mpi, 1);
  hsize_t dims[8];
  CHECK(cmds_h5_dataset_shape(f, "test/rgb", dims, 8) == 4, "test/rgb");
  const int S = (int)dims[1];
  int64_t n = -1;
  char id[CMDS_SC_AUG_ID_LEN];
  cmds_sc_aug_est_state st = CMDS_SC_AUG_EST_COMPLETE;
  CHECK(cmds_sc_aug_status(f, dst, &n, id, sizeof id, &err) == 0 && n == 0 && !id[0], "fresh: n %lld '%s' %s",
        (long long)n, id, err.msg);
  CHECK(cmds_sc_est_aug_state(f, dst, &st, &err) == 0 && st == CMDS_SC_AUG_EST_ABSENT, "fresh est state %d", (int)st);

  /* the id parser */
  {
    int k = 0;
    int64_t j = -1;
    char sup[64];
    CHECK(cmds_sc_aug_parse_id("augmented/k12/train/good/003/7", &k, sup, sizeof sup, &j) && k == 12 && j == 7 &&
              !strcmp(sup, "train/good/003"), "parse: k %d j %lld '%s'", k, (long long)j, sup);
    CHECK(!cmds_sc_aug_parse_id("augmented/train/good/003/7", &k, sup, sizeof sup, &j), "parse: no k refused");
    CHECK(!cmds_sc_aug_parse_id("augmented/k1/7", &k, sup, sizeof sup, &j), "parse: no support id refused");
    CHECK(!cmds_sc_aug_parse_id("augmented/k1/a/x", &k, sup, sizeof sup, &j), "parse: j not a number refused");
    CHECK(!cmds_sc_aug_parse_id("augmented/k01/a/1", &k, sup, sizeof sup, &j), "parse: k01 refused");
  }
  /* write 5 rows from rank 0 */
  const int64_t N = 5;
  cmds_sample_batch b;
  make_rows(&b, N, S, 0);
  const char *id1 = "sd fnv64:00:1 lora rank=16 steps=1000 images=5 seed=0";
  CHECK(cmds_sc_aug_write(f, dst, N, S, mpi.rank == 0 ? &b : NULL, id1, 3, &err) == 0, "write: %s", err.msg);
  CHECK(cmds_sc_aug_status(f, dst, &n, id, sizeof id, &err) == 0 && n == N && !strcmp(id, id1), "after write: n %lld '%s'",
        (long long)n, id);
  CHECK(cmds_sc_est_aug_state(f, dst, &st, &err) == 0 && st == CMDS_SC_AUG_EST_ABSENT, "est state %d", (int)st);
  {
    cmds_sc_group g;
    CHECK(cmds_sc_group_open(f, "augmented", dst, &g, &err) == 0 && g.n == N && g.size == S, "open: %s", err.msg);
    cmds_sample_batch got;
    cmds_sample_batch_alloc(&got, N, S);
    CHECK(cmds_sc_group_read(&g, 0, N, &got, &err) == 0, "%s", err.msg);
    size_t px = (size_t)S * (size_t)S;
    CHECK(!memcmp(got.rgb, b.rgb, (size_t)N * px * 3), "rgb read back differs (rank %d)", mpi.rank);
    CHECK(!memcmp(got.sample_id, b.sample_id, (size_t)N * CMDS_SC_ID_LEN), "sample_id read back differs");
    CHECK(!memcmp(got.pad, b.pad, sizeof(int32_t) * 3 * (size_t)N), "pad read back differs");
    CHECK(!memcmp(got.native_hw, b.native_hw, sizeof(int32_t) * 2 * (size_t)N), "native_hw read back differs");
    CHECK(!strcmp(got.defect_type + 4 * CMDS_SC_DEFECT_LEN, "augmented") && got.label[4] == 0, "row 4 defect/label");
    cmds_sample_batch_free(&got);
    cmds_sc_group_close(&g);
  }

  /* bad rows: refused on every rank, the group stays as it was */
  struct {
    const char *want;
    int row;
  } cases[] = {{"bad label", 2},   {"bad defect_type", 1}, {"bad sample_id", 3}, {"bad xyz", 0},
               {"bad gt_mask", 4}, {"bad sample_id", 1},   {"bad sample_id", 2}, {"bad sample_id", 0}};
  for (int c = 0; c < 8; c++) {
    cmds_sample_batch bad;
    make_rows(&bad, N, S, 9);
    int r = cases[c].row;
    if (c == 0) bad.label[r] = 1;
    if (c == 1) snprintf(bad.defect_type + (size_t)r * CMDS_SC_DEFECT_LEN, CMDS_SC_DEFECT_LEN, "good");
    if (c == 2) snprintf(bad.sample_id + (size_t)r * CMDS_SC_ID_LEN, CMDS_SC_ID_LEN, "train/good/000");
    if (c == 3) bad.xyz[(size_t)r * (size_t)S * (size_t)S * 3 + 5] = 0.5f;
    if (c == 4) bad.gt_mask[(size_t)r * (size_t)S * (size_t)S + 7] = 1;
    /* the id form of before the per-k LoRAs (no k), no j, k0 */
    if (c == 5) snprintf(bad.sample_id + (size_t)r * CMDS_SC_ID_LEN, CMDS_SC_ID_LEN, "augmented/train/good/000/1");
    if (c == 6) snprintf(bad.sample_id + (size_t)r * CMDS_SC_ID_LEN, CMDS_SC_ID_LEN, "augmented/k2/train/good/000/");
    if (c == 7) snprintf(bad.sample_id + (size_t)r * CMDS_SC_ID_LEN, CMDS_SC_ID_LEN, "augmented/k0/train/good/000/0");
    memset(&err, 0, sizeof err);
    int brc = cmds_sc_aug_write(f, dst, N, S, mpi.rank == 0 ? &bad : NULL, "other", 3, &err);
    char row[32];
    snprintf(row, sizeof row, "row %d ", r);
    CHECK(brc == CMDS_EINPUT && strstr(err.msg, cases[c].want) && strstr(err.msg, row) && strstr(err.msg, dst),
          "case %d (rank %d): rc %d msg '%s'", c, mpi.rank, brc, err.msg);
    cmds_sample_batch_free(&bad);
  }
  memset(&err, 0, sizeof err);
  CHECK(cmds_sc_aug_write(f, dst, N, S + 8, mpi.rank == 0 ? &b : NULL, "x", 3, &err) == CMDS_EINPUT &&
            strstr(err.msg, "augmented images are"),
        "size mismatch: %s", err.msg);
  CHECK(cmds_sc_aug_write(f, dst, N, S, mpi.rank == 0 ? &b : NULL, "two\nlines", 3, &err) == CMDS_EINPUT &&
            strstr(err.msg, "one non-empty line"),
        "identity with a newline: %s", err.msg);
  CHECK(cmds_sc_aug_status(f, dst, &n, id, sizeof id, &err) == 0 && n == N && !strcmp(id, id1),
        "after refused writes: n %lld '%s'", (long long)n, id);

  /* estimated normals of the augmented rows */
  CHECK(cmds_sc_est_aug_prepare(f, dst, 3, &err) == 0, "prepare: %s", err.msg);
  CHECK(cmds_sc_est_aug_state(f, dst, &st, &err) == 0 && st == CMDS_SC_AUG_EST_PARTIAL, "after prepare %d", (int)st);
  write_est(f, &mpi, N, N - 1, S);
  CHECK(cmds_sc_est_aug_state(f, dst, &st, &err) == 0 && st == CMDS_SC_AUG_EST_PARTIAL, "one row left %d", (int)st);
  write_est(f, &mpi, N, N, S);
  CHECK(cmds_sc_est_aug_state(f, dst, &st, &err) == 0 && st == CMDS_SC_AUG_EST_COMPLETE, "all rows %d", (int)st);
  {
    float *row = malloc(sizeof(float) * (size_t)S * (size_t)S * 3);
    CHECK(cmds_sc_est_read_rows(f, CMDS_SC_AUGMENTED, 3, 1, row, &err) == 0, "%s", err.msg);
    CHECK_CLOSE(row[0], 3.0, 0, 0, "augmented normals_est row 3 [0]");
    CHECK_CLOSE(row[10], 3.0 + 10e-3, 1e-6, 0, "augmented normals_est row 3 [10]");
    free(row);
  }
  /* support/test status does not look at the augmented group */
  int present = 1, complete = 1;
  cmds_sc_est_info got;
  CHECK(cmds_sc_est_status(f, dst, &present, &complete, &got, &err) == 0 && !present, "support/test est: %d %s", present,
        err.msg);
  /* augmented_id changed under the estimates: STALE; a second prepare makes them current, flags 0 */
  CHECK(cmds_h5_attr_write_str(f, "augmented_id", "changed") == 0, "attribute");
  CHECK(cmds_sc_est_aug_state(f, dst, &st, &err) == 0 && st == CMDS_SC_AUG_EST_STALE, "stale %d", (int)st);
  CHECK(cmds_sc_est_aug_prepare(f, dst, 3, &err) == 0, "re-prepare: %s", err.msg);
  CHECK(cmds_sc_est_aug_state(f, dst, &st, &err) == 0 && st == CMDS_SC_AUG_EST_PARTIAL, "re-prepared %d", (int)st);
  uint8_t done[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  CHECK(cmds_sc_est_read_done(f, CMDS_SC_AUGMENTED, done, &err) == 0 && !done[0] && !done[4], "flags reset");

  /* replacing: 3 new rows, the old normals_est gone */
  cmds_sample_batch b3;
  make_rows(&b3, 3, S, 77);
  CHECK(cmds_sc_aug_write(f, dst, 3, S, mpi.rank == 0 ? &b3 : NULL, "second", 3, &err) == 0, "replace: %s", err.msg);
  CHECK(cmds_sc_aug_status(f, dst, &n, id, sizeof id, &err) == 0 && n == 3 && !strcmp(id, "second"), "replaced: %lld '%s'",
        (long long)n, id);
  CHECK(cmds_sc_est_aug_state(f, dst, &st, &err) == 0 && st == CMDS_SC_AUG_EST_ABSENT, "replaced est state %d", (int)st);
  {
    cmds_sc_group g;
    cmds_sample_batch r3;
    cmds_sample_batch_alloc(&r3, 3, S);
    CHECK(cmds_sc_group_open(f, "augmented", dst, &g, &err) == 0 && cmds_sc_group_read(&g, 0, 3, &r3, &err) == 0, "%s",
          err.msg);
    CHECK(!memcmp(r3.rgb, b3.rgb, (size_t)3 * (size_t)S * (size_t)S * 3), "replaced rgb differs");
    cmds_sc_group_close(&g);
    cmds_sample_batch_free(&r3);
  }
  /* n = 0: off */
  CHECK(cmds_sc_aug_write(f, dst, 0, S, NULL, "", 3, &err) == 0, "remove: %s", err.msg);
  CHECK(cmds_sc_aug_status(f, dst, &n, id, sizeof id, &err) == 0 && n == 0 && !id[0], "removed: %lld", (long long)n);
  CHECK(!cmds_h5_exists(f, "augmented"), "group removed");
  /* an attribute without its group */
  CHECK(cmds_h5_attr_write_str(f, "augmented_id", "orphan") == 0, "attribute");
  memset(&err, 0, sizeof err);
  CHECK(cmds_sc_aug_status(f, dst, &n, id, sizeof id, &err) == CMDS_ESCHEMA && strstr(err.msg, "without a group") &&
            strstr(err.msg, dst),
        "orphan attribute: %s", err.msg);
  cmds_sample_batch_free(&b);
  cmds_sample_batch_free(&b3);
  H5Fclose(f);
  MPI_Barrier(mpi.comm);
  int failed = 0;
  MPI_Allreduce(&check_failed_, &failed, 1, MPI_INT, MPI_SUM, mpi.comm);
  if (mpi.rank == 0) printf("%d passed, %d failed (all ranks: %d failed)\n", check_passed_, check_failed_, failed);
  return cmds_mpi_finalize(&mpi, failed ? 1 : 0);
}
