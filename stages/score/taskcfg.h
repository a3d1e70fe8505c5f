/* taskcfg: the configuration keys, tasks and settings as cmds-score reads them.
 *
 * Keys and their spelling are the project's (README "Configuration keys", METHOD.md
 * defaults); values are kept as canonical text (integers in decimal, numbers in the
 * shortest form that reads back as the same double), exactly as cmds-train writes them into
 * a mapper's `cmds.config_key` metadata, so score can check that a task's training keys are
 * the ones its model was trained with. A tasks file is shared with cmds-train: one task per
 * line `dataset category k tag key=value ...`.
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
#include "json.h"

enum {
  SK_MAPPER_KIND, SK_RESOLUTION, SK_ADAPT_GROUPS, SK_CA_REDUCTION, SK_CA_GROUPS, SK_SEL_HIDDEN,
  SK_PROJ_HIDDEN, SK_MLP_HIDDEN,
  SK_STEPS, SK_BATCH, SK_LR, SK_LR_MIN, SK_WEIGHT_DECAY, SK_NOISE_SIGMA, SK_SEED, SK_STREAMS,
  SK_LAYER_WEIGHTS,
  SK_SCORE_L1, SK_SCORE_L2, SK_SCORE_FUSION, SK_SCORE_STREAMS, SK_SCORE_SIGMA, SK_SCORE_FG_MASK,
  SK_FINAL_NORM,
  SK_NKEYS
};
#define SK_FIRST_SCORE SK_SCORE_L1
#define SK_LAST_SCORE SK_SCORE_FG_MASK

#define SCORE_CFG_VALUE_MAX 96
#define SCORE_NAME_MAX 64

typedef struct score_cfg {
  char value[SK_NKEYS][SCORE_CFG_VALUE_MAX];
} score_cfg;

void score_cfg_default(score_cfg *c);
const char *score_cfg_key_name(int k);
int score_cfg_is_score_key(int k);
/* Sets one key from "key=value". Errors name `where` ("--set", "tasks.txt:3"), the key and
 * what is expected; an unknown key lists the known ones. only_score: refuse keys other
 * than score.* (settings files: the other keys select the model). */
int score_cfg_set(score_cfg *c, const char *kv, const char *where, int only_score, cmds_error *err);
/* The canonical form of `value` for key k ("1e-4" -> "0.0001"); 0 when invalid. */
int score_cfg_canon(int k, const char *value, char *out, size_t cap);
/* Index of a key name, -1 if unknown. */
int score_cfg_find(const char *name, size_t len);
/* Training keys (all but score.*) as "k=v;k=v" in table order (cmds-train's config_key). */
void score_cfg_train_key(const score_cfg *c, char *out, size_t cap);
/* The setting name derived from the score.* keys that differ from the defaults. */
void score_cfg_setting_name(const score_cfg *c, char *out, size_t cap);
/* Equal score.* keys. */
int score_cfg_same_setting(const score_cfg *a, const score_cfg *b);
/* Every key as a JSON object value; score_only: just the score.* keys. */
void score_cfg_json(const score_cfg *c, cmds_json *j, int score_only);

/* A name usable as one path component: [A-Za-z0-9._-]+, not starting with '.'. */
int score_name_ok(const char *s);

typedef struct score_setting {
  char name[SCORE_NAME_MAX];
  score_cfg cfg; /* the task's keys with the setting's score.* keys */
  char origin[320];
} score_setting;

/* One model folder RUN/models/<dataset>/<category>/k<k>/<tag>/ and the settings to score. */
typedef struct score_task {
  char dataset[32], category[128], tag[64];
  int k;
  score_cfg cfg; /* the task's keys (training keys select the model) */
  char origin[320];
  int nsettings;
  score_setting *settings;
} score_task;

/* Reads a tasks file; keys start from `base`. only >= 0 keeps task `only` (0-based counting
 * task lines, not lines: Slurm array indices). Lines naming the same model folder with the
 * same training keys become one task with several settings (their names derived from their
 * score.* keys); different training keys for one folder are an error naming both lines. */
int score_tasks_read(const char *path, const score_cfg *base, int64_t only, score_task **tasks,
                     int *n, cmds_error *err);
/* categories x shots with one tag, configuration and setting name (NULL: derived). */
int score_tasks_product(const char *dataset, char **categories, int ncat, const char *shots,
                        const char *tag, const score_cfg *cfg, const char *setting,
                        score_task **tasks, int *n, cmds_error *err);
/* Replaces every task's settings by the lines of a settings file (`name key=value ...`,
 * score.* keys only, applied on top of each task's keys). */
int score_tasks_apply_settings_file(score_task *tasks, int n, const char *path, cmds_error *err);
void score_tasks_free(score_task *tasks, int n);

#endif
