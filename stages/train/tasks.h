/* tasks: the list of training tasks (dataset, category, k, tag, configuration), from a
 * tasks file (one task per line: `dataset category k tag key=value ...`, `#` comments and
 * blank lines ignored; README "tasks file") or from the single-task options
 * (--dataset, --category, --shots, --tag, --set). A task's model folder is
 * RUN/models/<dataset>/<category>/k<k>/<tag>/. */
#ifndef CMDS_TRAIN_TASKS_H
#define CMDS_TRAIN_TASKS_H

#include <stdint.h>

#include "cmds_error.h"
#include "config.h"

typedef struct train_task {
  char dataset[32], category[128], tag[64];
  int k;
  train_config cfg;
  char origin[320]; /* where the task came from: "tasks.txt:3", "command line" */
} train_task;

/* Parses FILE. Every line's keys start from `base` (the defaults plus any --set). only >= 0
 * keeps only task `only` (0-based, counting tasks, not lines: Slurm array indices). Errors
 * name the file and line. */
int train_tasks_read(const char *path, const train_config *base, int64_t only, train_task **tasks,
                     int *n, cmds_error *err);
/* categories x shots (comma lists) with one tag and configuration. */
int train_tasks_product(const char *dataset, char **categories, int ncat, const char *shots,
                        const char *tag, const train_config *cfg, train_task **tasks, int *n,
                        cmds_error *err);
/* Two tasks with the same model folder: the same training configuration keeps the first
 * (the mapper is trained once); different ones are an error naming both origins. */
int train_tasks_dedupe(train_task *tasks, int *n, cmds_error *err);
/* A name usable as one path component: [A-Za-z0-9._-]+, not starting with '.'. */
int train_name_ok(const char *s);

#endif
