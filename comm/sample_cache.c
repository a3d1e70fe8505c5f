/* sample_cache: see sample_cache.h and schemas/sample_cache_v1.md. */
#include "sample_cache.h"

#include <stdlib.h>
#include <string.h>

#include "h5io.h"

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

void cmds_sc_info_free(cmds_sc_info *info) {
  free(info->prep_config);
  info->prep_config = NULL;
}
