/* runner: see runner.h. */
#define _GNU_SOURCE
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"
#include "json.h"
#include "record.h"

void sl_push(str_list *l, const char *s) {
  l->v = cmds_xrealloc(l->v, (size_t)(l->n + 2) * sizeof *l->v);
  l->v[l->n++] = cmds_xstrdup(s);
  l->v[l->n] = NULL;
}

void sl_pushf(str_list *l, const char *fmt, ...) {
  char buf[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  sl_push(l, buf);
}

void sl_free(str_list *l) {
  for (int i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

/* A growing text buffer. */
typedef struct text {
  char *s;
  size_t len, cap;
} text;

static void tprintf(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tprintf(text *t, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    size_t room = t->cap - t->len;
    va_start(ap, fmt);
    int n = t->s ? vsnprintf(t->s + t->len, room, fmt, ap) : -1;
    va_end(ap);
    if (n >= 0 && (size_t)n < room) {
      t->len += (size_t)n;
      return;
    }
    t->cap = t->cap * 2 + (n > 0 ? (size_t)n : 0) + 4096;
    t->s = cmds_xrealloc(t->s, t->cap);
  }
}

static char *tdone(text *t) {
  if (!t->s) return cmds_xstrdup("");
  return t->s;
}

int runner_ranks(const runner *r, int stage) {
  if (stage == ST_SYNTH || stage == ST_REPORT) return 1;
  return r->ranks_override > 0 ? r->ranks_override : r->spec->ranks[stage];
}

void task_model_dir(const runner *r, int unit, char *out, size_t cap) {
  const job_unit *u = &r->plan->u[unit];
  snprintf(out, cap, "%s/models/%s/%s/k%d/%s", r->spec->run, r->spec->ds[u->ds].name, u->cat, u->k, u->tag);
}

void task_maps_path(const runner *r, int task, char *out, size_t cap) {
  const job_task *t = &r->plan->t[task];
  snprintf(out, cap, "%s/maps/%s/%s/k%d/%s/maps.%s.h5", r->spec->run, r->spec->ds[t->ds].name, t->cat, t->k,
           t->tag, t->setting);
}

void task_result_path(const runner *r, int task, char *out, size_t cap) {
  const job_task *t = &r->plan->t[task];
  snprintf(out, cap, "%s/results/%s/%s/k%d/%s/%s.json", r->spec->run, r->spec->ds[t->ds].name, t->cat, t->k,
           t->tag, t->setting);
}

static char *join_cats(const job_dataset *d) {
  text t = {0};
  for (int i = 0; i < d->ncat; i++) tprintf(&t, "%s%s", i ? "," : "", d->cats[i]);
  return tdone(&t);
}

static int max_shots(const job_spec *s) {
  int m = 1;
  for (int i = 0; i < s->nshots; i++)
    if (s->shots[i] > m) m = s->shots[i];
  return m;
}

static void tasks_path(const runner *r, const char *name, char *out, size_t cap) {
  snprintf(out, cap, "%s/tasks/%s", r->spec->run, name);
}

char *runner_train_tasks(const runner *r) {
  text t = {0};
  tprintf(&t, "# cmds-train tasks of job %s (written by cmds-run): dataset category k tag key=value...\n",
          r->spec->name);
  for (int u = 0; u < r->plan->nu; u++) {
    const job_unit *x = &r->plan->u[u];
    char pairs[4096];
    config_pairs(&r->plan->t[x->first_task].cfg, CMDS_KEY_TRAIN, pairs, sizeof pairs);
    tprintf(&t, "%s %s %d %s%s%s\n", r->spec->ds[x->ds].name, x->cat, x->k, x->tag, pairs[0] ? " " : "", pairs);
  }
  return tdone(&t);
}

char *runner_score_tasks(const runner *r, int unit) {
  text t = {0};
  tprintf(&t, "# cmds-score tasks of job %s (written by cmds-run): dataset category k tag key=value...\n",
          r->spec->name);
  for (int u = 0; u < r->plan->nu; u++) {
    if (unit >= 0 && u != unit) continue;
    for (int i = 0; i < r->plan->nt; i++) {
      const job_task *x = &r->plan->t[i];
      if (x->unit != u) continue;
      char pairs[4096];
      config_pairs(&x->cfg, CMDS_KEYS_ALL, pairs, sizeof pairs);
      tprintf(&t, "%s %s %d %s%s%s\n", r->spec->ds[x->ds].name, x->cat, x->k, x->tag, pairs[0] ? " " : "", pairs);
    }
  }
  return tdone(&t);
}

char *runner_metrics_list(const runner *r) {
  text t = {0};
  tprintf(&t, "# cmds-metrics list of job %s (written by cmds-run): maps result labels...\n", r->spec->name);
  for (int i = 0; i < r->plan->nt; i++) {
    const job_task *x = &r->plan->t[i];
    char maps[4096], res[4096];
    task_maps_path(r, i, maps, sizeof maps);
    task_result_path(r, i, res, sizeof res);
    tprintf(&t, "%s %s method=cmds dataset=%s category=%s shot=%d tag=%s score_setting=%s", maps, res,
            r->spec->ds[x->ds].name, x->cat, x->k, x->tag, x->setting);
    if (x->label[0]) tprintf(&t, " setting=%s", x->label);
    if (x->labels[0]) tprintf(&t, " %s", x->labels);
    tprintf(&t, "\n");
  }
  return tdone(&t);
}

static void backbone_args(const runner *r, stage_cmd *c) {
  if (r->spec->weights) {
    sl_push(&c->argv, "--weights");
    sl_push(&c->argv, r->spec->weights);
  } else {
    sl_push(&c->argv, "--random-backbone");
    sl_pushf(&c->argv, "%ld", r->spec->random_seed);
  }
}

static stage_cmd *new_cmd(stage_cmd **cmds, int *n, const runner *r, const char *prog, int mpi) {
  *cmds = cmds_xrealloc(*cmds, (size_t)(*n + 1) * sizeof **cmds);
  stage_cmd *c = &(*cmds)[(*n)++];
  memset(c, 0, sizeof *c);
  c->mpi = mpi;
  sl_pushf(&c->argv, "%s/%s", r->bin, prog);
  return c;
}

int runner_stage_cmds(const runner *r, int stage, int task_index, stage_cmd **cmds) {
  const job_spec *s = r->spec;
  int n = 0;
  *cmds = NULL;
  char path[4096];
  switch (stage) {
  case ST_SYNTH:
    for (int d = 0; d < s->nds; d++) {
      const job_dataset *ds = &s->ds[d];
      if (!ds->synth) continue;
      stage_cmd *c = new_cmd(cmds, &n, r, "cmds-synth", 0);
      char *cats = join_cats(ds);
      sl_push(&c->argv, "--format");
      sl_push(&c->argv, ds->name);
      sl_push(&c->argv, "--out");
      sl_push(&c->argv, ds->root);
      sl_push(&c->argv, "--seed");
      sl_pushf(&c->argv, "%ld", ds->synth_seed);
      sl_push(&c->argv, "--size");
      sl_pushf(&c->argv, "%ld", ds->synth_size);
      sl_push(&c->argv, "--categories");
      sl_push(&c->argv, cats);
      free(cats);
    }
    break;
  case ST_PREP:
  case ST_FEATURES:
    for (int d = 0; d < s->nds; d++) {
      const job_dataset *ds = &s->ds[d];
      stage_cmd *c = new_cmd(cmds, &n, r, stage == ST_PREP ? "cmds-prep" : "cmds-features", 1);
      char *cats = join_cats(ds);
      sl_push(&c->argv, "--dataset");
      sl_push(&c->argv, ds->name);
      if (stage == ST_PREP) {
        sl_push(&c->argv, "--root");
        sl_push(&c->argv, ds->root);
        sl_push(&c->argv, "--out");
        sl_push(&c->argv, s->cache);
        sl_push(&c->argv, "--shots");
        sl_pushf(&c->argv, "%d", max_shots(s));
      } else {
        sl_push(&c->argv, "--cache");
        sl_push(&c->argv, s->cache);
        backbone_args(r, c);
        sl_push(&c->argv, "--device");
        sl_push(&c->argv, s->device);
        if (!strcmp(s->base.value[CK_FINAL_NORM], "1")) sl_push(&c->argv, "--final-norm");
      }
      sl_push(&c->argv, "--category");
      sl_push(&c->argv, cats);
      free(cats);
    }
    break;
  case ST_AUGMENT:
    for (int d = 0; d < s->nds && s->aug.sd; d++) {
      const job_dataset *ds = &s->ds[d];
      stage_cmd *c = new_cmd(cmds, &n, r, "cmds-augment", 1);
      char *cats = join_cats(ds);
      sl_push(&c->argv, "--dataset");
      sl_push(&c->argv, ds->name);
      sl_push(&c->argv, "--cache");
      sl_push(&c->argv, s->cache);
      sl_push(&c->argv, "--sd");
      sl_push(&c->argv, s->aug.sd);
      /* one LoRA per k of the job (the few-shot protocol: a k-shot task's rows come from a LoRA
       * that saw only its k support images) */
      sl_push(&c->argv, "--shots");
      char shots[160] = "";
      for (int i = 0; i < s->nshots; i++) {
        size_t u = strlen(shots);
        snprintf(shots + u, sizeof shots - u, "%s%d", u ? "," : "", s->shots[i]);
      }
      sl_push(&c->argv, shots);
      if (!s->aug.from_cache) { /* the LoRA sees the dataset's own support images */
        sl_push(&c->argv, "--data");
        sl_push(&c->argv, ds->root);
      }
      sl_push(&c->argv, "--run"); /* the LoRA, its checkpoints and the PNGs belong to the run */
      sl_push(&c->argv, s->run);
      sl_push(&c->argv, "--device");
      sl_push(&c->argv, s->device);
      if (s->aug.checkpoint_every >= 0) {
        sl_push(&c->argv, "--checkpoint-every");
        sl_pushf(&c->argv, "%ld", s->aug.checkpoint_every);
      }
      /* the keys that differ from METHOD.md's, in table order */
      for (int k = 0; k < CK_NKEYS; k++)
        if (cmds_keys[k].stage == CMDS_KEY_AUGMENT && strcmp(s->aug.cfg.value[k], cmds_keys[k].def)) {
          sl_push(&c->argv, "--set");
          sl_pushf(&c->argv, "%s=%s", cmds_keys[k].name, s->aug.cfg.value[k]);
        }
      sl_push(&c->argv, "--category");
      sl_push(&c->argv, cats);
      free(cats);
    }
    break;
  case ST_ESTIMATE:
    for (int d = 0; d < s->nds && s->est.marigold; d++) {
      const job_dataset *ds = &s->ds[d];
      stage_cmd *c = new_cmd(cmds, &n, r, "cmds-estimate", 1);
      char *cats = join_cats(ds);
      sl_push(&c->argv, "--dataset");
      sl_push(&c->argv, ds->name);
      sl_push(&c->argv, "--cache");
      sl_push(&c->argv, s->cache);
      sl_push(&c->argv, "--marigold");
      sl_push(&c->argv, s->est.marigold);
      if (!s->est.from_cache) { /* Marigold sees the dataset's own images (stages/estimate/README.md) */
        sl_push(&c->argv, "--data");
        sl_push(&c->argv, ds->root);
      }
      sl_push(&c->argv, "--device");
      sl_push(&c->argv, s->device);
      if (s->est.steps > 0) {
        sl_push(&c->argv, "--steps");
        sl_pushf(&c->argv, "%ld", s->est.steps);
      }
      if (s->est.processing_res >= 0) {
        sl_push(&c->argv, "--processing-res");
        sl_pushf(&c->argv, "%ld", s->est.processing_res);
      }
      sl_push(&c->argv, "--ensemble");
      sl_pushf(&c->argv, "%ld", s->est.ensemble);
      sl_push(&c->argv, "--seed");
      sl_pushf(&c->argv, "%ld", s->est.seed);
      sl_push(&c->argv, "--category");
      sl_push(&c->argv, cats);
      free(cats);
    }
    break;
  case ST_TRAIN:
  case ST_SCORE: {
    stage_cmd *c = new_cmd(cmds, &n, r, stage == ST_TRAIN ? "cmds-train" : "cmds-score", 1);
    sl_push(&c->argv, "--tasks");
    if (stage == ST_TRAIN) {
      tasks_path(r, "train.tasks", path, sizeof path);
      sl_push(&c->argv, path);
      if (task_index >= 0) {
        sl_push(&c->argv, "--task-index");
        sl_pushf(&c->argv, "%d", task_index);
      }
    } else {
      char name[64];
      if (task_index >= 0) snprintf(name, sizeof name, "score.%d.tasks", task_index);
      tasks_path(r, task_index >= 0 ? name : "score.tasks", path, sizeof path);
      sl_push(&c->argv, path);
    }
    sl_push(&c->argv, "--cache");
    sl_push(&c->argv, s->cache);
    sl_push(&c->argv, "--run");
    sl_push(&c->argv, s->run);
    sl_push(&c->argv, "--device");
    sl_push(&c->argv, s->device);
    /* score reads the feature cache only; train runs the backbone online (input noise). */
    if (stage == ST_TRAIN) backbone_args(r, c);
    break;
  }
  case ST_METRICS: {
    stage_cmd *c = new_cmd(cmds, &n, r, "cmds-metrics", 1);
    tasks_path(r, "metrics.list", path, sizeof path);
    sl_push(&c->argv, "--list");
    sl_push(&c->argv, path);
    sl_push(&c->argv, "--curve");
    sl_push(&c->argv, s->curve);
    break;
  }
  case ST_REPORT:
    for (int e = 0; e < s->nexp; e++) {
      const job_experiment *x = &s->exps[e];
      stage_cmd *c = new_cmd(cmds, &n, r, "cmds-report", 0);
      sl_push(&c->argv, "--out");
      sl_pushf(&c->argv, "%s/report/%s", s->run, x->name);
      if (x->naxes) {
        sl_push(&c->argv, "--param");
        sl_push(&c->argv, x->axes[0].keys[0]);
      }
      for (int i = 0; i < r->plan->exp_nt[e]; i++) {
        task_result_path(r, r->plan->exp_tasks[e][i], path, sizeof path);
        size_t l = strlen(path);
        snprintf(path + l - 5, sizeof path - l + 5, ".csv");
        sl_push(&c->argv, path);
      }
    }
    break;
  }
  return n;
}

void runner_cmds_free(stage_cmd *c, int n) {
  for (int i = 0; i < n; i++) sl_free(&c[i].argv);
  free(c);
}

void runner_full_argv(const runner *r, int stage, const stage_cmd *c, str_list *out) {
  memset(out, 0, sizeof *out);
  if (c->mpi && strcmp(r->launcher, "none")) {
    int n = runner_ranks(r, stage);
    if (!strcmp(r->launcher, "srun")) {
      sl_push(out, "srun");
      sl_pushf(out, "--ntasks=%d", n);
      const char *extra = getenv("CMDS_SRUN_FLAGS");
      if (extra && *extra) {
        char *dup = cmds_xstrdup(extra), *save = NULL;
        for (char *t = strtok_r(dup, " ", &save); t; t = strtok_r(NULL, " ", &save)) sl_push(out, t);
        free(dup);
      }
    } else {
      sl_push(out, getenv("CMDS_MPIEXEC") ? getenv("CMDS_MPIEXEC") : "mpiexec");
      sl_push(out, "-n");
      sl_pushf(out, "%d", n);
      sl_push(out, "--oversubscribe");
      if (getuid() == 0) sl_push(out, "--allow-run-as-root");
    }
  }
  for (int i = 0; i < c->argv.n; i++) sl_push(out, c->argv.v[i]);
}

static int all_exist_check(const char *path, int *ok, char *missing, size_t cap) {
  if (*ok && !cmds_is_file(path)) {
    *ok = 0;
    snprintf(missing, cap, "%s", path);
  }
  return *ok;
}

int runner_outputs_complete(const runner *r, int stage, char *missing, size_t cap) {
  const job_spec *s = r->spec;
  int ok = 1;
  char p[4400];
  missing[0] = 0;
  switch (stage) {
  case ST_SYNTH:
    for (int d = 0; d < s->nds && ok; d++)
      for (int c = 0; s->ds[d].synth && c < s->ds[d].ncat && ok; c++) {
        snprintf(p, sizeof p, "%s/%s", s->ds[d].root, s->ds[d].cats[c]);
        if (!cmds_is_dir(p)) {
          ok = 0;
          snprintf(missing, cap, "%s", p);
        }
      }
    break;
  case ST_PREP:
  case ST_AUGMENT:
  case ST_ESTIMATE:
  case ST_FEATURES:
    /* augment, estimate: their outputs live inside <cat>.h5; their records say they finished */
    for (int d = 0; d < s->nds && ok; d++)
      for (int c = 0; c < s->ds[d].ncat && ok; c++) {
        snprintf(p, sizeof p, "%s/%s/%s.%s", s->cache, s->ds[d].name, s->ds[d].cats[c],
                 stage == ST_PREP      ? "h5"
                 : stage == ST_AUGMENT ? "augment.json"
                 : stage == ST_ESTIMATE ? "estimate.json"
                                        : "features.h5");
        all_exist_check(p, &ok, missing, cap);
      }
    break;
  case ST_TRAIN:
    for (int u = 0; u < r->plan->nu && ok; u++) {
      char dir[4096];
      task_model_dir(r, u, dir, sizeof dir);
      snprintf(p, sizeof p, "%s/mapper.safetensors", dir);
      all_exist_check(p, &ok, missing, cap);
    }
    break;
  case ST_SCORE:
    for (int i = 0; i < r->plan->nt && ok; i++) {
      task_maps_path(r, i, p, sizeof p);
      all_exist_check(p, &ok, missing, cap);
    }
    break;
  case ST_METRICS:
    for (int i = 0; i < r->plan->nt && ok; i++) {
      task_result_path(r, i, p, sizeof p);
      all_exist_check(p, &ok, missing, cap);
      size_t l = strlen(p);
      snprintf(p + l - 5, sizeof p - l + 5, ".csv");
      all_exist_check(p, &ok, missing, cap);
    }
    break;
  case ST_REPORT:
    for (int e = 0; e < s->nexp && ok; e++) {
      snprintf(p, sizeof p, "%s/report/%s/results.md", s->run, s->exps[e].name);
      all_exist_check(p, &ok, missing, cap);
    }
    break;
  }
  return ok;
}

unsigned long long runner_fingerprint(const runner *r, int stage) {
  unsigned long long h = CMDS_FNV64_INIT;
  const char *v = cmds_code_version();
  h = fnv64(h, v, strlen(v) + 1);
  stage_cmd *c;
  int n = runner_stage_cmds(r, stage, -1, &c);
  for (int i = 0; i < n; i++)
    for (int k = 0; k < c[i].argv.n; k++) h = fnv64(h, c[i].argv.v[k], strlen(c[i].argv.v[k]) + 1);
  runner_cmds_free(c, n);
  /* A stage reads what the earlier stages made: the fingerprint of the nearest earlier enabled
   * stage (itself chained to the ones before) is part of this one, so a changed argument of
   * any earlier stage (prep's, the estimate or augment block added, changed or removed)
   * changes every later fingerprint, and those stages run again (each skips by itself what
   * is still valid). */
  for (int p = stage - 1; p >= 0; p--)
    if (r->spec->stage_on[p]) {
      unsigned long long before = runner_fingerprint(r, p);
      h = fnv64(h, &before, sizeof before);
      break;
    }
  char *t = NULL;
  if (stage == ST_TRAIN) t = runner_train_tasks(r);
  if (stage == ST_SCORE) t = runner_score_tasks(r, -1);
  if (stage == ST_METRICS || stage == ST_REPORT) t = runner_metrics_list(r);
  if (t) h = fnv64(h, t, strlen(t));
  free(t);
  return h;
}

int write_atomic_unique(const char *path, const char *txt, cmds_error *err) {
  char tmp[4400], host[128] = "";
  gethostname(host, sizeof host - 1);
  snprintf(tmp, sizeof tmp, "%s.tmp.%s.%d", path, host, (int)getpid());
  FILE *f = fopen(tmp, "wb");
  if (!f) return CMDS_FAIL(err, CMDS_EIO, "%s: cannot write", tmp);
  size_t n = strlen(txt);
  int bad = fwrite(txt, 1, n, f) != n;
  bad |= fflush(f) != 0;
  bad |= fsync(fileno(f)) != 0;
  bad |= fclose(f) != 0;
  if (bad || rename(tmp, path) != 0) {
    unlink(tmp);
    return CMDS_FAIL(err, CMDS_EIO, "%s: cannot write (disk full?)", path);
  }
  return CMDS_OK;
}

/* Writes a file only when its content changed (tasks files keep their mtime otherwise). */
static int write_if_changed(const char *path, const char *txt, cmds_error *err) {
  FILE *f = fopen(path, "rb");
  if (f) {
    size_t n = strlen(txt), got = 0;
    char *buf = cmds_xmalloc(n + 2);
    got = fread(buf, 1, n + 1, f);
    fclose(f);
    int same = got == n && !memcmp(buf, txt, n);
    free(buf);
    if (same) return CMDS_OK;
  }
  return write_atomic_unique(path, txt, err);
}

int runner_write_tasks(const runner *r, cmds_error *err) {
  char dir[4096], p[4200];
  snprintf(dir, sizeof dir, "%s/tasks", r->spec->run);
  int rc = cmds_mkdir_p(dir, err);
  char *t = runner_train_tasks(r);
  snprintf(p, sizeof p, "%s/train.tasks", dir);
  if (!rc) rc = write_if_changed(p, t, err);
  free(t);
  t = runner_score_tasks(r, -1);
  snprintf(p, sizeof p, "%s/score.tasks", dir);
  if (!rc) rc = write_if_changed(p, t, err);
  free(t);
  for (int u = 0; u < r->plan->nu && !rc; u++) {
    t = runner_score_tasks(r, u);
    snprintf(p, sizeof p, "%s/score.%d.tasks", dir, u);
    rc = write_if_changed(p, t, err);
    free(t);
  }
  t = runner_metrics_list(r);
  snprintf(p, sizeof p, "%s/metrics.list", dir);
  if (!rc) rc = write_if_changed(p, t, err);
  free(t);
  return rc;
}

/* ---- manifest ------------------------------------------------------------------- */

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  text t = {0};
  char buf[65536];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf - 1, f)) > 0) {
    buf[got] = 0;
    tprintf(&t, "%s", buf);
  }
  fclose(f);
  return tdone(&t);
}

/* The string or number after `"key":` in JSON text we wrote ourselves (records). */
static int json_scan(const char *txt, const char *key, char *out, size_t cap) {
  char pat[128];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = txt ? strstr(txt, pat) : NULL;
  if (!p) return 0;
  p += strlen(pat);
  while (*p == ' ') p++;
  size_t n = 0;
  if (*p == '"') {
    p++;
    while (*p && *p != '"' && n + 1 < cap) out[n++] = *p++;
  } else {
    while (*p && *p != ',' && *p != '}' && *p != '\n' && n + 1 < cap) out[n++] = *p++;
  }
  out[n] = 0;
  return 1;
}

/* Stage state file RUN/state/<stage>.done: "key value" lines. */
typedef struct stage_state {
  int done, has_last;
  unsigned long long fingerprint;
  double elapsed_s, last_elapsed_s; /* the run that did the work; the latest run */
  char started[32], finished[32], last_finished[32];
} stage_state;

static void state_path(const runner *r, int stage, char *out, size_t cap) {
  snprintf(out, cap, "%s/state/%s.done", r->spec->run, job_stage_names[stage]);
}

static void state_read(const runner *r, int stage, stage_state *st) {
  memset(st, 0, sizeof *st);
  char p[4200];
  state_path(r, stage, p, sizeof p);
  FILE *f = fopen(p, "r");
  if (!f) return;
  char line[256];
  while (fgets(line, sizeof line, f)) {
    char k[64], v[128];
    if (sscanf(line, "%63s %127s", k, v) != 2) continue;
    if (!strcmp(k, "fingerprint")) st->fingerprint = strtoull(v, NULL, 16), st->done = 1;
    else if (!strcmp(k, "elapsed_s")) st->elapsed_s = strtod(v, NULL);
    else if (!strcmp(k, "started_utc")) snprintf(st->started, sizeof st->started, "%s", v);
    else if (!strcmp(k, "finished_utc")) snprintf(st->finished, sizeof st->finished, "%s", v);
    else if (!strcmp(k, "last_elapsed_s")) st->last_elapsed_s = strtod(v, NULL), st->has_last = 1;
    else if (!strcmp(k, "last_finished_utc")) snprintf(st->last_finished, sizeof st->last_finished, "%s", v);
  }
  fclose(f);
}

int runner_stage_is_done(const runner *r, int stage) {
  stage_state st;
  state_read(r, stage, &st);
  char missing[4096];
  return st.done && st.fingerprint == runner_fingerprint(r, stage) &&
         runner_outputs_complete(r, stage, missing, sizeof missing);
}

void utc_now(char *out, size_t cap) {
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int runner_mark_done(const runner *r, int stage, double elapsed, const char *started, int did_work, cmds_error *err) {
  char dir[4096], p[4200], fin[32];
  snprintf(dir, sizeof dir, "%s/state", r->spec->run);
  int rc = cmds_mkdir_p(dir, err);
  if (rc) return rc;
  state_path(r, stage, p, sizeof p);
  utc_now(fin, sizeof fin);
  /* A run that found every output complete (the stage only skipped) keeps the cost of the
   * run that did the work; both are kept (schemas/run_manifest_v1.md). */
  stage_state prev;
  state_read(r, stage, &prev);
  int keep = !did_work && prev.done;
  char txt[768];
  snprintf(txt, sizeof txt,
           "fingerprint %016llx\nelapsed_s %.3f\nstarted_utc %s\nfinished_utc %s\nlast_elapsed_s %.3f\n"
           "last_finished_utc %s\n",
           runner_fingerprint(r, stage), keep ? prev.elapsed_s : elapsed, keep ? prev.started : started,
           keep ? prev.finished : fin, elapsed, fin);
  return write_atomic_unique(p, txt, err);
}

/* ---- what a run of a stage changed, and what it invalidates ---------------------------- */

/* One output's place on disk (device, inode, size, modification time), or its absence. */
static unsigned long long sig_add(unsigned long long h, const char *path) {
  struct stat st;
  h = fnv64(h, path, strlen(path) + 1);
  if (stat(path, &st) != 0) return fnv64(h, "absent", 6);
  long long v[5] = {(long long)st.st_dev, (long long)st.st_ino, (long long)st.st_size, (long long)st.st_mtim.tv_sec,
                    (long long)st.st_mtim.tv_nsec};
  return fnv64(h, v, sizeof v);
}

unsigned long long runner_outputs_signature(const runner *r, int stage, int task_index) {
  const job_spec *s = r->spec;
  unsigned long long h = CMDS_FNV64_INIT;
  char p[4400];
  switch (stage) {
  case ST_SYNTH: /* cmds-synth rewrites its datasets whenever it runs */
    for (int d = 0; d < s->nds; d++)
      if (s->ds[d].synth) {
        snprintf(p, sizeof p, "%s/.synth/manifest.json", s->ds[d].root);
        h = sig_add(h, p);
      }
    break;
  case ST_PREP:
  case ST_AUGMENT:
  case ST_ESTIMATE:
  case ST_FEATURES:
    for (int d = 0; d < s->nds; d++)
      for (int c = 0; c < s->ds[d].ncat; c++) {
        snprintf(p, sizeof p, "%s/%s/%s.%s", s->cache, s->ds[d].name, s->ds[d].cats[c],
                 stage == ST_FEATURES ? "features.h5" : "h5");
        h = sig_add(h, p);
        if (stage == ST_AUGMENT || stage == ST_ESTIMATE) {
          snprintf(p, sizeof p, "%s/%s/%s.%s.json", s->cache, s->ds[d].name, s->ds[d].cats[c], job_stage_names[stage]);
          h = sig_add(h, p);
        }
      }
    break;
  case ST_TRAIN:
    for (int u = 0; u < r->plan->nu; u++) {
      if (task_index >= 0 && u != task_index) continue;
      char dir[4096];
      task_model_dir(r, u, dir, sizeof dir);
      snprintf(p, sizeof p, "%s/mapper.safetensors", dir);
      h = sig_add(h, p);
    }
    break;
  case ST_SCORE:
    for (int i = 0; i < r->plan->nt; i++) {
      if (task_index >= 0 && r->plan->t[i].unit != task_index) continue;
      task_maps_path(r, i, p, sizeof p);
      h = sig_add(h, p);
    }
    break;
  case ST_METRICS:
    for (int i = 0; i < r->plan->nt; i++) {
      task_result_path(r, i, p, sizeof p);
      h = sig_add(h, p);
    }
    break;
  default: /* report: nothing comes after it */
    break;
  }
  return h;
}

/* RUN/state/<stage>.started or <stage>.<task>.started (an array task). */
static void started_path(const runner *r, int stage, int task_index, char *out, size_t cap) {
  if (task_index >= 0) snprintf(out, cap, "%s/state/%s.%d.started", r->spec->run, job_stage_names[stage], task_index);
  else snprintf(out, cap, "%s/state/%s.started", r->spec->run, job_stage_names[stage]);
}

static void fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

int runner_work_begin(const runner *r, int stage, int task_index, int *pending, cmds_error *err) {
  char dir[4096], p[4400];
  snprintf(dir, sizeof dir, "%s/state", r->spec->run);
  started_path(r, stage, task_index, p, sizeof p);
  *pending = cmds_is_file(p);
  if (*pending) return CMDS_OK; /* kept as it is: the earlier run's may have changed outputs */
  int rc = cmds_mkdir_p(dir, err);
  if (!rc) rc = write_atomic_unique(p, "a run of this stage started; removed once it is recorded as finished\n", err);
  if (!rc) fsync_dir(dir);
  return rc;
}

int runner_invalidate_after(const runner *r, int stage, cmds_error *err) {
  char dir[4096], p[4200];
  snprintf(dir, sizeof dir, "%s/state", r->spec->run);
  for (int st = stage + 1; st < JOB_NSTAGES; st++) {
    state_path(r, st, p, sizeof p);
    if (unlink(p) != 0 && errno != ENOENT)
      return CMDS_FAIL(err, CMDS_EIO, "%s: cannot remove it (stage %s did work, so %s must run again): %s", p,
                       job_stage_names[stage], job_stage_names[st], strerror(errno));
  }
  fsync_dir(dir); /* gone on disk before this stage is recorded as done */
  return CMDS_OK;
}

void runner_work_end(const runner *r, int stage, int task_index) {
  char p[4400];
  started_path(r, stage, task_index, p, sizeof p);
  unlink(p);
}

/* The record of one output and its elapsed time, when it exists. */
static void json_record(cmds_json *j, const char *path, double *sum, int *count) {
  char *t = slurp(path);
  if (!t) return;
  char v[64] = "";
  json_scan(t, "elapsed_s", v, sizeof v);
  free(t);
  cmds_json_object_begin(j);
  cmds_json_kv_str(j, "path", path);
  cmds_json_kv_num(j, "elapsed_s", strtod(v, NULL));
  cmds_json_object_end(j);
  *sum += strtod(v, NULL);
  (*count)++;
}

static void stage_records(const runner *r, int stage, cmds_json *j) {
  const job_spec *s = r->spec;
  char p[4400];
  double sum = 0;
  int count = 0;
  cmds_json_key(j, "records");
  cmds_json_array_begin(j);
  if (stage == ST_PREP || stage == ST_AUGMENT || stage == ST_ESTIMATE || stage == ST_FEATURES) {
    for (int d = 0; d < s->nds; d++)
      for (int c = 0; c < s->ds[d].ncat; c++) {
        snprintf(p, sizeof p, "%s/%s/%s.%s.json", s->cache, s->ds[d].name, s->ds[d].cats[c],
                 job_stage_names[stage]);
        json_record(j, p, &sum, &count);
      }
  } else if (stage == ST_TRAIN) {
    for (int u = 0; u < r->plan->nu; u++) {
      char dir[4096];
      task_model_dir(r, u, dir, sizeof dir);
      snprintf(p, sizeof p, "%s/train.record.json", dir);
      json_record(j, p, &sum, &count);
    }
  } else if (stage == ST_SCORE) {
    for (int u = 0; u < r->plan->nu; u++) {
      const job_unit *x = &r->plan->u[u];
      snprintf(p, sizeof p, "%s/maps/%s/%s/k%d/%s/score.record.json", s->run, s->ds[x->ds].name, x->cat, x->k, x->tag);
      json_record(j, p, &sum, &count);
    }
  } else if (stage == ST_METRICS) {
    for (int i = 0; i < r->plan->nt; i++) {
      task_result_path(r, i, p, sizeof p);
      size_t l = strlen(p);
      snprintf(p + l - 5, sizeof p - l + 5, ".record.json");
      json_record(j, p, &sum, &count);
    }
  }
  cmds_json_array_end(j);
  cmds_json_kv_int(j, "records_found", count);
  cmds_json_kv_num(j, "records_elapsed_s_sum", sum);
}

int runner_write_manifest(const runner *r, const char *running_stage, cmds_error *err) {
  const job_spec *s = r->spec;
  const job_plan *p = r->plan;
  cmds_json j;
  cmds_json_init(&j, 1);
  cmds_json_object_begin(&j);
  cmds_json_kv_str(&j, "schema", "cmds.run_manifest");
  cmds_json_kv_int(&j, "schema_version", 1);
  cmds_json_kv_str(&j, "job", s->name);
  cmds_json_kv_str(&j, "code_version", cmds_code_version());
  char ts[32], host[256] = "", cwd[4096] = "";
  utc_now(ts, sizeof ts);
  gethostname(host, sizeof host - 1);
  if (!getcwd(cwd, sizeof cwd)) cwd[0] = 0;
  cmds_json_kv_str(&j, "updated_utc", ts);
  cmds_json_kv_str(&j, "host", host);
  cmds_json_kv_str(&j, "cwd", cwd);
  const char *jobid = getenv("SLURM_JOB_ID");
  cmds_json_kv_str(&j, "slurm_job_id", jobid ? jobid : "");
  cmds_json_key(&j, "command");
  cmds_json_array_begin(&j);
  for (int i = 0; i < r->argc; i++) cmds_json_str(&j, r->argv[i]);
  cmds_json_array_end(&j);
  cmds_json_key(&j, "spec");
  cmds_json_object_begin(&j);
  cmds_json_kv_str(&j, "path", s->path);
  char ck[96];
  snprintf(ck, sizeof ck, "fnv64:%016llx:%ld", s->checksum, s->file_size);
  cmds_json_kv_str(&j, "checksum", ck);
  cmds_json_object_end(&j);
  /* Resolved configuration. */
  cmds_json_key(&j, "paths");
  cmds_json_object_begin(&j);
  cmds_json_kv_str(&j, "run", s->run);
  cmds_json_kv_str(&j, "cache", s->cache);
  cmds_json_kv_str(&j, "bin", r->bin);
  cmds_json_object_end(&j);
  cmds_json_kv_str(&j, "launcher", r->launcher);
  cmds_json_kv_str(&j, "device", s->device);
  cmds_json_key(&j, "backbone");
  cmds_json_object_begin(&j);
  if (s->weights) cmds_json_kv_str(&j, "weights", s->weights);
  else cmds_json_kv_int(&j, "random_seed", s->random_seed);
  cmds_json_kv_str(&j, "weights_id", r->weights_id);
  cmds_json_object_end(&j);
  /* The augment stage (null: no augment block, no generated samples). */
  cmds_json_key(&j, "augment");
  if (!s->aug.sd) {
    cmds_json_null(&j);
  } else {
    cmds_json_object_begin(&j);
    cmds_json_kv_str(&j, "sd", s->aug.sd);
    cmds_json_kv_str(&j, "source", s->aug.from_cache ? "cache" : "dataset");
    cmds_json_kv_int(&j, "checkpoint_every", s->aug.checkpoint_every);
    cmds_json_key(&j, "config");
    cmds_config_json(&s->aug.cfg, &j, CMDS_KEY_AUGMENT);
    cmds_json_object_end(&j);
  }
  /* The estimate stage (null: no estimate block, the estimated stream stays off). */
  cmds_json_key(&j, "estimate");
  if (!s->est.marigold) {
    cmds_json_null(&j);
  } else {
    cmds_json_object_begin(&j);
    cmds_json_kv_str(&j, "marigold", s->est.marigold);
    cmds_json_kv_int(&j, "steps", s->est.steps);
    cmds_json_kv_int(&j, "processing_res", s->est.processing_res);
    cmds_json_kv_int(&j, "ensemble", s->est.ensemble);
    cmds_json_kv_int(&j, "seed", s->est.seed);
    cmds_json_kv_str(&j, "source", s->est.from_cache ? "cache" : "dataset");
    cmds_json_object_end(&j);
  }
  cmds_json_kv_str(&j, "metrics_curve", s->curve);
  cmds_json_key(&j, "shots");
  cmds_json_array_begin(&j);
  for (int i = 0; i < s->nshots; i++) cmds_json_int(&j, s->shots[i]);
  cmds_json_array_end(&j);
  cmds_json_key(&j, "datasets");
  cmds_json_array_begin(&j);
  for (int d = 0; d < s->nds; d++) {
    const job_dataset *ds = &s->ds[d];
    cmds_json_object_begin(&j);
    cmds_json_kv_str(&j, "name", ds->name);
    cmds_json_kv_str(&j, "root", ds->root);
    if (ds->synth) {
      cmds_json_key(&j, "synth");
      cmds_json_object_begin(&j);
      cmds_json_kv_int(&j, "seed", ds->synth_seed);
      cmds_json_kv_int(&j, "size", ds->synth_size);
      cmds_json_object_end(&j);
    }
    /* Inputs' checksums: the sample list hash prep computed over the category's source
     * files (names, sizes, mtimes), and the feature cache's weights identity. */
    cmds_json_key(&j, "categories");
    cmds_json_array_begin(&j);
    for (int c = 0; c < ds->ncat; c++) {
      char rp[4400], v[128];
      cmds_json_object_begin(&j);
      cmds_json_kv_str(&j, "name", ds->cats[c]);
      snprintf(rp, sizeof rp, "%s/%s/%s.h5", s->cache, ds->name, ds->cats[c]);
      cmds_json_kv_str(&j, "sample_cache", rp);
      snprintf(rp, sizeof rp, "%s/%s/%s.prep.json", s->cache, ds->name, ds->cats[c]);
      char *t = slurp(rp);
      if (t && json_scan(t, "sample_list_hash", v, sizeof v)) cmds_json_kv_str(&j, "sample_list_hash", v);
      free(t);
      snprintf(rp, sizeof rp, "%s/%s/%s.features.h5", s->cache, ds->name, ds->cats[c]);
      cmds_json_kv_str(&j, "feature_cache", rp);
      snprintf(rp, sizeof rp, "%s/%s/%s.features.json", s->cache, ds->name, ds->cats[c]);
      t = slurp(rp);
      if (t && json_scan(t, "weights_id", v, sizeof v)) cmds_json_kv_str(&j, "features_weights_id", v);
      free(t);
      cmds_json_object_end(&j);
    }
    cmds_json_array_end(&j);
    cmds_json_object_end(&j);
  }
  cmds_json_array_end(&j);
  cmds_json_key(&j, "base_config");
  cmds_config_json(&s->base, &j, CMDS_KEYS_ALL);
  cmds_json_key(&j, "experiments");
  cmds_json_array_begin(&j);
  for (int e = 0; e < s->nexp; e++) {
    cmds_json_object_begin(&j);
    cmds_json_kv_str(&j, "name", s->exps[e].name);
    char rp[4400];
    snprintf(rp, sizeof rp, "%s/report/%s/results.md", s->run, s->exps[e].name);
    cmds_json_kv_str(&j, "report", rp);
    cmds_json_key(&j, "tasks");
    cmds_json_array_begin(&j);
    for (int i = 0; i < p->exp_nt[e]; i++) cmds_json_int(&j, p->exp_tasks[e][i]);
    cmds_json_array_end(&j);
    cmds_json_object_end(&j);
  }
  cmds_json_array_end(&j);
  cmds_json_key(&j, "tasks");
  cmds_json_array_begin(&j);
  for (int i = 0; i < p->nt; i++) {
    const job_task *t = &p->t[i];
    char path[4400];
    cmds_json_object_begin(&j);
    cmds_json_kv_int(&j, "id", i);
    cmds_json_kv_str(&j, "dataset", s->ds[t->ds].name);
    cmds_json_kv_str(&j, "category", t->cat);
    cmds_json_kv_int(&j, "k", t->k);
    cmds_json_kv_str(&j, "tag", t->tag);
    cmds_json_kv_str(&j, "setting", t->setting);
    cmds_json_kv_str(&j, "label", t->label);
    cmds_json_kv_str(&j, "labels", t->labels);
    cmds_json_kv_int(&j, "train_task_index", t->unit);
    task_model_dir(r, t->unit, path, sizeof path);
    cmds_json_kv_str(&j, "model_dir", path);
    task_maps_path(r, i, path, sizeof path);
    cmds_json_kv_str(&j, "maps", path);
    task_result_path(r, i, path, sizeof path);
    cmds_json_kv_str(&j, "result", path);
    cmds_json_kv_bool(&j, "result_present", cmds_is_file(path));
    cmds_json_key(&j, "config");
    cmds_config_json(&t->cfg, &j, CMDS_KEYS_ALL);
    cmds_json_object_end(&j);
  }
  cmds_json_array_end(&j);
  cmds_json_key(&j, "stages");
  cmds_json_array_begin(&j);
  for (int st = 0; st < JOB_NSTAGES; st++) {
    stage_state ss;
    state_read(r, st, &ss);
    cmds_json_object_begin(&j);
    cmds_json_kv_str(&j, "name", job_stage_names[st]);
    cmds_json_kv_bool(&j, "enabled", s->stage_on[st]);
    const char *status = !s->stage_on[st] ? "off"
                         : running_stage && !strcmp(running_stage, job_stage_names[st]) ? "running"
                         : runner_stage_is_done(r, st) ? "done"
                                                        : "pending";
    cmds_json_kv_str(&j, "status", status);
    cmds_json_kv_int(&j, "ranks", runner_ranks(r, st));
    char fp[32];
    snprintf(fp, sizeof fp, "%016llx", runner_fingerprint(r, st));
    cmds_json_kv_str(&j, "fingerprint", fp);
    if (ss.done) {
      cmds_json_kv_str(&j, "started_utc", ss.started);
      cmds_json_kv_str(&j, "finished_utc", ss.finished);
      cmds_json_kv_num(&j, "elapsed_s", ss.elapsed_s);
      if (ss.has_last) {
        cmds_json_kv_num(&j, "last_elapsed_s", ss.last_elapsed_s);
        cmds_json_kv_str(&j, "last_finished_utc", ss.last_finished);
      }
    }
    cmds_json_key(&j, "commands");
    cmds_json_array_begin(&j);
    stage_cmd *c;
    int n = runner_stage_cmds(r, st, -1, &c);
    for (int i = 0; i < n; i++) {
      str_list full;
      runner_full_argv(r, st, &c[i], &full);
      cmds_json_array_begin(&j);
      for (int k = 0; k < full.n; k++) cmds_json_str(&j, full.v[k]);
      cmds_json_array_end(&j);
      sl_free(&full);
    }
    runner_cmds_free(c, n);
    cmds_json_array_end(&j);
    static const char *const outputs[JOB_NSTAGES] = {
        "<dataset root>/<category>/", "CACHE/<dataset>/<category>.h5 (+ .prep.json)",
        "group augmented in CACHE/<dataset>/<category>.h5 (+ .augment.json; LoRA and PNGs in RUN/augment/)",
        "normals_est in CACHE/<dataset>/<category>.h5 (+ .estimate.json)",
        "CACHE/<dataset>/<category>.features.h5 (+ .features.json)",
        "RUN/models/<dataset>/<category>/k<k>/<tag>/mapper.safetensors (+ mapper.json, train.record.json)",
        "RUN/maps/<dataset>/<category>/k<k>/<tag>/maps.<setting>.h5 (+ streams.h5)",
        "RUN/results/<dataset>/<category>/k<k>/<tag>/<setting>.json (+ .csv, .pro.tsv, .record.json)",
        "RUN/report/<experiment>/results.md (+ CSV tables, plots)"};
    cmds_json_kv_str(&j, "outputs", outputs[st]);
    stage_records(r, st, &j);
    cmds_json_object_end(&j);
  }
  cmds_json_array_end(&j);
  cmds_json_object_end(&j);
  cmds_json_raw(&j, "\n");
  char path[4200];
  snprintf(path, sizeof path, "%s/manifest.json", s->run);
  int rc = cmds_mkdir_p(s->run, err);
  if (!rc) rc = write_atomic_unique(path, j.buf, err);
  cmds_json_free(&j);
  return rc;
}
