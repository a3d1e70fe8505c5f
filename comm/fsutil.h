/* fsutil: files and folders: atomic writes, mkdir -p, sorted listings. */
#ifndef CMDS_FSUTIL_H
#define CMDS_FSUTIL_H

#include <stddef.h>

#include "cmds_error.h"

/* mkdir -p. */
int cmds_mkdir_p(const char *path, cmds_error *err);
/* Writes data to `<path>.partial`, fsyncs, renames to path. */
int cmds_write_file_atomic(const char *path, const void *data, size_t len, cmds_error *err);
/* Copies src to dst through `<dst>.copy`, fsynced, renamed: dst is the whole copy or is not
 * there (the stages that add to a cache work on such a copy, never on the cache itself). */
int cmds_copy_file_atomic(const char *src, const char *dst, cmds_error *err);
int cmds_is_dir(const char *path);
int cmds_is_file(const char *path);

/* Sorted (byte order, as Python's sorted()) list of the entries of `dir` whose names
 * end with `suffix` (NULL or "" = all; hidden entries are skipped); want: 0 any,
 * 1 files only, 2 folders only. Returns the count or -1 (err set). Free with
 * cmds_free_list. */
int cmds_list_dir(const char *dir, const char *suffix, int want, char ***names, cmds_error *err);
void cmds_free_list(char **names, int n);
/* Splits a comma-separated list ("bagel,cookie") into a new array of its non-empty items
 * (free with cmds_free_list); returns the count. */
int cmds_split_commas(const char *list, char ***items);

/* Identity of a file's content ("fnv64:<hash>:<size>": a 64-bit FNV-1a hash of the bytes and
 * the size), e.g. of a weights file: `features` writes it into the feature cache and
 * `train`/`score` check that their --weights hash to the same. */
int cmds_file_identity(const char *path, char *out, size_t cap, cmds_error *err);

/* Joins up to four path parts with '/' into out (cap bytes). Returns out. */
char *cmds_path_join(char *out, size_t cap, const char *a, const char *b, const char *c,
                     const char *d);

#endif
