/* aug_tool: puts an augmented group into a sample cache the way cmds-augment does (a copy
 * written collectively with cmds_sc_aug_write, renamed over the cache), without Stable
 * Diffusion, and checks what estimate and features make of it. Shared by the estimate,
 * features and train tests.
 *   aug_tool add CACHE.h5 N ID [--copy] [--shots K1,K2..]   N rows per k (default: k = K, the
 *                                   support count): row i N + j (k = K_i) from support row
 *                                   j % k, mirrored left-right and shifted by 37 (i N + j) grey
 *                                   levels (so every row differs), or (--copy) the support
 *                                   row's RGB as it is; sample_id augmented/k<k>/<support
 *                                   id>/<j>, as cmds-augment writes; run under mpiexec
 *   aug_tool fake-est CACHE.h5      normals_est without Marigold (under mpiexec, rank 0 writes):
 *                                   support/test := their real normals (when absent); augmented
 *                                   row := its source row's real normals, mirrored like the RGB
 *                                   (x component negated) unless the RGB is an exact copy
 *   aug_tool fc-copy FEATURES.h5 K N   augmented row j's rgb and normals_est features equal
 *                                   support row j % K's (|a - b| <= 1e-3 + 1e-2 |b|): the
 *                                   rows of a --copy cache are encoded from the right data
 *   aug_tool remove CACHE.h5        n = 0: the group and augmented_id removed
 *   aug_tool state CACHE.h5 STATE   the augmented group's normals_est state is STATE (absent,
 *                                   stale, partial, complete); with complete, every defined
 *                                   vector is unit length and at least 99% are defined
 *   aug_tool same A.h5 B.h5         augmented normals_est bit-identical (present in both)
 *   aug_tool fc FEATURES.h5 CACHE.h5 N   the feature cache has N augmented rows (rgb and
 *                                   normals_est, no real normals) and the cache's augmented_id;
 *                                   N = 0: no augmented group and augmented_id "" */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cmds_mpi.h"
#include "feature_cache.h"
#include "h5io.h"
#include "sample_cache.h"
#include "tensor.h"

static hid_t open_sc(const char *p) {
  cmds_error err = {0};
  hid_t f;
  int rc = cmds_h5_open_read(&f, p, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, &err);
  CHECK(rc == 0, "%s", err.msg);
  return rc ? -1 : f;
}

static int add(const cmds_mpi *mpi, const char *path, int64_t per_k, const char *id, int copy, const char *shots_s) {
  cmds_error err = {0};
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.aug_tool.tmp", path);
  int rc = CMDS_OK;
  if (mpi->rank == 0) {
    FILE *in = fopen(path, "rb"), *out = fopen(tmp, "wb");
    char buf[65536];
    size_t k;
    rc = in && out ? CMDS_OK : CMDS_EIO;
    while (!rc && (k = fread(buf, 1, sizeof buf, in)) > 0) rc = fwrite(buf, 1, k, out) == k ? CMDS_OK : CMDS_EIO;
    if (in) fclose(in);
    if (out) fclose(out);
  }
  MPI_Bcast(&rc, 1, MPI_INT, 0, mpi->comm);
  CHECK(rc == 0, "copy %s -> %s", path, tmp);
  if (rc) return rc;
  hid_t f;
  rc = cmds_sc_open_rw(&f, tmp, mpi->comm, &err);
  CHECK(rc == 0, "%s", err.msg);
  if (rc) return rc;
  cmds_sc_group sup;
  rc = cmds_sc_group_open(f, "support", tmp, &sup, &err);
  CHECK(rc == 0 && sup.n > 0, "support: %s", err.msg);
  if (rc || sup.n == 0) return CMDS_EINPUT;
  const int S = sup.size;
  const size_t px = (size_t)S * (size_t)S;
  int64_t shots[16];
  int nshots = 0;
  for (const char *p = shots_s; p && *p && nshots < 16;) {
    char *end = NULL;
    shots[nshots++] = strtoll(p, &end, 10);
    p = *end ? end + 1 : end;
  }
  if (!nshots) shots[nshots++] = sup.n;
  const int64_t n = per_k * nshots;
  cmds_sample_batch src, b;
  cmds_sample_batch_alloc(&src, sup.n, S);
  cmds_sample_batch_alloc(&b, n > 0 ? n : 1, S);
  CHECK(cmds_sc_group_read(&sup, 0, sup.n, &src, &err) == 0, "%s", err.msg);
  for (int64_t r = 0; r < n; r++) {
    const int64_t k = shots[r / per_k], jk = r % per_k, s = jk % k, j = r;
    for (int y = 0; y < S; y++)
      for (int x = 0; x < S; x++)
        for (int c = 0; c < 3; c++)
          b.rgb[(size_t)j * px * 3 + ((size_t)y * S + x) * 3 + c] =
              copy ? src.rgb[(size_t)s * px * 3 + ((size_t)y * S + x) * 3 + c]
                   : (uint8_t)((src.rgb[(size_t)s * px * 3 + ((size_t)y * S + (S - 1 - x)) * 3 + c] + 37 * j) & 255);
    snprintf(b.defect_type + (size_t)j * CMDS_SC_DEFECT_LEN, CMDS_SC_DEFECT_LEN, "%s", CMDS_SC_AUG_DEFECT);
    char sid[CMDS_SC_ID_LEN + 1];
    memcpy(sid, src.sample_id + (size_t)s * CMDS_SC_ID_LEN, CMDS_SC_ID_LEN);
    sid[CMDS_SC_ID_LEN] = 0;
    snprintf(b.sample_id + (size_t)j * CMDS_SC_ID_LEN, CMDS_SC_ID_LEN, "augmented/k%lld/%.60s/%lld", (long long)k, sid,
             (long long)jk);
    memcpy(b.native_hw + j * 2, src.native_hw + s * 2, 2 * sizeof(int32_t));
    memcpy(b.pad + j * 3, src.pad + s * 3, 3 * sizeof(int32_t));
  }
  cmds_sc_group_close(&sup);
  rc = cmds_sc_aug_write(f, tmp, n, S, mpi->rank == 0 ? &b : NULL, id, 3, &err);
  CHECK(rc == 0, "%s", err.msg);
  H5Fclose(f);
  MPI_Barrier(mpi->comm);
  if (!rc && mpi->rank == 0) CHECK(rename(tmp, path) == 0, "rename %s", tmp);
  cmds_sample_batch_free(&src);
  cmds_sample_batch_free(&b);
  return rc;
}

static int remove_group(const cmds_mpi *mpi, const char *path) {
  cmds_error err = {0};
  hid_t f;
  int rc = cmds_sc_open_rw(&f, path, mpi->comm, &err);
  hsize_t d[8];
  if (!rc) rc = cmds_h5_dataset_shape(f, "support/rgb", d, 8) == 4 ? CMDS_OK : CMDS_ESCHEMA;
  if (!rc) rc = cmds_sc_aug_write(f, path, 0, (int)d[1], NULL, "", 3, &err);
  CHECK(rc == 0, "%s", err.msg);
  if (f >= 0) H5Fclose(f);
  return rc;
}

/* Collective: every row of group g gets normals_est from fill(row) on rank 0. */
static int fake_est(const cmds_mpi *mpi, const char *path) {
  cmds_error err = {0};
  hid_t f;
  int rc = cmds_sc_open_rw(&f, path, mpi->comm, &err);
  CHECK(rc == 0, "%s", err.msg);
  if (rc) return rc;
  int present = 0, complete = 0;
  cmds_sc_est_info info;
  memset(&info, 0, sizeof info);
  rc = cmds_sc_est_status(f, path, &present, &complete, &info, &err);
  if (!rc && !present) {
    snprintf(info.checkpoint, sizeof info.checkpoint, "fake:aug_tool");
    snprintf(info.source, sizeof info.source, "cache");
    snprintf(info.code_version, sizeof info.code_version, "test");
    info.steps = 1;
    info.ensemble = 1;
    rc = cmds_sc_est_prepare(f, path, &info, 3, &err);
  }
  int64_t naug = 0;
  char aid[CMDS_SC_AUG_ID_LEN];
  if (!rc) rc = cmds_sc_aug_status(f, path, &naug, aid, sizeof aid, &err);
  if (!rc && naug > 0) rc = cmds_sc_est_aug_prepare(f, path, 3, &err);
  CHECK(rc == 0, "%s", err.msg);
  cmds_sc_group sup;
  if (!rc) rc = cmds_sc_group_open(f, "support", path, &sup, &err);
  const int S = sup.size;
  const size_t px = (size_t)S * (size_t)S;
  cmds_sample_batch row, src;
  cmds_sample_batch_alloc(&row, 1, S);
  cmds_sample_batch_alloc(&src, 1, S);
  float *est = malloc(sizeof(float) * px * 3);
  for (int g = 0; g < 3 && !rc; g++) {
    if (g == 2 && naug == 0) continue;
    if (g < 2 && present) continue;
    cmds_sc_group grp;
    rc = cmds_sc_group_open(f, cmds_sc_group_name(g), path, &grp, &err);
    for (int64_t r = 0; r < grp.n && !rc; r++) {
      int mine = mpi->rank == 0;
      if (mine) rc = cmds_sc_group_read(&grp, r, 1, &row, &err);
      if (mine && !rc && g < 2) memcpy(est, row.normals, sizeof(float) * px * 3);
      if (mine && !rc && g == 2) {
        /* the source row: the support row whose id is inside augmented/k<k>/<id>/<j> */
        char id[CMDS_SC_ID_LEN + 1], sid[CMDS_SC_ID_LEN + 1];
        memcpy(id, row.sample_id, CMDS_SC_ID_LEN);
        id[CMDS_SC_ID_LEN] = 0;
        int found = 0;
        CHECK(cmds_sc_aug_parse_id(id, NULL, sid, sizeof sid, NULL), "augmented sample id '%s'", id);
        for (int64_t i = 0; i < sup.n && !rc && !found; i++) {
          rc = cmds_sc_group_read(&sup, i, 1, &src, &err);
          found = !rc && !strncmp(src.sample_id, sid, CMDS_SC_ID_LEN);
        }
        CHECK(found, "source of %s", id);
        int copy = !memcmp(src.rgb, row.rgb, px * 3);
        for (int y = 0; y < S; y++)
          for (int x = 0; x < S; x++)
            for (int c = 0; c < 3; c++) {
              float v = src.normals[((size_t)y * S + (copy ? x : S - 1 - x)) * 3 + c];
              est[((size_t)y * S + x) * 3 + c] = !copy && c == 0 ? -v : v;
            }
      }
      if (!rc) rc = cmds_sc_est_write_rows(f, g, mine ? r : 0, mine, est, &err);
    }
    cmds_sc_group_close(&grp);
  }
  CHECK(rc == 0, "%s", err.msg);
  free(est);
  cmds_sample_batch_free(&row);
  cmds_sample_batch_free(&src);
  cmds_sc_group_close(&sup);
  H5Fclose(f);
  return rc;
}

static float *read_aug_est(hid_t f, int64_t *n, int *S) {
  cmds_error err = {0};
  hsize_t d[8];
  int nd = cmds_h5_dataset_shape(f, "augmented/normals_est", d, 8);
  CHECK(nd == 4 && d[1] == d[2] && d[3] == 3, "augmented/normals_est shape");
  if (nd != 4) return NULL;
  *n = (int64_t)d[0];
  *S = (int)d[1];
  float *v = malloc(sizeof(float) * (size_t)(*n ? *n : 1) * d[1] * d[2] * 3);
  CHECK(cmds_sc_est_read_rows(f, CMDS_SC_AUGMENTED, 0, *n, v, &err) == 0, "%s", err.msg);
  return v;
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_h5_quiet();
  cmds_error err = {0};
  const char *mode = argc > 2 ? argv[1] : "";
  if (!strcmp(mode, "add") && argc > 4) {
    int copy = 0;
    const char *shots = NULL;
    for (int i = 5; i < argc; i++) {
      if (!strcmp(argv[i], "--copy")) copy = 1;
      else if (!strcmp(argv[i], "--shots") && i + 1 < argc) shots = argv[++i];
    }
    add(&mpi, argv[2], atoll(argv[3]), argv[4], copy, shots);
  } else if (!strcmp(mode, "fake-est")) {
    fake_est(&mpi, argv[2]);
  } else if (!strcmp(mode, "fc-copy") && argc > 4) {
    int64_t K = atoll(argv[3]), n = atoll(argv[4]);
    hid_t f;
    cmds_fc_info fi;
    int rc = cmds_h5_open_read(&f, argv[2], MPI_COMM_SELF, CMDS_FEATURE_CACHE_SCHEMA, CMDS_FEATURE_CACHE_VERSION, &err);
    if (!rc) rc = cmds_fc_read_info(f, argv[2], &fi, &err);
    CHECK(rc == 0 && fi.n[2] == n && K > 0, "%s (augmented rows %lld)", err.msg, rc ? -1LL : (long long)fi.n[2]);
    if (!rc) {
      size_t row = (size_t)(fi.nblocks * fi.grid * fi.grid * fi.width);
      uint16_t *a = malloc(2 * row), *b = malloc(2 * row);
      int64_t bad = 0, count = 0;
      double worst = 0;
      for (int m = 0; m < CMDS_FC_NMOD; m++) {
        if (m == CMDS_FC_NORMALS) continue;
        for (int64_t j = 0; j < n; j++) {
          CHECK(cmds_fc_read_rows(f, 2, (cmds_fc_modality)m, j, 1, a, &err) == 0, "%s", err.msg);
          CHECK(cmds_fc_read_rows(f, 0, (cmds_fc_modality)m, j % K, 1, b, &err) == 0, "%s", err.msg);
          for (size_t i = 0; i < row; i++) {
            double x = nn_f16_to_f32(a[i]), y = nn_f16_to_f32(b[i]);
            count++;
            if (fabs(x - y) > worst) worst = fabs(x - y);
            bad += !(fabs(x - y) <= 1e-3 + 1e-2 * fabs(y));
          }
        }
      }
      CHECK(count > 0 && bad == 0, "%lld of %lld augmented feature values differ from their source rows' (max %.3g)",
            (long long)bad, (long long)count, worst);
      printf("%s: %lld augmented feature values vs their source rows: max |diff| %.3g\n", argv[2], (long long)count, worst);
      free(a);
      free(b);
      H5Fclose(f);
    }
  } else if (!strcmp(mode, "remove")) {
    remove_group(&mpi, argv[2]);
  } else if (!strcmp(mode, "state") && argc > 3) {
    static const char *const names[4] = {"absent", "stale", "partial", "complete"};
    hid_t f = open_sc(argv[2]);
    cmds_sc_aug_est_state st = CMDS_SC_AUG_EST_ABSENT;
    CHECK(f >= 0 && cmds_sc_est_aug_state(f, argv[2], &st, &err) == 0, "%s", err.msg);
    CHECK(!strcmp(names[st], argv[3]), "%s: augmented normals_est %s, expected %s", argv[2], names[st], argv[3]);
    if (st == CMDS_SC_AUG_EST_COMPLETE) {
      int64_t n = 0, defined = 0, off = 0;
      int S = 0;
      float *v = read_aug_est(f, &n, &S);
      for (int64_t i = 0; v && i < n * S * S; i++) {
        double l = sqrt((double)v[3 * i] * v[3 * i] + (double)v[3 * i + 1] * v[3 * i + 1] + (double)v[3 * i + 2] * v[3 * i + 2]);
        if (l > 0) defined++, off += fabs(l - 1) > 1e-4;
      }
      CHECK(n > 0 && off == 0 && defined >= 0.99 * (double)(n * S * S), "%lld of %lld defined, %lld not unit", (long long)defined,
            (long long)(n * S * S), (long long)off);
      free(v);
    }
    if (f >= 0) H5Fclose(f);
  } else if (!strcmp(mode, "same") && argc > 3) {
    hid_t a = open_sc(argv[2]), b = open_sc(argv[3]);
    int64_t na = 0, nb = 0;
    int Sa = 0, Sb = 0;
    float *va = a >= 0 ? read_aug_est(a, &na, &Sa) : NULL, *vb = b >= 0 ? read_aug_est(b, &nb, &Sb) : NULL;
    CHECK(va && vb && na == nb && Sa == Sb && na > 0, "augmented normals_est shapes differ");
    CHECK(va && vb && na == nb && Sa == Sb && !memcmp(va, vb, sizeof(float) * (size_t)(na * Sa * Sa * 3)),
          "augmented normals_est differ");
    free(va);
    free(vb);
    if (a >= 0) H5Fclose(a);
    if (b >= 0) H5Fclose(b);
  } else if (!strcmp(mode, "fc") && argc > 4) {
    int64_t want = atoll(argv[4]), n = 0;
    hid_t f, c = open_sc(argv[3]);
    char id[CMDS_SC_AUG_ID_LEN] = "";
    cmds_fc_info fi;
    int rc = cmds_h5_open_read(&f, argv[2], MPI_COMM_SELF, CMDS_FEATURE_CACHE_SCHEMA, CMDS_FEATURE_CACHE_VERSION, &err);
    if (!rc) rc = cmds_fc_read_info(f, argv[2], &fi, &err);
    CHECK(rc == 0 && c >= 0 && cmds_sc_aug_status(c, argv[3], &n, id, sizeof id, &err) == 0, "%s", err.msg);
    if (!rc) {
      CHECK(fi.n[CMDS_SC_AUGMENTED] == want, "feature cache: %lld augmented rows, expected %lld",
            (long long)fi.n[CMDS_SC_AUGMENTED], (long long)want);
      CHECK(!strcmp(fi.augmented_id, want ? id : ""), "feature cache augmented_id '%s', sample cache '%s'", fi.augmented_id, id);
      CHECK(cmds_h5_exists(f, "augmented") == (want > 0), "group /augmented %s", want ? "missing" : "present");
      if (want > 0) {
        CHECK(cmds_h5_exists(f, "augmented/rgb") && cmds_h5_exists(f, "augmented/normals_est") &&
                  !cmds_h5_exists(f, "augmented/normals"),
              "augmented modalities: rgb and normals_est only");
        uint8_t done[256];
        for (int m = 0; m < CMDS_FC_NMOD; m++) {
          if (m == CMDS_FC_NORMALS) continue;
          memset(done, 0, sizeof done);
          CHECK(want <= 256 && cmds_fc_read_done(f, CMDS_SC_AUGMENTED, (cmds_fc_modality)m, done, &err) == 0, "%s", err.msg);
          int all = 1;
          for (int64_t i = 0; i < want; i++) all &= done[i] == 1;
          CHECK(all, "augmented %s: not every row done", cmds_fc_modality_name((cmds_fc_modality)m));
        }
      }
      H5Fclose(f);
    }
    if (c >= 0) H5Fclose(c);
  } else {
    fprintf(stderr, "usage: aug_tool add CACHE N ID [--copy] | fake-est CACHE | remove CACHE | state CACHE STATE | same A B "
                    "| fc FEATURES CACHE N | fc-copy FEATURES K N\n");
    check_failed_++;
  }
  int failed = 0;
  MPI_Allreduce(&check_failed_, &failed, 1, MPI_INT, MPI_SUM, mpi.comm);
  if (failed && mpi.rank == 0) fprintf(stderr, "aug_tool %s: %d failed\n", mode, failed);
  return cmds_mpi_finalize(&mpi, failed ? 1 : 0);
}
