/* spec: see spec.h. The YAML is read with libyaml's document API; every mapping is
 * checked for unknown keys (a typo must not silently fall back to a default). */
#include "spec.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "fsutil.h"

const char *const job_stage_names[JOB_NSTAGES] = {"synth", "prep",  "augment", "estimate", "features",
                                                  "train", "score", "metrics", "report"};

int job_stage_find(const char *name) {
  for (int i = 0; i < JOB_NSTAGES; i++)
    if (!strcmp(name, job_stage_names[i])) return i;
  return -1;
}

/* METHOD.md section 1. */
static const char *const mvtec_cats[] = {"bagel", "cable_gland", "carrot", "cookie", "dowel",
                                         "foam", "peach", "potato", "rope", "tire"};
static const char *const eyec_cats[] = {"CandyCane", "ChocolateCookie", "ChocolatePraline",
                                        "Confetto", "GummyBear", "HazelnutTruffle",
                                        "LicoriceSandwich", "Lollipop", "Marshmallow",
                                        "PeppermintCandy"};

typedef struct yctx {
  yaml_document_t doc;
  const char *path;
  cmds_error *err;
} yctx;

static int ymark(const yaml_node_t *n) { return n ? (int)n->start_mark.line + 1 : 0; }

static int fail(yctx *y, const yaml_node_t *n, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(yctx *y, const yaml_node_t *n, const char *where, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return CMDS_FAIL(y->err, CMDS_EINPUT, "%s line %d: %s: %s", y->path, ymark(n), where, msg);
}

static yaml_node_t *ynode(yctx *y, int id) { return yaml_document_get_node(&y->doc, id); }

static const char *yscalar(const yaml_node_t *n) {
  return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* Value of key in a mapping, NULL when absent. */
static yaml_node_t *yget(yctx *y, yaml_node_t *map, const char *key) {
  if (!map || map->type != YAML_MAPPING_NODE) return NULL;
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    const char *k = yscalar(ynode(y, p->key));
    if (k && !strcmp(k, key)) return ynode(y, p->value);
  }
  return NULL;
}

/* Every key of map must be in the '|'-separated list. */
static int ykeys(yctx *y, yaml_node_t *map, const char *where, const char *allowed) {
  if (!map || map->type != YAML_MAPPING_NODE) return fail(y, map, where, "expected a mapping");
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    yaml_node_t *kn = ynode(y, p->key);
    const char *k = yscalar(kn);
    if (!k) return fail(y, kn, where, "keys must be plain strings");
    int ok = 0;
    size_t kl = strlen(k);
    for (const char *a = allowed; *a && !ok;) {
      const char *bar = strchr(a, '|');
      size_t n = bar ? (size_t)(bar - a) : strlen(a);
      ok = n == kl && !strncmp(a, k, n);
      a = bar ? bar + 1 : a + n;
    }
    if (!ok) {
      char list[512];
      snprintf(list, sizeof list, "%s", allowed);
      for (char *c = list; *c; c++)
        if (*c == '|') *c = ',';
      return fail(y, kn, where, "unknown key '%s' (expected one of: %s)", k, list);
    }
  }
  return CMDS_OK;
}

/* ${NAME} and ${NAME:-default} from the environment. */
static int expand_env(yctx *y, const yaml_node_t *n, const char *where, const char *in, char **out) {
  size_t cap = strlen(in) + 256, len = 0;
  char *o = cmds_xmalloc(cap);
  for (const char *p = in; *p;) {
    if (p[0] == '$' && p[1] == '{') {
      const char *close = strchr(p, '}');
      if (!close) {
        free(o);
        return fail(y, n, where, "'${' without '}' in '%s'", in);
      }
      char name[256], def[1024];
      int has_def = 0;
      size_t nl = (size_t)(close - p - 2);
      if (nl >= sizeof name) nl = sizeof name - 1;
      memcpy(name, p + 2, nl);
      name[nl] = 0;
      char *dash = strstr(name, ":-");
      if (dash) {
        *dash = 0;
        snprintf(def, sizeof def, "%s", dash + 2);
        has_def = 1;
      }
      const char *v = getenv(name);
      if (!v || (!*v && has_def)) v = has_def ? def : NULL;
      if (!v) {
        free(o);
        return fail(y, n, where, "environment variable %s is not set (write ${%s:-default} for a default)", name, name);
      }
      size_t vl = strlen(v);
      if (len + vl + 1 > cap) {
        cap = (len + vl + 1) * 2;
        o = cmds_xrealloc(o, cap);
      }
      memcpy(o + len, v, vl);
      len += vl;
      p = close + 1;
    } else {
      if (len + 2 > cap) {
        cap *= 2;
        o = cmds_xrealloc(o, cap);
      }
      o[len++] = *p++;
    }
  }
  o[len] = 0;
  *out = o;
  return CMDS_OK;
}

static int ystring(yctx *y, yaml_node_t *map, const char *key, const char *where, int required,
                   int expand, char **out) {
  yaml_node_t *n = yget(y, map, key);
  if (!n) {
    if (required) return fail(y, map, where, "'%s' is required", key);
    return CMDS_OK;
  }
  const char *s = yscalar(n);
  if (!s || !*s) return fail(y, n, where, "'%s': expected a non-empty string", key);
  free(*out);
  *out = NULL;
  if (expand) return expand_env(y, n, where, s, out);
  *out = cmds_xstrdup(s);
  return CMDS_OK;
}

/* An integer; ${VAR} forms are expanded first (`ranks: ${NP:-2}`). */
static int ylong(yctx *y, yaml_node_t *n, const char *where, long min, long max, long *out) {
  const char *raw = yscalar(n);
  char *s = NULL, *end = NULL;
  if (raw) {
    int rc = expand_env(y, n, where, raw, &s);
    if (rc) return rc;
  }
  long v = s ? strtol(s, &end, 10) : 0;
  int bad = !s || !*s || *end || v < min || v > max;
  if (bad) fail(y, n, where, "expected an integer in [%ld, %ld], got '%s'", min, max, s ? s : "(not a scalar)");
  free(s);
  if (bad) return CMDS_EINPUT;
  *out = v;
  return CMDS_OK;
}

/* A scalar or a sequence of scalars as a list of strings. */
static int ylist(yctx *y, yaml_node_t *n, const char *where, char ***out, int *count) {
  *out = NULL;
  *count = 0;
  if (yscalar(n)) {
    *out = cmds_xmalloc(sizeof **out);
    (*out)[0] = cmds_xstrdup(yscalar(n));
    *count = 1;
    return CMDS_OK;
  }
  if (!n || n->type != YAML_SEQUENCE_NODE) return fail(y, n, where, "expected a value or a list of values");
  int m = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
  *out = cmds_xcalloc((size_t)m + 1, sizeof **out);
  for (int i = 0; i < m; i++) {
    yaml_node_t *it = ynode(y, n->data.sequence.items.start[i]);
    if (!yscalar(it)) {
      cmds_free_list(*out, i);
      *out = NULL;
      return fail(y, it, where, "item %d: expected a plain value", i);
    }
    (*out)[i] = cmds_xstrdup(yscalar(it));
  }
  *count = m;
  return CMDS_OK;
}

static void kvlist_free(job_kvlist *l) {
  for (int i = 0; i < l->n; i++) {
    free(l->v[i].key);
    free(l->v[i].value);
  }
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

/* A mapping of configuration keys: checked against the key table right away. Values may be
 * scalars or (loss.layer_weights) lists. */
static int yconfig(yctx *y, yaml_node_t *map, const char *where, job_kvlist *out) {
  if (!map) return CMDS_OK;
  if (map->type != YAML_MAPPING_NODE) return fail(y, map, where, "expected a mapping of configuration keys");
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    const char *k = yscalar(ynode(y, p->key));
    yaml_node_t *vn = ynode(y, p->value);
    char **items;
    int n;
    if (!k) return fail(y, map, where, "keys must be plain strings");
    char w[512];
    snprintf(w, sizeof w, "%s.%s", where, k);
    int rc = ylist(y, vn, w, &items, &n);
    if (rc) return rc;
    char val[1024];
    size_t len = 0;
    val[0] = 0;
    for (int i = 0; i < n; i++) len += (size_t)snprintf(val + len, sizeof val - len, "%s%s", i ? "," : "", items[i]);
    cmds_free_list(items, n);
    cmds_config probe;
    cmds_config_default(&probe);
    char at[600];
    snprintf(at, sizeof at, "%s line %d: %s", y->path, ymark(vn), where);
    int kk = cmds_key_find(k, strlen(k));
    if (kk >= 0 && cmds_keys[kk].stage == CMDS_KEY_AUGMENT)
      return fail(y, vn, where, "%s: the augment stage's keys go in the spec's augment: block, without the 'augment.' "
                  "prefix (augment: {sd: DIR, %s: %s})", k, k + 8, val);
    rc = cmds_config_set(&probe, k, val, at, y->err);
    if (rc) return rc;
    out->v = cmds_xrealloc(out->v, (size_t)(out->n + 1) * sizeof *out->v);
    out->v[out->n].key = cmds_xstrdup(k);
    out->v[out->n].value = cmds_xstrdup(val);
    out->n++;
  }
  return CMDS_OK;
}

static int check_label(yctx *y, const yaml_node_t *n, const char *where, const char *name) {
  if (!*name) return fail(y, n, where, "empty name");
  for (const char *p = name; *p; p++)
    if (isspace((unsigned char)*p) || *p == ';' || *p == ',' || *p == '"' || *p == '/')
      return fail(y, n, where, "name '%s': no spaces, ';', ',', '/' or '\"' (it becomes a table label)", name);
  return CMDS_OK;
}

static int find_dataset(const job_spec *s, const char *name) {
  for (int i = 0; i < s->nds; i++)
    if (!strcmp(s->ds[i].name, name)) return i;
  return -1;
}

static int parse_shots(yctx *y, yaml_node_t *n, const char *where, int *shots, int *nshots) {
  char **items;
  int m, rc = ylist(y, n, where, &items, &m);
  if (rc) return rc;
  if (m < 1 || m > 8) rc = fail(y, n, where, "expected 1 to 8 shot counts");
  for (int i = 0; i < m && !rc; i++) {
    char *end;
    long k = strtol(items[i], &end, 10);
    if (*end || k < 1 || k > 64) rc = fail(y, n, where, "shot count '%s': expected an integer in [1, 64]", items[i]);
    else shots[i] = (int)k;
    for (int j = 0; j < i && !rc; j++)
      if (shots[j] == shots[i]) rc = fail(y, n, where, "shot count %d given twice", shots[i]);
  }
  cmds_free_list(items, m);
  if (!rc) *nshots = m;
  return rc;
}

static int parse_datasets(yctx *y, yaml_node_t *n, job_spec *s) {
  if (!n || n->type != YAML_SEQUENCE_NODE) return fail(y, n, "datasets", "expected a list of datasets");
  int m = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
  if (m < 1) return fail(y, n, "datasets", "at least one dataset is required");
  s->ds = cmds_xcalloc((size_t)m, sizeof *s->ds);
  for (int i = 0; i < m; i++) {
    yaml_node_t *d = ynode(y, n->data.sequence.items.start[i]);
    char where[64];
    snprintf(where, sizeof where, "datasets[%d]", i);
    job_dataset *ds = &s->ds[i];
    s->nds = i + 1;
    int rc = ykeys(y, d, where, "name|root|categories|synth");
    if (!rc) rc = ystring(y, d, "name", where, 1, 0, &ds->name);
    if (!rc) rc = ystring(y, d, "root", where, 1, 1, &ds->root);
    if (rc) return rc;
    if (strcmp(ds->name, "mvtec3d") && strcmp(ds->name, "eyecandies"))
      return fail(y, d, where, "name: expected mvtec3d or eyecandies, got '%s'", ds->name);
    for (int j = 0; j < i; j++)
      if (!strcmp(s->ds[j].name, ds->name)) return fail(y, d, where, "dataset '%s' given twice", ds->name);
    yaml_node_t *c = yget(y, d, "categories");
    if (!c || (yscalar(c) && !strcmp(yscalar(c), "all"))) {
      int mv = !strcmp(ds->name, "mvtec3d");
      ds->ncat = 10;
      ds->cats = cmds_xcalloc(11, sizeof *ds->cats);
      for (int k = 0; k < 10; k++) ds->cats[k] = cmds_xstrdup(mv ? mvtec_cats[k] : eyec_cats[k]);
    } else {
      char w[96];
      snprintf(w, sizeof w, "%s.categories", where);
      rc = ylist(y, c, w, &ds->cats, &ds->ncat);
      if (!rc && ds->ncat < 1) rc = fail(y, c, w, "expected at least one category (or 'all')");
      for (int k = 0; k < ds->ncat && !rc; k++) {
        for (const char *p = ds->cats[k]; *p && !rc; p++)
          if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
            rc = fail(y, c, w, "category '%s': expected letters, digits, '_' or '-'", ds->cats[k]);
        for (int j = 0; j < k && !rc; j++)
          if (!strcmp(ds->cats[j], ds->cats[k])) rc = fail(y, c, w, "category '%s' given twice", ds->cats[k]);
      }
      if (rc) return rc;
    }
    yaml_node_t *sy = yget(y, d, "synth");
    if (sy) {
      char w[96];
      snprintf(w, sizeof w, "%s.synth", where);
      ds->synth = 1;
      ds->synth_seed = 0;
      ds->synth_size = 256;
      rc = ykeys(y, sy, w, "seed|size");
      yaml_node_t *v;
      if (!rc && (v = yget(y, sy, "seed"))) rc = ylong(y, v, w, 0, 1L << 40, &ds->synth_seed);
      if (!rc && (v = yget(y, sy, "size"))) rc = ylong(y, v, w, 32, 4096, &ds->synth_size);
      if (rc) return rc;
    }
  }
  return CMDS_OK;
}

/* An axis's values: a list, or {from, to, step} (inclusive, printed with the step's decimals). */
static int parse_values(yctx *y, yaml_node_t *n, const char *where, char ***vals, int *nv) {
  if (n && n->type == YAML_MAPPING_NODE) {
    int rc = ykeys(y, n, where, "from|to|step");
    const char *f = yscalar(yget(y, n, "from")), *t = yscalar(yget(y, n, "to")), *st = yscalar(yget(y, n, "step"));
    if (rc) return rc;
    if (!f || !t || !st) return fail(y, n, where, "a range needs from, to and step");
    char *e1, *e2, *e3;
    double a = strtod(f, &e1), b = strtod(t, &e2), d = strtod(st, &e3);
    if (*e1 || *e2 || *e3 || !(d > 0) || b < a) return fail(y, n, where, "expected numbers with from <= to and step > 0");
    const char *dot = strchr(st, '.');
    int dec = dot ? (int)strlen(dot + 1) : 0;
    long count = (long)((b - a) / d + 1e-9) + 1;
    if (count > 1000) return fail(y, n, where, "%ld values: at most 1000", count);
    *vals = cmds_xcalloc((size_t)count + 1, sizeof **vals);
    for (long i = 0; i < count; i++) {
      char buf[64];
      snprintf(buf, sizeof buf, "%.*f", dec, a + (double)i * d);
      (*vals)[i] = cmds_xstrdup(buf);
    }
    *nv = (int)count;
    return CMDS_OK;
  }
  int rc = ylist(y, n, where, vals, nv);
  if (!rc && *nv < 1) rc = fail(y, n, where, "expected at least one value");
  return rc;
}

/* The stage of a key already checked by cmds_config_set (0 when unknown). */
static int key_stage(const char *name) {
  int k = cmds_key_find(name, strlen(name));
  return k < 0 ? 0 : (int)cmds_keys[k].stage;
}

static int parse_experiment(yctx *y, yaml_node_t *e, int idx, job_spec *s, job_experiment *x) {
  char where[64];
  snprintf(where, sizeof where, "experiments[%d]", idx);
  int rc = ykeys(y, e, where, "name|datasets|shots|config|settings|sweep");
  if (!rc) rc = ystring(y, e, "name", where, 1, 0, &x->name);
  if (!rc) rc = check_label(y, e, where, x->name);
  if (rc) return rc;
  yaml_node_t *d = yget(y, e, "datasets");
  if (d) {
    char **names;
    int m;
    rc = ylist(y, d, where, &names, &m);
    if (rc) return rc;
    x->ds = cmds_xcalloc((size_t)m + 1, sizeof *x->ds);
    for (int i = 0; i < m && !rc; i++) {
      x->ds[i] = find_dataset(s, names[i]);
      if (x->ds[i] < 0) rc = fail(y, d, where, "datasets: '%s' is not one of the spec's datasets", names[i]);
    }
    x->nds = m;
    cmds_free_list(names, m);
    if (rc) return rc;
  } else {
    x->ds = cmds_xcalloc((size_t)s->nds, sizeof *x->ds);
    for (int i = 0; i < s->nds; i++) x->ds[i] = i;
    x->nds = s->nds;
  }
  int shots[8], ns = 0;
  yaml_node_t *sh = yget(y, e, "shots");
  if (sh) {
    char w[96];
    snprintf(w, sizeof w, "%s.shots", where);
    rc = parse_shots(y, sh, w, shots, &ns);
    for (int i = 0; i < ns && !rc; i++) {
      int found = 0;
      for (int j = 0; j < s->nshots; j++) found |= s->shots[j] == shots[i];
      if (!found) rc = fail(y, sh, w, "shot count %d is not in the spec's shots", shots[i]);
    }
    if (rc) return rc;
  } else {
    ns = s->nshots;
    memcpy(shots, s->shots, sizeof shots);
  }
  x->shots = cmds_xmalloc(sizeof shots);
  memcpy(x->shots, shots, sizeof shots);
  x->nshots = ns;
  char w[128];
  snprintf(w, sizeof w, "%s.config", where);
  rc = yconfig(y, yget(y, e, "config"), w, &x->config);
  if (rc) return rc;
  yaml_node_t *st = yget(y, e, "settings");
  if (st) {
    if (st->type != YAML_MAPPING_NODE) return fail(y, st, where, "settings: expected a mapping name -> configuration");
    int m = (int)(st->data.mapping.pairs.top - st->data.mapping.pairs.start);
    x->settings = cmds_xcalloc((size_t)m + 1, sizeof *x->settings);
    for (int i = 0; i < m; i++) {
      yaml_node_pair_t *p = &st->data.mapping.pairs.start[i];
      const char *name = yscalar(ynode(y, p->key));
      snprintf(w, sizeof w, "%s.settings", where);
      if (!name) return fail(y, st, w, "setting names must be plain strings");
      rc = check_label(y, ynode(y, p->key), w, name);
      if (rc) return rc;
      x->settings[i].name = cmds_xstrdup(name);
      x->nsettings = i + 1;
      yaml_node_t *v = ynode(y, p->value);
      snprintf(w, sizeof w, "%s.settings.%s", where, name);
      /* `name: {}` and `name:` (null) are both the experiment's configuration as is. */
      if (!(yscalar(v) && (!*yscalar(v) || !strcmp(yscalar(v), "~") || !strcmp(yscalar(v), "null"))))
        rc = yconfig(y, v, w, &x->settings[i].kv);
      if (rc) return rc;
    }
  }
  yaml_node_t *sw = yget(y, e, "sweep");
  if (sw) {
    if (sw->type != YAML_MAPPING_NODE) return fail(y, sw, where, "sweep: expected a mapping key -> values");
    int m = (int)(sw->data.mapping.pairs.top - sw->data.mapping.pairs.start);
    x->axes = cmds_xcalloc((size_t)m + 1, sizeof *x->axes);
    for (int i = 0; i < m; i++) {
      yaml_node_pair_t *p = &sw->data.mapping.pairs.start[i];
      const char *keys = yscalar(ynode(y, p->key));
      snprintf(w, sizeof w, "%s.sweep", where);
      if (!keys) return fail(y, sw, w, "keys must be plain strings");
      job_axis *a = &x->axes[i];
      x->naxes = i + 1;
      a->nkeys = cmds_split_commas(keys, &a->keys);
      snprintf(w, sizeof w, "%s.sweep.%s", where, keys);
      rc = parse_values(y, ynode(y, p->value), w, &a->values, &a->nvalues);
      for (int k = 0; k < a->nkeys && !rc; k++) {
        int id = cmds_key_find(a->keys[k], strlen(a->keys[k]));
        if (id < 0) rc = fail(y, ynode(y, p->key), w, "unknown configuration key '%s'", a->keys[k]);
        else if (cmds_keys[id].stage == CMDS_KEY_FEATURES)
          rc = fail(y, ynode(y, p->key), w, "%s changes the feature cache: set it in the spec's config, it cannot be swept", a->keys[k]);
        for (int v = 0; v < a->nvalues && !rc; v++) {
          cmds_config probe;
          cmds_config_default(&probe);
          char at[600];
          snprintf(at, sizeof at, "%s: %s", y->path, w);
          rc = cmds_config_set(&probe, a->keys[k], a->values[v], at, y->err);
        }
      }
      if (rc) return rc;
    }
  }
  /* Features keys are per job: a setting cannot move them. */
  for (int i = 0; i < x->nsettings; i++)
    for (int k = 0; k < x->settings[i].kv.n; k++)
      if (key_stage(x->settings[i].kv.v[k].key) == CMDS_KEY_FEATURES)
        return fail(y, st, where, "setting %s: %s changes the feature cache: set it in the spec's config",
                    x->settings[i].name, x->settings[i].kv.v[k].key);
  for (int k = 0; k < x->config.n; k++)
    if (key_stage(x->config.v[k].key) == CMDS_KEY_FEATURES)
      return fail(y, e, where, "config: %s changes the feature cache: set it in the spec's config", x->config.v[k].key);
  return CMDS_OK;
}

static int parse_ranks(yctx *y, yaml_node_t *n, job_spec *s) {
  for (int i = 0; i < JOB_NSTAGES; i++) s->ranks[i] = 1;
  if (!n) return CMDS_OK;
  long v;
  if (yscalar(n)) {
    int rc = ylong(y, n, "ranks", 1, 100000, &v);
    for (int i = 0; i < JOB_NSTAGES && !rc; i++) s->ranks[i] = (int)v;
    s->ranks[ST_SYNTH] = s->ranks[ST_REPORT] = 1; /* serial programs */
    return rc;
  }
  int rc = ykeys(y, n, "ranks", "default|prep|augment|estimate|features|train|score|metrics");
  yaml_node_t *d = yget(y, n, "default");
  if (!rc && d) {
    rc = ylong(y, d, "ranks.default", 1, 100000, &v);
    for (int i = ST_PREP; i <= ST_METRICS && !rc; i++) s->ranks[i] = (int)v;
  }
  for (int i = ST_PREP; i <= ST_METRICS && !rc; i++) {
    yaml_node_t *m = yget(y, n, job_stage_names[i]);
    char w[64];
    snprintf(w, sizeof w, "ranks.%s", job_stage_names[i]);
    if (m) rc = ylong(y, m, w, 1, 100000, &v);
    if (m && !rc) s->ranks[i] = (int)v;
  }
  return rc;
}

/* estimate: {marigold: DIR, steps: N, processing_res: R, ensemble: E, seed: S, source: dataset|cache} */
static int parse_estimate(yctx *y, yaml_node_t *n, job_spec *s) {
  job_estimate *e = &s->est;
  e->steps = e->processing_res = -1;
  e->ensemble = 1;
  if (!n) return CMDS_OK;
  int rc = ykeys(y, n, "estimate", "marigold|steps|processing_res|ensemble|seed|source");
  if (!rc) rc = ystring(y, n, "marigold", "estimate", 1, 1, &e->marigold);
  yaml_node_t *m;
  if (!rc && (m = yget(y, n, "steps"))) rc = ylong(y, m, "estimate.steps", 1, 1000, &e->steps);
  if (!rc && (m = yget(y, n, "processing_res"))) rc = ylong(y, m, "estimate.processing_res", 0, 8192, &e->processing_res);
  if (!rc && (m = yget(y, n, "ensemble"))) rc = ylong(y, m, "estimate.ensemble", 1, 64, &e->ensemble);
  if (!rc && (m = yget(y, n, "seed"))) rc = ylong(y, m, "estimate.seed", 0, 1L << 40, &e->seed);
  char *src = NULL;
  if (!rc) rc = ystring(y, n, "source", "estimate", 0, 0, &src);
  if (!rc && src && strcmp(src, "dataset") && strcmp(src, "cache"))
    rc = fail(y, yget(y, n, "source"), "estimate.source", "expected dataset or cache, got '%s'", src);
  if (!rc && src) e->from_cache = !strcmp(src, "cache");
  free(src);
  return rc;
}

/* augment: {sd: DIR, source: dataset|cache, checkpoint_every: N, <key>: value ...} where <key> is an
 * augment.* configuration key without its prefix (steps: 1000, images: 16, ...). */
static int parse_augment(yctx *y, yaml_node_t *n, job_spec *s) {
  job_augment *a = &s->aug;
  cmds_config_default(&a->cfg);
  a->checkpoint_every = -1;
  if (!n) return CMDS_OK;
  if (n->type != YAML_MAPPING_NODE) return fail(y, n, "augment", "expected a mapping {sd: DIR, ...}");
  int rc = ystring(y, n, "sd", "augment", 1, 1, &a->sd);
  for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top && !rc; p++) {
    yaml_node_t *kn = ynode(y, p->key), *vn = ynode(y, p->value);
    const char *k = yscalar(kn);
    if (!k) return fail(y, kn, "augment", "keys must be plain strings");
    if (!strcmp(k, "sd")) continue;
    if (!strcmp(k, "source")) {
      const char *v = yscalar(vn);
      if (!v || (strcmp(v, "dataset") && strcmp(v, "cache")))
        rc = fail(y, vn, "augment.source", "expected dataset or cache, got '%s'", v ? v : "(not a plain value)");
      else a->from_cache = !strcmp(v, "cache");
      continue;
    }
    if (!strcmp(k, "checkpoint_every")) {
      rc = ylong(y, vn, "augment.checkpoint_every", 0, 1L << 30, &a->checkpoint_every);
      continue;
    }
    char full[128];
    snprintf(full, sizeof full, "augment.%s", k);
    int kk = cmds_key_find(full, strlen(full));
    if (kk < 0 || cmds_keys[kk].stage != CMDS_KEY_AUGMENT) {
      char known[600];
      size_t used = (size_t)snprintf(known, sizeof known, "sd, source, checkpoint_every");
      for (int i = 0; i < CK_NKEYS && used < sizeof known; i++)
        if (cmds_keys[i].stage == CMDS_KEY_AUGMENT)
          used += (size_t)snprintf(known + used, sizeof known - used, ", %s", cmds_keys[i].name + 8);
      return fail(y, kn, "augment", "unknown key '%s' (known: %s)", k, known);
    }
    const char *v = yscalar(vn);
    if (!v) return fail(y, vn, "augment", "%s: expected a plain value", k);
    char at[600], *ex = NULL;
    snprintf(at, sizeof at, "%s line %d: augment", y->path, ymark(vn));
    rc = expand_env(y, vn, "augment", v, &ex); /* steps: ${AUG_STEPS:-1000} */
    if (!rc) rc = cmds_config_set(&a->cfg, full, ex, at, y->err);
    free(ex);
  }
  return rc;
}

static int parse_slurm(yctx *y, yaml_node_t *n, job_spec *s) {
  job_slurm *q = &s->slurm;
  static const char *const def_time[JOB_NSTAGES] = {"00:30:00", "02:00:00", "12:00:00", "12:00:00", "04:00:00",
                                                    "12:00:00", "04:00:00", "01:00:00", "00:15:00"};
  for (int i = 0; i < JOB_NSTAGES; i++) q->time[i] = cmds_xstrdup(def_time[i]);
  q->launcher = cmds_xstrdup("srun");
  q->gpus_per_rank = 1;
  q->cpus_per_rank = 4;
  if (!n) return CMDS_OK;
  int rc = ykeys(y, n, "slurm", "partition|account|qos|time|gpus_per_rank|cpus_per_rank|mem_per_cpu|launcher|extra");
  if (!rc) rc = ystring(y, n, "partition", "slurm", 0, 1, &q->partition);
  if (!rc) rc = ystring(y, n, "account", "slurm", 0, 1, &q->account);
  if (!rc) rc = ystring(y, n, "qos", "slurm", 0, 1, &q->qos);
  if (!rc) rc = ystring(y, n, "mem_per_cpu", "slurm", 0, 0, &q->mem_per_cpu);
  if (!rc) rc = ystring(y, n, "extra", "slurm", 0, 1, &q->extra);
  if (!rc) rc = ystring(y, n, "launcher", "slurm", 0, 0, &q->launcher);
  if (!rc && strcmp(q->launcher, "srun") && strcmp(q->launcher, "mpiexec"))
    rc = fail(y, n, "slurm.launcher", "expected srun or mpiexec, got '%s'", q->launcher);
  long v;
  yaml_node_t *m;
  if (!rc && (m = yget(y, n, "gpus_per_rank"))) {
    rc = ylong(y, m, "slurm.gpus_per_rank", 0, 8, &v);
    q->gpus_per_rank = (int)v;
  }
  if (!rc && (m = yget(y, n, "cpus_per_rank"))) {
    rc = ylong(y, m, "slurm.cpus_per_rank", 1, 1024, &v);
    q->cpus_per_rank = (int)v;
  }
  yaml_node_t *t = yget(y, n, "time");
  if (!rc && t) {
    rc = ykeys(y, t, "slurm.time", "synth|prep|augment|estimate|features|train|score|metrics|report");
    for (int i = 0; i < JOB_NSTAGES && !rc; i++) rc = ystring(y, t, job_stage_names[i], "slurm.time", 0, 0, &q->time[i]);
  }
  return rc;
}

int job_spec_load(const char *path, job_spec *s, cmds_error *err) {
  memset(s, 0, sizeof *s);
  cmds_config_default(&s->base);
  s->path = cmds_xstrdup(path);
  FILE *f = fopen(path, "rb");
  if (!f) return CMDS_FAIL(err, CMDS_EINPUT, "%s: cannot open the job spec", path);
  /* Checksum of the bytes (recorded in the manifest). */
  unsigned char buf[65536];
  size_t got;
  s->checksum = CMDS_FNV64_INIT;
  while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
    s->checksum = fnv64(s->checksum, buf, got);
    s->file_size += (long)got;
  }
  rewind(f);
  yctx y = {.path = path, .err = err};
  yaml_parser_t parser;
  yaml_parser_initialize(&parser);
  yaml_parser_set_input_file(&parser, f);
  if (!yaml_parser_load(&parser, &y.doc)) {
    int rc = CMDS_FAIL(err, CMDS_EINPUT, "%s line %d: not valid YAML: %s", path,
                       (int)parser.problem_mark.line + 1, parser.problem ? parser.problem : "parse error");
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
  }
  yaml_parser_delete(&parser);
  fclose(f);
  yaml_node_t *root = yaml_document_get_root_node(&y.doc);
  int rc = CMDS_OK;
  if (!root) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: empty job spec", path);
  if (!rc) rc = ykeys(&y, root, "top level",
                      "job|version|run|cache|ranks|device|backbone|augment|estimate|datasets|shots|config|experiments|stages|metrics|slurm");
  long version = 0;
  if (!rc) {
    yaml_node_t *v = yget(&y, root, "version");
    if (!v) rc = fail(&y, root, "top level", "'version: 1' is required");
    else if (!(rc = ylong(&y, v, "version", 0, 1000, &version)) && version != 1)
      rc = fail(&y, v, "version", "this cmds-run reads version 1 specs, the file says %ld", version);
  }
  if (!rc) rc = ystring(&y, root, "job", "top level", 1, 0, &s->name);
  if (!rc) rc = check_label(&y, root, "job", s->name);
  if (!rc) rc = ystring(&y, root, "run", "top level", 1, 1, &s->run);
  if (!rc) rc = ystring(&y, root, "cache", "top level", 1, 1, &s->cache);
  if (!rc) rc = parse_ranks(&y, yget(&y, root, "ranks"), s);
  s->device = cmds_xstrdup("auto");
  if (!rc) rc = ystring(&y, root, "device", "top level", 0, 0, &s->device);
  if (!rc && strcmp(s->device, "auto") && strcmp(s->device, "cpu") && strcmp(s->device, "cuda"))
    rc = fail(&y, yget(&y, root, "device"), "device", "expected auto, cpu or cuda, got '%s'", s->device);
  if (!rc) {
    yaml_node_t *b = yget(&y, root, "backbone");
    if (!b) rc = fail(&y, root, "top level", "'backbone' is required: {weights: FILE.safetensors} or {random: SEED}");
    if (!rc) rc = ykeys(&y, b, "backbone", "weights|random");
    if (!rc) rc = ystring(&y, b, "weights", "backbone", 0, 1, &s->weights);
    yaml_node_t *r = rc ? NULL : yget(&y, b, "random");
    if (!rc && r) rc = ylong(&y, r, "backbone.random", 0, 1L << 40, &s->random_seed);
    if (!rc && !!r == !!s->weights) rc = fail(&y, b, "backbone", "give exactly one of weights: FILE or random: SEED");
  }
  if (!rc) rc = parse_augment(&y, yget(&y, root, "augment"), s);
  if (!rc) rc = parse_estimate(&y, yget(&y, root, "estimate"), s);
  if (!rc) rc = parse_datasets(&y, yget(&y, root, "datasets"), s);
  if (!rc) {
    yaml_node_t *sh = yget(&y, root, "shots");
    if (!sh) rc = fail(&y, root, "top level", "'shots' is required (e.g. [1, 2, 4])");
    else rc = parse_shots(&y, sh, "shots", s->shots, &s->nshots);
  }
  job_kvlist cfg = {0};
  if (!rc) rc = yconfig(&y, yget(&y, root, "config"), "config", &cfg);
  for (int i = 0; i < cfg.n && !rc; i++) rc = cmds_config_set(&s->base, cfg.v[i].key, cfg.v[i].value, path, err);
  kvlist_free(&cfg);
  s->curve = cmds_xstrdup("exact");
  if (!rc) {
    yaml_node_t *m = yget(&y, root, "metrics");
    if (m) rc = ykeys(&y, m, "metrics", "curve");
    if (!rc && m) rc = ystring(&y, m, "curve", "metrics", 0, 0, &s->curve);
    if (!rc && strcmp(s->curve, "exact") && strncmp(s->curve, "thresholds:", 11))
      rc = fail(&y, m, "metrics.curve", "expected exact or thresholds:N, got '%s'", s->curve);
  }
  if (!rc) {
    yaml_node_t *st = yget(&y, root, "stages");
    int any_synth = 0;
    for (int i = 0; i < s->nds; i++) any_synth |= s->ds[i].synth;
    if (!st) {
      for (int i = 0; i < JOB_NSTAGES; i++) s->stage_on[i] = 1;
      s->stage_on[ST_SYNTH] = any_synth;
      s->stage_on[ST_ESTIMATE] = s->est.marigold != NULL;
      s->stage_on[ST_AUGMENT] = s->aug.sd != NULL;
    } else {
      char **names;
      int m;
      rc = ylist(&y, st, "stages", &names, &m);
      for (int i = 0; i < m && !rc; i++) {
        int k = job_stage_find(names[i]);
        if (k < 0) rc = fail(&y, st, "stages", "unknown stage '%s' (synth, prep, augment, estimate, features, train, score, metrics, report)", names[i]);
        else s->stage_on[k] = 1;
      }
      if (!rc) cmds_free_list(names, m);
      if (!rc && s->stage_on[ST_SYNTH] && !any_synth)
        rc = fail(&y, st, "stages", "synth is listed but no dataset has a synth: block");
      if (!rc && s->stage_on[ST_ESTIMATE] && !s->est.marigold)
        rc = fail(&y, st, "stages", "estimate is listed but the spec has no estimate: {marigold: DIR} block");
      if (!rc && s->stage_on[ST_AUGMENT] && !s->aug.sd)
        rc = fail(&y, st, "stages", "augment is listed but the spec has no augment: {sd: DIR} block");
    }
  }
  if (!rc) {
    yaml_node_t *ex = yget(&y, root, "experiments");
    if (!ex) {
      s->exps = cmds_xcalloc(1, sizeof *s->exps);
      s->nexp = 1;
      job_experiment *x = &s->exps[0];
      x->name = cmds_xstrdup("main");
      x->ds = cmds_xcalloc((size_t)s->nds, sizeof *x->ds);
      for (int i = 0; i < s->nds; i++) x->ds[i] = i;
      x->nds = s->nds;
      x->shots = cmds_xmalloc(sizeof s->shots);
      memcpy(x->shots, s->shots, sizeof s->shots);
      x->nshots = s->nshots;
    } else if (ex->type != YAML_SEQUENCE_NODE) {
      rc = fail(&y, ex, "experiments", "expected a list of experiments");
    } else {
      int m = (int)(ex->data.sequence.items.top - ex->data.sequence.items.start);
      s->exps = cmds_xcalloc((size_t)m + 1, sizeof *s->exps);
      for (int i = 0; i < m && !rc; i++) {
        s->nexp = i + 1;
        rc = parse_experiment(&y, ynode(&y, ex->data.sequence.items.start[i]), i, s, &s->exps[i]);
        for (int j = 0; j < i && !rc; j++)
          if (!strcmp(s->exps[j].name, s->exps[i].name))
            rc = fail(&y, ex, "experiments", "experiment name '%s' given twice", s->exps[i].name);
      }
    }
  }
  if (!rc) rc = parse_slurm(&y, yget(&y, root, "slurm"), s);
  yaml_document_delete(&y.doc);
  return rc;
}

void job_spec_free(job_spec *s) {
  free(s->path);
  free(s->name);
  free(s->run);
  free(s->cache);
  free(s->device);
  free(s->weights);
  free(s->curve);
  free(s->est.marigold);
  free(s->aug.sd);
  for (int i = 0; i < s->nds; i++) {
    free(s->ds[i].name);
    free(s->ds[i].root);
    cmds_free_list(s->ds[i].cats, s->ds[i].ncat);
  }
  free(s->ds);
  for (int e = 0; e < s->nexp; e++) {
    job_experiment *x = &s->exps[e];
    free(x->name);
    free(x->ds);
    free(x->shots);
    kvlist_free(&x->config);
    for (int i = 0; i < x->nsettings; i++) {
      free(x->settings[i].name);
      kvlist_free(&x->settings[i].kv);
    }
    free(x->settings);
    for (int i = 0; i < x->naxes; i++) {
      cmds_free_list(x->axes[i].keys, x->axes[i].nkeys);
      cmds_free_list(x->axes[i].values, x->axes[i].nvalues);
    }
    free(x->axes);
  }
  free(s->exps);
  job_slurm *q = &s->slurm;
  free(q->partition);
  free(q->account);
  free(q->qos);
  free(q->extra);
  free(q->mem_per_cpu);
  free(q->launcher);
  for (int i = 0; i < JOB_NSTAGES; i++) free(q->time[i]);
  memset(s, 0, sizeof *s);
}

/* ---- plan ------------------------------------------------------------------------ */

static int task_find(const job_plan *p, int ds, const char *cat, int k, const cmds_config *cfg) {
  for (int i = 0; i < p->nt; i++)
    if (p->t[i].ds == ds && p->t[i].k == k && !strcmp(p->t[i].cat, cat) && cmds_config_equal(&p->t[i].cfg, cfg, CMDS_KEYS_ALL))
      return i;
  return -1;
}

/* Appends the "key=value" words of `more` that `*labels` lacks. */
static void merge_labels(char **labels, const char *more) {
  char **w;
  int n = 0;
  char *dup = cmds_xstrdup(more), *save = NULL;
  w = cmds_xcalloc(strlen(more) / 2 + 2, sizeof *w);
  for (char *t = strtok_r(dup, " ", &save); t; t = strtok_r(NULL, " ", &save)) w[n++] = t;
  for (int i = 0; i < n; i++) {
    size_t wl = strlen(w[i]);
    int have = 0;
    for (const char *q = *labels; (q = strstr(q, w[i])) && !have; q += wl)
      have = (q == *labels || q[-1] == ' ') && (q[wl] == 0 || q[wl] == ' ');
    if (have) continue;
    size_t ol = strlen(*labels);
    *labels = cmds_xrealloc(*labels, ol + wl + 2);
    snprintf(*labels + ol, wl + 2, "%s%s", ol ? " " : "", w[i]);
  }
  free(w);
  free(dup);
}

static int add_task(const job_spec *s, job_plan *p, int e, int ds, const char *cat, int k,
                    const cmds_config *cfg, const char *label, const char *labels, cmds_error *err) {
  int t = task_find(p, ds, cat, k, cfg);
  if (t >= 0) {
    merge_labels(&p->t[t].labels, labels);
  } else {
    p->t = cmds_xrealloc(p->t, (size_t)(p->nt + 1) * sizeof *p->t);
    job_task *x = &p->t[p->nt];
    memset(x, 0, sizeof *x);
    x->ds = ds;
    x->cat = cat;
    x->k = k;
    x->cfg = *cfg;
    /* Names relative to the spec's base configuration (the stages compare the full
     * configuration with a model's sidecar, so a changed base never reuses a stale model). */
    config_name(cfg, &s->base, CMDS_KEY_TRAIN, x->tag, sizeof x->tag);
    cmds_config_setting_name(cfg, x->setting, sizeof x->setting);
    /* A base whose training keys differ from METHOD.md's defaults: tags carry a hash of the
     * full training configuration, so editing the base never meets a model made with other
     * keys under the same name. (Setting names are absolute already.) */
    cmds_config defs;
    cmds_config_default(&defs);
    if (!cmds_config_equal(&s->base, &defs, CMDS_KEY_TRAIN)) {
      unsigned long long h = CMDS_FNV64_INIT;
      for (int i = 0; i < CK_NKEYS; i++)
        if (cmds_keys[i].stage == CMDS_KEY_TRAIN) {
          h = fnv64(h, cmds_keys[i].name, strlen(cmds_keys[i].name) + 1);
          h = fnv64(h, cfg->value[i], strlen(cfg->value[i]) + 1);
        }
      if (strlen(x->tag) > 52) x->tag[52] = 0;
      size_t l = strlen(x->tag);
      snprintf(x->tag + l, sizeof x->tag - l, "-c%08llx", h & 0xffffffffull);
    }
    x->label = cmds_xstrdup(cmds_config_equal(cfg, &s->base, CMDS_KEYS_ALL) ? "" : label);
    x->labels = cmds_xstrdup(labels);
    int u = -1;
    for (int i = 0; i < p->nu && u < 0; i++)
      if (p->u[i].ds == ds && p->u[i].k == k && !strcmp(p->u[i].cat, cat) && !strcmp(p->u[i].tag, x->tag)) u = i;
    if (u >= 0 && !cmds_config_equal(&p->t[p->u[u].first_task].cfg, cfg, CMDS_KEY_TRAIN))
      return CMDS_FAIL(err, CMDS_EINTERNAL, "two training configurations share the name %s", x->tag);
    if (u < 0) {
      p->u = cmds_xrealloc(p->u, (size_t)(p->nu + 1) * sizeof *p->u);
      u = p->nu++;
      p->u[u] = (job_unit){.ds = ds, .k = k, .cat = cat, .first_task = p->nt};
      snprintf(p->u[u].tag, sizeof p->u[u].tag, "%s", x->tag);
    }
    p->u[u].ntasks++;
    x->unit = u;
    t = p->nt++;
  }
  for (int i = 0; i < p->exp_nt[e]; i++)
    if (p->exp_tasks[e][i] == t) return CMDS_OK;
  p->exp_tasks[e] = cmds_xrealloc(p->exp_tasks[e], (size_t)(p->exp_nt[e] + 1) * sizeof **p->exp_tasks);
  p->exp_tasks[e][p->exp_nt[e]++] = t;
  return CMDS_OK;
}

int job_plan_build(const job_spec *s, job_plan *p, cmds_error *err) {
  memset(p, 0, sizeof *p);
  p->exp_tasks = cmds_xcalloc((size_t)s->nexp + 1, sizeof *p->exp_tasks);
  p->exp_nt = cmds_xcalloc((size_t)s->nexp + 1, sizeof *p->exp_nt);
  p->nexp = s->nexp;
  int rc = CMDS_OK;
  for (int e = 0; e < s->nexp && !rc; e++) {
    const job_experiment *x = &s->exps[e];
    long npoints = 1;
    for (int a = 0; a < x->naxes; a++) npoints *= x->axes[a].nvalues;
    if (npoints > 100000) return CMDS_FAIL(err, CMDS_EINPUT, "%s: experiment %s: %ld sweep points", s->path, x->name, npoints);
    int nset = x->nsettings ? x->nsettings : 1;
    for (int d = 0; d < x->nds && !rc; d++) {
      const job_dataset *ds = &s->ds[x->ds[d]];
      for (int c = 0; c < ds->ncat && !rc; c++)
        for (int ki = 0; ki < x->nshots && !rc; ki++)
          for (int si = 0; si < nset && !rc; si++)
            for (long pt = 0; pt < npoints && !rc; pt++) {
              cmds_config cfg = s->base;
              char where[512];
              snprintf(where, sizeof where, "%s: experiment %s", s->path, x->name);
              for (int i = 0; i < x->config.n && !rc; i++) rc = cmds_config_set(&cfg, x->config.v[i].key, x->config.v[i].value, where, err);
              const job_setting *st = x->nsettings ? &x->settings[si] : NULL;
              for (int i = 0; st && i < st->kv.n && !rc; i++) rc = cmds_config_set(&cfg, st->kv.v[i].key, st->kv.v[i].value, where, err);
              /* Sweep point pt in mixed radix, the last axis fastest. */
              char point[1024] = "", labels[2048] = "";
              size_t pl = 0, ll = 0;
              long rest = pt;
              int idx[64] = {0};
              for (int a = x->naxes - 1; a >= 0; a--) {
                idx[a] = (int)(rest % x->axes[a].nvalues);
                rest /= x->axes[a].nvalues;
              }
              for (int a = 0; a < x->naxes && !rc; a++)
                for (int kk = 0; kk < x->axes[a].nkeys && !rc; kk++) {
                  rc = cmds_config_set(&cfg, x->axes[a].keys[kk], x->axes[a].values[idx[a]], where, err);
                  if (rc) break;
                  const char *cv = cfg.value[cmds_key_find(x->axes[a].keys[kk], strlen(x->axes[a].keys[kk]))];
                  pl += (size_t)snprintf(point + pl, sizeof point - pl, "%s%s=%s", pl ? "/" : "", x->axes[a].keys[kk], cv);
                  ll += (size_t)snprintf(labels + ll, sizeof labels - ll, "%s%s=%s", ll ? " " : "", x->axes[a].keys[kk], cv);
                  if (pl >= sizeof point) pl = sizeof point - 1;
                  if (ll >= sizeof labels) ll = sizeof labels - 1;
                }
              if (rc) break;
              char label[1536];
              if (st && pl) snprintf(label, sizeof label, "%s/%s", st->name, point);
              else if (st) snprintf(label, sizeof label, "%s", st->name);
              else if (pl) snprintf(label, sizeof label, "%s", point);
              else snprintf(label, sizeof label, "%s", x->name);
              rc = add_task(s, p, e, x->ds[d], ds->cats[c], x->shots[ki], &cfg, label, labels, err);
            }
    }
  }
  /* One table row per label: two configurations with the same label would be ambiguous. */
  for (int i = 0; i < p->nt && !rc; i++)
    for (int j = i + 1; j < p->nt && !rc; j++) {
      const job_task *a = &p->t[i], *b = &p->t[j];
      if (a->ds == b->ds && a->k == b->k && !strcmp(a->cat, b->cat) && !strcmp(a->label, b->label))
        rc = CMDS_FAIL(err, CMDS_EINPUT,
                       "%s: two different configurations make the table row '%s' (%s %s k=%d; tags %s/%s and %s/%s): "
                       "give the settings distinct names",
                       s->path, a->label[0] ? a->label : "cmds", s->ds[a->ds].name, a->cat, a->k, a->tag, a->setting,
                       b->tag, b->setting);
    }
  if (!rc && p->nt == 0) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: the spec makes no task", s->path);
  return rc;
}

void job_plan_free(job_plan *p) {
  for (int i = 0; i < p->nt; i++) {
    free(p->t[i].label);
    free(p->t[i].labels);
  }
  free(p->t);
  free(p->u);
  for (int e = 0; e < p->nexp; e++) free(p->exp_tasks[e]);
  free(p->exp_tasks);
  free(p->exp_nt);
  memset(p, 0, sizeof *p);
}
