/* record: the machine-readable record every stage writes of what it did
 * (schemas/stage_record.md): stage, code version, command line, ranks, host, start
 * time, elapsed seconds, status, plus the stage's own fields (inputs, outputs, counts)
 * added to `json` between begin and finish. Rank 0 writes it atomically. */
#ifndef CMDS_RECORD_H
#define CMDS_RECORD_H

#include "cmds_mpi.h"
#include "json.h"

#define CMDS_RECORD_SCHEMA_VERSION 1

typedef struct cmds_record {
  cmds_json json;
  double t0;
  int rank;
} cmds_record;

void cmds_record_begin(cmds_record *r, const char *stage, int argc, char **argv,
                       const cmds_mpi *mpi);
/* Closes the record with status ("ok", "skipped", "failed: <kind>") and elapsed time,
 * writes it to path on rank 0 (atomic) and frees it. */
int cmds_record_finish(cmds_record *r, const char *path, const char *status, cmds_error *err);

/* The code version (CMake's project version + git describe). */
const char *cmds_code_version(void);

#endif
