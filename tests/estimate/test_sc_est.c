/* test_sc_est: the sample cache's estimated-normals API (comm/sample_cache.h) on any number
 * of ranks, without Marigold: copies a sample cache, checks normals_est is absent, prepares
 * it (flags 0, attributes), writes rows collectively in rounds the way cmds-estimate does
 * (rank r its contiguous block; here normals_est := the real normals, so a features run on
 * the result must give normals_est features equal to the normals features), and checks the
 * done flags, the status, the values read back, the identity string, a re-prepare (--force:
 * every flag back to 0) and a cache with normals_est in one group only (refused).
 *   test_sc_est SRC.h5 DST.h5 [--leave-last]   (--leave-last: the last test row stays undone) */
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

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_h5_quiet();
  if (argc < 3) {
    fprintf(stderr, "usage: test_sc_est SRC.h5 DST.h5 [--leave-last]\n");
    return cmds_mpi_finalize(&mpi, 2);
  }
  int leave_last = argc > 3 && !strcmp(argv[3], "--leave-last");
  const char *dst = argv[2];
  if (mpi.rank == 0) copy_bytes(argv[1], dst);
  MPI_Barrier(mpi.comm);
  cmds_error err = {0};
  hid_t f;
  int rc = cmds_sc_open_rw(&f, dst, mpi.comm, &err);
  CHECK(rc == 0, "%s", err.msg);
  if (rc) return cmds_mpi_finalize(&mpi, 1);
  int present = 1, complete = 1;
  cmds_sc_est_info info, got;
  CHECK(cmds_sc_est_status(f, dst, &present, &complete, &got, &err) == 0 && !present, "fresh cache: %s", err.msg);
  memset(&info, 0, sizeof info);
  snprintf(info.checkpoint, sizeof info.checkpoint, "fnv64:0123456789abcdef:42");
  snprintf(info.source, sizeof info.source, "dataset");
  snprintf(info.code_version, sizeof info.code_version, "test");
  info.steps = 4;
  info.processing_res = 768;
  info.ensemble = 1;
  info.seed = 7;
  CHECK(cmds_sc_est_prepare(f, dst, &info, 3, &err) == 0, "%s", err.msg);
  CHECK(cmds_sc_est_status(f, dst, &present, &complete, &got, &err) == 0 && present && !complete,
        "after prepare: present %d complete %d %s", present, complete, err.msg);
  char a[512], b[512];
  cmds_sc_est_identity(&info, a, sizeof a);
  cmds_sc_est_identity(&got, b, sizeof b);
  CHECK(!strcmp(a, b), "identity read back: '%s' vs '%s'", b, a);
  CHECK(!strcmp(a, "marigold fnv64:0123456789abcdef:42 steps=4 res=768 ensemble=1 seed=7 source=dataset"), "identity '%s'", a);
  char id[512];
  CHECK(cmds_sc_est_read_id(f, dst, id, sizeof id, &err) == 0 && !strcmp(id, a), "normals_est_id '%s'", id);

  for (int g = 0; g < 2; g++) {
    cmds_sc_group grp;
    CHECK(cmds_sc_group_open(f, g ? "test" : "support", dst, &grp, &err) == 0, "%s", err.msg);
    int64_t n = grp.n - (g == 1 && leave_last ? 1 : 0), b0, e0, most = 0;
    cmds_block_range(n, mpi.rank, mpi.size, &b0, &e0);
    int64_t mine = e0 - b0;
    MPI_Allreduce(&mine, &most, 1, MPI_INT64_T, MPI_MAX, mpi.comm);
    cmds_sample_batch sb;
    cmds_sample_batch_alloc(&sb, 1, grp.size);
    for (int64_t i = 0; i < most; i++) {
      int has = i < mine;
      if (has) CHECK(cmds_sc_group_read(&grp, b0 + i, 1, &sb, &err) == 0, "%s", err.msg);
      CHECK(cmds_sc_est_write_rows(f, g, has ? b0 + i : 0, has, sb.normals, &err) == 0, "%s", err.msg);
    }
    uint8_t *done = calloc((size_t)grp.n + 1, 1);
    CHECK(cmds_sc_est_read_done(f, g, done, &err) == 0, "%s", err.msg);
    int64_t set = 0;
    for (int64_t i = 0; i < grp.n; i++) set += done[i];
    CHECK(set == n, "group %d: %lld of %lld flags set, want %lld", g, (long long)set, (long long)grp.n, (long long)n);
    /* values back: equal to the real normals of each written row */
    size_t px = (size_t)grp.size * (size_t)grp.size * 3;
    float *est = malloc(sizeof(float) * px);
    int64_t bad = 0;
    for (int64_t r = 0; r < n; r++) {
      CHECK(cmds_sc_group_read(&grp, r, 1, &sb, &err) == 0, "%s", err.msg);
      CHECK(cmds_sc_est_read_rows(f, g, r, 1, est, &err) == 0, "%s", err.msg);
      bad += memcmp(est, sb.normals, sizeof(float) * px) != 0;
    }
    CHECK(bad == 0, "group %d: %lld rows read back differ", g, (long long)bad);
    free(est);
    free(done);
    cmds_sample_batch_free(&sb);
    cmds_sc_group_close(&grp);
  }
  CHECK(cmds_sc_est_status(f, dst, &present, &complete, &got, &err) == 0 && present && complete == !leave_last,
        "after writing: complete %d (leave_last %d) %s", complete, leave_last, err.msg);
  H5Fclose(f);
  MPI_Barrier(mpi.comm);

  /* A scratch copy for the destructive checks: re-prepare resets every flag; one group only is refused. */
  char scratch[4200];
  snprintf(scratch, sizeof scratch, "%s.scratch", dst);
  if (mpi.rank == 0) copy_bytes(dst, scratch);
  MPI_Barrier(mpi.comm);
  CHECK(cmds_sc_open_rw(&f, scratch, mpi.comm, &err) == 0, "%s", err.msg);
  info.seed = 8;
  CHECK(cmds_sc_est_prepare(f, scratch, &info, 3, &err) == 0, "%s", err.msg);
  CHECK(cmds_sc_est_status(f, scratch, &present, &complete, &got, &err) == 0 && present && !complete && got.seed == 8,
        "re-prepared: present %d complete %d seed %lld", present, complete, (long long)got.seed);
  uint8_t done1[4096];
  CHECK(cmds_sc_est_read_done(f, 1, done1, &err) == 0 && done1[0] == 0, "re-prepare leaves row 0 done");
  CHECK(H5Ldelete(f, "support/normals_est", H5P_DEFAULT) >= 0, "delete");
  int src = cmds_sc_est_status(f, scratch, &present, &complete, &got, &err);
  CHECK(src == CMDS_ESCHEMA && strstr(err.msg, "normals_est is in /test but not in /support"), "one group only: %d %s",
        src, err.msg);
  H5Fclose(f);
  MPI_Barrier(mpi.comm);
  if (mpi.rank == 0) remove(scratch);
  int failed = 0;
  MPI_Allreduce(&check_failed_, &failed, 1, MPI_INT, MPI_SUM, mpi.comm);
  if (mpi.rank == 0) printf("%d passed, %d failed (all ranks: %d failed)\n", check_passed_, check_failed_, failed);
  return cmds_mpi_finalize(&mpi, failed ? 1 : 0);
}
