/* cmds_mpi: MPI bootstrap shared by every stage.
 *
 * - cmds_mpi_init: MPI_Init, rank/size, the node-local rank (for picking a GPU), and
 *   signal handlers for SIGTERM/SIGUSR1 (what Slurm sends before it kills or requeues).
 * - cmds_mpi_agree: after independent work, every rank learns whether any rank failed;
 *   the lowest failing rank prints its message, all return the same code, and the stage
 *   exits non-zero through MPI_Finalize instead of hanging in the next collective.
 * - cmds_block_range: the contiguous share of n items that a rank owns. */
#ifndef CMDS_MPI_H
#define CMDS_MPI_H

#include <mpi.h>
#include <stdint.h>

#include "cmds_error.h"

typedef struct cmds_mpi {
  MPI_Comm comm;
  int rank, size;
  int local_rank, local_size; /* within the node (shared-memory split) */
} cmds_mpi;

void cmds_mpi_init(int *argc, char ***argv, cmds_mpi *mpi);
/* Returns the job's exit status: 0, or the code of the error. */
int cmds_mpi_finalize(cmds_mpi *mpi, int status);
/* Ends a stage whose argument parsing returned rc != 0: rc < 0 asked for the usage (rank 0
 * calls usage, exit 0); rc > 0 is a bad argument (rank 0 prints "prog: message", exit rc). */
int cmds_mpi_finish_args(cmds_mpi *mpi, int rc, const cmds_error *err, const char *prog, void (*usage)(void));

/* Collective. Returns the first failing rank's code (0 if all ok). The lowest failing
 * rank prints "[rank r] error (<kind>): <msg>" to stderr. */
int cmds_mpi_agree(const cmds_mpi *mpi, const cmds_error *local_err, int local_code);

/* Items [*begin, *end) of n for this rank: contiguous blocks, the first n % size ranks
 * get one more. */
void cmds_block_range(int64_t n, int rank, int size, int64_t *begin, int64_t *end);

/* Set by SIGTERM / SIGUSR1 handlers; long loops poll it and save state. */
int cmds_stop_requested(void);
/* Collective: 1 if any rank saw a stop signal. */
int cmds_stop_requested_any(const cmds_mpi *mpi);

/* Wall clock in seconds (monotonic). */
double cmds_now(void);

#define MPI_CHECK(call)                                                           \
  do {                                                                            \
    int mpi_check_rc_ = (call);                                                   \
    if (mpi_check_rc_ != MPI_SUCCESS) {                                           \
      char mpi_check_msg_[MPI_MAX_ERROR_STRING];                                  \
      int mpi_check_len_ = 0;                                                     \
      MPI_Error_string(mpi_check_rc_, mpi_check_msg_, &mpi_check_len_);          \
      cmds_panic(__FILE__, __LINE__, "%s failed: %s", #call, mpi_check_msg_);     \
    }                                                                             \
  } while (0)

#endif
