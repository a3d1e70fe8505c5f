/* taskcfg: cmds-score's tasks and scoring settings.
 *
 * The keys, their checking and canonical text are comm/config_keys.h's (the same text
 * cmds-train writes into a mapper's `cmds.config_key` metadata, so score can check that a
 * task's training keys are the ones its model was trained with); tasks files and the
 * single-task form are read by comm/tasks_file.h, shared with cmds-train.
 *
 * A *setting* is a named choice of the score.* keys (l1, l2, fusion, streams, sigma, fg_mask); a
 * task (model folder) is scored under one or more settings, each giving maps.<setting>.h5.
 * Settings come from --setting NAME (with --set), from a settings file (lines
 * `name key=value ...`), or from tasks-file lines that differ only in score.* keys (then the
 * name is derived from the keys that differ from the defaults: `l1-0.3_fusion-add`, or
 * `default` when none does). */
#ifndef CMDS_SCORE_TASKCFG_H
#define CMDS_SCORE_TASKCFG_H

#include <stdint.h>

#include "cmds_error.h"
#include "config_keys.h"
#include "tasks_file.h"

#define SCORE_NAME_MAX 64

/* Sets one score.* key from "key=value" (cmds_config_set_arg); another key is refused with
 * the reason (settings files: the other keys select the model). */
int score_setting_set(cmds_config *c, const char *kv, const char *where, cmds_error *err);

typedef struct score_setting {
  char name[SCORE_NAME_MAX];
  cmds_config cfg; /* the task's keys with the setting's score.* keys */
  char origin[320];
} score_setting;

/* One model folder RUN/models/<dataset>/<category>/k<k>/<tag>/ and the settings to score. */
typedef struct score_task {
  cmds_task task; /* names, origin, the task's keys (training keys select the model) */
  int nsettings;
  score_setting *settings;
} score_task;

/* The model folders to score from the task list (cmds_task_opts_tasks): tasks naming the
 * same model folder with the same training keys become one task with several settings,
 * named `setting` (--setting; NULL: derived from each task's score.* keys); different
 * training keys for one folder are an error naming both origins. */
int score_tasks_merge(const cmds_task *parsed, int np, const char *setting, score_task **tasks, int *n,
                      cmds_error *err);
/* Replaces every task's settings by the lines of a settings file (`name key=value ...`,
 * score.* keys only, applied on top of each task's keys). */
int score_tasks_apply_settings_file(score_task *tasks, int n, const char *path, cmds_error *err);
void score_tasks_free(score_task *tasks, int n);

#endif
