/* progress: rank-aware progress lines for long work, at most one per interval:
 *   [prep r0/2] bagel/test: 12/40 (30%)  2.1/s  elapsed 0:06  ETA 0:13
 * Rank 0 reports its own share (shares are balanced); CMDS_PROGRESS=all makes every
 * rank report, CMDS_PROGRESS=off silences it; CMDS_PROGRESS_INTERVAL sets the interval
 * in seconds (default 10). Lines go to stderr so stdout stays for results. */
#ifndef CMDS_PROGRESS_H
#define CMDS_PROGRESS_H

#include <stdint.h>

#include "cmds_mpi.h"

typedef struct cmds_progress {
  char stage[32], label[160];
  int64_t total, done;
  double t0, last, interval;
  int rank, size, enabled;
} cmds_progress;

void cmds_progress_begin(cmds_progress *p, const cmds_mpi *mpi, const char *stage,
                         const char *label, int64_t total);
void cmds_progress_step(cmds_progress *p, int64_t n);
/* Prints a final line (when enabled) with the total time. */
void cmds_progress_end(cmds_progress *p);

#endif
