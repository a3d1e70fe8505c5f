/* test_cache_interop: a sample cache written by h5py + hdf5plugin (zstd, filter 32015;
 * tests/fixtures/gen_cache.py) reads back through comm/sample_cache with the exact values
 * of its .npy sidecars, and its attributes (fixed and variable-length strings) parse. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "cmds_mpi.h"
#include "h5io.h"
#include "npy.h"
#include "sample_cache.h"

static void compare(const char *dir, const char *name, const void *data, int is_float) {
  char p[1024];
  snprintf(p, sizeof p, "%s/%s.npy", dir, name);
  npy_array a;
  if (npy_load(p, &a)) {
    CHECK(0, "cannot load %s", p);
    return;
  }
  int bad = 0;
  for (int64_t i = 0; i < a.count; i++) {
    double got = is_float == 2   ? ((const double *)data)[i]
                 : is_float == 1 ? ((const float *)data)[i]
                                 : ((const uint8_t *)data)[i];
    bad += got != npy_get(&a, i);
  }
  CHECK(bad == 0, "%s: %d of %lld values differ", name, bad, (long long)a.count);
  npy_free(&a);
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_h5_quiet();
  const char *dir = argv[1];
  char path[1024];
  snprintf(path, sizeof path, "%s/h5py_zstd.h5", dir);
  cmds_error err = {0};
  hid_t f;
  CHECK(cmds_h5_open_read(&f, path, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA,
                          CMDS_SAMPLE_CACHE_VERSION, &err) == 0, "%s", err.msg);
  cmds_sc_info info;
  CHECK(cmds_sc_read_info(f, path, &info, &err) == 0, "%s", err.msg);
  CHECK(!strcmp(info.dataset, "mvtec3d") && !strcmp(info.category, "bagel") && info.resolution == 16,
        "attributes: %s %s %lld", info.dataset, info.category, (long long)info.resolution);
  CHECK(info.prep_config && strstr(info.prep_config, "h5py") != NULL, "variable-length string attribute");
  cmds_sc_info_free(&info);
  cmds_sc_group g;
  CHECK(cmds_sc_group_open(f, "test", path, &g, &err) == 0, "%s", err.msg);
  CHECK(g.n == 3 && g.size == 16, "test group shape n=%lld S=%d", (long long)g.n, g.size);
  cmds_sample_batch b;
  cmds_sample_batch_alloc(&b, 3, 16);
  CHECK(cmds_sc_group_read(&g, 0, 3, &b, &err) == 0, "%s", err.msg);
  compare(dir, "rgb", b.rgb, 0);
  compare(dir, "xyz", b.xyz, 1);
  compare(dir, "normals", b.normals, 1);
  compare(dir, "fg_mask", b.fg_mask, 0);
  compare(dir, "gt_mask", b.gt_mask, 0);
  compare(dir, "label", b.label, 0);
  compare(dir, "plane", b.plane, 2);
  CHECK(!strcmp(b.defect_type + CMDS_SC_DEFECT_LEN, "crack"), "defect_type[1] = %s",
        b.defect_type + CMDS_SC_DEFECT_LEN);
  CHECK(!strcmp(b.sample_id + 2 * CMDS_SC_ID_LEN, "test/hole/000"), "sample_id[2]");
  cmds_sc_group_close(&g);
  CHECK(cmds_sc_group_open(f, "support", path, &g, &err) == 0 && g.n == 0, "empty support group");
  cmds_sc_group_close(&g);
  CHECK(cmds_sc_group_open(f, "train", path, &g, &err) == CMDS_ESCHEMA && strstr(err.msg, "/train"),
        "missing group named: %s", err.msg);
  cmds_sample_batch_free(&b);
  H5Fclose(f);
  int rc = CHECK_DONE();
  return cmds_mpi_finalize(&mpi, rc);
}
