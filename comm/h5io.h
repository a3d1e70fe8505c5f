/* h5io: how ranks share HDF5 files (parallel HDF5 over MPI-IO).
 *
 * Pattern (after HDF5's ph5_filtered_writes and SWIFT): metadata is created collectively
 * by all ranks; each rank writes its own rows (samples) of a dataset through a
 * collective hyperslab write; datasets are chunked one row (= one sample) per chunk, so
 * a chunk is owned by a single rank, and zstd-compressed (filter 32015). Filtered
 * parallel writes must be collective: a rank with no rows still takes part with an
 * empty selection.
 *
 * Outputs appear atomically: cmds_h5_create writes `<path>.partial`, and
 * cmds_h5_commit closes, fsyncs and renames it to `<path>`. A file at the final path is
 * therefore always complete. */
#ifndef CMDS_H5IO_H
#define CMDS_H5IO_H

#include <hdf5.h>
#include <mpi.h>
#include <stdint.h>

#include "cmds_error.h"

/* Any single write call stays below this many bytes (MPI-IO count limits). */
#define CMDS_H5_MAX_WRITE_BYTES ((size_t)1 << 30)

typedef struct cmds_h5file {
  hid_t id;
  MPI_Comm comm;
  char path[4096];
  char partial[4096 + 16];
} cmds_h5file;

/* Collective. Creates `<path>.partial` (truncating any stale one) open on all ranks. */
int cmds_h5_create(cmds_h5file *f, const char *path, MPI_Comm comm, cmds_error *err);
/* Collective. Closes and renames `<path>.partial` to `<path>`. */
int cmds_h5_commit(cmds_h5file *f, cmds_error *err);
/* Collective. Closes and removes the partial file (after an error). */
void cmds_h5_abandon(cmds_h5file *f);

/* Collective over comm (use MPI_COMM_SELF for a single reader). Read-only. Checks
 * that the file carries `schema` at `version` and names the file on any mismatch. */
int cmds_h5_open_read(hid_t *file, const char *path, MPI_Comm comm, const char *schema,
                      int version, cmds_error *err);

/* Root attributes `cmds_schema` (string) and `cmds_schema_version` (int). */
int cmds_h5_write_schema(hid_t file, const char *schema, int version);

/* Attributes. Writers are collective in parallel files (same value on all ranks). */
int cmds_h5_attr_write_str(hid_t obj, const char *name, const char *value);
int cmds_h5_attr_write_i64(hid_t obj, const char *name, int64_t value);
int cmds_h5_attr_write_f64(hid_t obj, const char *name, double value);
/* Readers return CMDS_ESCHEMA naming `what` (usually the file path) if missing. */
int cmds_h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t cap, const char *what,
                          cmds_error *err);
int cmds_h5_attr_read_i64(hid_t obj, const char *name, int64_t *value, const char *what,
                          cmds_error *err);
int cmds_h5_attr_read_f64(hid_t obj, const char *name, double *value, const char *what,
                          cmds_error *err);

/* Collective. A dataset of dims[0] rows, chunked one row per chunk, zstd at `level`
 * (level < 0: no compression). Returns the dataset id or H5I_INVALID_HID. */
hid_t cmds_h5_create_rows(hid_t loc, const char *name, hid_t type, int ndims, const hsize_t *dims,
                          int level, cmds_error *err);
/* Fixed-length, NUL-terminated string type of `len` bytes (close with H5Tclose). */
hid_t cmds_h5_str_type(size_t len);

/* Collective write of rows [row0, row0 + nrows) from buf (nrows may be 0). */
int cmds_h5_write_rows(hid_t dset, hid_t memtype, int64_t row0, int64_t nrows, const void *buf,
                       cmds_error *err);
/* Independent read of rows [row0, row0 + nrows). */
int cmds_h5_read_rows(hid_t dset, hid_t memtype, int64_t row0, int64_t nrows, void *buf,
                      cmds_error *err);

/* Shape of a dataset: returns ndims (<= max) and fills dims; -1 if absent. */
int cmds_h5_dataset_shape(hid_t loc, const char *name, hsize_t *dims, int max);
/* 1 if the link exists at loc. */
int cmds_h5_exists(hid_t loc, const char *name);

/* A compact copy of the HDF5 file `src` at `dst`, for the stages that change a cache through
 * a private work copy (augment and estimate on sample caches, cmds_fc_extend on feature
 * caches): every group, dataset and attribute of src except those named in skip[0..nskip) is
 * copied (datasets with H5Ocopy: their stored chunks as they are, filters and chunking kept;
 * the zstd filter is registered here) into a fresh file written as `<dst>.copy` and renamed to
 * dst when complete. Unlike a byte copy, the result holds no space of objects removed from
 * src earlier (HDF5 never gives back the space of a deleted group or a reallocated chunk), so
 * replacing a group through such copies keeps the file size constant.
 * skip: object paths relative to the root ("augmented", "support/normals_est") or attributes
 * as "<group path>@<name>" ("@augmented_id" on the root, "augmented@normals_est_augmented_id").
 * Hard links only (a soft or external link is an error). Errors name src or the copy.
 * One process (serial HDF5 access); src must not be open for writing. */
int cmds_h5_copy_compact(const char *src, const char *dst, const char *const *skip, int nskip, cmds_error *err);

/* Turns HDF5's own error stack printing off (we report errors with context). */
void cmds_h5_quiet(void);

#endif
