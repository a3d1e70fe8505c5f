/* cmds_mpi: see cmds_mpi.h. */
#define _GNU_SOURCE
#include "cmds_mpi.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop_flag = 0;

static void on_stop_signal(int sig) {
  (void)sig;
  stop_flag = 1;
}

int cmds_stop_requested(void) { return stop_flag != 0; }

int cmds_stop_requested_any(const cmds_mpi *mpi) {
  int local = cmds_stop_requested(), any = 0;
  MPI_CHECK(MPI_Allreduce(&local, &any, 1, MPI_INT, MPI_MAX, mpi->comm));
  return any;
}

double cmds_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cmds_mpi_init(int *argc, char ***argv, cmds_mpi *mpi) {
  int provided = 0;
  MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
  memset(mpi, 0, sizeof *mpi);
  mpi->comm = MPI_COMM_WORLD;
  MPI_CHECK(MPI_Comm_rank(mpi->comm, &mpi->rank));
  MPI_CHECK(MPI_Comm_size(mpi->comm, &mpi->size));
  MPI_Comm node;
  MPI_CHECK(MPI_Comm_split_type(mpi->comm, MPI_COMM_TYPE_SHARED, mpi->rank, MPI_INFO_NULL, &node));
  MPI_CHECK(MPI_Comm_rank(node, &mpi->local_rank));
  MPI_CHECK(MPI_Comm_size(node, &mpi->local_size));
  MPI_CHECK(MPI_Comm_free(&node));
  /* Errors are reported by us with context; never let MPI print and abort on its own
   * for calls whose codes we check. */
  MPI_CHECK(MPI_Comm_set_errhandler(mpi->comm, MPI_ERRORS_RETURN));

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
}

int cmds_mpi_finish_args(cmds_mpi *mpi, int rc, const cmds_error *err, const char *prog, void (*usage)(void)) {
  if (mpi->rank == 0) {
    if (rc < 0) usage();
    else fprintf(stderr, "%s: %s\n", prog, err->msg);
  }
  return cmds_mpi_finalize(mpi, rc < 0 ? 0 : rc);
}

int cmds_mpi_finalize(cmds_mpi *mpi, int status) {
  fflush(stdout);
  fflush(stderr);
  MPI_Finalize();
  (void)mpi;
  return status;
}

int cmds_mpi_agree(const cmds_mpi *mpi, const cmds_error *local_err, int local_code) {
  /* (code != 0 ? rank : size) reduced by MIN finds the lowest failing rank. */
  int mine = local_code ? mpi->rank : mpi->size, first = mpi->size;
  MPI_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, mpi->comm));
  if (first == mpi->size) return CMDS_OK;
  int code = local_code;
  MPI_CHECK(MPI_Bcast(&code, 1, MPI_INT, first, mpi->comm));
  if (mpi->rank == first) {
    fprintf(stderr, "[rank %d] error (%s): %s\n", mpi->rank, cmds_error_name(local_code),
            local_err ? local_err->msg : "(no message)");
    fflush(stderr);
  }
  return code;
}

void cmds_block_range(int64_t n, int rank, int size, int64_t *begin, int64_t *end) {
  int64_t base = n / size, extra = n % size;
  *begin = rank * base + (rank < extra ? rank : extra);
  *end = *begin + base + (rank < extra ? 1 : 0);
}
