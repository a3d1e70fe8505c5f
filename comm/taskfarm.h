/* taskfarm: dynamic distribution of independent tasks over ranks (a sweep of hundreds of
 * (dataset, category, k, configuration) tasks, many metrics results, augmentation per
 * category). A rank that finishes takes the next task: a shared counter lives in an MPI
 * one-sided window on rank 0 and every rank (rank 0 included) claims task indices with an
 * atomic fetch-and-add, so no rank is spent as a dedicated master and no message passing
 * is needed while tasks run. Which rank runs which task varies run to run; a task's result
 * must depend only on the task (seeds keyed by the task, not the rank).
 *
 *   cmds_taskfarm tf;
 *   cmds_taskfarm_open(&tf, comm, ntasks);      // collective
 *   int64_t t;
 *   while ((t = cmds_taskfarm_next(&tf)) >= 0) run(t);
 *   cmds_taskfarm_close(&tf);                   // collective */
#ifndef CMDS_TASKFARM_H
#define CMDS_TASKFARM_H

#include <mpi.h>
#include <stdint.h>

typedef struct cmds_taskfarm {
  MPI_Comm comm;
  MPI_Win win;
  int64_t *counter; /* window memory (rank 0: the counter; others: unused) */
  int64_t ntasks;
  int64_t taken;    /* tasks this rank claimed */
} cmds_taskfarm;

void cmds_taskfarm_open(cmds_taskfarm *tf, MPI_Comm comm, int64_t ntasks);
/* The next unclaimed task index, or -1 when all are claimed. Not collective. */
int64_t cmds_taskfarm_next(cmds_taskfarm *tf);
void cmds_taskfarm_close(cmds_taskfarm *tf);

/* A farmed task's outcome, as the stages gather it from the ranks and report it (the values
 * travel between ranks: keep them). */
enum { CMDS_TASK_DONE = 0, CMDS_TASK_SKIPPED = 1, CMDS_TASK_INTERRUPTED = 2, CMDS_TASK_FAILED = 3 };
/* "done", "skipped", "interrupted", "failed"; anything else (a task no rank reported) "not run". */
const char *cmds_task_status_name(int status);

#endif
