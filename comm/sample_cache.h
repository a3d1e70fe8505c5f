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
int cmds_sc_read_info(hid_t file, const char *path, cmds_sc_info *info, cmds_error *err);
void cmds_sc_info_free(cmds_sc_info *info);

#endif
