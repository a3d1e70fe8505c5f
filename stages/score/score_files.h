/* score_files: the two HDF5 layouts cmds-score writes, shared by all ranks (parallel HDF5,
 * one row = one test sample, collective writes):
 *   streams.h5        the four raw maps at the mapper resolution R plus the test ground truth
 *                     at the evaluation size S (schemas/streams_v1.md); resumable: per-row
 *                     done flags, `.partial` until every row is done;
 *   maps.<setting>.h5 the fused, smoothed maps at S, the cmds-metrics input
 *                     (schemas/maps_v1.md), written whole to `.partial` then renamed. */
#ifndef CMDS_SCORE_FILES_H
#define CMDS_SCORE_FILES_H

#include <hdf5.h>
#include <mpi.h>
#include <stdint.h>

#include "cmds_error.h"
#include "h5io.h"

#define SCORE_STREAMS_SCHEMA "cmds.streams"
#define SCORE_STREAMS_VERSION 1
#define SCORE_MAPS_SCHEMA "cmds.maps"
#define SCORE_MAPS_VERSION 1
#define SCORE_ID_LEN 96     /* = the sample cache's sample_id */
#define SCORE_DEFECT_LEN 32 /* = the sample cache's defect_type */

/* The four maps, in this order everywhere (datasets, buffers). */
enum { PSI_2D_REAL = 0, PSI_2D_EST = 1, PSI_3D_REAL = 2, PSI_3D_EST = 3, PSI_N = 4 };
const char *score_psi_name(int i); /* "psi_2d_real", ... */

/* What a streams file was made from: a complete file is reused only when all of it is equal. */
typedef struct score_streams_info {
  char dataset[32], category[128], tag[64];
  int64_t k;
  char mapper_id[96];   /* fnv64:<hash>:<bytes> of mapper.safetensors */
  char mapper_kind[16]; /* cmds | mlp */
  char weights_id[96], sample_list_hash[32], backbone[64], blocks[64]; /* feature cache */
  int64_t final_norm, width, layers, grid;
  int64_t resolution; /* R: mapper.resolution, the size of the raw maps */
  int64_t eval_size;  /* S: the sample cache's image size, the size of masks */
  int64_t n;          /* test samples */
  int64_t est;        /* 1: psi_*_est exist (the feature cache has normals_est) */
  char est_id[256];   /* the feature cache's normals_est_id ("" without): a re-estimation remakes the maps */
} score_streams_info;

int score_streams_same(const score_streams_info *a, const score_streams_info *b);
/* "k=v;..." of every field: the identity a maps file records as `streams_identity`. */
void score_streams_identity(const score_streams_info *s, char *out, size_t cap);

/* Collective: a new `<path>.partial` with every dataset, done flags 0. */
int score_streams_create(cmds_h5file *f, const char *path, MPI_Comm comm, const score_streams_info *info,
                         cmds_error *err);
/* Collective: reopens `<path>.partial` read-write if it opens and has the same info;
 * CMDS_ESCHEMA otherwise. */
int score_streams_reopen(cmds_h5file *f, const char *path, MPI_Comm comm, const score_streams_info *want,
                         cmds_error *err);
int score_streams_read_info(hid_t file, const char *path, score_streams_info *info, cmds_error *err);
int score_streams_read_done(hid_t file, int64_t n, uint8_t *done, cmds_error *err);

/* One sample's row. maps[i] (R*R floats) for i in PSI_* (the est ones ignored when !est). */
typedef struct score_row {
  const float *maps[PSI_N];
  const uint8_t *mask; /* S*S */
  const uint8_t *fg;   /* S*S: the sample cache's fg_mask */
  uint8_t label;
  const char *sample_id, *defect_type;
} score_row;
/* Collective: writes row `row` (has = 0: this rank writes nothing this round), flushes, sets
 * its done flag, flushes. */
int score_streams_write_row(hid_t file, const score_streams_info *info, int has, int64_t row,
                            const score_row *r, cmds_error *err);
/* Independent reads of rows [row0, row0 + n): maps (n, R, R) each (est ones only when
 * info->est; NULL entries skipped), masks and fg (n, S, S), labels (n), ids (n, SCORE_ID_LEN);
 * NULL buffers are skipped. */
int score_streams_read_rows(hid_t file, const score_streams_info *info, int64_t row0, int64_t n,
                            float *maps[PSI_N], uint8_t *masks, uint8_t *fg, uint8_t *labels, char *ids,
                            cmds_error *err);

/* The maps file of one setting. */
typedef struct score_maps_info {
  char dataset[32], category[128], tag[64], setting[64];
  int64_t k;
  char score_key[512];        /* score.*=...;... of the setting */
  char streams_identity[2048]; /* score_streams_identity of the streams it came from */
  int64_t n, size;
} score_maps_info;

/* Collective: creates `<path>.partial` with every dataset (cmds.maps v1 + our attributes). */
int score_maps_create(cmds_h5file *f, const char *path, MPI_Comm comm, const score_maps_info *info,
                      cmds_error *err);
/* Collective: writes rows [row0, row0 + n) (n may be 0). */
int score_maps_write_rows(hid_t file, int64_t row0, int64_t n, const float *scores, const uint8_t *masks,
                          const uint8_t *labels, const float *image_scores, const char *ids, cmds_error *err);
/* The maps file's content identity, root attribute `maps_id` = "hash128:<32 hex>"
 * (schemas/maps_v1.md): a 128-bit hash of everything cmds-metrics reads from the file (every
 * row's index, label, image score, sample id, mask and scores; the attributes dataset and
 * category; N and S). cmds-metrics keeps a result exactly while its recorded maps_id equals
 * the file's. Content-derived rather than drawn at random: rewriting identical maps (--force,
 * another rank count, another setting that happens to give the same maps) keeps the results
 * valid; any changed byte measures again, whatever the file times say. Not a cryptographic
 * hash: it guards against accidents, not against someone forging maps.
 * Rows hash independently and combine by XOR (each row's hash includes its index), so the id
 * does not depend on how rows are spread over ranks. */
typedef struct score_maps_hash {
  uint64_t a, b;
} score_maps_hash;
void score_maps_hash_init(score_maps_hash *h);
/* Adds rows [row0, row0 + n) (buffers as for score_maps_write_rows; ids SCORE_ID_LEN each). */
void score_maps_hash_rows(score_maps_hash *h, int64_t row0, int64_t n, int64_t size, const float *scores,
                          const uint8_t *masks, const uint8_t *labels, const float *image_scores, const char *ids);
/* Collective: combines every rank's rows and writes the `maps_id` attribute (id receives it too). */
int score_maps_write_id(hid_t file, MPI_Comm comm, const score_maps_hash *h, const score_maps_info *m, char *id,
                        size_t cap, cmds_error *err);
#define SCORE_MAPS_ID_LEN 48 /* "hash128:" + 32 hex + NUL, rounded up */

/* 1 when path is a complete maps file with this setting key and streams identity (rank-local);
 * id (SCORE_MAPS_ID_LEN) then receives its maps_id, "" in files written before the attribute. */
int score_maps_up_to_date(const char *path, const score_maps_info *want, int *same_name_other_setting, char *id);

#endif
