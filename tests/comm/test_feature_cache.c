/* test_feature_cache: the feature cache under 1, 2 and 4 ranks:
 *   - an interrupted run (file closed before commit, half of the rows written) is picked up
 *     again by cmds_fc_reopen with its done flags, finished, committed;
 *   - every row reads back bit-exactly as float16 (HDF5 IEEE half, what h5py calls float16);
 *   - a partial file made with another configuration is not reused;
 *   - the final file carries the schema and configuration attributes.
 * Usage: test_feature_cache OUTDIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "cmds_mpi.h"
#include "feature_cache.h"
#include "fsutil.h"

#define L 3
#define G 4
#define C 8
#define ROW (L * G * G * C)

static uint16_t bits(int g, int m, int64_t row, int i) {
  return (uint16_t)(((g * 131 + m * 17 + row * 1009 + i * 7) & 0x3bff)); /* finite halves */
}

static void fill(int g, int m, int64_t row0, int64_t n, uint16_t *buf) {
  for (int64_t r = 0; r < n; r++)
    for (int i = 0; i < ROW; i++) buf[r * ROW + i] = bits(g, m, row0 + r, i);
}

/* Writes rows [from, to) of every group/modality in rounds of 2 per rank. */
static void write_span(const cmds_mpi *mpi, hid_t file, const cmds_fc_info *info, int g, int m,
                       int64_t from, int64_t to) {
  int64_t b, e;
  cmds_block_range(to - from, mpi->rank, mpi->size, &b, &e);
  b += from;
  e += from;
  int64_t mine = e - b, most = 0;
  MPI_Allreduce(&mine, &most, 1, MPI_INT64_T, MPI_MAX, mpi->comm);
  uint16_t *buf = malloc(sizeof(uint16_t) * 2 * ROW);
  cmds_error err;
  for (int64_t r = 0; r < most; r += 2) {
    int64_t cnt = mine - r > 2 ? 2 : mine - r;
    if (cnt < 0) cnt = 0;
    fill(g, m, b + r, cnt, buf);
    CHECK(cmds_fc_write_rows(file, g, (cmds_fc_modality)m, b + r, cnt, buf, &err) == 0, "%s", err.msg);
  }
  (void)info;
  free(buf);
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_h5_quiet();
  char path[1024];
  snprintf(path, sizeof path, "%s/fc_n%d.h5", argv[1], mpi.size);
  cmds_error err = {0};
  if (mpi.rank == 0) {
    cmds_mkdir_p(argv[1], &err);
    unlink(path);
  }
  cmds_fc_info info = {.nblocks = L, .blocks = {4, 7, 11}, .grid = G, .width = C, .image_size = 32,
                       .n = {3, 7}, .modalities = (1 << CMDS_FC_RGB) | (1 << CMDS_FC_NORMALS)};
  strcpy(info.dataset, "mvtec3d");
  strcpy(info.category, "bagel");
  strcpy(info.backbone, "dino_vitb8");
  strcpy(info.weights_id, "random:1");
  strcpy(info.sample_list_hash, "abc");
  cmds_h5file f;
  CHECK(cmds_fc_reopen(&f, path, mpi.comm, &info, &err) == CMDS_ESCHEMA, "nothing to resume at first");
  CHECK(cmds_fc_create(&f, path, mpi.comm, &info, 3, &err) == 0, "%s", err.msg);
  write_span(&mpi, f.id, &info, 1, CMDS_FC_RGB, 0, 4); /* half of the test rgb rows */
  H5Fclose(f.id); /* interrupted: never committed */
  MPI_Barrier(mpi.comm);
  CHECK(!cmds_is_file(path), "no final file after an interrupted run");

  cmds_fc_info other = info;
  strcpy(other.weights_id, "random:2");
  CHECK(cmds_fc_reopen(&f, path, mpi.comm, &other, &err) == CMDS_ESCHEMA, "other weights: not resumed");
  CHECK(cmds_fc_reopen(&f, path, mpi.comm, &info, &err) == 0, "resume: %s", err.msg);
  uint8_t done[7];
  CHECK(cmds_fc_read_done(f.id, 1, CMDS_FC_RGB, done, &err) == 0, "%s", err.msg);
  CHECK(done[0] && done[3] && !done[4] && !done[6], "done flags survive: %d%d%d%d%d%d%d", done[0], done[1],
        done[2], done[3], done[4], done[5], done[6]);
  write_span(&mpi, f.id, &info, 1, CMDS_FC_RGB, 4, 7);
  write_span(&mpi, f.id, &info, 1, CMDS_FC_NORMALS, 0, 7);
  write_span(&mpi, f.id, &info, 0, CMDS_FC_RGB, 0, 3);
  write_span(&mpi, f.id, &info, 0, CMDS_FC_NORMALS, 0, 3);
  CHECK(cmds_h5_commit(&f, &err) == 0, "%s", err.msg);

  hid_t r;
  CHECK(cmds_h5_open_read(&r, path, mpi.comm, CMDS_FEATURE_CACHE_SCHEMA, CMDS_FEATURE_CACHE_VERSION, &err) == 0,
        "%s", err.msg);
  cmds_fc_info got;
  CHECK(cmds_fc_read_info(r, path, &got, &err) == 0 && got.n[0] == 3 && got.n[1] == 7 && got.nblocks == 3 &&
            got.blocks[2] == 11 && !strcmp(got.weights_id, "random:1"),
        "attributes read back: %s", err.msg);
  uint16_t *buf = malloc(sizeof(uint16_t) * 7 * ROW);
  for (int g = 0; g < 2; g++)
    for (int m = 0; m < 2; m++) {
      int64_t n = info.n[g];
      CHECK(cmds_fc_read_rows(r, g, (cmds_fc_modality)m, 0, n, buf, &err) == 0, "%s", err.msg);
      int64_t bad = 0;
      for (int64_t row = 0; row < n; row++)
        for (int i = 0; i < ROW; i++) bad += buf[row * ROW + i] != bits(g, m, row, i);
      CHECK(bad == 0, "group %d modality %d: %lld values differ", g, m, (long long)bad);
      CHECK(cmds_fc_read_done(r, g, (cmds_fc_modality)m, done, &err) == 0, "%s", err.msg);
      int all = 1;
      for (int64_t row = 0; row < n; row++) all &= done[row];
      CHECK(all, "all rows done");
    }
  CHECK(cmds_fc_read_rows(r, 1, CMDS_FC_NORMALS_EST, 0, 1, buf, &err) == CMDS_ESCHEMA,
        "an absent modality is named: %s", err.msg);
  free(buf);
  H5Fclose(r);
  int failed = check_failed_, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, mpi.comm);
  int rc = CHECK_DONE();
  return cmds_mpi_finalize(&mpi, any ? 1 : rc);
}
