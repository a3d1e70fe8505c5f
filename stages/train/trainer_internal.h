/* trainer_internal: what the files of one training task share (trainer.c: the task's run,
 * step loop, checkpoints and outputs; trainer_setup.c: inputs, backbone and compute;
 * trainer_step.c: one step's work; trainer_identity.c: what models and checkpoints were made
 * from). Not part of the stage's interface (trainer.h). */
#ifndef CMDS_TRAIN_TRAINER_INTERNAL_H
#define CMDS_TRAIN_TRAINER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "feature_cache.h"
#include "mapper/mapper.h"
#include "rng.h"
#include "trainer.h"

enum { STREAM_R = 0, STREAM_E = 1 };

/* A hash of three words (keyed randomness: task seed, sample permutations, noise, init). */
static inline uint64_t train_mix3(uint64_t a, uint64_t b, uint64_t c) {
  uint64_t x = a, h = cmds_splitmix64(&x);
  x = h ^ b;
  h = cmds_splitmix64(&x);
  x = h ^ c;
  return cmds_splitmix64(&x);
}

/* Everything one task holds. */
typedef struct task_state {
  cmds_fc_info fi;
  int k, S, L, D, G, H, W;
  /* The E stream's pool: the k support rows, then n_aug augmented rows (cmds-augment) whose
   * source is one of those k (rows aug_rows[] of the augmented group); P = k + n_aug. The R
   * stream draws from the first k only. */
  int P, n_aug;
  int64_t *aug_rows;
  char aug_note[256];          /* why the E stream has no augmented rows although the cache has some */
  int est_on, real_on, online;
  int aug_on;                  /* train.augmented: the E stream may draw from augmented rows */
  size_t row_f16; /* L*G*G*D */
  uint16_t *f16[CMDS_FC_NMOD]; /* (P, L, G, G, D) for rgb and normals_est, (k, ...) for normals */
  uint8_t *rgb;                /* (P, S, S, 3) when online */
  float *masks;                /* (k, H, W) */
  double mask_sum[64];
  int64_t b0, b1;              /* this rank's slots [b0, b1) of a batch */
  mapper_model model[2];
  mapper_adamw opt[2];
  int nmodels, nopts;
  mapper_tape *tape;
  nn_arena scratch, io;
  nn_ctx ctx;
  int ctx_ok;
  nn_tensor xa, xb, p, dp, mask, flat;
  uint16_t *in_f16;            /* (Bm, L, G, G, D) staging */
  /* online backbone */
  float *images, *host_patches, *host_out;
  nn_tensor patches, vout;
  int *perm;
} task_state;

/* trainer_setup.c */
/* Frees what s holds and zeroes it. */
void train_task_state_free(task_state *s);
/* The backbone that made the feature cache: --weights must hash to the cache's weights_id
 * (or --random-backbone S give "random:S"). Loaded once and kept. */
int train_ensure_backbone(train_env *env, const cmds_fc_info *fi, const char *fc_path, cmds_error *err);
/* Reads the support rows and masks (every rank reads all k: they are few), and the
 * augmented rows of the E stream's pool, checking that the caches and the configuration
 * belong together; fc_path, sc_path (4200 bytes each) get the caches' paths. */
int train_load_inputs(train_env *env, const cmds_task *t, const train_params *tp, task_state *s, char *fc_path,
                      char *sc_path, cmds_error *err);
/* The mappers (seeded from the task seed), their optimisers, this rank's slots [b0, b1) of the
 * batch, the arenas, context, tensors and tape of a step. */
int train_setup_compute(train_env *env, task_state *s, const train_params *tp, uint64_t seed, cmds_error *err);

/* trainer_step.c */
/* One stream of one step on this rank's slots: both directions, forward, loss, backward.
 * loss[0]: rgb_to_3d, loss[1]: 3d_to_rgb (this rank's share of the batch-global means). */
int train_step_stream(train_env *env, task_state *s, const train_params *tp, uint64_t seed, int64_t step, int stream,
                      double loss[2], cmds_error *err);
/* Sums both models' gradients over the group (one flat buffer, one all-reduce). */
int train_allreduce_grads(train_env *env, task_state *s, cmds_error *err);

/* trainer_identity.c */
/* Which estimated normals a model learnt from (metadata cmds.normals_est_id): the feature
 * cache's normals_est_id when the E stream is on, "none" when it is off. A model or checkpoint
 * whose value differs from what this task would use now (cmds-estimate ran, or ran again with
 * other settings, after it was trained) is not reused. Files without the key count as "none". */
const char *train_est_identity(int est_on, const cmds_fc_info *fi);
/* Which augmented group the E stream could draw from (metadata cmds.augmented_id): the
 * feature cache's augmented_id when the E stream is on and the file has augmented rows,
 * "none" otherwise (also for files without the key). A new cmds-augment run retrains. */
const char *train_aug_identity(int est_on, const cmds_fc_info *fi);
/* 1 when a model's or checkpoint's cmds.config_key names the configuration cfg: every key it
 * names has cfg's value and every model key it does not name (files older than the key) is at
 * its default, the behaviour of the code that wrote it. An unknown key: 0. */
int train_same_model_config(const char *have, const cmds_config *cfg);
/* 1 when the file's cmds.sample_cache_id (the sample cache its features came from; "" when
 * absent, as in feature caches older than the attribute) is fi's. */
int train_sample_cache_matches(const char *path, const cmds_fc_info *fi);
/* 1 when the file's cmds.normals_est_id and cmds.augmented_id ("none" when absent) are want
 * and want_aug. */
int train_est_matches(const char *path, const char *want, const char *want_aug);
/* Metadata both the checkpoint and the final file carry. */
typedef struct meta_kv {
  char step[32], seed[32], k[16], version[160], streams[64], blocks[64], steps[32];
  const char *kv[40];
  int n;
} meta_kv;
/* Fills mk for a file of `schema` (checkpoint or final) at `step` of `steps`. */
void train_meta_fill(meta_kv *mk, const cmds_task *t, const task_state *s, const char *schema, const char *key,
                     uint64_t seed, int64_t step, int64_t steps);
/* 1 when the safetensors file `path` was made from the feature cache as it is now (same backbone
 * weights and sample list), or when that cannot be told (no feature cache: the run reports it). */
int train_inputs_match(const train_env *env, const cmds_task *t, const char *path);

#endif
