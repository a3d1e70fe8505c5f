/* json: see json.h. */
#include "json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds_error.h"

static void put(cmds_json *j, const char *s, size_t n) {
  if (j->len + n + 1 > j->cap) {
    size_t cap = j->cap ? j->cap : 256;
    while (j->len + n + 1 > cap) cap *= 2;
    j->buf = cmds_xrealloc(j->buf, cap);
    j->cap = cap;
  }
  memcpy(j->buf + j->len, s, n);
  j->len += n;
  j->buf[j->len] = 0;
}

static void puts_(cmds_json *j, const char *s) { put(j, s, strlen(s)); }

static void newline(cmds_json *j) {
  if (!j->indent) return;
  put(j, "\n", 1);
  for (int i = 0; i < j->depth * j->indent; i++) put(j, " ", 1);
}

/* Called before every value or key: writes the separating comma and layout. */
static void before_value(cmds_json *j) {
  if (j->after_key) {
    j->after_key = 0;
    return;
  }
  if (j->depth > 0) {
    if (j->need_comma[j->depth]) put(j, ",", 1);
    newline(j);
    j->need_comma[j->depth] = 1;
  }
}

void cmds_json_init(cmds_json *j, int indent) {
  memset(j, 0, sizeof *j);
  j->indent = indent;
  put(j, "", 0);
}

void cmds_json_free(cmds_json *j) {
  free(j->buf);
  memset(j, 0, sizeof *j);
}

static void open_(cmds_json *j, const char *c) {
  before_value(j);
  puts_(j, c);
  CMDS_ASSERT(j->depth + 1 < (int)sizeof j->need_comma);
  j->depth++;
  j->need_comma[j->depth] = 0;
}

static void close_(cmds_json *j, const char *c) {
  int had = j->need_comma[j->depth];
  j->depth--;
  if (had) newline(j);
  puts_(j, c);
}

void cmds_json_object_begin(cmds_json *j) { open_(j, "{"); }
void cmds_json_object_end(cmds_json *j) { close_(j, "}"); }
void cmds_json_array_begin(cmds_json *j) { open_(j, "["); }
void cmds_json_array_end(cmds_json *j) { close_(j, "]"); }

static void quoted(cmds_json *j, const char *s) {
  put(j, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    char esc[8];
    switch (*p) {
      case '"': puts_(j, "\\\""); break;
      case '\\': puts_(j, "\\\\"); break;
      case '\n': puts_(j, "\\n"); break;
      case '\r': puts_(j, "\\r"); break;
      case '\t': puts_(j, "\\t"); break;
      default:
        if (*p < 0x20) {
          snprintf(esc, sizeof esc, "\\u%04x", *p);
          puts_(j, esc);
        } else {
          put(j, (const char *)p, 1);
        }
    }
  }
  put(j, "\"", 1);
}

void cmds_json_key(cmds_json *j, const char *key) {
  before_value(j);
  quoted(j, key);
  puts_(j, j->indent ? ": " : ":");
  j->after_key = 1;
}

void cmds_json_str(cmds_json *j, const char *s) {
  before_value(j);
  if (s) quoted(j, s);
  else puts_(j, "null");
}

void cmds_json_int(cmds_json *j, int64_t v) {
  char b[32];
  before_value(j);
  snprintf(b, sizeof b, "%lld", (long long)v);
  puts_(j, b);
}

void cmds_json_num(cmds_json *j, double v) {
  char b[40];
  before_value(j);
  if (!isfinite(v)) {
    puts_(j, "null");
    return;
  }
  snprintf(b, sizeof b, "%.17g", v);
  puts_(j, b);
}

void cmds_json_bool(cmds_json *j, int v) {
  before_value(j);
  puts_(j, v ? "true" : "false");
}

void cmds_json_null(cmds_json *j) {
  before_value(j);
  puts_(j, "null");
}

void cmds_json_raw(cmds_json *j, const char *text) {
  before_value(j);
  puts_(j, text);
}

void cmds_json_kv_str(cmds_json *j, const char *key, const char *s) {
  cmds_json_key(j, key);
  cmds_json_str(j, s);
}
void cmds_json_kv_int(cmds_json *j, const char *key, int64_t v) {
  cmds_json_key(j, key);
  cmds_json_int(j, v);
}
void cmds_json_kv_num(cmds_json *j, const char *key, double v) {
  cmds_json_key(j, key);
  cmds_json_num(j, v);
}
void cmds_json_kv_bool(cmds_json *j, const char *key, int v) {
  cmds_json_key(j, key);
  cmds_json_bool(j, v);
}
