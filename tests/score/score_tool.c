/* score_tool: inputs and checks for the cmds-score tests (one MPI rank).
 *   score_tool caches FIXTURES CACHE DATASET CATEGORY [--no-est]
 *       a sample cache (S = 24) and a feature cache (L = 3, G = 4, D = 16) from the e2e
 *       fixtures of gen_score.py, with the identity the fixture mapper was "trained" on
 *   score_tool mapper OUT WIDTH LAYERS RESOLUTION SEED
 *       a random mapper file (mapper_init + mapper_save, both prefixes) with cmds-train's
 *       metadata for the fixture caches
 *   score_tool check-streams STREAMS.h5 FIXTURES TOL     the four maps vs the PyTorch ones
 *   score_tool check-maps MAPS.h5 FIXTURES SETTING TOL   a maps file vs the reference
 *   score_tool attr FILE.h5 NAME                         prints a root attribute (int or string)
 *   score_tool set-attr FILE.h5 NAME VALUE               (re)writes a root string attribute
 *   score_tool shuffle-mapper IN OUT SEED
 *       a copy of a mapper file with the elements of every F32 tensor randomly permuted: same
 *       header, metadata and weight distribution, no learned structure (the negative control
 *       of the quality test) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds_mpi.h"
#include "feature_cache.h"
#include "h5io.h"
#include "mapper.h"
#include "npy.h"
#include "rng.h"
#include "safetensors.h"
#include "fsutil.h"
#include "sample_cache.h"

#define WEIGHTS_ID "random:7"
#define SAMPLE_LIST_HASH "0123456789abcdef"

static int load(const char *fx, const char *name, npy_array *a) {
  char p[4096];
  snprintf(p, sizeof p, "%s/score/%s", fx, name);
  return npy_load(p, a);
}

static int caches(const char *fx, const char *cache, const char *dataset, const char *cat, int est, cmds_error *err) {
  npy_array masks, labels, fgm, f[3][2];
  const char *mods[3] = {"rgb", "normals", "normals_est"}, *grps[2] = {"support", "test"};
  if (load(fx, "e2e_masks.npy", &masks) || load(fx, "e2e_labels.npy", &labels) || load(fx, "e2e_fg.npy", &fgm)) return 2;
  for (int m = 0; m < 3; m++)
    for (int g = 0; g < 2; g++) {
      char n[128];
      snprintf(n, sizeof n, "e2e_%s_%s.npy", mods[m], grps[g]);
      if (load(fx, n, &f[m][g])) return 2;
    }
  int S = (int)masks.shape[1];
  int64_t nt = masks.shape[0], ns = f[0][0].shape[0];
  char dir[4096], path[4300];
  snprintf(dir, sizeof dir, "%s/%s", cache, dataset);
  char cmd[4400];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
  if (system(cmd)) return CMDS_FAIL(err, CMDS_EIO, "cannot create %s", dir);
  /* sample cache */
  snprintf(path, sizeof path, "%s/%s.h5", dir, cat);
  cmds_h5file file;
  int rc = cmds_h5_create(&file, path, MPI_COMM_WORLD, err);
  if (rc) return rc;
  cmds_sc_info info = {0};
  snprintf(info.dataset, sizeof info.dataset, "%s", dataset);
  snprintf(info.category, sizeof info.category, "%s", cat);
  snprintf(info.sample_list_hash, sizeof info.sample_list_hash, "%s", SAMPLE_LIST_HASH);
  snprintf(info.code_version, sizeof info.code_version, "test");
  info.resolution = S;
  info.shots = ns;
  if (cmds_sc_write_info(file.id, &info)) return CMDS_FAIL(err, CMDS_EIO, "attributes");
  for (int g = 0; g < 2 && !rc; g++) {
    int64_t n = g ? nt : ns;
    cmds_sc_group grp;
    rc = cmds_sc_group_create(file.id, grps[g], n, S, 3, &grp, err);
    cmds_sample_batch b;
    cmds_sample_batch_alloc(&b, n, S);
    memset(b.rgb, 0, (size_t)(n * S * S * 3));
    for (int64_t i = 0; i < n * S * S * 3; i++) b.xyz[i] = b.normals[i] = 0.5f;
    memset(b.fg_mask, 1, (size_t)(n * S * S));
    memset(b.gt_mask, 0, (size_t)(n * S * S));
    if (g) memcpy(b.gt_mask, masks.data, (size_t)(n * S * S));
    if (g) memcpy(b.fg_mask, fgm.data, (size_t)(n * S * S));
    for (int64_t i = 0; i < n; i++) {
      b.label[i] = g ? ((uint8_t *)labels.data)[i] : 0;
      snprintf(b.defect_type + i * CMDS_SC_DEFECT_LEN, CMDS_SC_DEFECT_LEN, "%s", b.label[i] ? "crack" : "good");
      snprintf(b.sample_id + i * CMDS_SC_ID_LEN, CMDS_SC_ID_LEN, "%s/%s/%03lld", g ? "test" : "train",
               b.label[i] ? "crack" : "good", (long long)i);
      b.native_hw[2 * i] = b.native_hw[2 * i + 1] = S;
    }
    memset(b.pad, 0, sizeof(int32_t) * 3 * (size_t)n);
    memset(b.plane, 0, sizeof(double) * 4 * (size_t)n);
    if (!rc) rc = cmds_sc_group_write(&grp, 0, n, &b, err);
    cmds_sc_group_close(&grp);
    cmds_sample_batch_free(&b);
  }
  if (!rc) rc = cmds_h5_commit(&file, err);
  if (rc) return rc;
  /* feature cache */
  snprintf(path, sizeof path, "%s/%s.features.h5", dir, cat);
  cmds_fc_info fi;
  memset(&fi, 0, sizeof fi);
  snprintf(fi.dataset, sizeof fi.dataset, "%s", dataset);
  snprintf(fi.category, sizeof fi.category, "%s", cat);
  snprintf(fi.backbone, sizeof fi.backbone, "dino_vit_p8_w16");
  snprintf(fi.weights_id, sizeof fi.weights_id, "%s", WEIGHTS_ID);
  snprintf(fi.sample_list_hash, sizeof fi.sample_list_hash, "%s", SAMPLE_LIST_HASH);
  fi.nblocks = f[0][0].shape[1];
  fi.blocks[0] = 4, fi.blocks[1] = 7, fi.blocks[2] = 11;
  fi.grid = f[0][0].shape[2];
  fi.width = f[0][0].shape[4];
  fi.image_size = S;
  fi.n[0] = ns, fi.n[1] = nt;
  fi.modalities = 1 | 2 | (est ? 4 : 0);
  rc = cmds_fc_create(&file, path, MPI_COMM_WORLD, &fi, 3, err);
  for (int m = 0; m < (est ? 3 : 2) && !rc; m++)
    for (int g = 0; g < 2 && !rc; g++)
      rc = cmds_fc_write_rows(file.id, g, (cmds_fc_modality)m, 0, f[m][g].shape[0], f[m][g].data, err);
  if (!rc) rc = cmds_h5_commit(&file, err);
  npy_free(&masks);
  npy_free(&labels);
  npy_free(&fgm);
  for (int m = 0; m < 3; m++)
    for (int g = 0; g < 2; g++) npy_free(&f[m][g]);
  return rc;
}

static int mapper_file(const char *out, long width, long layers, long res, long seed, cmds_error *err) {
  mapper_config c;
  mapper_config_default(&c, width, layers);
  c.adapt_groups = 4;
  c.sel_hidden = 8;
  c.proj_hidden = 32;
  mapper_model a, b;
  int rc = mapper_init(&a, &c, (uint64_t)seed, NN_CPU, err);
  if (!rc) rc = mapper_init(&b, &c, (uint64_t)seed + 1, NN_CPU, err);
  if (rc) return rc;
  char key[256];
  snprintf(key, sizeof key, "mapper.kind=cmds;mapper.resolution=%ld;mapper.adapt_groups=4;mapper.sel_hidden=8;"
           "mapper.proj_hidden=32", res);
  const mapper_model *ms[2] = {&a, &b};
  const char *pre[2] = {"rgb_to_3d.", "3d_to_rgb."};
  const char *kv[] = {"cmds.config_key", key, "cmds.weights_id", WEIGHTS_ID, "cmds.sample_list_hash", SAMPLE_LIST_HASH,
                      "cmds.feature_blocks", layers == 3 ? "4,7,11" : "4,7"};
  rc = mapper_save(ms, pre, 2, kv, 4, out, err);
  mapper_free(&a);
  mapper_free(&b);
  return rc;
}

static int read_f32(hid_t f, const char *name, float *buf, int64_t n, cmds_error *err) {
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  if (d < 0) return CMDS_FAIL(err, CMDS_EINPUT, "no dataset %s", name);
  int rc = cmds_h5_read_rows(d, H5T_NATIVE_FLOAT, 0, n, buf, err);
  H5Dclose(d);
  return rc;
}

static int read_u8(hid_t f, const char *name, uint8_t *buf, int64_t n, cmds_error *err) {
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  if (d < 0) return CMDS_FAIL(err, CMDS_EINPUT, "no dataset %s", name);
  int rc = cmds_h5_read_rows(d, H5T_NATIVE_UINT8, 0, n, buf, err);
  H5Dclose(d);
  return rc;
}

static double maxdiff(const float *a, const npy_array *b, int64_t off, int64_t n) {
  double d = 0;
  for (int64_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - npy_get(b, off + i)));
  return d;
}

static int check_truth(hid_t f, const char *fx, int64_t N, int64_t S, cmds_error *err) {
  npy_array masks, labels;
  if (load(fx, "e2e_masks.npy", &masks) || load(fx, "e2e_labels.npy", &labels)) return 2;
  uint8_t *m = malloc((size_t)(N * S * S)), l[64];
  int rc = read_u8(f, "masks", m, N, err);
  if (!rc) rc = read_u8(f, "labels", l, N, err);
  int bad = !rc && (memcmp(m, masks.data, (size_t)(N * S * S)) || memcmp(l, labels.data, (size_t)N));
  free(m);
  npy_free(&masks);
  npy_free(&labels);
  if (bad) return CMDS_FAIL(err, CMDS_EINPUT, "masks or labels differ from the sample cache's");
  return rc;
}

static int check_streams(const char *path, const char *fx, double tol, cmds_error *err) {
  npy_array psi;
  if (load(fx, "e2e_psi.npy", &psi)) return 2;
  int64_t N = psi.shape[0], R = psi.shape[2], S = 24;
  hid_t f;
  int rc = cmds_h5_open_read(&f, path, MPI_COMM_SELF, "cmds.streams", 1, err);
  if (rc) return rc;
  int64_t est = 0;
  cmds_h5_attr_read_i64(f, "est", &est, path, err);
  const char *names[4] = {"psi_2d_real", "psi_2d_est", "psi_3d_real", "psi_3d_est"};
  float *buf = malloc(sizeof(float) * (size_t)(N * R * R));
  double worst = 0;
  for (int i = 0; i < 4 && !rc; i++) {
    if (!est && (i == 1 || i == 3)) {
      if (cmds_h5_exists(f, names[i])) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s present without normals_est", names[i]);
      continue;
    }
    rc = read_f32(f, names[i], buf, N, err);
    for (int64_t n = 0; n < N && !rc; n++) {
      double d = maxdiff(buf + n * R * R, &psi, (n * 4 + i) * R * R, R * R);
      worst = fmax(worst, d);
      if (d > tol) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s sample %lld: max |diff| %g > %g", names[i], (long long)n, d, tol);
    }
  }
  if (!rc) rc = check_truth(f, fx, N, S, err);
  if (!rc) printf("streams: %s maps equal PyTorch's (max |diff| %.3g)\n", est ? "four" : "two (real)", worst);
  free(buf);
  H5Fclose(f);
  npy_free(&psi);
  return rc;
}

static int check_maps(const char *path, const char *fx, const char *setting, double tol, cmds_error *err) {
  npy_array ex, im;
  char n1[128], n2[128];
  snprintf(n1, sizeof n1, "e2e_maps_%s.npy", setting);
  snprintf(n2, sizeof n2, "e2e_image_%s.npy", setting);
  if (load(fx, n1, &ex) || load(fx, n2, &im)) return 2;
  int64_t N = ex.shape[0], S = ex.shape[1];
  hid_t f;
  int rc = cmds_h5_open_read(&f, path, MPI_COMM_SELF, "cmds.maps", 1, err);
  if (rc) return rc;
  float *buf = malloc(sizeof(float) * (size_t)(N * S * S)), img[64];
  rc = read_f32(f, "scores", buf, N, err);
  if (!rc) rc = read_f32(f, "image_scores", img, N, err);
  double d = 0, di = 0;
  if (!rc) {
    d = maxdiff(buf, &ex, 0, N * S * S);
    di = maxdiff(img, &im, 0, N);
    if (d > tol || di > tol) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: max |diff| %g, image scores %g > %g", path, d, di, tol);
  }
  if (!rc) rc = check_truth(f, fx, N, S, err);
  if (!rc) printf("maps %s: equal the reference (max |diff| %.3g, image scores %.3g)\n", setting, d, di);
  free(buf);
  H5Fclose(f);
  npy_free(&ex);
  npy_free(&im);
  return rc;
}

static int attr(const char *path, const char *name, cmds_error *err) {
  hid_t f;
  int rc = cmds_h5_open_read(&f, path, MPI_COMM_SELF, NULL, 0, err);
  if (rc) return rc;
  int64_t v;
  char s[4096];
  if (!cmds_h5_attr_read_i64(f, name, &v, path, err)) printf("%lld\n", (long long)v);
  else if (!(rc = cmds_h5_attr_read_str(f, name, s, sizeof s, path, err))) printf("%s\n", s);
  H5Fclose(f);
  return rc;
}

static int set_attr(const char *path, const char *name, const char *value, cmds_error *err) {
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0) return CMDS_FAIL(err, CMDS_EIO, "%s: cannot open for writing", path);
  int bad = H5Aexists(f, name) > 0 && H5Adelete(f, name) < 0;
  if (!bad) bad = cmds_h5_attr_write_str(f, name, value) != 0;
  H5Fclose(f);
  return bad ? CMDS_FAIL(err, CMDS_EIO, "%s: cannot write attribute %s", path, name) : CMDS_OK;
}

static int shuffle_mapper(const char *in, const char *out, uint64_t seed, cmds_error *err) {
  cmds_st_file f;
  int rc = cmds_st_open(&f, in, err);
  if (rc) return rc;
  size_t n = f.map_bytes;
  unsigned char *copy = malloc(n);
  memcpy(copy, f.map, n);
  size_t data0 = 8 + (size_t)f.header_bytes;
  cmds_rng r;
  cmds_rng_seed(&r, seed);
  for (int t = 0; t < f.n_tensors; t++) {
    if (f.tensors[t].dtype != CMDS_ST_F32) continue;
    float *v = (float *)(copy + data0 + f.tensors[t].begin);
    uint64_t cnt = (f.tensors[t].end - f.tensors[t].begin) / 4;
    for (uint64_t i = cnt; i > 1; i--) { /* Fisher-Yates */
      uint64_t j = cmds_rng_below(&r, i);
      float tmp = v[i - 1];
      v[i - 1] = v[j];
      v[j] = tmp;
    }
  }
  cmds_st_close(&f);
  rc = cmds_write_file_atomic(out, copy, n, err);
  free(copy);
  return rc;
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_h5_quiet();
  cmds_error err = {0};
  int rc = 2;
  const char *c = argc > 1 ? argv[1] : "";
  if (!strcmp(c, "caches") && (argc == 6 || argc == 7))
    rc = caches(argv[2], argv[3], argv[4], argv[5], !(argc == 7 && !strcmp(argv[6], "--no-est")), &err);
  else if (!strcmp(c, "mapper") && argc == 7)
    rc = mapper_file(argv[2], atol(argv[3]), atol(argv[4]), atol(argv[5]), atol(argv[6]), &err);
  else if (!strcmp(c, "check-streams") && argc == 5)
    rc = check_streams(argv[2], argv[3], atof(argv[4]), &err);
  else if (!strcmp(c, "check-maps") && argc == 6)
    rc = check_maps(argv[2], argv[3], argv[4], atof(argv[5]), &err);
  else if (!strcmp(c, "shuffle-mapper") && argc == 5)
    rc = shuffle_mapper(argv[2], argv[3], strtoull(argv[4], NULL, 10), &err);
  else if (!strcmp(c, "attr") && argc == 4)
    rc = attr(argv[2], argv[3], &err);
  else if (!strcmp(c, "set-attr") && argc == 5)
    rc = set_attr(argv[2], argv[3], argv[4], &err);
  else
    fprintf(stderr, "usage: see score_tool.c\n");
  if (rc && err.msg[0]) fprintf(stderr, "score_tool %s: %s\n", c, err.msg);
  return cmds_mpi_finalize(&mpi, rc);
}
