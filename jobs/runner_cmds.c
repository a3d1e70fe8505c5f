/* runner_cmds: the command lines of each stage (see runner.h): the argv lists (str_list),
 * the ranks a stage runs with, each stage's program and arguments from the spec and plan,
 * and the launcher prefix (mpiexec or srun) put before an MPI stage's program. */
#define _GNU_SOURCE
#include "runner.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runner_internal.h"

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

int runner_ranks(const runner *r, int stage) {
  if (stage == ST_SYNTH || stage == ST_REPORT) return 1;
  return r->ranks_override > 0 ? r->ranks_override : r->spec->ranks[stage];
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
