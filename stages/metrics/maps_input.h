/* maps_input: reading and checking a maps file (schemas/maps_v1.md) and turning one
 * rank's block of images into its share of the exact score table.
 *
 *   /scores        float32 (N, H, W)  anomaly maps, higher = more anomalous
 *   /masks         1-byte  (N, H, W)  ground truth 0/1 (uint8, int8 or h5py bool)
 *   /labels        1-byte  (N)        1 anomalous image, 0 normal
 *   /image_scores  float32 (N)        optional; default: max of the image's map
 *   @maps_id       string             optional content identity (cmds-score writes it);
 *                                     a result records it, see result_write.h
 *
 * Every rank opens the file collectively and reads a contiguous block of images in
 * batches (independent reads), so no rank ever holds more than its block's table. */
#ifndef CMDS_METRICS_MAPS_INPUT_H
#define CMDS_METRICS_MAPS_INPUT_H

#include <hdf5.h>
#include <mpi.h>
#include <stdint.h>

#include "cmds_error.h"
#include "progress.h"
#include "score_table.h"

#define CMDS_MAPS_SCHEMA "cmds.maps"
#define CMDS_MAPS_VERSION 1
#define METRICS_MAPS_ID_MAX 128 /* maps_id: at most 127 printable characters, no '"' or '\\' */

typedef struct metrics_input {
  char path[4096];
  hid_t file, d_scores, d_masks, d_labels;
  hid_t mt_masks, mt_labels; /* memory types: the file's own 1-byte types */
  int64_t n, h, w;
  int has_image_scores;
  char dataset[128], category[128]; /* optional root attributes, "" when absent */
  char maps_id[METRICS_MAPS_ID_MAX]; /* optional root attribute, "" when absent */
} metrics_input;

/* Collective over comm. Checks the schema attributes when present (refuses another
 * name or version), dataset presence, types and shapes. */
int metrics_input_open(metrics_input *in, const char *path, MPI_Comm comm, cmds_error *err);
void metrics_input_close(metrics_input *in);

/* Reads only the maps_id attribute (rank-local, for the resume decision): 1 with id filled, 0
 * when the file has none, -1 when the file cannot be opened or the attribute is unusable (then
 * metrics_input_open reports why). */
int metrics_maps_id(const char *path, char *id, size_t cap);

/* What one rank learned from its images [b, e). */
typedef struct metrics_local {
  cmds_score_table table;
  int64_t b, e;
  int64_t n_regions;
  float *image_score;   /* (e - b) max of each map (replaced by /image_scores if present) */
  uint8_t *image_label; /* (e - b) */
  uint64_t content_hash; /* sum over images of a per-image hash (associative) */
} metrics_local;

/* Independent reads; batch_pixels bounds the pixels read at once (>= one image). Errors
 * name the file and the first offending image of the block. */
int metrics_input_read_block(metrics_input *in, int64_t b, int64_t e, int64_t batch_pixels,
                             metrics_local *loc, cmds_progress *prog, cmds_error *err);
/* Reads /image_scores (all N) when the file has it; checks they are finite. */
int metrics_input_read_image_scores(metrics_input *in, float *out, cmds_error *err);
void metrics_local_free(metrics_local *loc);

#endif
