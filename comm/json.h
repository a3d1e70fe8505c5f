/* json: a small JSON writer for stage records, manifests and results. Commas and
 * nesting are tracked so callers only say what comes next. Not a parser. */
#ifndef CMDS_JSON_H
#define CMDS_JSON_H

#include <stddef.h>
#include <stdint.h>

typedef struct cmds_json {
  char *buf;
  size_t len, cap;
  int depth;
  unsigned char need_comma[64];
  int after_key;
  int indent; /* pretty-print with this many spaces; 0 = compact */
} cmds_json;

void cmds_json_init(cmds_json *j, int indent);
void cmds_json_free(cmds_json *j);
void cmds_json_object_begin(cmds_json *j);
void cmds_json_object_end(cmds_json *j);
void cmds_json_array_begin(cmds_json *j);
void cmds_json_array_end(cmds_json *j);
void cmds_json_key(cmds_json *j, const char *key);
void cmds_json_str(cmds_json *j, const char *s);
void cmds_json_int(cmds_json *j, int64_t v);
/* Non-finite numbers are written as null (JSON has no NaN). %.17g round-trips. */
void cmds_json_num(cmds_json *j, double v);
void cmds_json_bool(cmds_json *j, int v);
void cmds_json_null(cmds_json *j);
/* Inserts already-formatted JSON text as one value. */
void cmds_json_raw(cmds_json *j, const char *text);

/* key + value shorthands */
void cmds_json_kv_str(cmds_json *j, const char *key, const char *s);
void cmds_json_kv_int(cmds_json *j, const char *key, int64_t v);
void cmds_json_kv_num(cmds_json *j, const char *key, double v);
void cmds_json_kv_bool(cmds_json *j, const char *key, int v);

#endif
