/* cmds_error: see cmds_error.h. */
#include "cmds_error.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmds_error_set(cmds_error *err, int code, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->code = code;
  }
  return code;
}

int cmds_error_wrap(cmds_error *err, const char *fmt, ...) {
  if (!err) return CMDS_EINTERNAL;
  char prefix[512], old[sizeof err->msg];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, err->msg, sizeof old);
  snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
  return err->code;
}

const char *cmds_error_name(int code) {
  switch (code) {
    case CMDS_OK: return "ok";
    case CMDS_EINPUT: return "bad input";
    case CMDS_EIO: return "I/O error";
    case CMDS_ESCHEMA: return "schema mismatch";
    case CMDS_ENOMEM: return "out of memory";
    case CMDS_EINTERRUPTED: return "interrupted";
    default: return "internal error";
  }
}

void cmds_panic(const char *file, int line, const char *fmt, ...) {
  int inited = 0, finalized = 0, rank = 0;
  MPI_Initialized(&inited);
  MPI_Finalized(&finalized);
  if (inited && !finalized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "[rank %d] %s:%d: %s\n", rank, file, line, msg);
  fflush(stderr);
  if (inited && !finalized) MPI_Abort(MPI_COMM_WORLD, CMDS_EINTERNAL);
  exit(CMDS_EINTERNAL);
}

void *cmds_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) CMDS_PANIC("out of memory allocating %zu bytes", n);
  return p;
}

void *cmds_xcalloc(size_t count, size_t size) {
  void *p = calloc(count ? count : 1, size ? size : 1);
  if (!p) CMDS_PANIC("out of memory allocating %zu x %zu bytes", count, size);
  return p;
}

void *cmds_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) CMDS_PANIC("out of memory reallocating %zu bytes", n);
  return q;
}

char *cmds_xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = cmds_xmalloc(n);
  memcpy(d, s, n);
  return d;
}
