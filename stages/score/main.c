/* cmds-score: the `score` stage. For every task (dataset, category, k, tag, configuration)
 * it runs the two trained mappers on the test samples' features and writes the four raw
 * cross-modal maps (streams.h5, schemas/streams_v1.md), then one anomaly-map file per
 * scoring setting (maps.<setting>.h5, schemas/maps_v1.md, the cmds-metrics input):
 *
 *   mpiexec -n R cmds-score --cache DIR --run RUN
 *       (--tasks FILE [--task-index I] | --dataset D [--category C,..] [--shots 1,2,4] [--tag T])
 *       [--set key=value]... [--setting NAME | --settings FILE]
 *       [--device auto|cpu|cuda] [--force]
 *
 * Test samples are spread over the ranks of the job (one GPU per rank when there are GPUs)
 * and written collectively; tasks run one after another. A complete streams.h5 of the same
 * model and features is reused, so a sweep of score.* settings never reruns the mappers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds_mpi.h"
#include "fsutil.h"
#include "h5io.h"
#include "score_task.h"
#include "taskcfg.h"

typedef struct score_args {
  cmds_task_opts t; /* the options shared with cmds-train */
  const char *setting, *settings;
  int force;
} score_args;

static void usage(void) {
  printf("usage: cmds-score --cache DIR --run RUN (--tasks FILE [--task-index I] | --dataset D [options]) [options]\n"
         "  --tasks FILE           one task per line: dataset category k tag [key=value ...] (the file cmds-train\n"
         "                         reads; lines that differ only in score.* keys are settings of one task)\n"
         "  --task-index I         only task I of the file (0-based, counting tasks: Slurm array index)\n"
         "  --dataset D            single-task form: with --category C[,C..] (default: every feature cache in\n"
         "                         DIR/D), --shots K[,K..] (default 1,2,4), --tag T (default 'default')\n"
         "  --set key=value        a configuration key for every task (repeatable; a tasks file's own keys win)\n"
         "  --setting NAME         name of the setting (maps.NAME.h5; default: 'default' when the score.* keys\n"
         "                         are the defaults, else derived from them, e.g. l1-0.3_fusion-add)\n"
         "  --settings FILE        many settings, one a line: NAME score.key=value ... (e.g. a sweep of l1, l2)\n"
         "  --device auto|cpu|cuda (default auto: one GPU per rank when there are GPUs)\n"
         "  --force                recompute streams.h5 and every maps file\n"
         "outputs: RUN/maps/<dataset>/<category>/k<k>/<tag>/{streams.h5, maps.<setting>.h5, score.record.json}\n"
         "exit codes: 0 done, 2 bad input, 3 I/O, 4 schema, 7 stopped by a signal (rerun to resume)\n");
}

static int parse_args(int argc, char **argv, score_args *a, cmds_error *err) {
  memset(a, 0, sizeof *a);
  cmds_task_opts_init(&a->t);
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(o, "-h") || !strcmp(o, "--help")) return -1;
    if (!strcmp(o, "--force")) { a->force = 1; continue; }
    if (!v) return CMDS_FAIL(err, CMDS_EINPUT, "%s needs a value (see --help)", o);
    i++;
    int taken = 0, rc = cmds_task_opts_take(&a->t, o, v, &taken, err);
    if (rc) return rc;
    if (taken) continue;
    if (!strcmp(o, "--setting")) a->setting = v;
    else if (!strcmp(o, "--settings")) a->settings = v;
    else return CMDS_FAIL(err, CMDS_EINPUT, "bad option or value: %s %s (see --help)", o, v);
  }
  int rc = cmds_task_opts_check(&a->t, err);
  if (rc) return rc;
  if (a->setting && a->settings) return CMDS_FAIL(err, CMDS_EINPUT, "give --setting NAME or --settings FILE, not both");
  if (a->setting && a->t.tasks)
    return CMDS_FAIL(err, CMDS_EINPUT, "--setting names the single-task form's setting; with --tasks use --settings FILE");
  return CMDS_OK;
}

/* The task list, the same on every rank (each reads the files / lists the folder). */
static int make_tasks(const score_args *a, score_task **tasks, int *n, cmds_error *err) {
  cmds_task *parsed = NULL;
  int np = 0;
  *tasks = NULL;
  *n = 0;
  int rc = cmds_task_opts_tasks(&a->t, &parsed, &np, err);
  if (!rc) rc = score_tasks_merge(parsed, np, a->setting, tasks, n, err);
  free(parsed);
  if (!rc && a->settings) rc = score_tasks_apply_settings_file(*tasks, *n, a->settings, err);
  return rc;
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_h5_quiet();
  cmds_error err = {0};
  score_args a;
  int rc = parse_args(argc, argv, &a, &err);
  if (rc) return cmds_mpi_finish_args(&mpi, rc, &err, "cmds-score", usage);
  score_task *tasks = NULL;
  int ntasks = 0;
  rc = cmds_mpi_agree(&mpi, &err, make_tasks(&a, &tasks, &ntasks, &err));
  nn_device dev = NN_CPU;
  if (!rc) rc = cmds_mpi_agree(&mpi, &err, nn_device_pick(a.t.device, mpi.local_rank, mpi.rank, &dev, &err));
  score_env env = {.mpi = &mpi, .cache = a.t.cache, .run = a.t.run, .device = dev, .force = a.force, .argc = argc, .argv = argv};
  int64_t forwards = 0, written = 0, skipped = 0;
  for (int i = 0; i < ntasks && !rc; i++) {
    score_task_result r;
    rc = score_task_run(&env, &tasks[i], &r, &err);
    forwards += r.mapper_forwards;
    written += r.maps_written;
    skipped += r.maps_skipped;
  }
  if (!rc && mpi.rank == 0 && ntasks > 1)
    printf("score: %d tasks, %lld mapper forwards, %lld maps files written, %lld up to date\n", ntasks,
           (long long)forwards, (long long)written, (long long)skipped);
  score_tasks_free(tasks, ntasks);
  return cmds_mpi_finalize(&mpi, rc);
}
