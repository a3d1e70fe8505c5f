/* runner_tasks: what cmds-run writes into RUN/tasks (see runner.h): the text buffer the
 * runner files share, the per-task output paths, the tasks files' text (train.tasks,
 * score.tasks, score.<u>.tasks, metrics.list), and writing them (atomically, through a name
 * unique to this process; unchanged content is not rewritten). */
#define _GNU_SOURCE
#include "runner.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "runner_internal.h"

void tprintf(text *t, const char *fmt, ...) {
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

char *tdone(text *t) {
  if (!t->s) return cmds_xstrdup("");
  return t->s;
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

void tasks_path(const runner *r, const char *name, char *out, size_t cap) {
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
