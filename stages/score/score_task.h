/* score_task: one task of cmds-score, all ranks together: the four raw maps of every test
 * sample (streams.h5, samples spread over ranks, resumable) unless a complete streams.h5 of
 * the same model and features exists, then one maps.<setting>.h5 per setting, and the
 * task's stage record score.record.json. */
#ifndef CMDS_SCORE_TASK_H
#define CMDS_SCORE_TASK_H

#include "cmds_mpi.h"
#include "nn/tensor.h"
#include "taskcfg.h"

typedef struct score_env {
  const cmds_mpi *mpi;
  const char *cache, *run;
  nn_device device;
  int force;
  int argc;
  char **argv;
} score_env;

typedef struct score_task_result {
  int64_t mapper_forwards, samples_computed, maps_written, maps_skipped;
  int streams_reused;
} score_task_result;

int score_task_run(const score_env *env, const score_task *t, score_task_result *res, cmds_error *err);

#endif
