/* cmds-train: the `train` stage. Trains the two feature mappers (rgb_to_3d, 3d_to_rgb) of
 * every task (dataset, category, k, tag, configuration) from the feature cache (METHOD.md
 * section 5) and writes RUN/models/<dataset>/<category>/k<k>/<tag>/mapper.safetensors with
 * its sidecar mapper.json and train.record.json (schemas/train_output_v1.md).
 *
 *   mpiexec -n R cmds-train --cache DIR --run RUN
 *       (--tasks FILE [--task-index I] | --dataset D [--category C,..] [--shots 1,2,4] [--tag T])
 *       [--set key=value]... [--ranks-per-task G] [--checkpoint-every N]
 *       [--weights FILE | --random-backbone SEED] [--heads H] [--device auto|cpu|cuda]
 *       [--record FILE] [--force]
 *
 * The world is split into groups of G ranks; groups take tasks from a dynamic task farm
 * (comm/taskfarm.h): a group that finishes takes the next. Within a group a step's batch is
 * split over the ranks and the gradients are summed (comm/collective.h). Checkpoints every
 * N steps and on SIGTERM / SIGUSR1; a stopped job exits with CMDS_EINTERRUPTED (7) and the
 * next run resumes every unfinished task from its checkpoint. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds_mpi.h"
#include "fsutil.h"
#include "h5io.h"
#include "record.h"
#include "taskfarm.h"
#include "tasks.h"
#include "trainer.h"

typedef struct train_args {
  cmds_task_opts t; /* the options shared with cmds-score */
  const char *weights, *record;
  int64_t ranks_per_task, checkpoint_every;
  uint64_t random_seed;
  int heads, force;
} train_args;

static void usage(void) {
  printf("usage: cmds-train --cache DIR --run RUN (--tasks FILE [--task-index I] | --dataset D [options]) [options]\n"
         "  --tasks FILE           one task per line: dataset category k tag [key=value ...]\n"
         "  --task-index I         only task I of the file (0-based, counting tasks: Slurm array index)\n"
         "  --dataset D            single-task form: with --category C[,C..] (default: every feature cache in\n"
         "                         DIR/D), --shots K[,K..] (default 1,2,4), --tag T (default 'default')\n"
         "  --set key=value        a configuration key for every task (repeatable; a tasks file's own keys win)\n"
         "  --ranks-per-task G     data-parallel group size (default 1); the world size must be a multiple\n"
         "  --checkpoint-every N   steps between checkpoints (default 200; 0: only on a stop signal)\n"
         "  --weights FILE         the backbone (needed online when train.noise_sigma > 0); it must be the one\n"
         "                         the feature cache was made with\n"
         "  --random-backbone S    no weights: the random stand-in of cmds-features --random-backbone S (default 0)\n"
         "  --heads H              attention heads of the backbone (as given to cmds-features)\n"
         "  --device auto|cpu|cuda (default auto: one GPU per rank when there are GPUs)\n"
         "  --record FILE          the run's stage record (default RUN/models/train.record.json,\n"
         "                         RUN/models/train.task<I>.record.json with --task-index)\n"
         "  --force                retrain finished tasks and ignore checkpoints\n"
         "exit codes: 0 done, 2 bad input, 3 I/O, 4 schema, 7 stopped by a signal after checkpointing (rerun to resume)\n");
}

static int parse_args(int argc, char **argv, train_args *a, cmds_error *err) {
  memset(a, 0, sizeof *a);
  cmds_task_opts_init(&a->t);
  a->ranks_per_task = 1;
  a->checkpoint_every = 200;
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(o, "-h") || !strcmp(o, "--help")) return -1;
    if (!strcmp(o, "--force")) { a->force = 1; continue; }
    if (!v) return CMDS_FAIL(err, CMDS_EINPUT, "%s needs a value (see --help)", o);
    i++;
    int taken = 0, rc = cmds_task_opts_take(&a->t, o, v, &taken, err);
    if (rc) return rc;
    if (taken) continue;
    char *end = NULL;
    long long n = strtoll(v, &end, 10);
    int num_ok = *v && end && !*end && n >= 0;
    if (!strcmp(o, "--weights")) a->weights = v;
    else if (!strcmp(o, "--record")) a->record = v;
    else if (!strcmp(o, "--ranks-per-task") && num_ok && n >= 1) a->ranks_per_task = n;
    else if (!strcmp(o, "--checkpoint-every") && num_ok) a->checkpoint_every = n;
    else if (!strcmp(o, "--random-backbone") && num_ok) a->random_seed = (uint64_t)n;
    else if (!strcmp(o, "--heads") && num_ok && n > 0) a->heads = (int)n;
    else return CMDS_FAIL(err, CMDS_EINPUT, "bad option or value: %s %s (see --help)", o, v);
  }
  return cmds_task_opts_check(&a->t, err);
}

/* The task list, the same on every rank (each reads the file / lists the folder). */
static int make_tasks(const train_args *a, cmds_task **tasks, int *n, cmds_error *err) {
  int rc = cmds_task_opts_tasks(&a->t, tasks, n, err);
  if (!rc) rc = train_tasks_dedupe(*tasks, n, err);
  return rc;
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_h5_quiet();
  cmds_error err = {0};
  train_args a;
  int rc = parse_args(argc, argv, &a, &err);
  if (rc) return cmds_mpi_finish_args(&mpi, rc, &err, "cmds-train", usage);
  cmds_task *tasks = NULL;
  int ntasks = 0;
  rc = make_tasks(&a, &tasks, &ntasks, &err);
  if (!rc && mpi.size % a.ranks_per_task)
    rc = CMDS_FAIL(&err, CMDS_EINPUT, "--ranks-per-task %lld does not divide the %d ranks", (long long)a.ranks_per_task,
                   mpi.size);
  /* Every rank parsed the same input, so every rank holds the same verdict; only rank 0 speaks. */
  if (rc) {
    if (mpi.rank == 0) fprintf(stderr, "cmds-train: %s\n", err.msg);
    free(tasks);
    return cmds_mpi_finalize(&mpi, rc);
  }

  /* Groups of G consecutive ranks (one node's GPUs stay together when G divides the ranks per node). */
  int G = (int)a.ranks_per_task, color = mpi.rank / G, ngroups = mpi.size / G;
  train_env env;
  memset(&env, 0, sizeof env);
  MPI_CHECK(MPI_Comm_split(mpi.comm, color, mpi.rank, &env.group.comm));
  MPI_CHECK(MPI_Comm_set_errhandler(env.group.comm, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(env.group.comm, &env.group.rank));
  MPI_CHECK(MPI_Comm_size(env.group.comm, &env.group.size));
  env.group.local_rank = mpi.local_rank;
  env.group.local_size = mpi.local_size;
  env.cache = a.t.cache;
  env.run = a.t.run;
  env.weights = a.weights;
  env.random_seed = a.random_seed;
  env.heads = a.heads;
  env.checkpoint_every = a.checkpoint_every;
  env.force = a.force;
  env.argc = argc;
  env.argv = argv;
  rc = cmds_mpi_agree(&mpi, &err, nn_device_pick(a.t.device, mpi.local_rank, mpi.rank, &env.device, &err));
  if (!rc) rc = cmds_mpi_agree(&mpi, &err, cmds_collective_init(&env.coll, env.group.comm, env.device == NN_CUDA, &err));
  if (rc) {
    free(tasks);
    MPI_Comm_free(&env.group.comm);
    return cmds_mpi_finalize(&mpi, rc);
  }

  cmds_record rec;
  cmds_record_begin(&rec, "train", argc, argv, &mpi);
  int *status = cmds_xmalloc(sizeof(int) * (size_t)ntasks);
  double *num = cmds_xcalloc((size_t)ntasks * 4, sizeof(double)); /* steps_run, final_loss, elapsed, start_step */
  for (int i = 0; i < ntasks; i++) status[i] = -1;
  cmds_taskfarm tf;
  cmds_taskfarm_open(&tf, mpi.comm, ntasks);
  int worst = CMDS_OK, interrupted = 0;
  for (;;) {
    int64_t ti = -1;
    if (env.group.rank == 0) ti = cmds_taskfarm_next(&tf);
    MPI_CHECK(MPI_Bcast(&ti, 1, MPI_INT64_T, 0, env.group.comm));
    if (ti < 0) break;
    if (cmds_stop_requested_any(&env.group)) { /* stopped between tasks: leave this one for the rerun */
      interrupted = 1;
      break;
    }
    train_result res;
    cmds_error terr = {0};
    int trc = train_task_run(&env, &tasks[ti], &res, &terr);
    status[ti] = res.status;
    num[4 * ti] = (double)res.steps_run;
    num[4 * ti + 1] = res.final_loss;
    num[4 * ti + 2] = res.elapsed_s;
    num[4 * ti + 3] = (double)res.start_step;
    if (env.group.rank == 0) {
      const cmds_task *t = &tasks[ti];
      if (res.status == TRAIN_SKIPPED)
        printf("train %s/%s/k%d/%s: up to date, skipped\n", t->dataset, t->category, t->k, t->tag);
      else if (res.status == TRAIN_DONE)
        printf("train %s/%s/k%d/%s: %lld steps%s, loss %.6g, %s stream%s%s (%.1f s, group %d of %d)\n", t->dataset,
               t->category, t->k, t->tag, (long long)res.steps_run,
               res.start_step ? " (resumed)" : "", res.final_loss, res.est_stream ? "R+E" : "R only (no E)",
               res.est_stream ? "s" : "", res.backbone_online ? ", backbone online" : "", res.elapsed_s, color, ngroups);
      else
        fprintf(stderr, "cmds-train: task %s/%s/k%d/%s (%s) %s\n", t->dataset, t->category, t->k, t->tag, t->origin,
                res.status == TRAIN_INTERRUPTED ? "stopped by a signal; checkpoint written" : "failed");
      fflush(stdout);
    }
    if (trc == CMDS_EINTERRUPTED) {
      interrupted = 1;
      break;
    }
    if (trc && !worst) worst = trc;
  }
  cmds_taskfarm_close(&tf);

  /* Gather what every group did to rank 0 (a task ran on exactly one group; its rank 0 reports). */
  if (env.group.rank != 0) {
    for (int i = 0; i < ntasks; i++) status[i] = -1;
    memset(num, 0, sizeof(double) * (size_t)ntasks * 4);
  }
  int *all_status = cmds_xmalloc(sizeof(int) * (size_t)ntasks);
  double *all_num = cmds_xcalloc((size_t)ntasks * 4, sizeof(double));
  MPI_CHECK(MPI_Reduce(status, all_status, ntasks, MPI_INT, MPI_MAX, 0, mpi.comm));
  MPI_CHECK(MPI_Reduce(num, all_num, ntasks * 4, MPI_DOUBLE, MPI_SUM, 0, mpi.comm));
  /* The job's code: the first error's kind wins over an interruption. */
  int mine[2] = {worst, interrupted}, any[2] = {0, 0};
  MPI_CHECK(MPI_Allreduce(mine, any, 2, MPI_INT, MPI_MAX, mpi.comm));
  rc = any[0] ? any[0] : any[1] ? CMDS_EINTERRUPTED : CMDS_OK;

  char rec_path[4200];
  if (a.record) snprintf(rec_path, sizeof rec_path, "%s", a.record);
  else if (a.t.task_index >= 0) snprintf(rec_path, sizeof rec_path, "%s/models/train.task%lld.record.json", a.t.run, (long long)a.t.task_index);
  else snprintf(rec_path, sizeof rec_path, "%s/models/train.record.json", a.t.run);
  int counts[5] = {0, 0, 0, 0, 0};
  cmds_json *j = &rec.json;
  cmds_json_kv_str(j, "cache", a.t.cache);
  cmds_json_kv_str(j, "run", a.t.run);
  cmds_json_kv_str(j, "tasks_file", a.t.tasks ? a.t.tasks : "");
  cmds_json_kv_int(j, "ranks_per_task", G);
  cmds_json_kv_int(j, "groups", ngroups);
  cmds_json_kv_str(j, "device", nn_device_name(env.device));
  cmds_json_kv_str(j, "collective", cmds_collective_backend(&env.coll));
  cmds_json_key(j, "tasks");
  cmds_json_array_begin(j);
  for (int i = 0; i < ntasks; i++) {
    int s = all_status[i];
    counts[s >= 0 && s <= 3 ? s : 4]++;
    cmds_json_object_begin(j);
    cmds_json_kv_str(j, "dataset", tasks[i].dataset);
    cmds_json_kv_str(j, "category", tasks[i].category);
    cmds_json_kv_int(j, "k", tasks[i].k);
    cmds_json_kv_str(j, "tag", tasks[i].tag);
    cmds_json_kv_str(j, "origin", tasks[i].origin);
    cmds_json_kv_str(j, "status", cmds_task_status_name(s));
    cmds_json_kv_int(j, "resumed_from_step", (int64_t)all_num[4 * i + 3]);
    cmds_json_kv_int(j, "steps_run", (int64_t)all_num[4 * i]);
    cmds_json_kv_num(j, "final_loss", s == TRAIN_DONE ? all_num[4 * i + 1] : NAN);
    cmds_json_kv_num(j, "elapsed_s", all_num[4 * i + 2]);
    cmds_json_object_end(j);
  }
  cmds_json_array_end(j);
  cmds_json_kv_int(j, "tasks_done", counts[TRAIN_DONE]);
  cmds_json_kv_int(j, "tasks_skipped", counts[TRAIN_SKIPPED]);
  cmds_json_kv_int(j, "tasks_interrupted", counts[TRAIN_INTERRUPTED]);
  cmds_json_kv_int(j, "tasks_failed", counts[TRAIN_FAILED]);
  cmds_json_kv_int(j, "tasks_not_run", counts[4]);
  int mk = CMDS_OK;
  if (mpi.rank == 0) {
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", rec_path);
    char *slash = strrchr(dir, '/');
    if (slash) {
      *slash = 0;
      cmds_error e;
      mk = cmds_mkdir_p(dir, &e);
    }
  }
  cmds_error rerr = {0};
  const char *st = rc == CMDS_OK ? "ok" : rc == CMDS_EINTERRUPTED ? "interrupted" : "failed";
  (void)mk;
  if (cmds_record_finish(&rec, rec_path, st, &rerr) && mpi.rank == 0)
    fprintf(stderr, "cmds-train: %s\n", rerr.msg);
  if (mpi.rank == 0) {
    printf("train: %d task%s: %d done, %d skipped, %d interrupted, %d failed, %d not run (%d group%s of %d rank%s) -> %s\n",
           ntasks, ntasks == 1 ? "" : "s", counts[0], counts[1], counts[2], counts[3], counts[4], ngroups,
           ngroups == 1 ? "" : "s", G, G == 1 ? "" : "s", rec_path);
    if (rc == CMDS_EINTERRUPTED)
      fprintf(stderr, "cmds-train: stopped by a signal; checkpoints written; exit code %d: rerun (or requeue) to resume\n",
              CMDS_EINTERRUPTED);
  }
  free(all_status);
  free(all_num);
  free(status);
  free(num);
  free(tasks);
  train_env_free(&env);
  cmds_collective_free(&env.coll);
  MPI_Comm_free(&env.group.comm);
  return cmds_mpi_finalize(&mpi, rc);
}
