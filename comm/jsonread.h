/* jsonread: a JSON reader (RFC 8259) for the files Hugging Face checkpoints describe
 * themselves with: diffusers' config.json / scheduler_config.json / model_index.json,
 * transformers' config.json, a CLIP tokenizer's vocab.json. The whole document becomes a
 * tree of cmds_jv values: strings decoded to UTF-8 (\u escapes and surrogate pairs),
 * numbers as double (integers exact up to 2^53), object members in file order. Nesting
 * deeper than 256, trailing garbage, duplicate keys and invalid UTF-8 escapes are errors
 * that name the file, the byte offset and what was expected.
 *
 * The typed getters are for configuration files: `what` names the file in messages; a
 * member that is absent or null takes `dflt` when optional (required = 0) and is a
 * CMDS_EINPUT error when required, as is a member of the wrong type ("config.json: key
 * 'in_channels': an integer expected, got 3.5").
 *
 *   cmds_jv cfg;
 *   if (cmds_jv_read_file("unet/config.json", &cfg, &err)) ...;
 *   int64_t cin;
 *   if (cmds_jv_get_int(&cfg, "unet/config.json", "in_channels", 1, 0, &cin, &err)) ...;
 *   cmds_jv_free(&cfg); */
#ifndef CMDS_JSONREAD_H
#define CMDS_JSONREAD_H

#include <stddef.h>
#include <stdint.h>

#include "cmds_error.h"

typedef enum { CMDS_JV_NULL, CMDS_JV_BOOL, CMDS_JV_NUM, CMDS_JV_STR, CMDS_JV_ARR, CMDS_JV_OBJ } cmds_jv_type;

typedef struct cmds_jv {
  cmds_jv_type type;
  int b;                 /* BOOL */
  double num;            /* NUM */
  char *str;             /* STR: NUL-terminated UTF-8 (may hold NUL bytes; len is exact) */
  size_t len;            /* STR: bytes */
  int64_t n;             /* ARR: items, OBJ: members */
  struct cmds_jv *items; /* ARR / OBJ: n values */
  char **keys;           /* OBJ: n keys (UTF-8, NUL-terminated) */
} cmds_jv;

/* Parses text[0..n) (`what` names it in messages). On failure *out is left empty (NULL). */
int cmds_jv_parse(const char *text, size_t n, const char *what, cmds_jv *out, cmds_error *err);
/* Reads and parses a whole file (CMDS_EIO when it cannot be read). */
int cmds_jv_read_file(const char *path, cmds_jv *out, cmds_error *err);
void cmds_jv_free(cmds_jv *v);

const char *cmds_jv_type_name(cmds_jv_type t);
/* The member `key` of an object, or NULL when absent or when obj is not an object. */
const cmds_jv *cmds_jv_member(const cmds_jv *obj, const char *key);

int cmds_jv_get_num(const cmds_jv *obj, const char *what, const char *key, int required, double dflt,
                    double *out, cmds_error *err);
/* Integral numbers only. */
int cmds_jv_get_int(const cmds_jv *obj, const char *what, const char *key, int required, int64_t dflt,
                    int64_t *out, cmds_error *err);
int cmds_jv_get_bool(const cmds_jv *obj, const char *what, const char *key, int required, int dflt,
                     int *out, cmds_error *err);
/* *out points into the tree (or is dflt). */
int cmds_jv_get_str(const cmds_jv *obj, const char *what, const char *key, int required, const char *dflt,
                    const char **out, cmds_error *err);
/* An integer or a list of exactly n integers (diffusers writes attention_head_dim either
 * way): a scalar is repeated n times. Absent/null: dflt repeated (optional) or an error. */
int cmds_jv_get_ints(const cmds_jv *obj, const char *what, const char *key, int required, int64_t dflt,
                     int n, int64_t *out, cmds_error *err);
/* A list of strings (block types): at most maxn, count in *n_out, pointers into the tree.
 * Absent/null: *n_out = 0 when optional. */
int cmds_jv_get_strs(const cmds_jv *obj, const char *what, const char *key, int required, int maxn,
                     const char **out, int *n_out, cmds_error *err);
/* A list of numbers (at most maxn; count in *n_out). Absent/null: *n_out = 0 when optional. */
int cmds_jv_get_nums(const cmds_jv *obj, const char *what, const char *key, int required, int maxn,
                     double *out, int *n_out, cmds_error *err);

#endif
