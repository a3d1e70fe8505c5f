/* check_features: a feature cache written by cmds-features from the h5py-written sample
 * cache fixture agrees with timm run on the same samples (tests/fixtures/gen_features.py):
 * rgb and normals modalities, blocks 4/7/11, patch tokens, to float16 precision
 * (|got - want| <= 2e-3 + 2e-3 |want|). Usage: check_features FEATURES.h5 FIXTURE_DIR */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "cmds_mpi.h"
#include "feature_cache.h"
#include "npy.h"

static float half_to_float(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? INFINITY : ldexpf((float)(m | 1024), e - 25);
  return s ? -v : v;
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_error err = {0};
  hid_t f;
  CHECK(cmds_h5_open_read(&f, argv[1], MPI_COMM_SELF, CMDS_FEATURE_CACHE_SCHEMA, CMDS_FEATURE_CACHE_VERSION, &err) == 0,
        "%s", err.msg);
  const char *names[2] = {"rgb.npy", "normals.npy"};
  for (int m = 0; m < 2; m++) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", argv[2], names[m]);
    npy_array want;
    if (npy_load(p, &want)) return 1;
    uint16_t *got = malloc(sizeof(uint16_t) * (size_t)want.count);
    CHECK(cmds_fc_read_rows(f, 1, (cmds_fc_modality)m, 0, want.shape[0], got, &err) == 0, "%s", err.msg);
    int64_t bad = 0;
    double worst = 0;
    for (int64_t i = 0; i < want.count; i++) {
      double g = half_to_float(got[i]), w = ((float *)want.data)[i], d = fabs(g - w);
      bad += !(d <= 2e-3 + 2e-3 * fabs(w));
      if (d > worst) worst = d;
    }
    CHECK(bad == 0, "%s: %lld of %lld values off timm's (worst %.3g)", names[m], (long long)bad, (long long)want.count,
          worst);
    free(got);
    npy_free(&want);
  }
  H5Fclose(f);
  int rc = CHECK_DONE();
  return cmds_mpi_finalize(&mpi, rc);
}
