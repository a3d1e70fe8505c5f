/* sample_cache: see sample_cache.h and schemas/sample_cache_v1.md. */
#include "sample_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5io.h"
#include "hash.h"

enum { D_RGB, D_XYZ, D_NORMALS, D_FG, D_GT, D_LABEL, D_DEFECT, D_ID, D_HW, D_PAD, D_PLANE, D_COUNT };

static const char *const dset_names[D_COUNT] = {"rgb",   "xyz",         "normals",   "fg_mask",
                                                "gt_mask", "label",     "defect_type", "sample_id",
                                                "native_hw", "pad",     "plane"};

void cmds_sample_batch_alloc(cmds_sample_batch *b, int64_t cap, int size) {
  memset(b, 0, sizeof *b);
  size_t px = (size_t)size * (size_t)size, n = (size_t)(cap > 0 ? cap : 1);
  b->cap = cap;
  b->size = size;
  b->rgb = cmds_xcalloc(n * px * 3, 1);
  b->xyz = cmds_xcalloc(n * px * 3, sizeof(float));
  b->normals = cmds_xcalloc(n * px * 3, sizeof(float));
  b->fg_mask = cmds_xcalloc(n * px, 1);
  b->gt_mask = cmds_xcalloc(n * px, 1);
  b->label = cmds_xcalloc(n, 1);
  b->defect_type = cmds_xcalloc(n, CMDS_SC_DEFECT_LEN);
  b->sample_id = cmds_xcalloc(n, CMDS_SC_ID_LEN);
  b->native_hw = cmds_xcalloc(n * 2, sizeof(int32_t));
  b->pad = cmds_xcalloc(n * 3, sizeof(int32_t));
  b->plane = cmds_xcalloc(n * 4, sizeof(double));
}

void cmds_sample_batch_free(cmds_sample_batch *b) {
  free(b->rgb);
  free(b->xyz);
  free(b->normals);
  free(b->fg_mask);
  free(b->gt_mask);
  free(b->label);
  free(b->defect_type);
  free(b->sample_id);
  free(b->native_hw);
  free(b->pad);
  free(b->plane);
  memset(b, 0, sizeof *b);
}

/* File type, memory type, rank and per-row shape of dataset k for images of side s. */
static int dset_layout(int k, hsize_t n, hsize_t s, hid_t *type, hsize_t *dims) {
  dims[0] = n;
  switch (k) {
    case D_RGB: *type = H5T_NATIVE_UINT8; dims[1] = s; dims[2] = s; dims[3] = 3; return 4;
    case D_XYZ:
    case D_NORMALS: *type = H5T_NATIVE_FLOAT; dims[1] = s; dims[2] = s; dims[3] = 3; return 4;
    case D_FG:
    case D_GT: *type = H5T_NATIVE_UINT8; dims[1] = s; dims[2] = s; return 3;
    case D_LABEL: *type = H5T_NATIVE_UINT8; return 1;
    case D_DEFECT: *type = cmds_h5_str_type(CMDS_SC_DEFECT_LEN); return 1;
    case D_ID: *type = cmds_h5_str_type(CMDS_SC_ID_LEN); return 1;
    case D_HW: *type = H5T_NATIVE_INT32; dims[1] = 2; return 2;
    case D_PAD: *type = H5T_NATIVE_INT32; dims[1] = 3; return 2;
    default: *type = H5T_NATIVE_DOUBLE; dims[1] = 4; return 2;
  }
}

static void *batch_ptr(const cmds_sample_batch *b, int k) {
  switch (k) {
    case D_RGB: return b->rgb;
    case D_XYZ: return b->xyz;
    case D_NORMALS: return b->normals;
    case D_FG: return b->fg_mask;
    case D_GT: return b->gt_mask;
    case D_LABEL: return b->label;
    case D_DEFECT: return b->defect_type;
    case D_ID: return b->sample_id;
    case D_HW: return b->native_hw;
    case D_PAD: return b->pad;
    default: return b->plane;
  }
}

static void close_type(int k, hid_t t) {
  if (k == D_DEFECT || k == D_ID) H5Tclose(t);
}

int cmds_sc_group_create(hid_t file, const char *name, int64_t n, int size, int zstd_level,
                         cmds_sc_group *g, cmds_error *err) {
  memset(g, 0, sizeof *g);
  g->n = n;
  g->size = size;
  g->group = H5Gcreate2(file, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (g->group < 0) return CMDS_FAIL(err, CMDS_EIO, "cannot create group /%s", name);
  for (int k = 0; k < D_COUNT; k++) {
    hid_t t;
    hsize_t dims[4];
    int nd = dset_layout(k, (hsize_t)n, (hsize_t)size, &t, dims);
    /* Images compress; tiny per-sample metadata rows are not worth a filter call each. */
    int level = nd >= 3 ? zstd_level : -1;
    g->dset[k] = cmds_h5_create_rows(g->group, dset_names[k], t, nd, dims, level, err);
    close_type(k, t);
    if (g->dset[k] < 0) return cmds_error_wrap(err, "/%s", name);
  }
  return CMDS_OK;
}

/* Rows [row0, row0 + nrows) of every dataset to or from batch rows [0, nrows). */
static int group_rows(cmds_sc_group *g, int64_t row0, int64_t nrows, const cmds_sample_batch *b,
                      int write, cmds_error *err) {
  CMDS_ASSERT(nrows <= b->cap && b->size == g->size);
  for (int k = 0; k < D_COUNT; k++) {
    hid_t t;
    hsize_t dims[4];
    dset_layout(k, 0, (hsize_t)g->size, &t, dims);
    int rc = write ? cmds_h5_write_rows(g->dset[k], t, row0, nrows, batch_ptr(b, k), err)
                   : cmds_h5_read_rows(g->dset[k], t, row0, nrows, batch_ptr(b, k), err);
    close_type(k, t);
    if (rc) return cmds_error_wrap(err, "dataset %s", dset_names[k]);
  }
  return CMDS_OK;
}

int cmds_sc_group_write(cmds_sc_group *g, int64_t row0, int64_t nrows, const cmds_sample_batch *b,
                        cmds_error *err) {
  return group_rows(g, row0, nrows, b, 1, err);
}

int cmds_sc_group_open(hid_t file, const char *name, const char *path, cmds_sc_group *g,
                       cmds_error *err) {
  memset(g, 0, sizeof *g);
  if (!cmds_h5_exists(file, name))
    return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: group /%s is missing", path, name);
  g->group = H5Gopen2(file, name, H5P_DEFAULT);
  hsize_t dims[8];
  int nd = cmds_h5_dataset_shape(g->group, "rgb", dims, 8);
  if (nd != 4 || dims[1] != dims[2] || dims[3] != 3)
    return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: /%s/rgb should be (N, S, S, 3)", path, name);
  g->n = (int64_t)dims[0];
  g->size = (int)dims[1];
  for (int k = 0; k < D_COUNT; k++) {
    hid_t t;
    hsize_t want[4], got[8];
    int wnd = dset_layout(k, (hsize_t)g->n, (hsize_t)g->size, &t, want);
    close_type(k, t);
    int gnd = cmds_h5_dataset_shape(g->group, dset_names[k], got, 8);
    if (gnd < 0) return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: /%s/%s is missing", path, name, dset_names[k]);
    int same = gnd == wnd;
    for (int i = 0; same && i < wnd; i++) same = got[i] == want[i];
    if (!same)
      return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: /%s/%s has the wrong shape for N=%lld, S=%d", path,
                       name, dset_names[k], (long long)g->n, g->size);
    g->dset[k] = H5Dopen2(g->group, dset_names[k], H5P_DEFAULT);
  }
  return CMDS_OK;
}

int cmds_sc_group_read(cmds_sc_group *g, int64_t row0, int64_t nrows, cmds_sample_batch *b,
                       cmds_error *err) {
  return group_rows(g, row0, nrows, b, 0, err);
}

void cmds_sc_group_close(cmds_sc_group *g) {
  for (int k = 0; k < D_COUNT; k++)
    if (g->dset[k] > 0) H5Dclose(g->dset[k]);
  if (g->group > 0) H5Gclose(g->group);
  memset(g, 0, sizeof *g);
}

int cmds_sc_write_info(hid_t file, const cmds_sc_info *info) {
  int rc = cmds_h5_write_schema(file, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION);
  rc |= cmds_h5_attr_write_str(file, "dataset", info->dataset);
  rc |= cmds_h5_attr_write_str(file, "category", info->category);
  rc |= cmds_h5_attr_write_i64(file, "resolution", info->resolution);
  rc |= cmds_h5_attr_write_i64(file, "shots", info->shots);
  rc |= cmds_h5_attr_write_str(file, "prep_config", info->prep_config ? info->prep_config : "{}");
  rc |= cmds_h5_attr_write_str(file, "sample_list_hash", info->sample_list_hash);
  rc |= cmds_h5_attr_write_str(file, "code_version", info->code_version);
  return rc ? -1 : 0;
}

int cmds_sc_read_info(hid_t file, const char *path, cmds_sc_info *info, cmds_error *err) {
  memset(info, 0, sizeof *info);
  char *config = cmds_xmalloc(65536);
  int rc = cmds_h5_attr_read_str(file, "dataset", info->dataset, sizeof info->dataset, path, err);
  if (!rc) rc = cmds_h5_attr_read_str(file, "category", info->category, sizeof info->category, path, err);
  if (!rc) rc = cmds_h5_attr_read_i64(file, "resolution", &info->resolution, path, err);
  if (!rc) rc = cmds_h5_attr_read_i64(file, "shots", &info->shots, path, err);
  if (!rc) rc = cmds_h5_attr_read_str(file, "sample_list_hash", info->sample_list_hash,
                                      sizeof info->sample_list_hash, path, err);
  if (!rc) rc = cmds_h5_attr_read_str(file, "code_version", info->code_version,
                                      sizeof info->code_version, path, err);
  if (!rc) rc = cmds_h5_attr_read_str(file, "prep_config", config, 65536, path, err);
  if (!rc) info->prep_config = cmds_xstrdup(config);
  free(config);
  return rc;
}

void cmds_sc_identity(const cmds_sc_info *info, char *out, size_t cap) {
  uint64_t h = CMDS_FNV64_INIT;
  const char *parts[2] = {info->prep_config ? info->prep_config : "{}", info->sample_list_hash};
  for (int i = 0; i < 2; i++) h = cmds_fnv64(h, parts[i], strlen(parts[i]) + 1); /* each with its NUL */
  snprintf(out, cap, "fnv64:%016llx", (unsigned long long)h);
}

void cmds_sc_info_free(cmds_sc_info *info) {
  free(info->prep_config);
  info->prep_config = NULL;
}

/* ---- estimated normals (cmds-estimate) ---- */

static const char *const est_groups[3] = {"support", "test", "augmented"};

const char *cmds_sc_group_name(int g) { return g >= 0 && g < 3 ? est_groups[g] : "?"; }

void cmds_sc_est_identity(const cmds_sc_est_info *e, char *out, size_t cap) {
  snprintf(out, cap, "marigold %s steps=%lld res=%lld ensemble=%lld seed=%lld source=%s", e->checkpoint,
           (long long)e->steps, (long long)e->processing_res, (long long)e->ensemble, (long long)e->seed,
           e->source);
}

int cmds_sc_est_read_id(hid_t file, const char *path, char *out, size_t cap, cmds_error *err) {
  out[0] = 0;
  if (H5Aexists(file, "normals_est_id") <= 0) return CMDS_OK;
  return cmds_h5_attr_read_str(file, "normals_est_id", out, cap, path, err);
}

static hid_t est_open(hid_t file, int g, const char *name, cmds_error *err) {
  char p[64];
  snprintf(p, sizeof p, "%s/%s", est_groups[g], name);
  hid_t d = cmds_h5_exists(file, est_groups[g]) && cmds_h5_exists(file, p) ? H5Dopen2(file, p, H5P_DEFAULT)
                                                                          : H5I_INVALID_HID;
  if (d < 0) CMDS_FAIL(err, CMDS_ESCHEMA, "sample cache: /%s is missing (run cmds-estimate)", p);
  return d;
}

int cmds_sc_est_status(hid_t file, const char *path, int *present, int *complete,
                       cmds_sc_est_info *info, cmds_error *err) {
  *present = *complete = 0;
  memset(info, 0, sizeof *info);
  int have[2] = {0, 0};
  int64_t n[2] = {0, 0}, size = -1;
  for (int g = 0; g < 2; g++) {
    char p[64];
    snprintf(p, sizeof p, "%s/normals_est", est_groups[g]);
    have[g] = cmds_h5_exists(file, est_groups[g]) && cmds_h5_exists(file, p);
    if (!have[g]) continue;
    hsize_t rgb[8], est[8], done[8];
    char q[64];
    snprintf(q, sizeof q, "%s/rgb", est_groups[g]);
    int nr = cmds_h5_dataset_shape(file, q, rgb, 8);
    int ne = cmds_h5_dataset_shape(file, p, est, 8);
    snprintf(q, sizeof q, "%s/normals_est_done", est_groups[g]);
    int nd = cmds_h5_dataset_shape(file, q, done, 8);
    if (nr != 4 || ne != 4 || est[0] != rgb[0] || est[1] != rgb[1] || est[2] != rgb[2] || est[3] != 3)
      return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: /%s should be (N, S, S, 3) like /%s/rgb", path, p, est_groups[g]);
    if (nd != 1 || done[0] != rgb[0])
      return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: /%s should be (N) uint8 flags beside /%s", path, q, p);
    n[g] = (int64_t)rgb[0];
    size = (int64_t)rgb[1];
  }
  if (!have[0] && !have[1]) return CMDS_OK;
  if (!have[0] || !have[1])
    return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: normals_est is in /%s but not in /%s (rerun cmds-estimate --force)",
                     path, est_groups[have[0] ? 0 : 1], est_groups[have[0] ? 1 : 0]);
  (void)size;
  int rc = cmds_h5_attr_read_str(file, "normals_est_checkpoint", info->checkpoint, sizeof info->checkpoint, path, err);
  if (!rc) rc = cmds_h5_attr_read_str(file, "normals_est_source", info->source, sizeof info->source, path, err);
  if (!rc) rc = cmds_h5_attr_read_i64(file, "normals_est_steps", &info->steps, path, err);
  if (!rc) rc = cmds_h5_attr_read_i64(file, "normals_est_processing_res", &info->processing_res, path, err);
  if (!rc) rc = cmds_h5_attr_read_i64(file, "normals_est_ensemble", &info->ensemble, path, err);
  if (!rc) rc = cmds_h5_attr_read_i64(file, "normals_est_seed", &info->seed, path, err);
  if (!rc) rc = cmds_h5_attr_read_str(file, "normals_est_code_version", info->code_version,
                                      sizeof info->code_version, path, err);
  if (rc) return rc;
  *present = 1;
  int all = 1;
  for (int g = 0; g < 2 && !rc; g++) {
    uint8_t *done = cmds_xcalloc((size_t)(n[g] ? n[g] : 1), 1);
    rc = cmds_sc_est_read_done(file, g, done, err);
    for (int64_t i = 0; i < n[g] && !rc; i++) all &= done[i] != 0;
    free(done);
  }
  if (rc) return cmds_error_wrap(err, "%s", path);
  *complete = all;
  return CMDS_OK;
}

/* Creates group g's normals_est (+ done flags 0) or, when they exist, sets every flag to 0. */
static int est_prepare_group(hid_t file, const char *path, int g, int zstd_level, cmds_error *err) {
  int rc = CMDS_OK;
  char q[64];
  snprintf(q, sizeof q, "%s/rgb", est_groups[g]);
  hsize_t rgb[8];
  if (cmds_h5_dataset_shape(file, q, rgb, 8) != 4)
    return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: /%s is missing or not (N, S, S, 3)", path, q);
  hid_t grp = H5Gopen2(file, est_groups[g], H5P_DEFAULT);
  if (grp < 0) return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: group /%s is missing", path, est_groups[g]);
  hsize_t n = rgb[0];
  if (!cmds_h5_exists(grp, "normals_est")) {
    hid_t d = cmds_h5_create_rows(grp, "normals_est", H5T_NATIVE_FLOAT, 4, rgb, zstd_level, err);
    if (d < 0) rc = cmds_error_wrap(err, "%s: /%s", path, est_groups[g]);
    else H5Dclose(d);
  }
  if (!rc && !cmds_h5_exists(grp, "normals_est_done")) {
    /* Contiguous, allocated at creation, fill 0: written collectively per round. */
    hid_t space = H5Screate_simple(1, &n, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    uint8_t zero = 0;
    H5Pset_fill_value(dcpl, H5T_NATIVE_UINT8, &zero);
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
    hid_t dd = H5Dcreate2(grp, "normals_est_done", H5T_NATIVE_UINT8, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(space);
    if (dd < 0) rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot create /%s/normals_est_done", path, est_groups[g]);
    else H5Dclose(dd);
  } else if (!rc && n > 0) {
    /* Existing flags (a forced rerun): every row to be computed again. Every rank writes
     * the same zeros through a collective write of the whole (small) dataset. */
    hid_t dd = H5Dopen2(grp, "normals_est_done", H5P_DEFAULT);
    uint8_t *zeros = cmds_xcalloc((size_t)(n ? n : 1), 1);
    rc = dd < 0 ? CMDS_FAIL(err, CMDS_ESCHEMA, "%s: /%s/normals_est_done", path, est_groups[g])
                : cmds_h5_write_rows(dd, H5T_NATIVE_UINT8, 0, (int64_t)n, zeros, err);
    free(zeros);
    if (dd >= 0) H5Dclose(dd);
  }
  H5Gclose(grp);
  return rc;
}

int cmds_sc_est_prepare(hid_t file, const char *path, const cmds_sc_est_info *info, int zstd_level,
                        cmds_error *err) {
  int rc = CMDS_OK;
  for (int g = 0; g < 2 && !rc; g++) rc = est_prepare_group(file, path, g, zstd_level, err);
  if (rc) return rc;
  char id[512];
  cmds_sc_est_identity(info, id, sizeof id);
  int w = cmds_h5_attr_write_str(file, "normals_est_id", id);
  w |= cmds_h5_attr_write_str(file, "normals_est_checkpoint", info->checkpoint);
  w |= cmds_h5_attr_write_str(file, "normals_est_source", info->source);
  w |= cmds_h5_attr_write_i64(file, "normals_est_steps", info->steps);
  w |= cmds_h5_attr_write_i64(file, "normals_est_processing_res", info->processing_res);
  w |= cmds_h5_attr_write_i64(file, "normals_est_ensemble", info->ensemble);
  w |= cmds_h5_attr_write_i64(file, "normals_est_seed", info->seed);
  w |= cmds_h5_attr_write_str(file, "normals_est_code_version", info->code_version);
  if (w) return CMDS_FAIL(err, CMDS_EIO, "%s: writing the normals_est attributes", path);
  if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) return CMDS_FAIL(err, CMDS_EIO, "%s: flush", path);
  return CMDS_OK;
}

int cmds_sc_est_read_done(hid_t file, int g, uint8_t *done, cmds_error *err) {
  hid_t d = est_open(file, g, "normals_est_done", err);
  if (d < 0) return err->code;
  herr_t rc = H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, done);
  H5Dclose(d);
  return rc < 0 ? CMDS_FAIL(err, CMDS_EIO, "reading /%s/normals_est_done", est_groups[g]) : CMDS_OK;
}

int cmds_sc_est_write_rows(hid_t file, int g, int64_t row0, int64_t nrows, const float *normals,
                           cmds_error *err) {
  hid_t d = est_open(file, g, "normals_est", err);
  if (d < 0) return err->code;
  int rc = cmds_h5_write_rows(d, H5T_NATIVE_FLOAT, nrows ? row0 : 0, nrows, normals, err);
  H5Dclose(d);
  if (!rc && H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) rc = CMDS_FAIL(err, CMDS_EIO, "flushing normals_est");
  if (rc) return cmds_error_wrap(err, "/%s/normals_est", est_groups[g]);
  d = est_open(file, g, "normals_est_done", err);
  if (d < 0) return err->code;
  uint8_t *ones = cmds_xmalloc((size_t)(nrows ? nrows : 1));
  memset(ones, 1, (size_t)(nrows ? nrows : 1));
  rc = cmds_h5_write_rows(d, H5T_NATIVE_UINT8, nrows ? row0 : 0, nrows, ones, err);
  free(ones);
  H5Dclose(d);
  if (!rc && H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) rc = CMDS_FAIL(err, CMDS_EIO, "flushing normals_est_done");
  return rc ? cmds_error_wrap(err, "/%s/normals_est_done", est_groups[g]) : CMDS_OK;
}

int cmds_sc_est_read_rows(hid_t file, int g, int64_t row0, int64_t nrows, float *normals,
                          cmds_error *err) {
  hid_t d = est_open(file, g, "normals_est", err);
  if (d < 0) return err->code;
  int rc = cmds_h5_read_rows(d, H5T_NATIVE_FLOAT, row0, nrows, normals, err);
  H5Dclose(d);
  return rc ? cmds_error_wrap(err, "/%s/normals_est", est_groups[g]) : CMDS_OK;
}

/* ---- augmented samples (cmds-augment) ---- */

/* The communicator a file was opened with (MPI_COMM_SELF for a file not on the MPI-IO
 * driver); *owned says whether the caller must free it. */
static MPI_Comm file_comm(hid_t file, int *owned) {
  MPI_Comm comm = MPI_COMM_SELF;
  *owned = 0;
  hid_t fapl = H5Fget_access_plist(file);
  if (fapl >= 0 && H5Pget_driver(fapl) == H5FD_MPIO) {
    MPI_Info info = MPI_INFO_NULL;
    if (H5Pget_fapl_mpio(fapl, &comm, &info) >= 0) {
      *owned = 1;
      if (info != MPI_INFO_NULL) MPI_Info_free(&info);
    } else {
      comm = MPI_COMM_SELF;
    }
  }
  if (fapl >= 0) H5Pclose(fapl);
  return comm;
}

static int is_zero(const void *p, size_t bytes) {
  const unsigned char *c = p;
  for (size_t i = 0; i < bytes; i++)
    if (c[i]) return 0;
  return 1;
}

int cmds_sc_aug_parse_id(const char *id, int *k, char *support, size_t cap, int64_t *j) {
  if (strncmp(id, "augmented/k", 11)) return 0;
  const char *p = id + 11, *q = p;
  long kv = 0;
  while (*q >= '0' && *q <= '9' && q - p < 6) kv = kv * 10 + (*q++ - '0');
  if (q == p || *q != '/' || kv < 1 || (*p == '0')) return 0;
  const char *sid = q + 1, *last = strrchr(sid, '/');
  if (!last || last == sid || !last[1]) return 0;
  int64_t jv = 0;
  for (const char *d = last + 1; *d; d++) {
    if (*d < '0' || *d > '9' || jv > (int64_t)1 << 40) return 0;
    jv = jv * 10 + (*d - '0');
  }
  if (k) *k = (int)kv;
  if (j) *j = jv;
  if (support && cap) snprintf(support, cap, "%.*s", (int)(last - sid), sid);
  return 1;
}

/* Row i of b against the layout of schemas/sample_cache_v1.md (augmented group). */
static int aug_check_row(const cmds_sample_batch *b, int64_t i, const char *path, cmds_error *err) {
  const size_t px = (size_t)b->size * (size_t)b->size;
  char id[CMDS_SC_ID_LEN + 1], defect[CMDS_SC_DEFECT_LEN + 1];
  memcpy(id, b->sample_id + (size_t)i * CMDS_SC_ID_LEN, CMDS_SC_ID_LEN);
  id[CMDS_SC_ID_LEN] = 0;
  memcpy(defect, b->defect_type + (size_t)i * CMDS_SC_DEFECT_LEN, CMDS_SC_DEFECT_LEN);
  defect[CMDS_SC_DEFECT_LEN] = 0;
  const char *where = "";
  if (!cmds_sc_aug_parse_id(id, NULL, NULL, 0, NULL))
    where = "sample_id (expected \"augmented/k<k>/<support sample id>/<j>\")";
  else if (strcmp(defect, CMDS_SC_AUG_DEFECT)) where = "defect_type (expected \"" CMDS_SC_AUG_DEFECT "\")";
  else if (b->label[i]) where = "label (expected 0)";
  else if (!is_zero(b->xyz + (size_t)i * px * 3, px * 3 * sizeof(float))) where = "xyz (expected zeros)";
  else if (!is_zero(b->normals + (size_t)i * px * 3, px * 3 * sizeof(float))) where = "normals (expected zeros)";
  else if (!is_zero(b->fg_mask + (size_t)i * px, px)) where = "fg_mask (expected zeros)";
  else if (!is_zero(b->gt_mask + (size_t)i * px, px)) where = "gt_mask (expected zeros)";
  else if (!is_zero(b->plane + (size_t)i * 4, 4 * sizeof(double))) where = "plane (expected zeros)";
  else return CMDS_OK;
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: augmented row %lld ('%s'): bad %s", path, (long long)i, id, where);
}

int cmds_sc_aug_write(hid_t file, const char *path, int64_t n, int size, const cmds_sample_batch *b,
                      const char *identity, int zstd_level, cmds_error *err) {
  int owned = 0;
  MPI_Comm comm = file_comm(file, &owned);
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  /* Checks: the arguments on every rank, the rows on rank 0; rank 0's verdict for all. */
  int rc = CMDS_OK;
  hsize_t rgb[8];
  if (cmds_h5_dataset_shape(file, "support/rgb", rgb, 8) != 4)
    rc = CMDS_FAIL(err, CMDS_ESCHEMA, "%s: /support/rgb is missing or not (N, S, S, 3)", path);
  else if (size <= 0 || (hsize_t)size != rgb[1])
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: augmented images are %d x %d, the cache's are %d x %d", path, size, size,
                   (int)rgb[1], (int)rgb[1]);
  else if (n < 0) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: augmented rows: n = %lld", path, (long long)n);
  else if (n > 0 && (!identity || !identity[0] || strchr(identity, '\n') || strlen(identity) >= CMDS_SC_AUG_ID_LEN))
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: augmented_id must be one non-empty line under %d characters", path,
                   CMDS_SC_AUG_ID_LEN);
  else if (rank == 0 && n > 0 && (!b || b->size != size || b->cap < n))
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: augmented batch holds %lld rows of %d x %d, expected %lld of %d x %d", path,
                   b ? (long long)b->cap : 0LL, b ? b->size : 0, b ? b->size : 0, (long long)n, size, size);
  for (int64_t i = 0; rank == 0 && !rc && i < n; i++) rc = aug_check_row(b, i, path, err);
  MPI_Bcast(&rc, 1, MPI_INT, 0, comm);
  if (rc) {
    MPI_Bcast(err->msg, (int)sizeof err->msg, MPI_CHAR, 0, comm);
    err->code = rc;
    if (owned) MPI_Comm_free(&comm);
    return rc;
  }
  /* Replace: the old group (with any normals_est of it) and its attribute go first. */
  if (cmds_h5_exists(file, "augmented") && H5Ldelete(file, "augmented", H5P_DEFAULT) < 0)
    rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot remove the old /augmented", path);
  if (!rc && H5Aexists(file, "augmented_id") > 0 && H5Adelete(file, "augmented_id") < 0)
    rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot remove the old augmented_id", path);
  if (!rc && n > 0) {
    cmds_sc_group g;
    rc = cmds_sc_group_create(file, "augmented", n, size, zstd_level, &g, err);
    /* Rank 0 writes every row; the others join each collective write with no rows. */
    cmds_sample_batch none;
    memset(&none, 0, sizeof none);
    if (rank != 0) cmds_sample_batch_alloc(&none, 1, size);
    const size_t row_bytes = (size_t)size * (size_t)size * 3 * sizeof(float); /* the largest row */
    int64_t per_call = (int64_t)((CMDS_H5_MAX_WRITE_BYTES / 2) / row_bytes);
    if (per_call < 1) per_call = 1;
    for (int64_t r0 = 0; r0 < n && !rc; r0 += per_call) {
      int64_t cnt = n - r0 < per_call ? n - r0 : per_call;
      if (rank == 0) {
        /* a view of rows [r0, r0 + cnt) of b */
        const size_t px = (size_t)size * (size_t)size;
        cmds_sample_batch v = *b;
        v.cap = cnt;
        v.rgb = b->rgb + (size_t)r0 * px * 3;
        v.xyz = b->xyz + (size_t)r0 * px * 3;
        v.normals = b->normals + (size_t)r0 * px * 3;
        v.fg_mask = b->fg_mask + (size_t)r0 * px;
        v.gt_mask = b->gt_mask + (size_t)r0 * px;
        v.label = b->label + r0;
        v.defect_type = b->defect_type + (size_t)r0 * CMDS_SC_DEFECT_LEN;
        v.sample_id = b->sample_id + (size_t)r0 * CMDS_SC_ID_LEN;
        v.native_hw = b->native_hw + (size_t)r0 * 2;
        v.pad = b->pad + (size_t)r0 * 3;
        v.plane = b->plane + (size_t)r0 * 4;
        rc = cmds_sc_group_write(&g, r0, cnt, &v, err);
      } else {
        rc = cmds_sc_group_write(&g, 0, 0, &none, err);
      }
    }
    if (rank != 0) cmds_sample_batch_free(&none);
    cmds_sc_group_close(&g);
    if (rc) rc = cmds_error_wrap(err, "%s: /augmented", path);
    if (!rc && cmds_h5_attr_write_str(file, "augmented_id", identity))
      rc = CMDS_FAIL(err, CMDS_EIO, "%s: writing the augmented_id attribute", path);
  }
  if (!rc && H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) rc = CMDS_FAIL(err, CMDS_EIO, "%s: flush", path);
  if (owned) MPI_Comm_free(&comm);
  return rc;
}

int cmds_sc_aug_status(hid_t file, const char *path, int64_t *n, char *identity, size_t cap, cmds_error *err) {
  *n = 0;
  if (cap) identity[0] = 0;
  int has_group = cmds_h5_exists(file, "augmented"), has_attr = H5Aexists(file, "augmented_id") > 0;
  if (!has_group && !has_attr) return CMDS_OK;
  if (!has_group)
    return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: attribute augmented_id without a group /augmented (rerun cmds-augment)", path);
  if (!has_attr)
    return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: group /augmented without the attribute augmented_id (rerun cmds-augment)", path);
  hsize_t sup[8], aug[8];
  int ns = cmds_h5_dataset_shape(file, "support/rgb", sup, 8), na = cmds_h5_dataset_shape(file, "augmented/rgb", aug, 8);
  if (na != 4 || ns != 4 || aug[1] != sup[1] || aug[2] != sup[2] || aug[3] != 3)
    return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: /augmented/rgb should be (N, S, S, 3) with the S of /support/rgb", path);
  int rc = cmds_h5_attr_read_str(file, "augmented_id", identity, cap, path, err);
  if (rc) return rc;
  *n = (int64_t)aug[0];
  return CMDS_OK;
}

int cmds_sc_est_aug_state(hid_t file, const char *path, cmds_sc_aug_est_state *state, cmds_error *err) {
  *state = CMDS_SC_AUG_EST_ABSENT;
  int64_t n = 0;
  char id[CMDS_SC_AUG_ID_LEN], made_for[CMDS_SC_AUG_ID_LEN];
  int rc = cmds_sc_aug_status(file, path, &n, id, sizeof id, err);
  if (rc || !cmds_h5_exists(file, "augmented")) return rc;
  int have_est = cmds_h5_exists(file, "augmented/normals_est"), have_done = cmds_h5_exists(file, "augmented/normals_est_done");
  if (!have_est && !have_done) return CMDS_OK;
  hsize_t est[8], done[8];
  if (cmds_h5_dataset_shape(file, "augmented/normals_est", est, 8) != 4 || est[0] != (hsize_t)n || est[3] != 3 ||
      cmds_h5_dataset_shape(file, "augmented/normals_est_done", done, 8) != 1 || done[0] != (hsize_t)n)
    return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: /augmented/normals_est should be (N, S, S, 3) with (N) done flags beside", path);
  hid_t grp = H5Gopen2(file, "augmented", H5P_DEFAULT);
  made_for[0] = 0;
  if (H5Aexists(grp, "normals_est_augmented_id") > 0)
    rc = cmds_h5_attr_read_str(grp, "normals_est_augmented_id", made_for, sizeof made_for, path, err);
  H5Gclose(grp);
  if (rc) return rc;
  if (strcmp(made_for, id)) {
    *state = CMDS_SC_AUG_EST_STALE;
    return CMDS_OK;
  }
  uint8_t *flags = cmds_xcalloc((size_t)(n ? n : 1), 1);
  rc = cmds_sc_est_read_done(file, CMDS_SC_AUGMENTED, flags, err);
  int all = 1;
  for (int64_t i = 0; i < n && !rc; i++) all &= flags[i] != 0;
  free(flags);
  if (rc) return cmds_error_wrap(err, "%s", path);
  *state = all ? CMDS_SC_AUG_EST_COMPLETE : CMDS_SC_AUG_EST_PARTIAL;
  return CMDS_OK;
}

int cmds_sc_est_aug_prepare(hid_t file, const char *path, int zstd_level, cmds_error *err) {
  int64_t n = 0;
  char id[CMDS_SC_AUG_ID_LEN];
  int rc = cmds_sc_aug_status(file, path, &n, id, sizeof id, err);
  if (rc) return rc;
  if (!cmds_h5_exists(file, "augmented"))
    return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: no group /augmented to estimate normals for", path);
  rc = est_prepare_group(file, path, CMDS_SC_AUGMENTED, zstd_level, err);
  if (rc) return rc;
  hid_t grp = H5Gopen2(file, "augmented", H5P_DEFAULT);
  int w = grp < 0 || cmds_h5_attr_write_str(grp, "normals_est_augmented_id", id);
  if (grp >= 0) H5Gclose(grp);
  if (w) return CMDS_FAIL(err, CMDS_EIO, "%s: writing /augmented normals_est_augmented_id", path);
  if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) return CMDS_FAIL(err, CMDS_EIO, "%s: flush", path);
  return CMDS_OK;
}

int cmds_sc_open_rw(hid_t *file, const char *path, MPI_Comm comm, cmds_error *err) {
  /* Schema check through a read-only open first (it names the file on any mismatch). */
  hid_t t;
  int rc = cmds_h5_open_read(&t, path, comm, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, err);
  if (rc) return rc;
  H5Fclose(t);
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
  H5Pset_all_coll_metadata_ops(fapl, 1);
  H5Pset_coll_metadata_write(fapl, 1);
  *file = H5Fopen(path, H5F_ACC_RDWR, fapl);
  H5Pclose(fapl);
  if (*file < 0) return CMDS_FAIL(err, CMDS_EIO, "%s: cannot open for writing", path);
  return CMDS_OK;
}
