/* taskfarm: see taskfarm.h. */
#include "taskfarm.h"

#include <string.h>

#include "cmds_mpi.h"

void cmds_taskfarm_open(cmds_taskfarm *tf, MPI_Comm comm, int64_t ntasks) {
  memset(tf, 0, sizeof *tf);
  tf->comm = comm;
  tf->ntasks = ntasks;
  int rank;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_Aint bytes = rank == 0 ? (MPI_Aint)sizeof(int64_t) : 0;
  MPI_CHECK(MPI_Win_allocate(bytes, sizeof(int64_t), MPI_INFO_NULL, comm, &tf->counter, &tf->win));
  if (rank == 0) *tf->counter = 0;
  MPI_CHECK(MPI_Barrier(comm)); /* the counter is zero before anyone claims */
  MPI_CHECK(MPI_Win_lock_all(MPI_MODE_NOCHECK, tf->win));
}

int64_t cmds_taskfarm_next(cmds_taskfarm *tf) {
  const int64_t one = 1;
  int64_t got = 0;
  MPI_CHECK(MPI_Fetch_and_op(&one, &got, MPI_INT64_T, 0, 0, MPI_SUM, tf->win));
  MPI_CHECK(MPI_Win_flush(0, tf->win));
  if (got >= tf->ntasks) return -1;
  tf->taken++;
  return got;
}

void cmds_taskfarm_close(cmds_taskfarm *tf) {
  MPI_CHECK(MPI_Win_unlock_all(tf->win));
  MPI_CHECK(MPI_Win_free(&tf->win));
  tf->counter = NULL;
}

const char *cmds_task_status_name(int status) {
  switch (status) {
    case CMDS_TASK_DONE: return "done";
    case CMDS_TASK_SKIPPED: return "skipped";
    case CMDS_TASK_INTERRUPTED: return "interrupted";
    case CMDS_TASK_FAILED: return "failed";
    default: return "not run";
  }
}
