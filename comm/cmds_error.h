/* cmds_error: errors that carry their context (file, field, rank) up to one place
 * that reports them and ends the job cleanly.
 *
 * Convention: a function that can fail takes `cmds_error *err` last and returns 0 on
 * success or a CMDS_E* code; on failure it has filled *err with a message that says
 * which file / field / tensor and what was expected. Internal invariants (a failed
 * MPI or HDF5 call that can only mean a bug or a broken system) use the CHECK macros,
 * which print `[rank r] file:line: ...` and MPI_Abort. */
#ifndef CMDS_ERROR_H
#define CMDS_ERROR_H

#include <stdarg.h>
#include <stddef.h>

enum {
  CMDS_OK = 0,
  CMDS_EINPUT = 2,    /* bad input data or arguments: the user must fix something */
  CMDS_EIO = 3,       /* a file could not be read or written */
  CMDS_ESCHEMA = 4,   /* a cache of another schema/version/configuration */
  CMDS_ENOMEM = 5,
  CMDS_EINTERNAL = 6, /* a bug */
  CMDS_EINTERRUPTED = 7 /* stopped by a signal after saving state; rerun resumes */
};

typedef struct cmds_error {
  int code;
  char msg[1536];
} cmds_error;

/* Sets *err (if not NULL) and returns code. Use through CMDS_FAIL. */
int cmds_error_set(cmds_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes an existing message with more context ("reading sample 12: ..."). */
int cmds_error_wrap(cmds_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define CMDS_FAIL(err, code, ...) cmds_error_set((err), (code), __VA_ARGS__)

const char *cmds_error_name(int code);

/* Aborts the whole job: prints `[rank r] file:line: msg` and calls MPI_Abort (or exit
 * before MPI_Init). For invariants only; input errors go through cmds_error. */
void cmds_panic(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

#define CMDS_PANIC(...) cmds_panic(__FILE__, __LINE__, __VA_ARGS__)
#define CMDS_ASSERT(cond) \
  do { if (!(cond)) cmds_panic(__FILE__, __LINE__, "assertion failed: %s", #cond); } while (0)

/* malloc/calloc that panic on failure (allocation failure is not recoverable here). */
void *cmds_xmalloc(size_t n);
void *cmds_xcalloc(size_t count, size_t size);
void *cmds_xrealloc(void *p, size_t n);
char *cmds_xstrdup(const char *s);

#endif
