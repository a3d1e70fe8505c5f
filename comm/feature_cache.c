/* feature_cache: see feature_cache.h and schemas/feature_cache_v1.md. */
#include "feature_cache.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "sample_cache.h"

static const char *const group_names[CMDS_FC_GROUPS] = {"support", "test", "augmented"};
static const char *const mod_names[CMDS_FC_NMOD] = {"rgb", "normals", "normals_est"};

const char *cmds_fc_modality_name(cmds_fc_modality m) { return mod_names[m]; }

int cmds_fc_group_has(const cmds_fc_info *info, int g, cmds_fc_modality m) {
  if (g < 0 || g >= CMDS_FC_GROUPS || !(info->modalities & (1 << m))) return 0;
  if (g == 2) return info->n[2] > 0 && m != CMDS_FC_NORMALS && (info->modalities & (1 << CMDS_FC_NORMALS_EST));
  return 1;
}

hid_t cmds_h5_f16_type(void) {
  hid_t t = H5Tcopy(H5T_IEEE_F32LE);
  H5Tset_fields(t, 15, 10, 5, 0, 10); /* sign bit, exponent at 10 (5 bits), mantissa 10 bits */
  H5Tset_size(t, 2);
  H5Tset_ebias(t, 15);
  return t;
}

static int write_info(hid_t file, const cmds_fc_info *in) {
  char blocks[128] = "";
  for (int64_t i = 0, n = 0; i < in->nblocks; i++)
    n += snprintf(blocks + n, sizeof blocks - (size_t)n, "%s%lld", i ? "," : "", (long long)in->blocks[i]);
  int rc = cmds_h5_write_schema(file, CMDS_FEATURE_CACHE_SCHEMA, CMDS_FEATURE_CACHE_VERSION);
  rc |= cmds_h5_attr_write_str(file, "dataset", in->dataset);
  rc |= cmds_h5_attr_write_str(file, "category", in->category);
  rc |= cmds_h5_attr_write_str(file, "backbone", in->backbone);
  rc |= cmds_h5_attr_write_str(file, "weights_id", in->weights_id);
  rc |= cmds_h5_attr_write_str(file, "sample_list_hash", in->sample_list_hash);
  if (in->sample_cache_id[0]) rc |= cmds_h5_attr_write_str(file, "sample_cache_id", in->sample_cache_id);
  rc |= cmds_h5_attr_write_str(file, "blocks", blocks);
  rc |= cmds_h5_attr_write_i64(file, "grid", in->grid);
  rc |= cmds_h5_attr_write_i64(file, "width", in->width);
  rc |= cmds_h5_attr_write_i64(file, "image_size", in->image_size);
  rc |= cmds_h5_attr_write_i64(file, "final_norm", in->final_norm);
  rc |= cmds_h5_attr_write_i64(file, "modalities", in->modalities);
  if (in->modalities & (1 << CMDS_FC_NORMALS_EST)) rc |= cmds_h5_attr_write_str(file, "normals_est_id", in->normals_est_id);
  if (in->n[2] > 0) rc |= cmds_h5_attr_write_str(file, "augmented_id", in->augmented_id);
  return rc ? -1 : 0;
}

int cmds_fc_read_info(hid_t file, const char *path, cmds_fc_info *in, cmds_error *err) {
  memset(in, 0, sizeof *in);
  char blocks[128];
  int rc = cmds_h5_attr_read_str(file, "dataset", in->dataset, sizeof in->dataset, path, err);
  if (!rc) rc = cmds_h5_attr_read_str(file, "category", in->category, sizeof in->category, path, err);
  if (!rc) rc = cmds_h5_attr_read_str(file, "backbone", in->backbone, sizeof in->backbone, path, err);
  if (!rc) rc = cmds_h5_attr_read_str(file, "weights_id", in->weights_id, sizeof in->weights_id, path, err);
  if (!rc) rc = cmds_h5_attr_read_str(file, "sample_list_hash", in->sample_list_hash, sizeof in->sample_list_hash, path, err);
  if (!rc) rc = cmds_h5_attr_read_str(file, "blocks", blocks, sizeof blocks, path, err);
  if (!rc) rc = cmds_h5_attr_read_i64(file, "grid", &in->grid, path, err);
  if (!rc) rc = cmds_h5_attr_read_i64(file, "width", &in->width, path, err);
  if (!rc) rc = cmds_h5_attr_read_i64(file, "image_size", &in->image_size, path, err);
  if (!rc) rc = cmds_h5_attr_read_i64(file, "final_norm", &in->final_norm, path, err);
  if (!rc) rc = cmds_h5_attr_read_i64(file, "modalities", &in->modalities, path, err);
  /* optional: absent in files older than it (""), which cmds-features then computes again */
  if (!rc && H5Aexists(file, "sample_cache_id") > 0)
    rc = cmds_h5_attr_read_str(file, "sample_cache_id", in->sample_cache_id, sizeof in->sample_cache_id, path, err);
  /* optional: written since cmds-estimate exists, absent in older files ("") */
  if (!rc && H5Aexists(file, "normals_est_id") > 0)
    rc = cmds_h5_attr_read_str(file, "normals_est_id", in->normals_est_id, sizeof in->normals_est_id, path, err);
  /* optional: the augmented group (cmds-augment) and its identity */
  int aug_group = cmds_h5_exists(file, "augmented"), aug_attr = H5Aexists(file, "augmented_id") > 0;
  if (!rc && aug_group != aug_attr)
    rc = CMDS_FAIL(err, CMDS_ESCHEMA, "%s: %s without %s", path, aug_group ? "group /augmented" : "attribute augmented_id",
                   aug_group ? "the attribute augmented_id" : "a group /augmented");
  if (!rc && aug_attr)
    rc = cmds_h5_attr_read_str(file, "augmented_id", in->augmented_id, sizeof in->augmented_id, path, err);
  if (!rc && aug_group && !(in->modalities & (1 << CMDS_FC_NORMALS_EST)))
    rc = CMDS_FAIL(err, CMDS_ESCHEMA, "%s: group /augmented in a file without normals_est", path);
  if (rc) return rc;
  for (char *p = blocks; *p && in->nblocks < CMDS_FC_MAX_BLOCKS;) {
    in->blocks[in->nblocks++] = strtoll(p, &p, 10);
    if (*p == ',') p++;
  }
  for (int g = 0; g < CMDS_FC_GROUPS; g++) {
    char name[64];
    hsize_t dims[8];
    in->n[g] = 0;
    if (g == 2 && !aug_group) continue;
    for (int m = 0; m < CMDS_FC_NMOD; m++) {
      if (!(in->modalities & (1 << m)) || (g == 2 && m == CMDS_FC_NORMALS)) continue;
      snprintf(name, sizeof name, "%s/%s", group_names[g], mod_names[m]);
      int nd = cmds_h5_dataset_shape(file, name, dims, 8);
      if (nd != 5 || dims[1] != (hsize_t)in->nblocks || dims[2] != (hsize_t)in->grid ||
          dims[3] != (hsize_t)in->grid || dims[4] != (hsize_t)in->width)
        return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: /%s should be (N, %lld, %lld, %lld, %lld)", path, name,
                         (long long)in->nblocks, (long long)in->grid, (long long)in->grid,
                         (long long)in->width);
      if (g == 2 && in->n[2] && in->n[2] != (int64_t)dims[0])
        return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: the datasets of /augmented have different row counts", path);
      in->n[g] = (int64_t)dims[0];
    }
  }
  return CMDS_OK;
}

/* Group g's datasets of modality m for a file described by info: the rows (float16, one row
 * per chunk, zstd) and their done flags (contiguous, all 0, allocated at once). Collective in
 * a parallel file; serial in cmds_fc_extend's copy. */
static int create_modality(hid_t grp, const char *file, int g, cmds_fc_modality m, const cmds_fc_info *info,
                           int zstd_level, cmds_error *err) {
  hid_t f16 = cmds_h5_f16_type();
  hsize_t dims[5] = {(hsize_t)info->n[g], (hsize_t)info->nblocks, (hsize_t)info->grid, (hsize_t)info->grid,
                     (hsize_t)info->width};
  hid_t d = cmds_h5_create_rows(grp, mod_names[m], f16, 5, dims, zstd_level, err);
  H5Tclose(f16);
  char done[64];
  snprintf(done, sizeof done, "%s_done", mod_names[m]);
  /* Done flags: contiguous, all zero (fill value), written collectively per round. */
  hsize_t n = (hsize_t)info->n[g];
  hid_t space = H5Screate_simple(1, &n, NULL);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  uint8_t zero = 0;
  H5Pset_fill_value(dcpl, H5T_NATIVE_UINT8, &zero);
  H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
  hid_t dd = H5Dcreate2(grp, done, H5T_NATIVE_UINT8, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Pclose(dcpl);
  H5Sclose(space);
  int rc = d < 0 || dd < 0 ? CMDS_FAIL(err, CMDS_EIO, "%s: cannot create /%s/%s", file, group_names[g], mod_names[m])
                           : CMDS_OK;
  if (d >= 0) H5Dclose(d);
  if (dd >= 0) H5Dclose(dd);
  return rc;
}

/* Every group and dataset of info that `file` lacks (all of them in a new file). */
static int create_missing(hid_t file, const char *name, const cmds_fc_info *info, int zstd_level, cmds_error *err) {
  int rc = CMDS_OK;
  for (int g = 0; g < CMDS_FC_GROUPS && !rc; g++) {
    if (g == 2 && info->n[2] <= 0) continue;
    hid_t grp = cmds_h5_exists(file, group_names[g])
                    ? H5Gopen2(file, group_names[g], H5P_DEFAULT)
                    : H5Gcreate2(file, group_names[g], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (grp < 0) return CMDS_FAIL(err, CMDS_EIO, "%s: cannot create the group /%s", name, group_names[g]);
    for (int m = 0; m < CMDS_FC_NMOD && !rc; m++)
      if (cmds_fc_group_has(info, g, (cmds_fc_modality)m) && !cmds_h5_exists(grp, mod_names[m]))
        rc = create_modality(grp, name, g, (cmds_fc_modality)m, info, zstd_level, err);
    H5Gclose(grp);
  }
  return rc;
}

static int check_creatable(const char *path, const cmds_fc_info *info, cmds_error *err) {
  if (info->n[2] > 0 && !(info->modalities & (1 << CMDS_FC_NORMALS_EST)))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: augmented rows need the normals_est modality (they have no real 3D)", path);
  if (info->n[2] > 0 && !info->augmented_id[0])
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: augmented rows without an augmented_id", path);
  return CMDS_OK;
}

int cmds_fc_create(cmds_h5file *f, const char *path, MPI_Comm comm, const cmds_fc_info *info,
                   int zstd_level, cmds_error *err) {
  int rc = check_creatable(path, info, err);
  if (!rc) rc = cmds_h5_create(f, path, comm, err);
  if (rc) return rc;
  if (write_info(f->id, info)) rc = CMDS_FAIL(err, CMDS_EIO, "%s: writing attributes", f->partial);
  if (!rc) rc = create_missing(f->id, f->partial, info, zstd_level, err);
  if (!rc && H5Fflush(f->id, H5F_SCOPE_GLOBAL) < 0) rc = CMDS_FAIL(err, CMDS_EIO, "%s: flush", f->partial);
  return rc;
}

/* The first base-identity field in which a and b differ, or NULL. */
static const char *base_diff(const cmds_fc_info *a, const cmds_fc_info *b) {
  if (strcmp(a->dataset, b->dataset) || strcmp(a->category, b->category)) return "dataset or category";
  if (strcmp(a->backbone, b->backbone)) return "backbone";
  if (strcmp(a->weights_id, b->weights_id)) return "weights_id";
  if (strcmp(a->sample_list_hash, b->sample_list_hash)) return "sample_list_hash";
  if (strcmp(a->sample_cache_id, b->sample_cache_id)) return "sample_cache_id";
  if (a->nblocks != b->nblocks) return "blocks";
  for (int64_t i = 0; i < a->nblocks; i++)
    if (a->blocks[i] != b->blocks[i]) return "blocks";
  if (a->grid != b->grid || a->width != b->width || a->image_size != b->image_size) return "grid, width or image_size";
  if (a->final_norm != b->final_norm) return "final_norm";
  if (a->n[0] != b->n[0] || a->n[1] != b->n[1]) return "support/test row counts";
  return NULL;
}

int cmds_fc_same_base(const cmds_fc_info *a, const cmds_fc_info *b) { return base_diff(a, b) == NULL; }

int cmds_fc_same_info(const cmds_fc_info *a, const cmds_fc_info *b) {
  return cmds_fc_same_base(a, b) && a->modalities == b->modalities && a->n[2] == b->n[2] &&
         !strcmp(a->normals_est_id, b->normals_est_id) && !strcmp(a->augmented_id, b->augmented_id);
}

int cmds_fc_extend(const char *path, const cmds_fc_info *want, int zstd_level, int *extended, char *why,
                   size_t why_cap, cmds_error *err) {
  char tmp[4200], partial[4200], dummy[8];
  if (!why) why = dummy, why_cap = sizeof dummy;
  *extended = 0;
  snprintf(why, why_cap, "no complete file");
  if (!cmds_is_file(path)) return CMDS_OK;
  int rc = check_creatable(path, want, err);
  if (rc) return rc;
  /* What is there: a file this build reads, of the same base, with both real modalities. */
  hid_t t;
  cmds_error e;
  cmds_fc_info got;
  if (cmds_h5_open_read(&t, path, MPI_COMM_SELF, CMDS_FEATURE_CACHE_SCHEMA, CMDS_FEATURE_CACHE_VERSION, &e)) {
    snprintf(why, why_cap, "%s", e.msg);
    return CMDS_OK;
  }
  int usable = !cmds_fc_read_info(t, path, &got, &e);
  H5Fclose(t);
  const int real = (1 << CMDS_FC_RGB) | (1 << CMDS_FC_NORMALS), est = 1 << CMDS_FC_NORMALS_EST;
  const char *diff = usable ? base_diff(&got, want) : NULL;
  if (!usable) snprintf(why, why_cap, "%s", e.msg);
  else if (diff) snprintf(why, why_cap, "its %s differs from this run's", diff);
  else if ((got.modalities & real) != real) snprintf(why, why_cap, "it lacks rgb or normals");
  if (!usable || diff || (got.modalities & real) != real) return CMDS_OK;
  /* What stays: rgb and normals always; normals_est of the same estimate; the augmented
   * group of the same estimate and the same augmented images. */
  int keep_est = (got.modalities & est) && (want->modalities & est) && !strcmp(got.normals_est_id, want->normals_est_id);
  int keep_aug = keep_est && got.n[2] > 0 && got.n[2] == want->n[2] && !strcmp(got.augmented_id, want->augmented_id);
  const char *skip[10];
  int nskip = 0;
  skip[nskip++] = "@modalities"; /* the root attributes that change are written afresh below */
  skip[nskip++] = "@normals_est_id";
  skip[nskip++] = "@augmented_id";
  if (!keep_est) {
    skip[nskip++] = "support/normals_est";
    skip[nskip++] = "support/normals_est_done";
    skip[nskip++] = "test/normals_est";
    skip[nskip++] = "test/normals_est_done";
  }
  if (!keep_aug) skip[nskip++] = "augmented";
  snprintf(tmp, sizeof tmp, "%s.extend", path);
  snprintf(partial, sizeof partial, "%s.partial", path);
  rc = cmds_h5_copy_compact(path, tmp, skip, nskip, err);
  if (rc) return cmds_error_wrap(err, "extending the feature cache %s", path);
  hid_t f = H5Fopen(tmp, H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0) rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot open the copy for writing", tmp);
  if (!rc && write_info(f, want)) rc = CMDS_FAIL(err, CMDS_EIO, "%s: writing attributes", tmp);
  if (!rc) rc = create_missing(f, tmp, want, zstd_level, err);
  if (f >= 0 && H5Fclose(f) < 0 && !rc) rc = CMDS_FAIL(err, CMDS_EIO, "%s: closing failed (disk full?)", tmp);
  if (!rc) { /* the bytes on disk before the name */
    FILE *fp = fopen(tmp, "rb+");
    if (!fp || fsync(fileno(fp)) != 0) rc = CMDS_FAIL(err, CMDS_EIO, "%s: flush failed", tmp);
    if (fp) fclose(fp);
  }
  if (!rc && getenv("CMDS_TEST_KILL_IN_EXTEND")) raise(SIGKILL); /* fault injection for tests: copy done, not renamed */
  if (!rc && rename(tmp, partial) != 0) rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot rename to %s", tmp, partial);
  if (rc) {
    unlink(tmp);
    return rc;
  }
  *extended = 1;
  snprintf(why, why_cap, "kept rgb, normals%s%s", keep_est ? ", normals_est" : "", keep_aug ? ", augmented" : "");
  return CMDS_OK;
}

int cmds_fc_reopen(cmds_h5file *f, const char *path, MPI_Comm comm, const cmds_fc_info *want,
                   cmds_error *err) {
  memset(f, 0, sizeof *f);
  f->id = H5I_INVALID_HID;
  f->comm = comm;
  snprintf(f->path, sizeof f->path, "%s", path);
  snprintf(f->partial, sizeof f->partial, "%s.partial", path);
  int rank, ok = 0;
  MPI_Comm_rank(comm, &rank);
  /* Rank 0 checks the partial file alone first: a file cut by a kill may not open at all. */
  if (rank == 0 && cmds_is_file(f->partial)) {
    hid_t t;
    cmds_error e;
    cmds_fc_info got;
    if (!cmds_h5_open_read(&t, f->partial, MPI_COMM_SELF, CMDS_FEATURE_CACHE_SCHEMA,
                           CMDS_FEATURE_CACHE_VERSION, &e)) {
      ok = !cmds_fc_read_info(t, f->partial, &got, &e) && cmds_fc_same_info(&got, want);
      H5Fclose(t);
    }
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
  if (!ok) return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: no resumable partial file", f->partial);
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
  H5Pset_all_coll_metadata_ops(fapl, 1);
  H5Pset_coll_metadata_write(fapl, 1);
  f->id = H5Fopen(f->partial, H5F_ACC_RDWR, fapl);
  H5Pclose(fapl);
  if (f->id < 0) return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: cannot reopen for writing", f->partial);
  return CMDS_OK;
}

static hid_t open_dset(hid_t file, int group, const char *name, cmds_error *err) {
  char p[96];
  snprintf(p, sizeof p, "%s/%s", group_names[group], name);
  hid_t d = cmds_h5_exists(file, group_names[group]) && cmds_h5_exists(file, p) ? H5Dopen2(file, p, H5P_DEFAULT) : -1;
  if (d < 0) CMDS_FAIL(err, CMDS_ESCHEMA, "feature cache: /%s is missing", p);
  return d;
}

int cmds_fc_read_done(hid_t file, int group, cmds_fc_modality m, uint8_t *done, cmds_error *err) {
  char name[64];
  snprintf(name, sizeof name, "%s_done", mod_names[m]);
  hid_t d = open_dset(file, group, name, err);
  if (d < 0) return err->code;
  herr_t rc = H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, done);
  H5Dclose(d);
  return rc < 0 ? CMDS_FAIL(err, CMDS_EIO, "reading /%s/%s", group_names[group], name) : CMDS_OK;
}

/* Collective write of rows of a 1-D or N-D dataset; an empty selection when nrows == 0. */
static int write_rows(hid_t file, int group, const char *name, hid_t memtype, int64_t row0, int64_t nrows,
                      const void *buf, cmds_error *err) {
  hid_t d = open_dset(file, group, name, err);
  if (d < 0) return err->code;
  int rc = cmds_h5_write_rows(d, memtype, nrows ? row0 : 0, nrows, buf, err);
  H5Dclose(d);
  return rc ? cmds_error_wrap(err, "/%s/%s", group_names[group], name) : CMDS_OK;
}

int cmds_fc_write_rows(hid_t file, int group, cmds_fc_modality m, int64_t row0, int64_t nrows,
                       const uint16_t *f16, cmds_error *err) {
  hid_t t = cmds_h5_f16_type();
  int rc = write_rows(file, group, mod_names[m], t, row0, nrows, f16, err);
  H5Tclose(t);
  if (!rc && H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) rc = CMDS_FAIL(err, CMDS_EIO, "flushing features");
  if (rc) return rc;
  char name[64];
  snprintf(name, sizeof name, "%s_done", mod_names[m]);
  uint8_t *ones = cmds_xmalloc((size_t)(nrows ? nrows : 1));
  memset(ones, 1, (size_t)(nrows ? nrows : 1));
  rc = write_rows(file, group, name, H5T_NATIVE_UINT8, row0, nrows, ones, err);
  free(ones);
  if (!rc && H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) rc = CMDS_FAIL(err, CMDS_EIO, "flushing done flags");
  return rc;
}

int cmds_fc_read_rows(hid_t file, int group, cmds_fc_modality m, int64_t row0, int64_t nrows,
                      uint16_t *f16, cmds_error *err) {
  hid_t d = open_dset(file, group, mod_names[m], err);
  if (d < 0) return err->code;
  hid_t t = cmds_h5_f16_type();
  int rc = cmds_h5_read_rows(d, t, row0, nrows, f16, err);
  H5Tclose(t);
  H5Dclose(d);
  return rc;
}
