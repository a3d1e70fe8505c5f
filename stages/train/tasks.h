/* tasks: cmds-train's task list. Reading a tasks file and the single-task options' product
 * are comm/tasks_file.h's (shared with cmds-score); here: the training-specific rule for two
 * tasks with the same model folder. */
#ifndef CMDS_TRAIN_TASKS_H
#define CMDS_TRAIN_TASKS_H

#include "cmds_error.h"
#include "tasks_file.h"

/* Two tasks with the same model folder: the same training configuration keeps the first
 * (the mapper is trained once); different ones are an error naming both origins. */
int train_tasks_dedupe(cmds_task *tasks, int *n, cmds_error *err);

#endif
