/* trainer: one training task (METHOD.md section 5) on one group of ranks.
 *
 * Data: the first k support rows of CACHE/<dataset>/<category>.features.h5 (rgb, normals,
 * normals_est when present) and the foreground masks of CACHE/<dataset>/<category>.h5,
 * resized to mapper.resolution with nearest neighbour. With train.noise_sigma > 0 the RGB
 * features are recomputed every step by the frozen backbone from the sample cache's RGB
 * image plus Gaussian noise on the normalised input. The E stream also draws from the feature
 * cache's augmented rows (cmds-augment) generated from one of the task's k support samples.
 *
 * Randomness is keyed, never carried: the task seed comes from train.seed and (dataset,
 * category, k); the samples of step s of a stream are positions s*B .. s*B+B-1 of a sequence
 * of seeded permutations of the stream's pool (one per epoch: R the k support rows, E those and
 * the task's augmented rows); the noise of batch slot j
 * of step s is seeded from (task seed, s, stream, j). So results do not depend on the rank
 * that computes a slot, and the step is the whole random state a checkpoint needs.
 *
 * Data parallel: the B slots of a step are split over the group's G ranks in contiguous
 * blocks; loss denominators are those of the whole batch; gradients are summed over the
 * group (comm/collective.h) before every AdamW step, so every rank holds the same weights. */
#ifndef CMDS_TRAIN_TRAINER_H
#define CMDS_TRAIN_TRAINER_H

#include <stdint.h>

#include "cmds_mpi.h"
#include "collective.h"
#include "config.h"
#include "nn/vit.h"
#include "taskfarm.h"
#include "tasks.h"

typedef struct train_env {
  const char *cache, *run;
  nn_device device;
  const char *weights;  /* --weights FILE, or NULL: the random stand-in */
  uint64_t random_seed; /* --random-backbone */
  int heads;            /* --heads (0: default) */
  int64_t checkpoint_every;
  int force;
  int argc;
  char **argv;
  cmds_mpi group; /* the task's group of ranks (comm, rank within it, size G) */
  cmds_collective coll;
  /* the backbone, loaded by the first task that needs it and kept while its identity fits */
  vit_model vit;
  int vit_loaded;
  char vit_id[160];
  char weights_id[160]; /* identity of --weights, computed once */
} train_env;

enum { TRAIN_DONE = CMDS_TASK_DONE, TRAIN_SKIPPED = CMDS_TASK_SKIPPED, TRAIN_INTERRUPTED = CMDS_TASK_INTERRUPTED,
       TRAIN_FAILED = CMDS_TASK_FAILED };

typedef struct train_result {
  int status;
  int64_t start_step, steps_run, steps_total;
  double final_loss; /* L of the last step (sum over directions and streams) */
  double elapsed_s;
  int est_stream, backbone_online;
} train_result;

/* Collective over env->group. Returns the group's agreed code (CMDS_EINTERRUPTED after a
 * stop signal, with the checkpoint written); *res says what happened. */
int train_task_run(train_env *env, const cmds_task *t, train_result *res, cmds_error *err);
void train_env_free(train_env *env);

/* The model folder of a task: RUN/models/<dataset>/<category>/k<k>/<tag>. */
void train_task_dir(const train_env *env, const cmds_task *t, char *out, size_t cap);

#endif
