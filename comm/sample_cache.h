/* sample_cache: the HDF5 layout `prep` writes and later stages read
 * (schemas/sample_cache_v1.md). All layout knowledge lives here, so stages never
 * hard-code dataset names. Images are S x S, channels last. */
#ifndef CMDS_SAMPLE_CACHE_H
#define CMDS_SAMPLE_CACHE_H

#include <hdf5.h>
#include <mpi.h>
#include <stdint.h>

#include "cmds_error.h"

#define CMDS_SAMPLE_CACHE_SCHEMA "cmds.sample_cache"
#define CMDS_SAMPLE_CACHE_VERSION 1
#define CMDS_SC_DEFECT_LEN 32
#define CMDS_SC_ID_LEN 96

/* A batch of `cap` samples in contiguous arrays, the memory layout of the datasets. */
typedef struct cmds_sample_batch {
  int64_t cap;
  int size; /* S */
  uint8_t *rgb;     /* (cap, S, S, 3) */
  float *xyz;       /* (cap, S, S, 3) */
  float *normals;   /* (cap, S, S, 3) */
  uint8_t *fg_mask; /* (cap, S, S) */
  uint8_t *gt_mask; /* (cap, S, S) */
  uint8_t *label;   /* (cap) */
  char *defect_type; /* (cap, CMDS_SC_DEFECT_LEN) */
  char *sample_id;   /* (cap, CMDS_SC_ID_LEN) */
  int32_t *native_hw; /* (cap, 2) */
  int32_t *pad;       /* (cap, 3) */
  double *plane;      /* (cap, 4) */
} cmds_sample_batch;

void cmds_sample_batch_alloc(cmds_sample_batch *b, int64_t cap, int size);
void cmds_sample_batch_free(cmds_sample_batch *b);

/* One group (`support` or `test`) of an open file, for writing or reading. */
typedef struct cmds_sc_group {
  hid_t group;
  hid_t dset[11];
  int64_t n;
  int size;
} cmds_sc_group;

/* Collective: creates the group's datasets for n rows. */
int cmds_sc_group_create(hid_t file, const char *name, int64_t n, int size, int zstd_level,
                         cmds_sc_group *g, cmds_error *err);
/* Collective: writes rows [row0, row0 + nrows) from batch rows [0, nrows). */
int cmds_sc_group_write(cmds_sc_group *g, int64_t row0, int64_t nrows,
                        const cmds_sample_batch *b, cmds_error *err);
/* Opens an existing group for reading; checks every dataset's shape (path for errors). */
int cmds_sc_group_open(hid_t file, const char *name, const char *path, cmds_sc_group *g,
                       cmds_error *err);
/* Independent read of rows [row0, row0 + nrows) into batch rows [0, nrows). */
int cmds_sc_group_read(cmds_sc_group *g, int64_t row0, int64_t nrows, cmds_sample_batch *b,
                       cmds_error *err);
void cmds_sc_group_close(cmds_sc_group *g);

/* Root attributes. */
typedef struct cmds_sc_info {
  char dataset[32], category[128], sample_list_hash[32], code_version[128];
  int64_t resolution, shots;
  char *prep_config; /* JSON text, owned; free with cmds_sc_info_free */
} cmds_sc_info;

int cmds_sc_write_info(hid_t file, const cmds_sc_info *info);
/* The identity of a cache's prep content: "fnv64:<16 hex>" of prep_config and
 * sample_list_hash (every setting that shaped it and its inputs). What was made from a cache
 * records it (feature cache attribute `sample_cache_id`, mapper metadata cmds.sample_cache_id)
 * and is made again when the cache's differs: prep rebuilt it with other settings. */
#define CMDS_SC_IDENTITY_LEN 32
void cmds_sc_identity(const cmds_sc_info *info, char *out, size_t cap);
int cmds_sc_read_info(hid_t file, const char *path, cmds_sc_info *info, cmds_error *err);
void cmds_sc_info_free(cmds_sc_info *info);

/* Estimated normals (cmds-estimate; optional, the schema version stays 1): in both groups
 * `normals_est` (N, S, S, 3) float32 unit normals (zeros where not defined) and
 * `normals_est_done` (N) uint8 per-row flags, plus root attributes `normals_est_*` saying
 * how they were made. A file at its final name holds them complete or not at all (the
 * estimate stage works on a copy and renames it); the flags let a killed run resume. */
typedef struct cmds_sc_est_info {
  char checkpoint[128];   /* identity of the Marigold UNet weights (cmds_file_identity) */
  char source[16];        /* "dataset": original images; "cache": the cached S x S RGB */
  int64_t steps, processing_res, ensemble, seed; /* as resolved (checkpoint defaults filled in) */
  char code_version[128];
} cmds_sc_est_info;

/* One line naming everything that shapes the values (attribute `normals_est_id`; the
 * feature cache records it): "marigold <checkpoint> steps=S res=R ensemble=E seed=X source=..". */
void cmds_sc_est_identity(const cmds_sc_est_info *e, char *out, size_t cap);
/* Support and test only (the augmented group: cmds_sc_est_aug_state).
 * *present: both groups have normals_est (info and *complete filled: every done flag set);
 * 0 when neither has. One group only, a wrong shape or missing attributes: CMDS_ESCHEMA. */
int cmds_sc_est_status(hid_t file, const char *path, int *present, int *complete,
                       cmds_sc_est_info *info, cmds_error *err);
/* Reads the attribute normals_est_id into out ("" and CMDS_OK when absent). */
int cmds_sc_est_read_id(hid_t file, const char *path, char *out, size_t cap, cmds_error *err);
/* Collective, on a file open for writing (cmds_sc_open_rw): creates both groups' datasets
 * (done flags 0) or, when they exist, sets every done flag to 0; writes the attributes. */
int cmds_sc_est_prepare(hid_t file, const char *path, const cmds_sc_est_info *info, int zstd_level,
                        cmds_error *err);
/* Done flags of rows [0, n) of group g (CMDS_SC_SUPPORT, _TEST, _AUGMENTED). Independent. */
int cmds_sc_est_read_done(hid_t file, int g, uint8_t *done, cmds_error *err);
/* Collective: writes rows [row0, row0 + nrows) of group g, flushes, sets their done
 * flags, flushes (a kill loses at most the rows in flight). nrows may be 0. */
int cmds_sc_est_write_rows(hid_t file, int g, int64_t row0, int64_t nrows, const float *normals,
                           cmds_error *err);
/* Independent read of rows [row0, row0 + nrows) of group g: (nrows, S, S, 3). */
int cmds_sc_est_read_rows(hid_t file, int g, int64_t row0, int64_t nrows, float *normals,
                          cmds_error *err);
/* Group index of the est/aug functions: 0 `support`, 1 `test`, 2 `augmented`. */
#define CMDS_SC_SUPPORT 0
#define CMDS_SC_TEST 1
#define CMDS_SC_AUGMENTED 2
/* Name of group g ("support", "test", "augmented"). */
const char *cmds_sc_group_name(int g);

/* ---- Augmented samples (cmds-augment; optional, the schema version stays 1) ----
 * Group `augmented`: the datasets of `support` for n generated images (rgb set; xyz,
 * normals, fg_mask, gt_mask all zero; label 0; defect_type "augmented"; sample_id
 * "augmented/k<k>/<support sample id>/<j>": made for the k-shot protocol (by a LoRA that saw
 * only the first k support samples) from that support sample, j its index among the rows of
 * that k; native_hw and pad of the source row; plane zero) plus the root attribute
 * `augmented_id`: one line saying how they were made (written by cmds-augment; estimate,
 * features and train key their outputs on it). */
#define CMDS_SC_AUG_DEFECT "augmented"
#define CMDS_SC_AUG_ID_LEN 512
/* Parses an augmented sample id "augmented/k<k>/<support sample id>/<j>": 1 with *k (>= 1),
 * the support id (into support, cap bytes; may be NULL) and *j (may be NULL), or 0 when id
 * is not of that form. */
int cmds_sc_aug_parse_id(const char *id, int *k, char *support, size_t cap, int64_t *j);

/* Collective over the communicator the file was opened with (MPI_COMM_SELF for a single
 * writer). Removes an existing `augmented` group (and whatever `cmds-estimate` added to it)
 * and writes batch rows [0, n) as the new group, with `augmented_id` = identity; n = 0
 * removes the group and the attribute (augmentation off). b is read on rank 0 of the file's
 * communicator only (other ranks may pass NULL); size must be the cache's S. Every row is
 * checked against the layout above (label, defect_type, sample_id prefix, zero 3D data):
 * CMDS_EINPUT naming the row and field. The file is expected to be a private copy (the
 * stage renames it over the cache afterwards): HDF5 does not give back the space of a
 * removed group, and a reader must never see a half-written group. */
int cmds_sc_aug_write(hid_t file_rw, const char *path, int64_t n, int size, const cmds_sample_batch *b,
                      const char *identity, int zstd_level, cmds_error *err);
/* *n = rows of `augmented` (0 and identity "" when absent). A group without the attribute,
 * an attribute without the group, or a group whose images are not S x S: CMDS_ESCHEMA
 * naming the file. Independent (any rank). */
int cmds_sc_aug_status(hid_t file, const char *path, int64_t *n, char *identity, size_t cap,
                       cmds_error *err);

/* Estimated normals of the augmented rows (cmds-estimate): `augmented/normals_est` and
 * `augmented/normals_est_done` like the other groups, plus the group attribute
 * `normals_est_augmented_id`: the `augmented_id` they were made for (a cache whose
 * augmented group was replaced since shows STALE, and only that group is recomputed). */
typedef enum {
  CMDS_SC_AUG_EST_ABSENT = 0,   /* no augmented group, or no normals_est in it */
  CMDS_SC_AUG_EST_STALE = 1,    /* normals_est made for another augmented_id */
  CMDS_SC_AUG_EST_PARTIAL = 2,  /* current, some done flag 0 */
  CMDS_SC_AUG_EST_COMPLETE = 3  /* current, every done flag 1 */
} cmds_sc_aug_est_state;
int cmds_sc_est_aug_state(hid_t file, const char *path, cmds_sc_aug_est_state *state, cmds_error *err);
/* Collective, on a file open for writing with an augmented group: creates
 * augmented/normals_est (+ done flags 0) or, when they exist, sets every flag to 0; writes
 * normals_est_augmented_id. The root normals_est_* attributes stay cmds_sc_est_prepare's. */
int cmds_sc_est_aug_prepare(hid_t file, const char *path, int zstd_level, cmds_error *err);

/* Collective: opens an existing sample cache read-write over comm (checks the schema). */
int cmds_sc_open_rw(hid_t *file, const char *path, MPI_Comm comm, cmds_error *err);

#endif
