/* taskcfg: see taskcfg.h. */
#include "taskcfg.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"

typedef enum { T_INT, T_NUM, T_ENUM, T_LIST } key_type;

typedef struct key_def {
  const char *name;
  key_type type;
  const char *def;
  const char *choices; /* T_ENUM: "a|b|c" */
  double min, max;     /* allowed range (max 0: none) */
  const char *short_name; /* in derived setting names */
} key_def;

/* Order = the enum in taskcfg.h. Defaults: METHOD.md sections 3-6. */
static const key_def keys[SK_NKEYS] = {
    {"mapper.kind", T_ENUM, "cmds", "cmds|mlp", 0, 0, NULL},
    {"mapper.resolution", T_INT, "224", NULL, 1, 0, NULL},
    {"mapper.adapt_groups", T_INT, "32", NULL, 1, 0, NULL},
    {"mapper.ca_reduction", T_INT, "32", NULL, 1, 0, NULL},
    {"mapper.ca_groups", T_INT, "8", NULL, 1, 0, NULL},
    {"mapper.sel_hidden", T_INT, "128", NULL, 1, 0, NULL},
    {"mapper.proj_hidden", T_INT, "0", NULL, 0, 0, NULL},
    {"mapper.mlp_hidden", T_INT, "0", NULL, 0, 0, NULL},
    {"train.steps", T_INT, "3000", NULL, 1, 0, NULL},
    {"train.batch", T_INT, "2", NULL, 1, 0, NULL},
    {"train.lr", T_NUM, "1e-4", NULL, 0, 0, NULL},
    {"train.lr_min", T_NUM, "1e-6", NULL, 0, 0, NULL},
    {"train.weight_decay", T_NUM, "1e-4", NULL, 0, 0, NULL},
    {"train.noise_sigma", T_NUM, "0.01", NULL, 0, 0, NULL},
    {"train.seed", T_INT, "0", NULL, 0, 0, NULL},
    {"train.streams", T_ENUM, "both", "both|real|est", 0, 0, NULL},
    {"loss.layer_weights", T_LIST, "1.2,1.0,0.8", NULL, 0, 0, NULL},
    {"score.l1", T_NUM, "0.1", NULL, 0, 0, "l1"},
    {"score.l2", T_NUM, "0.1", NULL, 0, 0, "l2"},
    {"score.fusion", T_ENUM, "mul", "mul|add|max|2d|3d", 0, 0, "fusion"},
    {"score.streams", T_ENUM, "both", "both|real|est", 0, 0, "streams"},
    {"score.sigma", T_NUM, "4", NULL, 0, 63, "sigma"},
    /* Proposed decision (docs-score.md): maps are 0 where the point cloud has no point */
    {"score.fg_mask", T_INT, "1", NULL, 0, 1, "fg_mask"},
    {"backbone.final_norm", T_INT, "0", NULL, 0, 1, NULL},
};

const char *score_cfg_key_name(int k) { return keys[k].name; }
int score_cfg_is_score_key(int k) { return k >= SK_FIRST_SCORE && k <= SK_LAST_SCORE; }

int score_cfg_find(const char *name, size_t len) {
  for (int k = 0; k < SK_NKEYS; k++)
    if (strlen(keys[k].name) == len && !strncmp(keys[k].name, name, len)) return k;
  return -1;
}

/* The shortest %g form that reads back as the same double (cmds-train writes the same). */
static void canon_num(double v, char *out, size_t cap) {
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(out, cap, "%.*g", prec, v);
    if (strtod(out, NULL) == v) return;
  }
}

static int parse_num(const char *s, double *v) {
  char *end = NULL;
  if (!*s) return 0;
  *v = strtod(s, &end);
  return end && !*end && isfinite(*v);
}

static int canon_value(const key_def *d, const char *v, char *out, size_t cap, char *why, size_t why_cap) {
  if (d->type == T_INT) {
    char *end = NULL;
    long long n = strtoll(v, &end, 10);
    long long hi = d->max > 0 ? (long long)d->max : (long long)1 << 40;
    if (!*v || !end || *end || n < (long long)d->min || n > hi) {
      snprintf(why, why_cap, "an integer in [%g, %lld]", d->min, hi);
      return 0;
    }
    snprintf(out, cap, "%lld", n);
    return 1;
  }
  if (d->type == T_NUM) {
    double x;
    if (!parse_num(v, &x) || x < d->min || (d->max > 0 && x > d->max)) {
      if (d->max > 0) snprintf(why, why_cap, "a number in [%g, %g]", d->min, d->max);
      else snprintf(why, why_cap, "a number >= %g", d->min);
      return 0;
    }
    canon_num(x, out, cap);
    return 1;
  }
  if (d->type == T_ENUM) {
    const char *c = d->choices;
    size_t n = strlen(v);
    while (c && *c) {
      const char *bar = strchr(c, '|');
      size_t len = bar ? (size_t)(bar - c) : strlen(c);
      if (len == n && !strncmp(c, v, n)) {
        snprintf(out, cap, "%s", v);
        return 1;
      }
      c = bar ? bar + 1 : NULL;
    }
    snprintf(why, why_cap, "one of %s", d->choices);
    return 0;
  }
  /* T_LIST: comma-separated numbers >= min, at most 8 */
  char buf[SCORE_CFG_VALUE_MAX * 2];
  size_t used = 0;
  int count = 0;
  const char *p = v;
  snprintf(why, why_cap, "a comma-separated list of 1 to 8 numbers >= %g", d->min);
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    char item[64];
    double x;
    if (len == 0 || len >= sizeof item) return 0;
    memcpy(item, p, len);
    item[len] = 0;
    if (!parse_num(item, &x) || x < d->min || ++count > 8) return 0;
    char c[32];
    canon_num(x, c, sizeof c);
    used += (size_t)snprintf(buf + used, sizeof buf - used, "%s%s", count > 1 ? "," : "", c);
    if (used >= cap) return 0;
    if (!comma) break;
    p = comma + 1;
  }
  snprintf(out, cap, "%s", buf);
  return 1;
}

int score_cfg_canon(int k, const char *value, char *out, size_t cap) {
  char why[128];
  return k >= 0 && k < SK_NKEYS && canon_value(&keys[k], value, out, cap, why, sizeof why);
}

void score_cfg_default(score_cfg *c) {
  memset(c, 0, sizeof *c);
  char why[128];
  for (int k = 0; k < SK_NKEYS; k++)
    canon_value(&keys[k], keys[k].def, c->value[k], SCORE_CFG_VALUE_MAX, why, sizeof why);
}

int score_cfg_set(score_cfg *c, const char *kv, const char *where, int only_score, cmds_error *err) {
  if (!where) where = "--set";
  const char *eq = strchr(kv, '=');
  if (!eq || eq == kv)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: '%s': expected key=value (e.g. score.l1=0.3)", where, kv);
  size_t klen = (size_t)(eq - kv);
  int k = score_cfg_find(kv, klen);
  if (k < 0) {
    char known[1024];
    size_t used = 0;
    for (int q = 0; q < SK_NKEYS && used < sizeof known; q++)
      if (!only_score || score_cfg_is_score_key(q))
        used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", used ? ", " : "", keys[q].name);
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: unknown configuration key '%.*s' (known: %s)", where, (int)klen, kv, known);
  }
  if (only_score && !score_cfg_is_score_key(k))
    return CMDS_FAIL(err, CMDS_EINPUT,
                     "%s: %s: a setting may only change score.* keys (the other keys select the trained model: "
                     "put them in the task)", where, keys[k].name);
  char why[128];
  if (!canon_value(&keys[k], eq + 1, c->value[k], SCORE_CFG_VALUE_MAX, why, sizeof why))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s='%s': expected %s", where, keys[k].name, eq + 1, why);
  return CMDS_OK;
}

void score_cfg_train_key(const score_cfg *c, char *out, size_t cap) {
  size_t used = 0;
  out[0] = 0;
  for (int k = 0; k < SK_NKEYS && used < cap; k++)
    if (!score_cfg_is_score_key(k))
      used += (size_t)snprintf(out + used, cap - used, "%s%s=%s", used ? ";" : "", keys[k].name, c->value[k]);
}

void score_cfg_setting_name(const score_cfg *c, char *out, size_t cap) {
  score_cfg d;
  score_cfg_default(&d);
  size_t used = 0;
  out[0] = 0;
  for (int k = SK_FIRST_SCORE; k <= SK_LAST_SCORE && used < cap; k++)
    if (strcmp(c->value[k], d.value[k]))
      used += (size_t)snprintf(out + used, cap - used, "%s%s-%s", used ? "_" : "", keys[k].short_name, c->value[k]);
  if (!out[0]) snprintf(out, cap, "default");
}

int score_cfg_same_setting(const score_cfg *a, const score_cfg *b) {
  for (int k = SK_FIRST_SCORE; k <= SK_LAST_SCORE; k++)
    if (strcmp(a->value[k], b->value[k])) return 0;
  return 1;
}

void score_cfg_json(const score_cfg *c, cmds_json *j, int score_only) {
  cmds_json_object_begin(j);
  for (int k = 0; k < SK_NKEYS; k++)
    if (!score_only || score_cfg_is_score_key(k)) cmds_json_kv_str(j, keys[k].name, c->value[k]);
  cmds_json_object_end(j);
}

int score_name_ok(const char *s) {
  if (!*s || *s == '.') return 0;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.') return 0;
  return 1;
}

/* ------------------------------------------------------------------ tasks */

static int task_names(score_task *t, const char *dataset, const char *cat, const char *k, const char *tag,
                      const char *where, cmds_error *err) {
  if (!score_name_ok(dataset) || strlen(dataset) >= sizeof t->dataset)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: dataset '%s': expected a name of letters, digits, '_', '-', '.'", where, dataset);
  if (!score_name_ok(cat) || strlen(cat) >= sizeof t->category)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: category '%s': expected a name of letters, digits, '_', '-', '.'", where, cat);
  char *end = NULL;
  long v = strtol(k, &end, 10);
  if (!*k || *end || v < 1 || v > 1000000)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: k '%s': expected a positive integer (the shots: 1, 2, 4)", where, k);
  t->k = (int)v;
  if (!score_name_ok(tag) || strlen(tag) >= sizeof t->tag)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: tag '%s': expected a name of letters, digits, '_', '-', '.' (at most %d)",
                     where, tag, (int)sizeof t->tag - 1);
  snprintf(t->dataset, sizeof t->dataset, "%s", dataset);
  snprintf(t->category, sizeof t->category, "%s", cat);
  snprintf(t->tag, sizeof t->tag, "%s", tag);
  snprintf(t->origin, sizeof t->origin, "%s", where);
  return CMDS_OK;
}

static void add_setting(score_task *t, const char *name, const score_cfg *cfg, const char *origin) {
  t->settings = cmds_xrealloc(t->settings, sizeof(score_setting) * (size_t)(t->nsettings + 1));
  score_setting *s = &t->settings[t->nsettings++];
  memset(s, 0, sizeof *s);
  snprintf(s->name, sizeof s->name, "%s", name);
  s->cfg = *cfg;
  snprintf(s->origin, sizeof s->origin, "%s", origin);
}

/* A setting of the same name must have the same keys; the same keys under another name is
 * allowed (two files). */
static int check_setting_names(const score_task *t, cmds_error *err) {
  for (int i = 0; i < t->nsettings; i++)
    for (int j = 0; j < i; j++)
      if (!strcmp(t->settings[i].name, t->settings[j].name) &&
          !score_cfg_same_setting(&t->settings[i].cfg, &t->settings[j].cfg))
        return CMDS_FAIL(err, CMDS_EINPUT, "%s and %s: setting '%s' given twice with different score.* keys",
                         t->settings[j].origin, t->settings[i].origin, t->settings[i].name);
  return CMDS_OK;
}

/* Merges task `t` into the list: the same model folder with the same training keys adds a
 * setting to the existing task. */
static int merge_task(score_task **tasks, int *n, score_task *t, const char *setting, cmds_error *err) {
  char name[SCORE_NAME_MAX];
  if (setting) snprintf(name, sizeof name, "%s", setting);
  else score_cfg_setting_name(&t->cfg, name, sizeof name);
  for (int i = 0; i < *n; i++) {
    score_task *p = &(*tasks)[i];
    if (strcmp(p->dataset, t->dataset) || strcmp(p->category, t->category) || p->k != t->k || strcmp(p->tag, t->tag))
      continue;
    char a[2048], b[2048];
    score_cfg_train_key(&p->cfg, a, sizeof a);
    score_cfg_train_key(&t->cfg, b, sizeof b);
    if (strcmp(a, b))
      return CMDS_FAIL(err, CMDS_EINPUT,
                       "%s and %s: the same model folder %s/%s/k%d/%s with different training configurations "
                       "(give them different tags)", p->origin, t->origin, p->dataset, p->category, p->k, p->tag);
    for (int s = 0; s < p->nsettings; s++)
      if (!strcmp(p->settings[s].name, name) && score_cfg_same_setting(&p->settings[s].cfg, &t->cfg)) return CMDS_OK;
    add_setting(p, name, &t->cfg, t->origin);
    return check_setting_names(p, err);
  }
  *tasks = cmds_xrealloc(*tasks, sizeof(score_task) * (size_t)(*n + 1));
  score_task *q = &(*tasks)[(*n)++];
  *q = *t;
  q->settings = NULL;
  q->nsettings = 0;
  add_setting(q, name, &t->cfg, t->origin);
  return CMDS_OK;
}

void score_tasks_free(score_task *tasks, int n) {
  for (int i = 0; i < n; i++) free(tasks[i].settings);
  free(tasks);
}

/* Splits a line (comments removed) into whitespace-separated fields. */
static int split_fields(char *line, char **fields, int cap) {
  char *hash = strchr(line, '#');
  if (hash) *hash = 0;
  int nf = 0;
  for (char *save = NULL, *tok = strtok_r(line, " \t\r\n", &save); tok; tok = strtok_r(NULL, " \t\r\n", &save)) {
    if (nf == cap) return -1;
    fields[nf++] = tok;
  }
  return nf;
}

int score_tasks_read(const char *path, const score_cfg *base, int64_t only, score_task **tasks, int *n,
                     cmds_error *err) {
  *tasks = NULL;
  *n = 0;
  FILE *f = fopen(path, "r");
  if (!f) return CMDS_FAIL(err, CMDS_EINPUT, "%s: cannot open the tasks file", path);
  char line[8192];
  int lineno = 0, rc = CMDS_OK;
  int64_t index = 0;
  while (!rc && fgets(line, sizeof line, f)) {
    lineno++;
    char where[300];
    snprintf(where, sizeof where, "%s:%d", path, lineno);
    size_t len = strlen(line);
    if (len == sizeof line - 1 && line[len - 1] != '\n') {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: line longer than %d characters", where, (int)sizeof line - 2);
      break;
    }
    char *fields[256];
    int nf = split_fields(line, fields, 256);
    if (nf < 0) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: more than 256 fields", where);
      break;
    }
    if (nf == 0) continue;
    if (nf < 4) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: expected 'dataset category k tag [key=value ...]', got %d field%s", where, nf,
                     nf == 1 ? "" : "s");
      break;
    }
    score_task t;
    memset(&t, 0, sizeof t);
    t.cfg = *base;
    rc = task_names(&t, fields[0], fields[1], fields[2], fields[3], where, err);
    for (int i = 4; i < nf && !rc; i++) rc = score_cfg_set(&t.cfg, fields[i], where, 0, err);
    if (rc) break;
    if (only < 0 || index == only) rc = merge_task(tasks, n, &t, NULL, err);
    index++;
  }
  fclose(f);
  if (!rc && only >= 0 && *n == 0)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: --task-index %lld: the file has %lld task%s (indices 0 to %lld)", path,
                   (long long)only, (long long)index, index == 1 ? "" : "s", (long long)index - 1);
  if (!rc && *n == 0) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: no tasks in the file", path);
  if (rc) {
    score_tasks_free(*tasks, *n);
    *tasks = NULL;
    *n = 0;
  }
  return rc;
}

int score_tasks_product(const char *dataset, char **categories, int ncat, const char *shots, const char *tag,
                        const score_cfg *cfg, const char *setting, score_task **tasks, int *n, cmds_error *err) {
  char **ks = NULL;
  int nk = cmds_split_commas(shots, &ks), rc = CMDS_OK;
  *tasks = NULL;
  *n = 0;
  if (setting && (!score_name_ok(setting) || strlen(setting) >= SCORE_NAME_MAX))
    rc = CMDS_FAIL(err, CMDS_EINPUT, "--setting '%s': expected a name of letters, digits, '_', '-', '.' (at most %d)",
                   setting, SCORE_NAME_MAX - 1);
  if (!rc && nk == 0) rc = CMDS_FAIL(err, CMDS_EINPUT, "--shots '%s': expected a comma-separated list of positive integers", shots);
  for (int c = 0; c < ncat && !rc; c++)
    for (int i = 0; i < nk && !rc; i++) {
      score_task t;
      memset(&t, 0, sizeof t);
      t.cfg = *cfg;
      rc = task_names(&t, dataset, categories[c], ks[i], tag, "command line", err);
      if (!rc) rc = merge_task(tasks, n, &t, setting, err);
    }
  if (ks) cmds_free_list(ks, nk);
  if (rc) {
    score_tasks_free(*tasks, *n);
    *tasks = NULL;
    *n = 0;
  }
  return rc;
}

int score_tasks_apply_settings_file(score_task *tasks, int n, const char *path, cmds_error *err) {
  FILE *f = fopen(path, "r");
  if (!f) return CMDS_FAIL(err, CMDS_EINPUT, "%s: cannot open the settings file", path);
  char line[8192];
  int lineno = 0, rc = CMDS_OK, count = 0;
  for (int i = 0; i < n; i++) {
    free(tasks[i].settings);
    tasks[i].settings = NULL;
    tasks[i].nsettings = 0;
  }
  while (!rc && fgets(line, sizeof line, f)) {
    lineno++;
    char where[300];
    snprintf(where, sizeof where, "%s:%d", path, lineno);
    char *fields[64];
    int nf = split_fields(line, fields, 64);
    if (nf < 0) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: more than 64 fields", where);
    if (rc || nf == 0) continue;
    if (!score_name_ok(fields[0]) || strlen(fields[0]) >= SCORE_NAME_MAX || strchr(fields[0], '=')) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: expected 'name score.key=value ...' with a name of letters, digits, "
                     "'_', '-', '.' (at most %d), got '%s'", where, SCORE_NAME_MAX - 1, fields[0]);
      break;
    }
    count++;
    for (int i = 0; i < n && !rc; i++) {
      score_cfg c = tasks[i].cfg;
      for (int q = 1; q < nf && !rc; q++) rc = score_cfg_set(&c, fields[q], where, 1, err);
      if (!rc) add_setting(&tasks[i], fields[0], &c, where);
      if (!rc) rc = check_setting_names(&tasks[i], err);
    }
  }
  fclose(f);
  if (!rc && !count) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: no settings in the file", path);
  return rc;
}
