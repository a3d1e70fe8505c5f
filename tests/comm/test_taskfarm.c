/* test_taskfarm: every task is claimed exactly once across 1, 2 or 4 ranks, with zero
 * tasks, fewer tasks than ranks, and when one rank stops after its first task (as a rank
 * stuck on a long task would): the others then take all the rest, which a static split
 * could not do. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cmds_mpi.h"
#include "taskfarm.h"

static void run(const cmds_mpi *mpi, int64_t ntasks, int rank0_leaves) {
  cmds_taskfarm tf;
  cmds_taskfarm_open(&tf, mpi->comm, ntasks);
  int *mine = calloc((size_t)(ntasks ? ntasks : 1), sizeof(int)), *all = calloc((size_t)(ntasks ? ntasks : 1), sizeof(int));
  int64_t t;
  while ((t = cmds_taskfarm_next(&tf)) >= 0) {
    CHECK(t < ntasks, "task %lld out of range", (long long)t);
    mine[t]++;
    if (rank0_leaves && mpi->rank == 0 && mpi->size > 1) break;
  }
  int64_t taken = tf.taken;
  cmds_taskfarm_close(&tf);
  MPI_Allreduce(mine, all, (int)(ntasks ? ntasks : 1), MPI_INT, MPI_SUM, mpi->comm);
  int bad = 0;
  for (int64_t i = 0; i < ntasks; i++) bad += all[i] != 1;
  CHECK(bad == 0, "%lld tasks: %d not claimed exactly once", (long long)ntasks, bad);
  int64_t total = 0;
  MPI_Allreduce(&taken, &total, 1, MPI_INT64_T, MPI_SUM, mpi->comm);
  CHECK(total == ntasks, "claims add up (%lld of %lld)", (long long)total, (long long)ntasks);
  if (rank0_leaves && mpi->size > 1 && mpi->rank == 0) CHECK(taken == 1, "rank 0 took one task");
  free(mine);
  free(all);
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  run(&mpi, 0, 0);
  run(&mpi, 3, 0);
  run(&mpi, 1000, 0);
  run(&mpi, 200, 1);
  int failed = check_failed_, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, mpi.comm);
  int rc = CHECK_DONE();
  return cmds_mpi_finalize(&mpi, any ? 1 : rc);
}
