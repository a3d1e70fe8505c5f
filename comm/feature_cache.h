/* feature_cache: the HDF5 layout of backbone features (schemas/feature_cache_v1.md),
 * written by `features` and read by `train` and `score`. Per dataset/category one file;
 * groups `support` and `test`; per modality (rgb, normals, normals_est) a float16 dataset
 * (N, L, G, G, C) of the L chosen blocks' patch tokens on the G x G grid, one sample per
 * chunk, zstd-compressed, plus a per-sample `<modality>_done` flag. Optional group
 * `augmented` (the sample cache's generated images, cmds-augment): rgb and normals_est
 * only (they have no real 3D), present only when the file has normals_est.
 *
 * Resumable: a file in progress lives at `<path>.partial`; every collective round writes
 * feature rows, flushes, then sets their done flags and flushes again, so a killed job
 * loses at most the round in flight. cmds_fc_reopen picks the partial file up again when
 * its configuration matches; cmds_h5_commit renames it when every flag is set.
 *
 * Extension: a complete file whose base identity (cmds_fc_same_base) matches but whose
 * estimated / augmented part is stale (cmds-estimate or cmds-augment ran since) is not
 * recomputed: cmds_fc_extend starts the partial file from it, keeping every dataset still
 * valid (rgb and normals always), so only the new rows go through the backbone. */
#ifndef CMDS_FEATURE_CACHE_H
#define CMDS_FEATURE_CACHE_H

#include <hdf5.h>
#include <mpi.h>
#include <stdint.h>

#include "cmds_error.h"
#include "h5io.h"

#define CMDS_FEATURE_CACHE_SCHEMA "cmds.feature_cache"
#define CMDS_FEATURE_CACHE_VERSION 1
#define CMDS_FC_MAX_BLOCKS 8

typedef enum { CMDS_FC_RGB = 0, CMDS_FC_NORMALS = 1, CMDS_FC_NORMALS_EST = 2, CMDS_FC_NMOD = 3 } cmds_fc_modality;

typedef struct cmds_fc_info {
  char dataset[32], category[128];
  char backbone[64];         /* e.g. "dino_vitb8" */
  char weights_id[96];       /* identity of the weights (file hash, or "random:<seed>") */
  char sample_list_hash[32]; /* of the sample cache the features came from */
  char sample_cache_id[32];  /* cmds_sc_identity of that sample cache (its prep settings too); "" in
                                files older than the attribute (read as absent: features redoes them) */
  int64_t nblocks, blocks[CMDS_FC_MAX_BLOCKS]; /* 1-based block indices: 4, 7, 11 */
  int64_t grid, width;       /* 28, 768 */
  int64_t image_size;        /* 224 */
  int64_t final_norm;        /* 0: block outputs as they are (METHOD.md section 3) */
  int64_t n[3];              /* rows of support, test, augmented (0: no augmented group) */
  int64_t modalities;        /* bit mask of cmds_fc_modality present */
  char normals_est_id[256];  /* the sample cache's normals_est_id (cmds-estimate's settings); "" without */
  char augmented_id[512];    /* the sample cache's augmented_id when n[2] > 0; "" without */
} cmds_fc_info;

/* Group indices (as the sample cache's): 0 support, 1 test, 2 augmented. */
#define CMDS_FC_GROUPS 3
/* 1 when group g of a file described by info holds modality m. */
int cmds_fc_group_has(const cmds_fc_info *info, int g, cmds_fc_modality m);

const char *cmds_fc_modality_name(cmds_fc_modality m);
/* HDF5's IEEE half type (what h5py/numpy call float16). Close with H5Tclose. */
hid_t cmds_h5_f16_type(void);

/* Collective: a new `<path>.partial` with every dataset and all done flags 0. */
int cmds_fc_create(cmds_h5file *f, const char *path, MPI_Comm comm, const cmds_fc_info *info,
                   int zstd_level, cmds_error *err);
/* Collective: reopens `<path>.partial` read-write if it exists, is readable and was made
 * with the same info; otherwise returns CMDS_ESCHEMA (the caller creates a new one). */
int cmds_fc_reopen(cmds_h5file *f, const char *path, MPI_Comm comm, const cmds_fc_info *want,
                   cmds_error *err);
/* 1 when a and b describe the same file (every attribute and row count). */
int cmds_fc_same_info(const cmds_fc_info *a, const cmds_fc_info *b);
/* 1 when a and b have the same base identity: everything the rgb and normals rows of
 * support/test depend on (dataset, category, backbone, weights_id, sample_list_hash,
 * sample_cache_id, blocks, grid, width, image_size, final_norm, n[0], n[1]); the estimated
 * and augmented parts (modalities, normals_est_id, augmented_id, n[2]) may differ. */
int cmds_fc_same_base(const cmds_fc_info *a, const cmds_fc_info *b);

/* One process (serial HDF5; rank 0 of the stage, nobody may have `path` open for writing).
 * When the complete file `path` exists, reads, has want's base identity (cmds_fc_same_base)
 * and both rgb and normals, writes `<path>.partial` for want from it: a compact copy
 * (cmds_h5_copy_compact: stored chunks, chunking and filters of the copied datasets as they
 * are) keeping support/test rgb and normals, support/test normals_est when both have it with
 * the same normals_est_id, and the group augmented when in addition augmented_id and its row
 * count are unchanged; stale ones are left out. Then want's root attributes (normals_est_id,
 * augmented_id only where they apply) and the missing datasets with done flags 0 (as
 * cmds_fc_create makes them). All that happens in `<path>.extend`, fsynced and renamed to
 * `<path>.partial` at the end: a kill leaves the complete file as it is and either no partial
 * for want or a finished one that cmds_fc_reopen accepts. `path` itself is never changed.
 * *extended: 1 when the partial file was written; 0 (and CMDS_OK) when there is nothing to
 * extend from (no file, unreadable, other base), `why` then says why (may be NULL).
 * Returns an error code only when writing the new partial failed. */
int cmds_fc_extend(const char *path, const cmds_fc_info *want, int zstd_level, int *extended, char *why,
                   size_t why_cap, cmds_error *err);

/* Root attributes of an open feature cache. */
int cmds_fc_read_info(hid_t file, const char *path, cmds_fc_info *info, cmds_error *err);

/* The done flags of rows [0, n) of a group's modality (any rank, independent). */
int cmds_fc_read_done(hid_t file, int group, cmds_fc_modality m, uint8_t *done, cmds_error *err);
/* Collective: writes feature rows [row0, row0 + nrows) (float16 bits, row-major
 * (nrows, L, G, G, C)), flushes, marks them done, flushes. nrows may be 0. */
int cmds_fc_write_rows(hid_t file, int group, cmds_fc_modality m, int64_t row0, int64_t nrows,
                       const uint16_t *f16, cmds_error *err);
/* Independent read of rows [row0, row0 + nrows) as float16 bits. */
int cmds_fc_read_rows(hid_t file, int group, cmds_fc_modality m, int64_t row0, int64_t nrows,
                      uint16_t *f16, cmds_error *err);

#endif
