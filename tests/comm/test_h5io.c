/* test_h5io: parallel HDF5 helpers under 1, 2 and 4 ranks.
 * - rows written collectively by every rank (uneven shares, ranks with nothing to write,
 *   several rounds) through the zstd filter read back exactly;
 * - the output appears only at commit (`.partial` before, final name after);
 * - abandon removes the partial file; a reader refuses a wrong schema name/version and a
 *   non-HDF5 file with the file's path in the message.
 * Usage: test_h5io OUTDIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "cmds_mpi.h"
#include "fsutil.h"
#include "h5io.h"

#define W 37
#define ROWS 11

static float value_at(int64_t row, int i) { return (float)(row * 1000 + i) * 0.25f; }

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_h5_quiet();
  if (argc < 2) CMDS_PANIC("usage: test_h5io OUTDIR");
  char path[1024], partial[1100], bogus[1100];
  snprintf(path, sizeof path, "%s/h5io_n%d.h5", argv[1], mpi.size);
  snprintf(partial, sizeof partial, "%s.partial", path);
  snprintf(bogus, sizeof bogus, "%s/not_hdf5_n%d.h5", argv[1], mpi.size);
  cmds_error err = {0};
  if (mpi.rank == 0) {
    CHECK(cmds_mkdir_p(argv[1], &err) == 0, "%s", err.msg);
    unlink(path);
  }
  MPI_Barrier(mpi.comm);

  cmds_h5file f;
  CHECK(cmds_h5_create(&f, path, mpi.comm, &err) == 0, "%s", err.msg);
  CHECK(cmds_h5_write_schema(f.id, "cmds.test", 3) == 0, "schema attrs");
  hsize_t dims[2] = {ROWS, W};
  hid_t d = cmds_h5_create_rows(f.id, "values", H5T_NATIVE_FLOAT, 2, dims, 5, &err);
  CHECK(d >= 0, "%s", err.msg);
  /* Rows in rounds of 2 per rank: every rank joins every round. */
  int64_t b, e;
  cmds_block_range(ROWS, mpi.rank, mpi.size, &b, &e);
  int64_t mine = e - b, most = 0;
  MPI_Allreduce(&mine, &most, 1, MPI_INT64_T, MPI_MAX, mpi.comm);
  float buf[2 * W];
  for (int64_t r0 = 0; r0 < most; r0 += 2) {
    int64_t cnt = mine - r0 < 2 ? mine - r0 : 2;
    if (cnt < 0) cnt = 0;
    for (int64_t k = 0; k < cnt; k++)
      for (int i = 0; i < W; i++) buf[k * W + i] = value_at(b + r0 + k, i);
    CHECK(cmds_h5_write_rows(d, H5T_NATIVE_FLOAT, cnt ? b + r0 : 0, cnt, buf, &err) == 0, "%s",
          err.msg);
  }
  H5Dclose(d);
  CHECK(cmds_is_file(partial) && !cmds_is_file(path), "before commit only the partial file exists");
  CHECK(cmds_h5_commit(&f, &err) == 0, "%s", err.msg);
  CHECK(cmds_is_file(path) && !cmds_is_file(partial), "after commit only the final file exists");

  /* Every rank reads everything back independently. */
  hid_t r;
  CHECK(cmds_h5_open_read(&r, path, mpi.comm, "cmds.test", 3, &err) == 0, "%s", err.msg);
  hid_t rd = H5Dopen2(r, "values", H5P_DEFAULT);
  float *all = malloc(sizeof(float) * ROWS * W);
  CHECK(cmds_h5_read_rows(rd, H5T_NATIVE_FLOAT, 0, ROWS, all, &err) == 0, "%s", err.msg);
  int bad = 0;
  for (int64_t row = 0; row < ROWS; row++)
    for (int i = 0; i < W; i++) bad += all[row * W + i] != value_at(row, i);
  CHECK(bad == 0, "%d values differ after the round trip", bad);
  hid_t dcpl = H5Dget_create_plist(rd);
  unsigned flags, cd[4];
  size_t ncd = 4;
  char fname[64];
  CHECK(H5Pget_nfilters(dcpl) == 1 &&
            H5Pget_filter2(dcpl, 0, &flags, &ncd, cd, sizeof fname, fname, NULL) == 32015 &&
            ncd >= 1 && cd[0] == 5,
        "dataset uses filter 32015 with level 5 as its first client value");
  H5Pclose(dcpl);
  free(all);
  H5Dclose(rd);
  H5Fclose(r);

  /* Wrong schema name and version. */
  CHECK(cmds_h5_open_read(&r, path, mpi.comm, "cmds.other", 3, &err) == CMDS_ESCHEMA &&
            strstr(err.msg, path) && strstr(err.msg, "cmds.other"),
        "wrong schema name refused: %s", err.msg);
  CHECK(cmds_h5_open_read(&r, path, mpi.comm, "cmds.test", 4, &err) == CMDS_ESCHEMA &&
            strstr(err.msg, "version 3"),
        "wrong version refused: %s", err.msg);
  /* A file that is not HDF5. */
  if (mpi.rank == 0) {
    FILE *fp = fopen(bogus, "w");
    fputs("hello", fp);
    fclose(fp);
  }
  MPI_Barrier(mpi.comm);
  CHECK(cmds_h5_open_read(&r, bogus, mpi.comm, "cmds.test", 3, &err) == CMDS_EINPUT &&
            strstr(err.msg, bogus),
        "non-HDF5 refused: %s", err.msg);

  /* Abandon removes the partial file and leaves the committed one alone. */
  char path2[1100];
  snprintf(path2, sizeof path2, "%s.second", path);
  CHECK(cmds_h5_create(&f, path2, mpi.comm, &err) == 0, "%s", err.msg);
  cmds_h5_abandon(&f);
  snprintf(partial, sizeof partial, "%s.partial", path2);
  CHECK(!cmds_is_file(partial) && !cmds_is_file(path2) && cmds_is_file(path), "abandon cleans up");

  int failed = check_failed_, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, mpi.comm);
  int rc = CHECK_DONE();
  return cmds_mpi_finalize(&mpi, any ? 1 : rc);
}
