/* config_keys: the configuration keys shared by specs, tasks files and sidecars
 * (COMMON.md's contract; defaults from METHOD.md), their types, canonical text and the
 * stage they belong to. A configuration is one canonical string per key. */
#ifndef CMDS_JOBS_CONFIG_KEYS_H
#define CMDS_JOBS_CONFIG_KEYS_H

#include "cmds_error.h"

typedef enum {
  KEY_TRAIN = 0,    /* changes the trained mapper: a new model folder (tag) */
  KEY_SCORE = 1,    /* scoring only: re-scores saved maps, never retrains */
  KEY_FEATURES = 2  /* changes the feature cache: one value per job, not sweepable */
} key_scope;

typedef enum { KT_ENUM, KT_INT, KT_FLOAT, KT_FLOATS, KT_BOOL } key_type;

typedef struct config_key {
  const char *name, *def; /* default as canonical text */
  key_type type;
  key_scope scope;
  const char *choices;    /* KT_ENUM: "a|b|c" */
  double min;             /* KT_INT / KT_FLOAT: smallest allowed value */
} config_key;

#define JOB_NKEYS 24
extern const config_key job_keys[JOB_NKEYS];

/* Index of a key by name, -1 when unknown. */
int config_key_find(const char *name);

/* A configuration: canonical value text for every key (owned strings). */
typedef struct job_config {
  char *v[JOB_NKEYS];
} job_config;

void config_defaults(job_config *c);
void config_copy(job_config *dst, const job_config *src);
void config_free(job_config *c);
/* Sets key = value after checking the type and range and turning the value into its
 * canonical text (numbers in the shortest form that reads back exactly: "1e-4" and
 * "0.0001" are the same value). `where` names the place for the error ("spec.yaml:
 * experiments[1].settings.mlp"). */
int config_set(job_config *c, const char *key, const char *value, const char *where,
               cmds_error *err);
/* 1 when every key of the given scope (or all keys when scope < 0) is equal. */
int config_equal(const job_config *a, const job_config *b, int scope);
/* Name of the keys of `scope` that differ from `base`: "default" when none, otherwise
 * "key-value" parts joined with "__", characters outside [A-Za-z0-9._-] replaced by '-';
 * longer than 56 characters: cut, plus "-h" and a hash of the full text. A path component
 * the stages accept (at most 63 characters of [A-Za-z0-9._-]). */
void config_name(const job_config *c, const job_config *base, int scope, char *out, size_t cap);
/* The scoring setting's name as cmds-score derives it: the score.* keys that differ from
 * METHOD.md's defaults as "<key without score.>-<value>" joined by '_' (l1-0.3_fusion-add),
 * "default" when none does. */
void config_setting_name(const job_config *c, char *out, size_t cap);
/* "key=value key=value ..." of the keys of `scope` (all when scope < 0) that differ from
 * METHOD.md's defaults (tasks-file form). */
void config_pairs(const job_config *c, int scope, char *out, size_t cap);

/* 64-bit FNV-1a over bytes, chained from h (start with CMDS_FNV64_INIT). */
#define CMDS_FNV64_INIT 0xcbf29ce484222325ull
unsigned long long fnv64(unsigned long long h, const void *data, size_t n);

#endif
