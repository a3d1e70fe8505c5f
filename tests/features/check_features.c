/* check_features: a feature cache written by cmds-features from the h5py-written sample
 * cache fixture agrees with timm run on the same samples (tests/fixtures/gen_features.py):
 * rgb and normals modalities, blocks 4/7/11, patch tokens, to float16 precision
 * (|got - want| <= 2e-3 + 2e-3 |want|). Usage: check_features FEATURES.h5 FIXTURE_DIR
 *
 * check_features same A.h5 B.h5 [GROUP/MODALITY ...]: two feature caches hold bit-identical
 * rows and done flags (every flag set) in the datasets named (e.g. support/rgb), or, with
 * none named, have the same attributes (cmds_fc_same_info) and bit-identical datasets
 * throughout (the extension tests: extended == from scratch, kept rows untouched). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cmds_mpi.h"
#include "feature_cache.h"
#include "npy.h"

static float half_to_float(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? INFINITY : ldexpf((float)(m | 1024), e - 25);
  return s ? -v : v;
}

static const char *const groups[CMDS_FC_GROUPS] = {"support", "test", "augmented"};

/* Rows and done flags of group g, modality m: bit-identical in a and b, every flag set. */
static void same_dataset(hid_t a, hid_t b, const cmds_fc_info *ia, const cmds_fc_info *ib, int g, cmds_fc_modality m) {
  cmds_error err = {0};
  const char *mn = cmds_fc_modality_name(m);
  int ha = cmds_fc_group_has(ia, g, m), hb = cmds_fc_group_has(ib, g, m);
  CHECK(ha && hb, "/%s/%s: in the first file %d, in the second %d", groups[g], mn, ha, hb);
  if (!ha || !hb) return;
  CHECK(ia->n[g] == ib->n[g], "/%s/%s: %lld rows against %lld", groups[g], mn, (long long)ia->n[g], (long long)ib->n[g]);
  if (ia->n[g] != ib->n[g]) return;
  int64_t n = ia->n[g];
  size_t row = (size_t)(ia->nblocks * ia->grid * ia->grid * ia->width);
  CHECK(row == (size_t)(ib->nblocks * ib->grid * ib->grid * ib->width), "/%s/%s: row sizes differ", groups[g], mn);
  uint16_t *ra = malloc(2 * row * (size_t)(n ? n : 1)), *rb = malloc(2 * row * (size_t)(n ? n : 1));
  uint8_t *da = malloc((size_t)(n ? n : 1)), *db = malloc((size_t)(n ? n : 1));
  int rc = cmds_fc_read_rows(a, g, m, 0, n, ra, &err);
  if (!rc) rc = cmds_fc_read_rows(b, g, m, 0, n, rb, &err);
  if (!rc) rc = cmds_fc_read_done(a, g, m, da, &err);
  if (!rc) rc = cmds_fc_read_done(b, g, m, db, &err);
  CHECK(rc == 0, "/%s/%s: %s", groups[g], mn, err.msg);
  if (!rc) {
    int64_t diff = 0, undone = 0;
    for (int64_t i = 0; i < n; i++) {
      diff += memcmp(ra + (size_t)i * row, rb + (size_t)i * row, 2 * row) != 0;
      undone += !da[i] || !db[i];
    }
    CHECK(diff == 0, "/%s/%s: %lld of %lld rows differ", groups[g], mn, (long long)diff, (long long)n);
    CHECK(undone == 0, "/%s/%s: %lld rows not done", groups[g], mn, (long long)undone);
  }
  free(ra);
  free(rb);
  free(da);
  free(db);
}

static int same(int argc, char **argv) {
  cmds_error err = {0};
  hid_t f[2];
  cmds_fc_info info[2];
  for (int i = 0; i < 2; i++) {
    int rc = cmds_h5_open_read(&f[i], argv[2 + i], MPI_COMM_SELF, CMDS_FEATURE_CACHE_SCHEMA, CMDS_FEATURE_CACHE_VERSION,
                               &err);
    if (!rc) rc = cmds_fc_read_info(f[i], argv[2 + i], &info[i], &err);
    CHECK(rc == 0, "%s", err.msg);
    if (rc) return CHECK_DONE();
  }
  if (argc <= 4) {
    CHECK(cmds_fc_same_info(&info[0], &info[1]), "attributes differ (modalities %lld / %lld, normals_est_id '%s' / '%s', "
          "augmented rows %lld / %lld, augmented_id '%s' / '%s')", (long long)info[0].modalities,
          (long long)info[1].modalities, info[0].normals_est_id, info[1].normals_est_id, (long long)info[0].n[2],
          (long long)info[1].n[2], info[0].augmented_id, info[1].augmented_id);
    for (int g = 0; g < CMDS_FC_GROUPS; g++)
      for (int m = 0; m < CMDS_FC_NMOD; m++)
        if (cmds_fc_group_has(&info[0], g, (cmds_fc_modality)m) || cmds_fc_group_has(&info[1], g, (cmds_fc_modality)m))
          same_dataset(f[0], f[1], &info[0], &info[1], g, (cmds_fc_modality)m);
  }
  for (int i = 4; i < argc; i++) {
    int g = -1, m = -1;
    for (int k = 0; k < CMDS_FC_GROUPS; k++)
      for (int j = 0; j < CMDS_FC_NMOD; j++) {
        char name[64];
        snprintf(name, sizeof name, "%s/%s", groups[k], cmds_fc_modality_name((cmds_fc_modality)j));
        if (!strcmp(name, argv[i])) g = k, m = j;
      }
    CHECK(g >= 0, "unknown dataset %s (expected GROUP/MODALITY)", argv[i]);
    if (g >= 0) same_dataset(f[0], f[1], &info[0], &info[1], g, (cmds_fc_modality)m);
  }
  H5Fclose(f[0]);
  H5Fclose(f[1]);
  return CHECK_DONE();
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_error err = {0};
  if (argc >= 4 && !strcmp(argv[1], "same")) return cmds_mpi_finalize(&mpi, same(argc, argv));
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
