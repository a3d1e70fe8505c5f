/* config_keys: see config_keys.h. */
#include "config_keys.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"

/* COMMON.md's key list with METHOD.md's defaults. */
const config_key job_keys[JOB_NKEYS] = {
    {"mapper.kind", "cmds", KT_ENUM, KEY_TRAIN, "cmds|mlp", 0},
    {"mapper.resolution", "224", KT_INT, KEY_TRAIN, NULL, 8},
    {"mapper.adapt_groups", "32", KT_INT, KEY_TRAIN, NULL, 1},
    {"mapper.ca_reduction", "32", KT_INT, KEY_TRAIN, NULL, 1},
    {"mapper.ca_groups", "8", KT_INT, KEY_TRAIN, NULL, 1},
    {"mapper.sel_hidden", "128", KT_INT, KEY_TRAIN, NULL, 1},
    {"mapper.proj_hidden", "0", KT_INT, KEY_TRAIN, NULL, 0},
    {"mapper.mlp_hidden", "0", KT_INT, KEY_TRAIN, NULL, 0},
    {"train.steps", "3000", KT_INT, KEY_TRAIN, NULL, 1},
    {"train.batch", "2", KT_INT, KEY_TRAIN, NULL, 1},
    {"train.lr", "0.0001", KT_FLOAT, KEY_TRAIN, NULL, 0},
    {"train.lr_min", "1e-06", KT_FLOAT, KEY_TRAIN, NULL, 0},
    {"train.weight_decay", "0.0001", KT_FLOAT, KEY_TRAIN, NULL, 0},
    {"train.noise_sigma", "0.01", KT_FLOAT, KEY_TRAIN, NULL, 0},
    {"train.seed", "0", KT_INT, KEY_TRAIN, NULL, 0},
    {"train.streams", "both", KT_ENUM, KEY_TRAIN, "both|real|est", 0},
    {"loss.layer_weights", "1.2,1,0.8", KT_FLOATS, KEY_TRAIN, NULL, 0},
    {"score.l1", "0.1", KT_FLOAT, KEY_SCORE, NULL, 0},
    {"score.l2", "0.1", KT_FLOAT, KEY_SCORE, NULL, 0},
    {"score.fusion", "mul", KT_ENUM, KEY_SCORE, "mul|add|max|2d|3d", 0},
    {"score.streams", "both", KT_ENUM, KEY_SCORE, "both|real|est", 0},
    {"score.sigma", "4", KT_FLOAT, KEY_SCORE, NULL, 0},
    {"score.fg_mask", "1", KT_BOOL, KEY_SCORE, NULL, 0},
    {"backbone.final_norm", "0", KT_BOOL, KEY_FEATURES, NULL, 0},
};

unsigned long long fnv64(unsigned long long h, const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

int config_key_find(const char *name) {
  for (int i = 0; i < JOB_NKEYS; i++)
    if (!strcmp(job_keys[i].name, name)) return i;
  return -1;
}

void config_defaults(job_config *c) {
  for (int i = 0; i < JOB_NKEYS; i++) c->v[i] = cmds_xstrdup(job_keys[i].def);
}

void config_copy(job_config *dst, const job_config *src) {
  for (int i = 0; i < JOB_NKEYS; i++) dst->v[i] = cmds_xstrdup(src->v[i]);
}

void config_free(job_config *c) {
  for (int i = 0; i < JOB_NKEYS; i++) {
    free(c->v[i]);
    c->v[i] = NULL;
  }
}

/* Shortest %g text that reads back to the same double. */
static void shortest(double v, char *out, size_t cap) {
  if (v == 0) v = 0; /* -0 -> 0 */
  for (int p = 1; p <= 17; p++) {
    snprintf(out, cap, "%.*g", p, v);
    if (strtod(out, NULL) == v) return;
  }
}

static int parse_number(const char *s, double *v) {
  char *end;
  while (isspace((unsigned char)*s)) s++;
  if (!*s) return 0;
  *v = strtod(s, &end);
  while (isspace((unsigned char)*end)) end++;
  return !*end && isfinite(*v);
}

int config_set(job_config *c, const char *key, const char *value, const char *where,
               cmds_error *err) {
  int k = config_key_find(key);
  if (k < 0) {
    char known[1024];
    size_t len = 0;
    known[0] = 0;
    for (int i = 0; i < JOB_NKEYS; i++)
      len += (size_t)snprintf(known + len, sizeof known - len, "%s%s", i ? ", " : "", job_keys[i].name);
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: unknown configuration key '%s' (known: %s)", where, key, known);
  }
  const config_key *d = &job_keys[k];
  char canon[512];
  double v;
  switch (d->type) {
  case KT_ENUM: {
    int ok = 0;
    size_t vl = strlen(value);
    for (const char *p = d->choices; p && *p;) {
      const char *bar = strchr(p, '|');
      size_t n = bar ? (size_t)(bar - p) : strlen(p);
      if (n == vl && !strncmp(p, value, n)) ok = 1;
      p = bar ? bar + 1 : NULL;
    }
    if (!ok) return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s: expected one of %s, got '%s'", where, key, d->choices, value);
    snprintf(canon, sizeof canon, "%s", value);
    break;
  }
  case KT_INT:
    if (!parse_number(value, &v) || v != floor(v) || v < d->min || v > 1e15)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s: expected an integer >= %g, got '%s'", where, key, d->min, value);
    snprintf(canon, sizeof canon, "%lld", (long long)v);
    break;
  case KT_FLOAT:
    if (!parse_number(value, &v) || v < d->min)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s: expected a number >= %g, got '%s'", where, key, d->min, value);
    shortest(v, canon, sizeof canon);
    break;
  case KT_BOOL:
    if (!strcmp(value, "1") || !strcmp(value, "true") || !strcmp(value, "on")) snprintf(canon, sizeof canon, "1");
    else if (!strcmp(value, "0") || !strcmp(value, "false") || !strcmp(value, "off")) snprintf(canon, sizeof canon, "0");
    else return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s: expected 0 or 1 (true/false), got '%s'", where, key, value);
    break;
  case KT_FLOATS: {
    char **items;
    int n = cmds_split_commas(value, &items);
    size_t len = 0;
    canon[0] = 0;
    int bad = n <= 0;
    for (int i = 0; i < n && !bad; i++) {
      char t[64];
      if (!parse_number(items[i], &v) || v < 0) bad = 1;
      else {
        shortest(v, t, sizeof t);
        len += (size_t)snprintf(canon + len, sizeof canon - len, "%s%s", i ? "," : "", t);
      }
    }
    for (int i = 0; i < n; i++) free(items[i]);
    free(items);
    if (bad) return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s: expected comma-separated numbers >= 0, got '%s'", where, key, value);
    break;
  }
  }
  free(c->v[k]);
  c->v[k] = cmds_xstrdup(canon);
  return CMDS_OK;
}

int config_equal(const job_config *a, const job_config *b, int scope) {
  for (int i = 0; i < JOB_NKEYS; i++)
    if ((scope < 0 || (int)job_keys[i].scope == scope) && strcmp(a->v[i], b->v[i])) return 0;
  return 1;
}

void config_name(const job_config *c, const job_config *base, int scope, char *out, size_t cap) {
  char buf[4096];
  size_t len = 0;
  buf[0] = 0;
  for (int i = 0; i < JOB_NKEYS; i++) {
    if ((int)job_keys[i].scope != scope || !strcmp(c->v[i], base->v[i])) continue;
    len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s-%s", len ? "__" : "", job_keys[i].name, c->v[i]);
    if (len >= sizeof buf) len = sizeof buf - 1;
  }
  if (!len) {
    snprintf(out, cap, "default");
    return;
  }
  for (char *p = buf; *p; p++)
    if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-') *p = '-';
  /* Stages keep names under 64 characters: long ones are cut and made unique by a hash. */
  if (len > 56) {
    unsigned long long h = fnv64(CMDS_FNV64_INIT, buf, len);
    snprintf(out, cap, "%.38s-h%016llx", buf, h);
  } else {
    snprintf(out, cap, "%s", buf);
  }
}

void config_pairs(const job_config *c, int scope, char *out, size_t cap) {
  size_t len = 0;
  out[0] = 0;
  for (int i = 0; i < JOB_NKEYS; i++) {
    if ((scope >= 0 && (int)job_keys[i].scope != scope) || !strcmp(c->v[i], job_keys[i].def)) continue;
    len += (size_t)snprintf(out + len, cap - len, "%s%s=%s", len ? " " : "", job_keys[i].name, c->v[i]);
    if (len >= cap) len = cap - 1;
  }
}

void config_setting_name(const job_config *c, char *out, size_t cap) {
  size_t len = 0;
  out[0] = 0;
  for (int i = 0; i < JOB_NKEYS; i++) {
    if (job_keys[i].scope != KEY_SCORE || !strcmp(c->v[i], job_keys[i].def)) continue;
    len += (size_t)snprintf(out + len, cap - len, "%s%s-%s", len ? "_" : "", job_keys[i].name + 6, c->v[i]);
    if (len >= cap) len = cap - 1;
  }
  if (!len) snprintf(out, cap, "default");
}
