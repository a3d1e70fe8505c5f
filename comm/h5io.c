/* h5io: see h5io.h. */
#define _GNU_SOURCE
#include "h5io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmds_mpi.h"
#include "h5zstd.h"

void cmds_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static hid_t fapl_mpio(MPI_Comm comm) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
  /* Metadata is written collectively; reads of it are collective too. */
  H5Pset_all_coll_metadata_ops(fapl, 1);
  H5Pset_coll_metadata_write(fapl, 1);
  return fapl;
}

int cmds_h5_create(cmds_h5file *f, const char *path, MPI_Comm comm, cmds_error *err) {
  memset(f, 0, sizeof *f);
  f->id = H5I_INVALID_HID;
  f->comm = comm;
  if (strlen(path) >= sizeof f->path)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: path too long", path);
  snprintf(f->path, sizeof f->path, "%s", path);
  snprintf(f->partial, sizeof f->partial, "%s.partial", path);
  if (cmds_h5z_zstd_register() < 0)
    return CMDS_FAIL(err, CMDS_EINTERNAL, "cannot register the zstd HDF5 filter (32015)");
  hid_t fapl = fapl_mpio(comm);
  f->id = H5Fcreate(f->partial, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  H5Pclose(fapl);
  if (f->id < 0)
    return CMDS_FAIL(err, CMDS_EIO, "%s: cannot create (is the folder writable?)", f->partial);
  return CMDS_OK;
}

int cmds_h5_commit(cmds_h5file *f, cmds_error *err) {
  int rank = 0, rc = CMDS_OK;
  MPI_Comm_rank(f->comm, &rank);
  if (H5Fclose(f->id) < 0) rc = CMDS_FAIL(err, CMDS_EIO, "%s: closing failed", f->partial);
  f->id = H5I_INVALID_HID;
  MPI_CHECK(MPI_Barrier(f->comm));
  if (rank == 0 && rc == CMDS_OK) {
    int fd = open(f->partial, O_RDONLY);
    if (fd >= 0) {
      fsync(fd);
      close(fd);
    }
    if (rename(f->partial, f->path) != 0)
      rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot rename to %s: %s", f->partial, f->path,
                     strerror(errno));
  }
  MPI_CHECK(MPI_Bcast(&rc, 1, MPI_INT, 0, f->comm));
  if (rc != CMDS_OK && rank != 0)
    CMDS_FAIL(err, rc, "%s: rank 0 could not publish the file", f->path);
  return rc;
}

void cmds_h5_abandon(cmds_h5file *f) {
  int rank = 0;
  MPI_Comm_rank(f->comm, &rank);
  if (f->id >= 0) H5Fclose(f->id);
  f->id = H5I_INVALID_HID;
  MPI_Barrier(f->comm);
  if (rank == 0) unlink(f->partial);
  MPI_Barrier(f->comm); /* gone for everyone when this returns */
}

int cmds_h5_write_schema(hid_t file, const char *schema, int version) {
  if (cmds_h5_attr_write_str(file, "cmds_schema", schema) < 0) return -1;
  return cmds_h5_attr_write_i64(file, "cmds_schema_version", version);
}

int cmds_h5_open_read(hid_t *file, const char *path, MPI_Comm comm, const char *schema,
                      int version, cmds_error *err) {
  *file = H5I_INVALID_HID;
  if (cmds_h5z_zstd_register() < 0)
    return CMDS_FAIL(err, CMDS_EINTERNAL, "cannot register the zstd HDF5 filter (32015)");
  if (access(path, R_OK) != 0)
    return CMDS_FAIL(err, CMDS_EIO, "%s: cannot open: %s", path, strerror(errno));
#if H5_VERSION_GE(1, 12, 0)
  if (H5Fis_accessible(path, H5P_DEFAULT) <= 0)
#else
  if (H5Fis_hdf5(path) <= 0)
#endif
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: not an HDF5 file (truncated or another format)", path);
  hid_t fapl = fapl_mpio(comm);
  hid_t id = H5Fopen(path, H5F_ACC_RDONLY, fapl);
  H5Pclose(fapl);
  if (id < 0) return CMDS_FAIL(err, CMDS_EIO, "%s: HDF5 cannot open it", path);
  if (schema) {
    char got[128];
    int64_t ver = -1;
    int rc = cmds_h5_attr_read_str(id, "cmds_schema", got, sizeof got, path, err);
    if (!rc) rc = cmds_h5_attr_read_i64(id, "cmds_schema_version", &ver, path, err);
    if (!rc && strcmp(got, schema) != 0)
      rc = CMDS_FAIL(err, CMDS_ESCHEMA, "%s: holds a '%s' file, expected '%s'", path, got, schema);
    if (!rc && ver != version)
      rc = CMDS_FAIL(err, CMDS_ESCHEMA,
                     "%s: schema '%s' version %lld, this build reads version %d "
                     "(re-run the stage that wrote it, or use a matching cmds)",
                     path, schema, (long long)ver, version);
    if (rc) {
      H5Fclose(id);
      return rc;
    }
  }
  *file = id;
  return CMDS_OK;
}

static int attr_write(hid_t obj, const char *name, hid_t type, const void *value) {
  if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
  hid_t space = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  herr_t rc = a < 0 ? -1 : H5Awrite(a, type, value);
  if (a >= 0) H5Aclose(a);
  H5Sclose(space);
  return rc < 0 ? -1 : 0;
}

int cmds_h5_attr_write_str(hid_t obj, const char *name, const char *value) {
  hid_t t = cmds_h5_str_type(strlen(value) + 1);
  int rc = attr_write(obj, name, t, value);
  H5Tclose(t);
  return rc;
}

int cmds_h5_attr_write_i64(hid_t obj, const char *name, int64_t value) {
  return attr_write(obj, name, H5T_NATIVE_INT64, &value);
}

int cmds_h5_attr_write_f64(hid_t obj, const char *name, double value) {
  return attr_write(obj, name, H5T_NATIVE_DOUBLE, &value);
}

static hid_t attr_open(hid_t obj, const char *name, const char *what, cmds_error *err) {
  if (H5Aexists(obj, name) <= 0) {
    CMDS_FAIL(err, CMDS_ESCHEMA, "%s: attribute '%s' is missing", what, name);
    return H5I_INVALID_HID;
  }
  hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  if (a < 0) CMDS_FAIL(err, CMDS_EIO, "%s: cannot open attribute '%s'", what, name);
  return a;
}

int cmds_h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t cap, const char *what,
                          cmds_error *err) {
  hid_t a = attr_open(obj, name, what, err);
  if (a < 0) return err ? err->code : CMDS_ESCHEMA;
  hid_t ft = H5Aget_type(a);
  int rc = CMDS_OK;
  if (H5Tget_class(ft) != H5T_STRING) {
    rc = CMDS_FAIL(err, CMDS_ESCHEMA, "%s: attribute '%s' is not a string", what, name);
  } else if (H5Tis_variable_str(ft) > 0) {
    /* Written by h5py: variable-length string. */
    char *s = NULL;
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, H5T_VARIABLE);
    H5Tset_cset(mt, H5Tget_cset(ft)); /* h5py writes UTF-8 */
    if (H5Aread(a, mt, &s) < 0 || !s) rc = CMDS_FAIL(err, CMDS_EIO, "%s: reading '%s'", what, name);
    else snprintf(buf, cap, "%s", s);
    if (s) H5free_memory(s);
    H5Tclose(mt);
  } else {
    size_t n = H5Tget_size(ft);
    char *tmp = cmds_xcalloc(n + 1, 1);
    hid_t mt = H5Tcopy(H5T_C_S1); /* n + 1: room for the NUL of NULLPAD strings (h5py) */
    H5Tset_size(mt, n + 1);
    H5Tset_cset(mt, H5Tget_cset(ft));
    if (H5Aread(a, mt, tmp) < 0) rc = CMDS_FAIL(err, CMDS_EIO, "%s: reading '%s'", what, name);
    else snprintf(buf, cap, "%s", tmp);
    H5Tclose(mt);
    free(tmp);
  }
  H5Tclose(ft);
  H5Aclose(a);
  return rc;
}

static int attr_read_num(hid_t obj, const char *name, hid_t memtype, void *value, const char *what,
                         cmds_error *err) {
  hid_t a = attr_open(obj, name, what, err);
  if (a < 0) return err ? err->code : CMDS_ESCHEMA;
  hid_t space = H5Aget_space(a);
  int rc = CMDS_OK;
  if (H5Sget_simple_extent_npoints(space) != 1)
    rc = CMDS_FAIL(err, CMDS_ESCHEMA, "%s: attribute '%s' is not a scalar", what, name);
  else if (H5Aread(a, memtype, value) < 0)
    rc = CMDS_FAIL(err, CMDS_ESCHEMA, "%s: attribute '%s' is not a number", what, name);
  H5Sclose(space);
  H5Aclose(a);
  return rc;
}

int cmds_h5_attr_read_i64(hid_t obj, const char *name, int64_t *value, const char *what,
                          cmds_error *err) {
  return attr_read_num(obj, name, H5T_NATIVE_INT64, value, what, err);
}

int cmds_h5_attr_read_f64(hid_t obj, const char *name, double *value, const char *what,
                          cmds_error *err) {
  return attr_read_num(obj, name, H5T_NATIVE_DOUBLE, value, what, err);
}

hid_t cmds_h5_str_type(size_t len) {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, len ? len : 1);
  H5Tset_strpad(t, H5T_STR_NULLTERM);
  return t;
}

hid_t cmds_h5_create_rows(hid_t loc, const char *name, hid_t type, int ndims, const hsize_t *dims,
                          int level, cmds_error *err) {
  hsize_t chunk[8];
  CMDS_ASSERT(ndims >= 1 && ndims <= 8);
  chunk[0] = 1;
  for (int i = 1; i < ndims; i++) chunk[i] = dims[i] ? dims[i] : 1;
  hid_t space = H5Screate_simple(ndims, dims, NULL);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, ndims, chunk);
  H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
  if (level >= 0) {
    unsigned cd[1] = {(unsigned)level};
    if (cmds_h5z_zstd_register() < 0 ||
        H5Pset_filter(dcpl, CMDS_H5Z_ZSTD_ID, H5Z_FLAG_MANDATORY, 1, cd) < 0) {
      H5Pclose(dcpl);
      H5Sclose(space);
      CMDS_FAIL(err, CMDS_EINTERNAL, "dataset '%s': cannot set the zstd filter", name);
      return H5I_INVALID_HID;
    }
  }
  hid_t d = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Pclose(dcpl);
  H5Sclose(space);
  if (d < 0) CMDS_FAIL(err, CMDS_EIO, "cannot create dataset '%s'", name);
  return d;
}

static int row_selection(hid_t dset, int64_t row0, int64_t nrows, hid_t *fspace, hid_t *mspace,
                         size_t *row_elems) {
  hsize_t dims[8], start[8] = {0}, count[8];
  *fspace = H5Dget_space(dset);
  int nd = H5Sget_simple_extent_dims(*fspace, dims, NULL);
  if (nd < 1 || nd > 8 || row0 < 0 || (hsize_t)(row0 + nrows) > dims[0]) {
    H5Sclose(*fspace);
    return -1;
  }
  *row_elems = 1;
  for (int i = 0; i < nd; i++) {
    count[i] = dims[i];
    if (i) *row_elems *= dims[i];
  }
  start[0] = (hsize_t)row0;
  count[0] = (hsize_t)nrows;
  if (nrows == 0) {
    H5Sselect_none(*fspace);
    *mspace = H5Screate(H5S_NULL);
    H5Sselect_none(*mspace);
  } else {
    H5Sselect_hyperslab(*fspace, H5S_SELECT_SET, start, NULL, count, NULL);
    *mspace = H5Screate_simple(nd, count, NULL);
  }
  return 0;
}

int cmds_h5_write_rows(hid_t dset, hid_t memtype, int64_t row0, int64_t nrows, const void *buf,
                       cmds_error *err) {
  hid_t fs, ms;
  size_t row_elems;
  if (row_selection(dset, row0, nrows, &fs, &ms, &row_elems) < 0)
    return CMDS_FAIL(err, CMDS_EINTERNAL, "write of rows [%lld, %lld) outside the dataset",
                     (long long)row0, (long long)(row0 + nrows));
  size_t bytes = (size_t)nrows * row_elems * H5Tget_size(memtype);
  CMDS_ASSERT(bytes < CMDS_H5_MAX_WRITE_BYTES);
  hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
  H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
  herr_t rc = H5Dwrite(dset, memtype, ms, fs, dxpl, nrows ? buf : NULL);
  H5Pclose(dxpl);
  H5Sclose(ms);
  H5Sclose(fs);
  if (rc < 0)
    return CMDS_FAIL(err, CMDS_EIO, "collective write of rows [%lld, %lld) failed", (long long)row0,
                     (long long)(row0 + nrows));
  return CMDS_OK;
}

int cmds_h5_read_rows(hid_t dset, hid_t memtype, int64_t row0, int64_t nrows, void *buf,
                      cmds_error *err) {
  if (nrows == 0) return CMDS_OK;
  hid_t fs, ms;
  size_t row_elems;
  if (row_selection(dset, row0, nrows, &fs, &ms, &row_elems) < 0)
    return CMDS_FAIL(err, CMDS_EINPUT, "read of rows [%lld, %lld) outside the dataset",
                     (long long)row0, (long long)(row0 + nrows));
  herr_t rc = H5Dread(dset, memtype, ms, fs, H5P_DEFAULT, buf);
  H5Sclose(ms);
  H5Sclose(fs);
  if (rc < 0)
    return CMDS_FAIL(err, CMDS_EIO,
                     "reading rows [%lld, %lld) failed (corrupt chunk, or a filter missing)",
                     (long long)row0, (long long)(row0 + nrows));
  return CMDS_OK;
}

int cmds_h5_exists(hid_t loc, const char *name) { return H5Lexists(loc, name, H5P_DEFAULT) > 0; }

int cmds_h5_dataset_shape(hid_t loc, const char *name, hsize_t *dims, int max) {
  if (!cmds_h5_exists(loc, name)) return -1;
  hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
  if (d < 0) return -1;
  hid_t s = H5Dget_space(d);
  int nd = H5Sget_simple_extent_ndims(s);
  if (nd > max) nd = -1;
  else H5Sget_simple_extent_dims(s, dims, NULL);
  H5Sclose(s);
  H5Dclose(d);
  return nd;
}

/* ---- compact copies (sample caches: augment, estimate; feature caches: cmds_fc_extend) ---- */

#if H5_VERSION_GE(1, 12, 0)
typedef H5L_info2_t link_info;
#define LINK_ITERATE H5Literate2
#define VLEN_RECLAIM(t, s, b) H5Treclaim(t, s, H5P_DEFAULT, b)
#else
typedef H5L_info_t link_info;
#define LINK_ITERATE H5Literate
#define VLEN_RECLAIM(t, s, b) H5Dvlen_reclaim(t, s, H5P_DEFAULT, b)
#endif

typedef struct copy_ctx {
  hid_t to;                 /* the destination group of the level being copied */
  const char *path;         /* its path relative to the root ("" for the root) */
  const char *const *skip;
  int nskip;
  const char *src;
  cmds_error *err;
  int rc;
} copy_ctx;

static int skipped(const copy_ctx *c, const char *full) {
  for (int i = 0; i < c->nskip; i++)
    if (!strcmp(c->skip[i], full)) return 1;
  return 0;
}

/* 1 when some skip entry lies inside the group at `path` (so it is copied member by member). */
static int skip_inside(const copy_ctx *c, const char *path) {
  size_t n = strlen(path);
  for (int i = 0; i < c->nskip; i++)
    if (!strncmp(c->skip[i], path, n) && (c->skip[i][n] == '/' || c->skip[i][n] == '@')) return 1;
  return 0;
}

/* One attribute, in its stored type (fixed or variable-length), unless skipped. */
static herr_t copy_attr(hid_t loc, const char *name, const H5A_info_t *info, void *op) {
  (void)info;
  copy_ctx *c = op;
  char full[1024];
  snprintf(full, sizeof full, "%s@%s", c->path, name);
  if (skipped(c, full)) return 0;
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT), type = a < 0 ? -1 : H5Aget_type(a), space = a < 0 ? -1 : H5Aget_space(a);
  hssize_t np = space < 0 ? -1 : H5Sget_simple_extent_npoints(space);
  size_t bytes = type < 0 || np < 0 ? 0 : H5Tget_size(type) * (size_t)(np ? np : 1);
  void *buf = bytes ? cmds_xcalloc(bytes, 1) : NULL;
  int ok = buf && H5Aread(a, type, buf) >= 0;
  if (ok) {
    hid_t b = H5Acreate2(c->to, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    ok = b >= 0 && H5Awrite(b, type, buf) >= 0;
    if (b >= 0) H5Aclose(b);
    if (H5Tdetect_class(type, H5T_VLEN) > 0 || H5Tis_variable_str(type) > 0) VLEN_RECLAIM(type, space, buf);
  }
  free(buf);
  if (space >= 0) H5Sclose(space);
  if (type >= 0) H5Tclose(type);
  if (a >= 0) H5Aclose(a);
  if (!ok) {
    c->rc = CMDS_FAIL(c->err, CMDS_EIO, "%s: cannot copy the attribute %s", c->src, full);
    return -1;
  }
  return 0;
}

static herr_t copy_link(hid_t group, const char *name, const link_info *info, void *op);

/* The members and attributes of group `from` into `to` (path: from's path). */
static int copy_group(copy_ctx *parent, hid_t from, hid_t to, const char *path) {
  copy_ctx c = *parent;
  c.to = to;
  c.path = path;
  c.rc = CMDS_OK;
  hsize_t idx = 0;
  if (H5Aiterate2(from, H5_INDEX_NAME, H5_ITER_INC, &idx, copy_attr, &c) < 0 && !c.rc)
    c.rc = CMDS_FAIL(c.err, CMDS_EIO, "%s: cannot list the attributes of /%s", c.src, path);
  idx = 0;
  if (!c.rc && LINK_ITERATE(from, H5_INDEX_NAME, H5_ITER_INC, &idx, copy_link, &c) < 0 && !c.rc)
    c.rc = CMDS_FAIL(c.err, CMDS_EIO, "%s: cannot list /%s", c.src, path);
  return c.rc;
}

static herr_t copy_link(hid_t group, const char *name, const link_info *info, void *op) {
  copy_ctx *c = op;
  char full[1024];
  snprintf(full, sizeof full, "%s%s%s", c->path, c->path[0] ? "/" : "", name);
  if (skipped(c, full)) return 0;
  if (info->type != H5L_TYPE_HARD) {
    c->rc = CMDS_FAIL(c->err, CMDS_ESCHEMA, "%s: /%s is a soft or external link (a compact copy takes hard links only)", c->src, full);
    return -1;
  }
  hid_t obj = H5Oopen(group, name, H5P_DEFAULT);
  int is_group = obj >= 0 && H5Iget_type(obj) == H5I_GROUP;
  if (obj < 0) {
    c->rc = CMDS_FAIL(c->err, CMDS_EIO, "%s: cannot open /%s", c->src, full);
    return -1;
  }
  if (is_group && skip_inside(c, full)) {
    hid_t g = H5Gcreate2(c->to, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    c->rc = g < 0 ? CMDS_FAIL(c->err, CMDS_EIO, "%s: cannot create the group /%s in the copy", c->src, full)
                  : copy_group(c, obj, g, full);
    if (g >= 0) H5Gclose(g);
  } else if (H5Ocopy(group, name, c->to, name, H5P_DEFAULT, H5P_DEFAULT) < 0) {
    c->rc = CMDS_FAIL(c->err, CMDS_EIO, "%s: cannot copy /%s (disk full?)", c->src, full);
  }
  H5Oclose(obj);
  return c->rc ? -1 : 0;
}

int cmds_h5_copy_compact(const char *src, const char *dst, const char *const *skip, int nskip, cmds_error *err) {
  if (cmds_h5z_zstd_register() < 0) return CMDS_FAIL(err, CMDS_EINTERNAL, "cannot register the zstd HDF5 filter (32015)");
  char tmp[4400];
  snprintf(tmp, sizeof tmp, "%s.copy", dst);
  hid_t in = H5Fopen(src, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (in < 0) return CMDS_FAIL(err, CMDS_EIO, "%s: cannot open for copying", src);
  hid_t out = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  int rc = out < 0 ? CMDS_FAIL(err, CMDS_EIO, "%s: cannot create (is the folder writable?)", tmp) : CMDS_OK;
  if (!rc) {
    copy_ctx c = {.skip = skip, .nskip = nskip, .src = src, .err = err};
    hid_t rin = H5Gopen2(in, "/", H5P_DEFAULT), rout = H5Gopen2(out, "/", H5P_DEFAULT);
    rc = copy_group(&c, rin, rout, "");
    H5Gclose(rin);
    H5Gclose(rout);
  }
  H5Fclose(in);
  if (out >= 0 && H5Fclose(out) < 0 && !rc) rc = CMDS_FAIL(err, CMDS_EIO, "%s: closing failed (disk full?)", tmp);
  if (!rc) { /* the bytes on disk before the name */
    FILE *f = fopen(tmp, "rb+");
    if (!f || fsync(fileno(f)) != 0) rc = CMDS_FAIL(err, CMDS_EIO, "%s: flush failed", tmp);
    if (f) fclose(f);
  }
  if (!rc && rename(tmp, dst) != 0) rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot rename to %s", tmp, dst);
  if (rc) unlink(tmp);
  return rc;
}
