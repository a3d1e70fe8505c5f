/* runner: turns a resolved plan into stage command lines, tasks files and the run
 * manifest, and runs the stages (cmds-run) or writes and submits the sbatch chain
 * (cmds-run --slurm, slurm.c).
 *
 * Files under RUN (schemas/run_manifest_v1.md):
 *   tasks/train.tasks      one line per training unit: `dataset category k tag key=value...`
 *   tasks/score.tasks      one line per result, grouped by training unit
 *   tasks/score.<u>.tasks  (Slurm) the score lines of unit u, for array task u
 *   tasks/metrics.list     cmds-metrics --list lines: maps result labels...
 *   state/<stage>.done     a finished stage: its fingerprint and timings
 *   state/<stage>[.<task>].started   a run of the stage (or array task) began and is not yet
 *                          recorded as finished (its outputs may have changed)
 *   manifest.json          the run manifest, rewritten atomically after each stage
 *   report/<experiment>/   cmds-report's tables and plots
 *   logs/                  (Slurm) one output file per job and array task */
#ifndef CMDS_JOBS_RUNNER_H
#define CMDS_JOBS_RUNNER_H

#include "spec.h"

typedef struct str_list {
  char **v;
  int n;
} str_list;

/* One program invocation of a stage. */
typedef struct stage_cmd {
  str_list argv;  /* program path first */
  int mpi;        /* started under the launcher with ranks */
} stage_cmd;

typedef struct runner {
  job_spec *spec;
  job_plan *plan;
  char bin[4096];          /* folder of the stage programs */
  char launcher[16];       /* mpiexec | srun | none */
  int ranks_override;      /* -n N, 0 = the spec's */
  char weights_id[128];    /* checksum of the weights file (or random:<seed>) */
  int argc;
  char **argv;             /* cmds-run's own command line (manifest) */
} runner;

void sl_push(str_list *l, const char *s);
void sl_pushf(str_list *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sl_free(str_list *l);

int runner_ranks(const runner *r, int stage);
/* Command lines of a stage; task_index >= 0: only that array task (train: a training unit;
 * score: a unit's results). Returns the count; *cmds freed with runner_cmds_free. */
int runner_stage_cmds(const runner *r, int stage, int task_index, stage_cmd **cmds);
void runner_cmds_free(stage_cmd *c, int n);
/* The stage's launcher prefix + program argv, as one argv list. */
void runner_full_argv(const runner *r, int stage, const stage_cmd *c, str_list *out);
/* Text of the tasks files (train.tasks, score.tasks, score for one unit, metrics.list). */
char *runner_train_tasks(const runner *r);
char *runner_score_tasks(const runner *r, int unit);
char *runner_metrics_list(const runner *r);
/* 1 when every output the stage must leave exists. */
int runner_outputs_complete(const runner *r, int stage, char *missing, size_t cap);
/* Stage fingerprint: its command lines, the tasks files' text, the code version and the
 * fingerprint of the nearest earlier enabled stage (so every earlier stage's). */
unsigned long long runner_fingerprint(const runner *r, int stage);
/* Writes the tasks files (unchanged content is not rewritten). */
int runner_write_tasks(const runner *r, cmds_error *err);
/* Writes RUN/manifest.json (atomic, unique temporary name: array tasks may write it at
 * the same time). */
int runner_write_manifest(const runner *r, const char *running_stage, cmds_error *err);
/* 1 when RUN/state/<stage>.done holds the stage's current fingerprint and its outputs exist. */
int runner_stage_is_done(const runner *r, int stage);
/* Records a finished stage (RUN/state/<stage>.done). did_work = 0: the run changed no output
 * (runner_outputs_signature; it only skipped): elapsed_s/started/finished of the run that did
 * the work are kept and this run's time goes to last_elapsed_s/last_finished_utc. */
int runner_mark_done(const runner *r, int stage, double elapsed, const char *started, int did_work, cmds_error *err);
/* Which version of the stage's outputs is on disk: a hash of each output's place (device,
 * inode, size, modification time) or absence; task_index >= 0: only that array task's
 * (train: the unit's model; score: the unit's maps). Two equal values around a run: the run
 * changed nothing (it only skipped). */
unsigned long long runner_outputs_signature(const runner *r, int stage, int task_index);
/* Before a stage (or array task) runs: writes RUN/state/<stage>[.<task>].started unless it
 * exists; *pending = it existed (an earlier run stopped before it was recorded as finished, so
 * it may have changed outputs). */
int runner_work_begin(const runner *r, int stage, int task_index, int *pending, cmds_error *err);
/* After a stage that did work, before it is recorded as done: removes the state files of every
 * later stage, so each runs again and skips by itself what is still valid (a kill before the
 * stage is recorded only makes those stages check again). Array tasks of one stage do not
 * touch each other's state: only later stages lose theirs. */
int runner_invalidate_after(const runner *r, int stage, cmds_error *err);
/* Removes the .started file (after runner_invalidate_after, before runner_mark_done). */
void runner_work_end(const runner *r, int stage, int task_index);
void utc_now(char *out, size_t cap);
/* Writes `path` atomically through a temporary name unique to this process. */
int write_atomic_unique(const char *path, const char *text, cmds_error *err);
/* Per-path helpers. */
void task_model_dir(const runner *r, int unit, char *out, size_t cap);
void task_maps_path(const runner *r, int task, char *out, size_t cap);
void task_result_path(const runner *r, int task, char *out, size_t cap); /* .json */

/* slurm.c: writes RUN/slurm/submit.sh (sbatch calls chained with afterok) from the
 * templates in `slurm_dir`, runs it unless dry, prints the job ids. */
int slurm_submit(runner *r, const char *slurm_dir, int dry, cmds_error *err);

#endif
