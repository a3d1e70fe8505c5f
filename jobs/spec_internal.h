/* spec_internal: what the spec*.c files share, included by them only. job_spec_load
 * (spec.c) reads the YAML document through the checked accessors of spec_yaml.c and hands
 * each top-level block to its parser: the datasets, shots and experiments that make the
 * tasks (spec_experiments.c), and the blocks that say how and where stages run: ranks,
 * estimate, augment, slurm (spec_blocks.c). Every reader fails through yfail, whose message
 * names the spec file, the line and the field ("where"). */
#ifndef CMDS_JOBS_SPEC_INTERNAL_H
#define CMDS_JOBS_SPEC_INTERNAL_H

#include <stddef.h>
#include <yaml.h>

#include "spec.h"

typedef struct yctx {
  yaml_document_t doc;
  const char *path;
  cmds_error *err;
} yctx;

/* ---- spec_yaml.c: YAML access with errors naming file, line and field */
int ymark(const yaml_node_t *n); /* 1-based line, 0 for NULL */
int yfail(yctx *y, const yaml_node_t *n, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
yaml_node_t *ynode(yctx *y, int id);
const char *yscalar(const yaml_node_t *n);          /* NULL unless a scalar */
int ylen(const yaml_node_t *n);                     /* items of a sequence, pairs of a mapping */
yaml_node_t *yget(yctx *y, yaml_node_t *map, const char *key); /* NULL when absent */
/* Every key of map must be in the '|'-separated list `allowed`. */
int ykeys(yctx *y, yaml_node_t *map, const char *where, const char *allowed);
/* ${NAME} and ${NAME:-default} from the environment; *out is malloc'ed. */
int yexpand_env(yctx *y, const yaml_node_t *n, const char *where, const char *in, char **out);
/* The non-empty string at map[key] into *out (freed first); absent: an error if required,
 * else *out is left as it is. expand: ${VAR} forms are expanded. */
int ystring(yctx *y, yaml_node_t *map, const char *key, const char *where, int required, int expand,
            char **out);
/* An integer in [min, max]; ${VAR} forms are expanded first (`ranks: ${NP:-2}`). */
int ylong(yctx *y, yaml_node_t *n, const char *where, long min, long max, long *out);
/* A scalar or a sequence of scalars as a list of strings (free with cmds_free_list). */
int ylist(yctx *y, yaml_node_t *n, const char *where, char ***out, int *count);
/* A mapping of configuration keys, each checked against the key table right away; appended
 * to *out. Values may be scalars or (loss.layer_weights) lists. */
int yconfig(yctx *y, yaml_node_t *map, const char *where, job_kvlist *out);
/* Checks `value` for configuration key `key` on METHOD.md's defaults; `at` leads the message. */
int yconfig_probe(yctx *y, const char *at, const char *key, const char *value);
/* A name that becomes a table label: non-empty, no spaces, ';', ',', '/' or '"'. */
int ycheck_label(yctx *y, const yaml_node_t *n, const char *where, const char *name);
void spec_kvlist_free(job_kvlist *l);

/* ---- spec.c */
/* Stage names first..last joined with sep ("prep|augment|..."), for key lists and messages. */
void spec_stage_list(int first, int last, const char *sep, char *out, size_t cap);

/* ---- spec_experiments.c: what makes the tasks */
int spec_parse_datasets(yctx *y, yaml_node_t *n, job_spec *s);
/* 1 to 8 distinct shot counts in [1, 64]. */
int spec_parse_shots(yctx *y, yaml_node_t *n, const char *where, int *shots, int *nshots);
/* Experiment idx of the list; without datasets or shots it takes all of the spec's. */
int spec_parse_experiment(yctx *y, yaml_node_t *e, int idx, job_spec *s, job_experiment *x);
/* The experiment a spec without `experiments` has: "main", every dataset and shot count. */
void spec_default_experiment(const job_spec *s, job_experiment *x);

/* ---- spec_blocks.c: how and where the stages run (each fills its defaults when absent) */
int spec_parse_ranks(yctx *y, yaml_node_t *n, job_spec *s);
int spec_parse_estimate(yctx *y, yaml_node_t *n, job_spec *s);
int spec_parse_augment(yctx *y, yaml_node_t *n, job_spec *s);
int spec_parse_slurm(yctx *y, yaml_node_t *n, job_spec *s);

#endif
