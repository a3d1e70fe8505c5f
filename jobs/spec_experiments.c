/* spec_experiments: the parts of a job spec that make its tasks (spec_internal.h): the
 * datasets (with their categories and synth: blocks), the shot counts, and the experiments,
 * each a scope (datasets, shots), a configuration, named settings (ablations) and sweep axes
 * whose cross product job_plan_build (spec_plan.c) expands. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"
#include "spec_internal.h"

/* METHOD.md section 1. */
static const char *const mvtec_cats[] = {"bagel", "cable_gland", "carrot", "cookie", "dowel",
                                         "foam", "peach", "potato", "rope", "tire"};
static const char *const eyec_cats[] = {"CandyCane", "ChocolateCookie", "ChocolatePraline",
                                        "Confetto", "GummyBear", "HazelnutTruffle",
                                        "LicoriceSandwich", "Lollipop", "Marshmallow",
                                        "PeppermintCandy"};

static int find_dataset(const job_spec *s, const char *name) {
  for (int i = 0; i < s->nds; i++)
    if (!strcmp(s->ds[i].name, name)) return i;
  return -1;
}

int spec_parse_shots(yctx *y, yaml_node_t *n, const char *where, int *shots, int *nshots) {
  char **items;
  int m, rc = ylist(y, n, where, &items, &m);
  if (rc) return rc;
  if (m < 1 || m > 8) rc = yfail(y, n, where, "expected 1 to 8 shot counts");
  for (int i = 0; i < m && !rc; i++) {
    char *end;
    long k = strtol(items[i], &end, 10);
    if (*end || k < 1 || k > 64) rc = yfail(y, n, where, "shot count '%s': expected an integer in [1, 64]", items[i]);
    else shots[i] = (int)k;
    for (int j = 0; j < i && !rc; j++)
      if (shots[j] == shots[i]) rc = yfail(y, n, where, "shot count %d given twice", shots[i]);
  }
  cmds_free_list(items, m);
  if (!rc) *nshots = m;
  return rc;
}

int spec_parse_datasets(yctx *y, yaml_node_t *n, job_spec *s) {
  if (!n || n->type != YAML_SEQUENCE_NODE) return yfail(y, n, "datasets", "expected a list of datasets");
  int m = ylen(n);
  if (m < 1) return yfail(y, n, "datasets", "at least one dataset is required");
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
      return yfail(y, d, where, "name: expected mvtec3d or eyecandies, got '%s'", ds->name);
    for (int j = 0; j < i; j++)
      if (!strcmp(s->ds[j].name, ds->name)) return yfail(y, d, where, "dataset '%s' given twice", ds->name);
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
      if (!rc && ds->ncat < 1) rc = yfail(y, c, w, "expected at least one category (or 'all')");
      for (int k = 0; k < ds->ncat && !rc; k++) {
        for (const char *p = ds->cats[k]; *p && !rc; p++)
          if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
            rc = yfail(y, c, w, "category '%s': expected letters, digits, '_' or '-'", ds->cats[k]);
        for (int j = 0; j < k && !rc; j++)
          if (!strcmp(ds->cats[j], ds->cats[k])) rc = yfail(y, c, w, "category '%s' given twice", ds->cats[k]);
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
    if (!f || !t || !st) return yfail(y, n, where, "a range needs from, to and step");
    char *e1, *e2, *e3;
    double a = strtod(f, &e1), b = strtod(t, &e2), d = strtod(st, &e3);
    if (*e1 || *e2 || *e3 || !(d > 0) || b < a) return yfail(y, n, where, "expected numbers with from <= to and step > 0");
    const char *dot = strchr(st, '.');
    int dec = dot ? (int)strlen(dot + 1) : 0;
    long count = (long)((b - a) / d + 1e-9) + 1;
    if (count > 1000) return yfail(y, n, where, "%ld values: at most 1000", count);
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
  if (!rc && *nv < 1) rc = yfail(y, n, where, "expected at least one value");
  return rc;
}

/* The stage of a key already checked by cmds_config_set (0 when unknown). */
static int key_stage(const char *name) {
  int k = cmds_key_find(name, strlen(name));
  return k < 0 ? 0 : (int)cmds_keys[k].stage;
}

static void take_all_datasets(const job_spec *s, job_experiment *x) {
  x->ds = cmds_xcalloc((size_t)s->nds, sizeof *x->ds);
  for (int i = 0; i < s->nds; i++) x->ds[i] = i;
  x->nds = s->nds;
}

static void take_shots(job_experiment *x, const int *shots, int n) {
  x->shots = cmds_xcalloc(8, sizeof *x->shots); /* as job_spec.shots: at most 8 */
  memcpy(x->shots, shots, (size_t)n * sizeof *shots);
  x->nshots = n;
}

void spec_default_experiment(const job_spec *s, job_experiment *x) {
  x->name = cmds_xstrdup("main");
  take_all_datasets(s, x);
  take_shots(x, s->shots, s->nshots);
}

int spec_parse_experiment(yctx *y, yaml_node_t *e, int idx, job_spec *s, job_experiment *x) {
  char where[64];
  snprintf(where, sizeof where, "experiments[%d]", idx);
  int rc = ykeys(y, e, where, "name|datasets|shots|config|settings|sweep");
  if (!rc) rc = ystring(y, e, "name", where, 1, 0, &x->name);
  if (!rc) rc = ycheck_label(y, e, where, x->name);
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
      if (x->ds[i] < 0) rc = yfail(y, d, where, "datasets: '%s' is not one of the spec's datasets", names[i]);
    }
    x->nds = m;
    cmds_free_list(names, m);
    if (rc) return rc;
  } else {
    take_all_datasets(s, x);
  }
  int shots[8], ns = 0;
  yaml_node_t *sh = yget(y, e, "shots");
  if (sh) {
    char w[96];
    snprintf(w, sizeof w, "%s.shots", where);
    rc = spec_parse_shots(y, sh, w, shots, &ns);
    for (int i = 0; i < ns && !rc; i++) {
      int found = 0;
      for (int j = 0; j < s->nshots; j++) found |= s->shots[j] == shots[i];
      if (!found) rc = yfail(y, sh, w, "shot count %d is not in the spec's shots", shots[i]);
    }
    if (rc) return rc;
    take_shots(x, shots, ns);
  } else {
    take_shots(x, s->shots, s->nshots);
  }
  char w[128];
  snprintf(w, sizeof w, "%s.config", where);
  rc = yconfig(y, yget(y, e, "config"), w, &x->config);
  if (rc) return rc;
  yaml_node_t *st = yget(y, e, "settings");
  if (st) {
    if (st->type != YAML_MAPPING_NODE) return yfail(y, st, where, "settings: expected a mapping name -> configuration");
    int m = ylen(st);
    x->settings = cmds_xcalloc((size_t)m + 1, sizeof *x->settings);
    for (int i = 0; i < m; i++) {
      yaml_node_pair_t *p = &st->data.mapping.pairs.start[i];
      const char *name = yscalar(ynode(y, p->key));
      snprintf(w, sizeof w, "%s.settings", where);
      if (!name) return yfail(y, st, w, "setting names must be plain strings");
      rc = ycheck_label(y, ynode(y, p->key), w, name);
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
    if (sw->type != YAML_MAPPING_NODE) return yfail(y, sw, where, "sweep: expected a mapping key -> values");
    int m = ylen(sw);
    x->axes = cmds_xcalloc((size_t)m + 1, sizeof *x->axes);
    for (int i = 0; i < m; i++) {
      yaml_node_pair_t *p = &sw->data.mapping.pairs.start[i];
      const char *keys = yscalar(ynode(y, p->key));
      snprintf(w, sizeof w, "%s.sweep", where);
      if (!keys) return yfail(y, sw, w, "keys must be plain strings");
      job_axis *a = &x->axes[i];
      x->naxes = i + 1;
      a->nkeys = cmds_split_commas(keys, &a->keys);
      snprintf(w, sizeof w, "%s.sweep.%s", where, keys);
      rc = parse_values(y, ynode(y, p->value), w, &a->values, &a->nvalues);
      for (int k = 0; k < a->nkeys && !rc; k++) {
        int id = cmds_key_find(a->keys[k], strlen(a->keys[k]));
        if (id < 0) rc = yfail(y, ynode(y, p->key), w, "unknown configuration key '%s'", a->keys[k]);
        else if (cmds_keys[id].stage == CMDS_KEY_FEATURES)
          rc = yfail(y, ynode(y, p->key), w, "%s changes the feature cache: set it in the spec's config, it cannot be swept", a->keys[k]);
        for (int v = 0; v < a->nvalues && !rc; v++) {
          char at[600];
          snprintf(at, sizeof at, "%s: %s", y->path, w);
          rc = yconfig_probe(y, at, a->keys[k], a->values[v]);
        }
      }
      if (rc) return rc;
    }
  }
  /* Features keys are per job: a setting cannot move them. */
  for (int i = 0; i < x->nsettings; i++)
    for (int k = 0; k < x->settings[i].kv.n; k++)
      if (key_stage(x->settings[i].kv.v[k].key) == CMDS_KEY_FEATURES)
        return yfail(y, st, where, "setting %s: %s changes the feature cache: set it in the spec's config",
                    x->settings[i].name, x->settings[i].kv.v[k].key);
  for (int k = 0; k < x->config.n; k++)
    if (key_stage(x->config.v[k].key) == CMDS_KEY_FEATURES)
      return yfail(y, e, where, "config: %s changes the feature cache: set it in the spec's config", x->config.v[k].key);
  return CMDS_OK;
}
