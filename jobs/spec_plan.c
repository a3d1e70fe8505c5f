/* spec_plan: a loaded spec into its plan (see spec.h): every experiment's scope, settings
 * and sweep points expanded into unique tasks (dataset, category, k, configuration), tasks
 * sharing a training configuration grouped into one training unit, and the tag and setting
 * names the stages' folders and files carry. Pure: nothing is run or read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "spec.h"

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
          h = cmds_fnv64(h, cmds_keys[i].name, strlen(cmds_keys[i].name) + 1);
          h = cmds_fnv64(h, cfg->value[i], strlen(cfg->value[i]) + 1);
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
