/* tasks_file: the task list of cmds-train and cmds-score. A task is (dataset, category, k,
 * tag, configuration); its model folder is RUN/models/<dataset>/<category>/k<k>/<tag>/.
 * Tasks come from a tasks file (`--tasks FILE [--task-index I]`: one task per line
 * `dataset category k tag key=value ...`, whitespace-separated, `#` comments and blank lines
 * ignored; keys not given keep the base configuration) or from the single-task options
 * (`--dataset D [--category C,..] [--shots 1,2,4] [--tag T] [--set key=value]...`), whose
 * categories default to every cache of the dataset in the cache folder. */
#ifndef CMDS_TASKS_FILE_H
#define CMDS_TASKS_FILE_H

#include <stdint.h>

#include "cmds_error.h"
#include "config_keys.h"

typedef struct cmds_task {
  char dataset[32], category[128], tag[64];
  int k;
  cmds_config cfg;
  char origin[320]; /* where the task came from: "tasks.txt:3", "command line" */
} cmds_task;

/* A name usable as one path component: [A-Za-z0-9._-]+, not starting with '.'. */
int cmds_name_ok(const char *s);
/* Fills t's names from text (k: a positive integer) and origin `where`; errors name `where`
 * and the field. t->cfg is left as it is. */
int cmds_task_names(cmds_task *t, const char *dataset, const char *category, const char *k, const char *tag,
                    const char *where, cmds_error *err);
/* Splits `line` in place into whitespace-separated fields, dropping a `#` comment. Returns
 * the count, -1 when there are more than `cap`. */
int cmds_split_fields(char *line, char **fields, int cap);
/* Parses a tasks file. Every line's keys start from `base` (the defaults plus any --set).
 * only >= 0 keeps only task `only` (0-based, counting tasks, not lines: Slurm array
 * indices). Errors name the file and line (and, for a bad --task-index, the count). Free
 * the list with free(). */
int cmds_tasks_read(const char *path, const cmds_config *base, int64_t only, cmds_task **tasks, int *n,
                    cmds_error *err);
/* categories x shots (a comma list of positive integers) with one tag and configuration,
 * in that order (category-major). */
int cmds_tasks_product(const char *dataset, char **categories, int ncat, const char *shots, const char *tag,
                       const cmds_config *cfg, cmds_task **tasks, int *n, cmds_error *err);

/* The categories to work on: the comma list `given` (--category; NULL: not given), else the
 * entries of `dir` named <category><suffix> (suffix NULL: every sub-folder of dir), sorted,
 * skipping names that end in `skip` (NULL: none; "features" caches next to sample caches).
 * `what` names what was looked for in the error when there is none ("feature caches
 * (*.features.h5; run cmds-features first)"). Returns the count (> 0) and a list to free with
 * cmds_free_list, or -1 with err set. */
int cmds_categories(const char *given, const char *dir, const char *suffix, const char *skip, const char *what,
                    char ***cats, cmds_error *err);

/* The options cmds-train and cmds-score share (COMMON.md "Program options"): --cache DIR
 * --run RUN, --tasks FILE [--task-index I] or --dataset D [--category C,..] [--shots K,..]
 * [--tag T], --set key=value (repeatable), --device auto|cpu|cuda. */
typedef struct cmds_task_opts {
  const char *cache, *run, *tasks, *dataset, *categories, *shots, *tag, *device;
  int64_t task_index; /* -1: every task of the file */
  cmds_config cfg;    /* defaults + --set */
} cmds_task_opts;

/* Defaults: --shots 1,2,4, --tag default, --device auto, METHOD.md's keys. */
void cmds_task_opts_init(cmds_task_opts *o);
/* Takes option `opt` with its value `val` when it is one of the shared options (*taken = 1);
 * a bad value is an error naming the option. */
int cmds_task_opts_take(cmds_task_opts *o, const char *opt, const char *val, int *taken, cmds_error *err);
/* After all options: --cache and --run given, one of --tasks / --dataset, --task-index only
 * with --tasks, a known --device. */
int cmds_task_opts_check(const cmds_task_opts *o, cmds_error *err);
/* The task list: the tasks file's (only --task-index's task when given), or --dataset's
 * categories (default: every feature cache CACHE/<dataset>/<category>.features.h5) x
 * --shots, with --tag and the --set keys. The same on every rank that reads the same files. */
int cmds_task_opts_tasks(const cmds_task_opts *o, cmds_task **tasks, int *n, cmds_error *err);

#endif
