/* check_estimate: assertions on the files cmds-estimate and cmds-features leave.
 *   check_estimate unit CACHE.h5          normals_est complete in both groups, every defined
 *                                         vector (|n| > 0) of unit length (|1 - |n|| <= 1e-4),
 *                                         at least 99% defined, attributes readable
 *   check_estimate absent CACHE.h5        no normals_est
 *   check_estimate same A.h5 B.h5         normals_est bit-identical in both groups
 *   check_estimate differ A.h5 B.h5       normals_est differs somewhere
 *   check_estimate fc-copy FEATURES.h5    the feature cache has normals_est (bit 4, its
 *                                         normals_est_id set) equal to the normals features
 *                                         (what a cache with normals_est := normals must give)
 *   check_estimate fc-none FEATURES.h5    the feature cache has no normals_est
 *   check_estimate fc-est FEATURES.h5 CACHE.h5 [STREAMS.h5]   the feature cache has normals_est
 *                                         made from the sample cache's (the same normals_est_id),
 *                                         and so do cmds-score's streams when given */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cmds_mpi.h"
#include "feature_cache.h"
#include "h5io.h"
#include "sample_cache.h"

static hid_t open_sc(const char *p) {
  cmds_error err = {0};
  hid_t f;
  int rc = cmds_h5_open_read(&f, p, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, &err);
  CHECK(rc == 0, "%s", err.msg);
  return rc ? -1 : f;
}

/* normals_est of group g: (n, S, S, 3), malloc'd */
static float *read_est(hid_t f, int g, int64_t *n, int *S) {
  cmds_error err = {0};
  hsize_t d[8];
  int nd = cmds_h5_dataset_shape(f, g ? "test/normals_est" : "support/normals_est", d, 8);
  CHECK(nd == 4 && d[1] == d[2] && d[3] == 3, "group %d: normals_est shape", g);
  if (nd != 4) return NULL;
  *n = (int64_t)d[0];
  *S = (int)d[1];
  float *v = malloc(sizeof(float) * (size_t)(*n ? *n : 1) * d[1] * d[2] * 3);
  CHECK(cmds_sc_est_read_rows(f, g, 0, *n, v, &err) == 0, "%s", err.msg);
  return v;
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_h5_quiet();
  cmds_error err = {0};
  const char *mode = argc > 2 ? argv[1] : "";
  if (!strcmp(mode, "unit") || !strcmp(mode, "absent")) {
    hid_t f = open_sc(argv[2]);
    int present = 0, complete = 0;
    cmds_sc_est_info info;
    CHECK(f >= 0 && cmds_sc_est_status(f, argv[2], &present, &complete, &info, &err) == 0, "%s", err.msg);
    if (!strcmp(mode, "absent")) {
      CHECK(!present, "%s has normals_est", argv[2]);
    } else {
      CHECK(present && complete, "%s: normals_est present %d complete %d", argv[2], present, complete);
      CHECK(info.steps > 0 && info.ensemble >= 1 && info.checkpoint[0], "attributes: steps %lld ensemble %lld checkpoint '%s'",
            (long long)info.steps, (long long)info.ensemble, info.checkpoint);
      int64_t defined = 0, total = 0, off = 0;
      double worst = 0;
      for (int g = 0; g < 2 && present; g++) {
        int64_t n;
        int S;
        float *v = read_est(f, g, &n, &S);
        for (int64_t i = 0; v && i < n * S * S; i++) {
          double l = sqrt((double)v[3 * i] * v[3 * i] + (double)v[3 * i + 1] * v[3 * i + 1] + (double)v[3 * i + 2] * v[3 * i + 2]);
          total++;
          if (l > 0) {
            defined++;
            off += fabs(l - 1) > 1e-4;
            if (fabs(l - 1) > worst) worst = fabs(l - 1);
          }
        }
        free(v);
      }
      CHECK(total > 0 && off == 0, "%lld of %lld defined normals are not unit (worst | |n| - 1 | = %.3g)", (long long)off,
            (long long)defined, worst);
      CHECK(defined >= 0.99 * (double)total, "only %lld of %lld pixels defined", (long long)defined, (long long)total);
      printf("%s: %lld normals, %lld defined, worst | |n| - 1 | = %.3g\n", argv[2], (long long)total, (long long)defined, worst);
    }
    if (f >= 0) H5Fclose(f);
  } else if ((!strcmp(mode, "same") || !strcmp(mode, "differ")) && argc > 3) {
    hid_t a = open_sc(argv[2]), b = open_sc(argv[3]);
    int64_t ndiff = 0, count = 0;
    double worst = 0;
    for (int g = 0; g < 2 && a >= 0 && b >= 0; g++) {
      int64_t na, nb;
      int Sa, Sb;
      float *va = read_est(a, g, &na, &Sa), *vb = read_est(b, g, &nb, &Sb);
      CHECK(va && vb && na == nb && Sa == Sb, "group %d: shapes differ", g);
      for (int64_t i = 0; va && vb && na == nb && Sa == Sb && i < na * Sa * Sa * 3; i++) {
        count++;
        ndiff += memcmp(&va[i], &vb[i], sizeof(float)) != 0;
        if (fabs((double)va[i] - vb[i]) > worst) worst = fabs((double)va[i] - vb[i]);
      }
      free(va);
      free(vb);
    }
    if (!strcmp(mode, "same")) CHECK(count > 0 && ndiff == 0, "%lld of %lld values differ (max %.3g)", (long long)ndiff, (long long)count, worst);
    else CHECK(ndiff > 0, "all %lld values equal", (long long)count);
    printf("%s vs %s: %lld of %lld values differ, max |diff| %.3g\n", argv[2], argv[3], (long long)ndiff, (long long)count, worst);
    if (a >= 0) H5Fclose(a);
    if (b >= 0) H5Fclose(b);
  } else if (!strcmp(mode, "fc-est") && argc > 3) {
    hid_t f, c = open_sc(argv[3]);
    cmds_fc_info fi;
    char id[512] = "";
    int rc = cmds_h5_open_read(&f, argv[2], MPI_COMM_SELF, CMDS_FEATURE_CACHE_SCHEMA, CMDS_FEATURE_CACHE_VERSION, &err);
    if (!rc) rc = cmds_fc_read_info(f, argv[2], &fi, &err);
    CHECK(rc == 0 && c >= 0 && cmds_sc_est_read_id(c, argv[3], id, sizeof id, &err) == 0, "%s", err.msg);
    CHECK(!rc && (fi.modalities & (1 << CMDS_FC_NORMALS_EST)) && id[0] && !strcmp(id, fi.normals_est_id),
          "feature cache modalities %lld, normals_est_id '%s'; sample cache '%s'", rc ? -1LL : (long long)fi.modalities,
          rc ? "" : fi.normals_est_id, id);
    if (argc > 4) { /* the streams file records the same identity */
      hid_t s = -1;
      char sid[512] = "";
      int opened = !cmds_h5_open_read(&s, argv[4], MPI_COMM_SELF, "cmds.streams", 1, &err);
      int src = opened ? cmds_h5_attr_read_str(s, "normals_est_id", sid, sizeof sid, argv[4], &err) : 1;
      CHECK(!src && !strcmp(sid, id), "%s: normals_est_id '%s', sample cache '%s' (%s)", argv[4], sid, id,
            src ? err.msg : "");
      if (opened) H5Fclose(s);
    }
    if (!rc) H5Fclose(f);
    if (c >= 0) H5Fclose(c);
  } else if (!strcmp(mode, "fc-copy") || !strcmp(mode, "fc-none")) {
    hid_t f;
    cmds_fc_info fi;
    int rc = cmds_h5_open_read(&f, argv[2], MPI_COMM_SELF, CMDS_FEATURE_CACHE_SCHEMA, CMDS_FEATURE_CACHE_VERSION, &err);
    if (!rc) rc = cmds_fc_read_info(f, argv[2], &fi, &err);
    CHECK(rc == 0, "%s", err.msg);
    int has = !rc && (fi.modalities & (1 << CMDS_FC_NORMALS_EST));
    if (!strcmp(mode, "fc-none")) {
      CHECK(!rc && !has && !fi.normals_est_id[0], "normals_est in %s (modalities %lld)", argv[2], (long long)fi.modalities);
    } else {
      CHECK(has && fi.normals_est_id[0], "modalities %lld, normals_est_id '%s'", (long long)fi.modalities, fi.normals_est_id);
      size_t row = has ? (size_t)(fi.nblocks * fi.grid * fi.grid * fi.width) : 0;
      for (int g = 0; g < 2 && has; g++) {
        int64_t n = fi.n[g];
        uint16_t *x = malloc(sizeof(uint16_t) * row * (size_t)(n ? n : 1)), *y = malloc(sizeof(uint16_t) * row * (size_t)(n ? n : 1));
        CHECK(cmds_fc_read_rows(f, g, CMDS_FC_NORMALS, 0, n, x, &err) == 0, "%s", err.msg);
        CHECK(cmds_fc_read_rows(f, g, CMDS_FC_NORMALS_EST, 0, n, y, &err) == 0, "%s", err.msg);
        CHECK(memcmp(x, y, sizeof(uint16_t) * row * (size_t)n) == 0, "group %d: normals_est features differ from normals features", g);
        free(x);
        free(y);
      }
      printf("%s: normals_est features equal the normals features; normals_est_id '%s'\n", argv[2], fi.normals_est_id);
    }
    if (!rc) H5Fclose(f);
  } else {
    fprintf(stderr, "usage: check_estimate unit|absent FILE | same|differ A B | fc-copy|fc-none FEATURES | fc-est FEATURES CACHE [STREAMS]\n");
    check_failed_++;
  }
  if (check_failed_) fprintf(stderr, "%d passed, %d failed\n", check_passed_, check_failed_);
  return cmds_mpi_finalize(&mpi, check_failed_ ? 1 : 0);
}
