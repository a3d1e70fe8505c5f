/* record: see record.h. */
#define _GNU_SOURCE
#include "record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"

extern const char cmds_code_version_text[]; /* generated at build time: cmake/CmdsVersion.cmake */

const char *cmds_code_version(void) { return cmds_code_version_text; }

void cmds_record_begin(cmds_record *r, const char *stage, int argc, char **argv,
                       const cmds_mpi *mpi) {
  memset(r, 0, sizeof *r);
  r->t0 = cmds_now();
  r->rank = mpi->rank;
  cmds_json_init(&r->json, 2);
  cmds_json *j = &r->json;
  cmds_json_object_begin(j);
  cmds_json_kv_str(j, "record", "cmds.stage_record");
  cmds_json_kv_int(j, "record_version", CMDS_RECORD_SCHEMA_VERSION);
  cmds_json_kv_str(j, "stage", stage);
  cmds_json_kv_str(j, "code_version", cmds_code_version());
  cmds_json_key(j, "argv");
  cmds_json_array_begin(j);
  for (int i = 0; i < argc; i++) cmds_json_str(j, argv[i]);
  cmds_json_array_end(j);
  cmds_json_kv_int(j, "ranks", mpi->size);
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  cmds_json_kv_str(j, "host", host);
  const char *jobid = getenv("SLURM_JOB_ID");
  cmds_json_kv_str(j, "slurm_job_id", jobid ? jobid : "");
  char ts[64];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
  cmds_json_kv_str(j, "started_utc", ts);
}

int cmds_record_finish(cmds_record *r, const char *path, const char *status, cmds_error *err) {
  cmds_json *j = &r->json;
  cmds_json_kv_num(j, "elapsed_s", cmds_now() - r->t0);
  cmds_json_kv_str(j, "status", status);
  cmds_json_object_end(j);
  int rc = CMDS_OK;
  if (r->rank == 0 && path) {
    cmds_json_raw(j, "\n");
    rc = cmds_write_file_atomic(path, j->buf, j->len, err);
  }
  cmds_json_free(j);
  return rc;
}
