/* config_keys: the one table of the configuration keys (README "Configuration keys",
 * COMMON.md's contract, METHOD.md's defaults) that cmds-train, cmds-score and cmds-run all
 * read: each key's name, type, default, allowed values and the stage it belongs to, and the
 * checking of `key=value` text against it.
 *
 * A configuration keeps every value as canonical text (integers in decimal, numbers in the
 * shortest %g form that reads back to the same double, enums as spelled, booleans 0/1), so
 * two spellings of one value ("1e-4", "0.0001") are the same configuration; that text is what
 * sidecars, checkpoints, mapper metadata and derived names carry. The table order below is
 * the order every sidecar and key string lists the keys in: keep it (append new keys at the
 * end of their stage's run only together with the schemas they appear in). */
#ifndef CMDS_CONFIG_KEYS_H
#define CMDS_CONFIG_KEYS_H

#include <stddef.h>

#include "cmds_error.h"
#include "json.h"

/* Index of every key in cmds_keys[] (= table order). */
enum {
  CK_MAPPER_KIND, CK_RESOLUTION, CK_ADAPT_GROUPS, CK_CA_REDUCTION, CK_CA_GROUPS, CK_SEL_HIDDEN,
  CK_PROJ_HIDDEN, CK_MLP_HIDDEN,
  CK_STEPS, CK_BATCH, CK_LR, CK_LR_MIN, CK_WEIGHT_DECAY, CK_NOISE_SIGMA, CK_SEED, CK_STREAMS,
  CK_LAYER_WEIGHTS, CK_TRAIN_AUGMENTED,
  CK_SCORE_L1, CK_SCORE_L2, CK_SCORE_FUSION, CK_SCORE_STREAMS, CK_SCORE_SIGMA, CK_SCORE_FG_MASK,
  CK_FINAL_NORM,
  CK_AUG_PROMPT, CK_AUG_RANK, CK_AUG_ALPHA, CK_AUG_STEPS, CK_AUG_LR, CK_AUG_WEIGHT_DECAY, CK_AUG_MAX_GRAD_NORM,
  CK_AUG_BATCH, CK_AUG_RESOLUTION, CK_AUG_STRENGTH, CK_AUG_INFERENCE_STEPS, CK_AUG_GUIDANCE, CK_AUG_IMAGES,
  CK_AUG_SEED,
  CK_NKEYS
};

/* The stage a key belongs to, as bits so that sets of stages can be passed around. */
typedef enum {
  CMDS_KEY_TRAIN = 1,    /* changes the trained mapper (a new model folder / tag) */
  CMDS_KEY_SCORE = 2,    /* scoring only: a scoring setting, never retrains */
  CMDS_KEY_FEATURES = 4, /* changes the feature cache (and so the model): one value per job */
  CMDS_KEY_AUGMENT = 8   /* cmds-augment's (METHOD.md 7): the augmented samples of a sample cache; set
                            with cmds-augment --set or a job spec's augment: block, never per task */
} cmds_key_stage;
/* The keys of a task (tasks files, sidecars, spec configurations): every stage but augment. */
#define CMDS_KEYS_ALL 7u
/* The keys a trained mapper depends on: its sidecar's / metadata's config_key. */
#define CMDS_KEYS_MODEL ((unsigned)(CMDS_KEY_TRAIN | CMDS_KEY_FEATURES))

typedef enum {
  CMDS_KT_ENUM,  /* one of `choices` ("a|b|c") */
  CMDS_KT_INT,   /* an integer in [min, max] (max 0: up to 2^40) */
  CMDS_KT_NUM,   /* a finite number in [min, max] (max 0: no upper bound) */
  CMDS_KT_NUMS,  /* 1 to CMDS_KEY_LIST_MAX comma-separated numbers >= min */
  CMDS_KT_BOOL,  /* 0 or 1 (true/false, on/off are read as 1/0) */
  CMDS_KT_TEXT   /* 1 to CMDS_CFG_VALUE_MAX - 1 printable ASCII characters without '"', '\\' or ';'
                    (spaces allowed: never a tasks-file key), taken as written */
} cmds_key_type;

#define CMDS_KEY_LIST_MAX 8
#define CMDS_CFG_VALUE_MAX 96 /* canonical text of one value, with its NUL */

typedef struct cmds_key_def {
  const char *name;
  cmds_key_type type;
  cmds_key_stage stage;
  const char *def;     /* the default, as canonical text */
  const char *choices; /* CMDS_KT_ENUM: "a|b|c" */
  double min, max;
} cmds_key_def;

extern const cmds_key_def cmds_keys[CK_NKEYS];

/* Index of the key spelled by the first `len` characters of `name`, -1 if unknown. */
int cmds_key_find(const char *name, size_t len);
/* The canonical text of `value` for key k into out (cap bytes). 0 when the value is not
 * allowed; then `why` (may be NULL) says what is expected ("an integer >= 1"). */
int cmds_key_canon(int k, const char *value, char *out, size_t cap, char *why, size_t why_cap);

/* A configuration: the canonical value of every key. Plain data: copy by assignment. */
typedef struct cmds_config {
  char value[CK_NKEYS][CMDS_CFG_VALUE_MAX];
} cmds_config;

/* Every key at its default (METHOD.md). */
void cmds_config_default(cmds_config *c);
/* Sets key = value. Errors (CMDS_EINPUT) start with `where` ("--set", "tasks.txt:3",
 * "spec.yaml: experiments[1]") and name the key and what is expected
 * ("tasks.txt:3: train.steps='abc': expected an integer >= 1"); an unknown key lists the
 * known ones. */
int cmds_config_set(cmds_config *c, const char *key, const char *value, const char *where, cmds_error *err);
/* The same from one "key=value" argument, accepting only keys of the stages in `stages`
 * (CMDS_KEYS_ALL: any); `where` NULL means "--set". */
int cmds_config_set_arg(cmds_config *c, const char *kv, const char *where, unsigned stages, cmds_error *err);
/* 1 when every key of the stages in `stages` has the same value in a and b. */
int cmds_config_equal(const cmds_config *a, const cmds_config *b, unsigned stages);
/* The keys of `stages` as "key=value;key=value" in table order (no quotes or backslashes:
 * safe in JSON). cmds_config_join(c, CMDS_KEYS_MODEL, ...) is a model's config_key. */
void cmds_config_join(const cmds_config *c, unsigned stages, char *out, size_t cap);
/* The keys of `stages` as one JSON object value {"key": "value", ...} in table order. */
void cmds_config_json(const cmds_config *c, cmds_json *j, unsigned stages);
/* A scoring setting's derived name: the score.* keys that differ from their defaults as
 * "<key without 'score.'>-<value>" joined by '_' (l1-0.3_fusion-add), "default" when none
 * does; cut to cap - 1 characters. */
void cmds_config_setting_name(const cmds_config *c, char *out, size_t cap);

#endif
