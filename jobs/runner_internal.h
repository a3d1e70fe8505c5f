/* runner_internal: what the runner*.c files share, included by them only. The command lines
 * of each stage are built in runner_cmds.c, the tasks files and per-task paths in
 * runner_tasks.c (with the text buffer below), the stage state, fingerprints and
 * invalidation in runner_state.c (with the state file reader below), and the manifest in
 * runner_manifest.c. */
#ifndef CMDS_JOBS_RUNNER_INTERNAL_H
#define CMDS_JOBS_RUNNER_INTERNAL_H

#include <stddef.h>

#include "runner.h"

/* A growing text buffer. */
typedef struct text {
  char *s;
  size_t len, cap;
} text;

void tprintf(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The buffer's text (an empty string when nothing was printed); the caller frees it. */
char *tdone(text *t);

/* RUN/tasks/<name>. */
void tasks_path(const runner *r, const char *name, char *out, size_t cap);

/* Stage state file RUN/state/<stage>.done: "key value" lines. */
typedef struct stage_state {
  int done, has_last;
  unsigned long long fingerprint;
  double elapsed_s, last_elapsed_s; /* the run that did the work; the latest run */
  char started[32], finished[32], last_finished[32];
} stage_state;

/* Reads RUN/state/<stage>.done (all zero, done = 0, when it is absent). */
void state_read(const runner *r, int stage, stage_state *st);

#endif
