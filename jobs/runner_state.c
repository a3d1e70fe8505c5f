/* runner_state: whether a stage is done and what a run of it changed (see runner.h): the
 * outputs-complete checks, the chained stage fingerprints, the state files
 * RUN/state/<stage>.done (read, test, record) and <stage>[.<task>].started, the outputs
 * signature, and the invalidation of later stages after a stage that did work. */
#define _GNU_SOURCE
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"
#include "hash.h"
#include "record.h"
#include "runner_internal.h"

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
  h = cmds_fnv64(h, v, strlen(v) + 1);
  stage_cmd *c;
  int n = runner_stage_cmds(r, stage, -1, &c);
  for (int i = 0; i < n; i++)
    for (int k = 0; k < c[i].argv.n; k++) h = cmds_fnv64(h, c[i].argv.v[k], strlen(c[i].argv.v[k]) + 1);
  runner_cmds_free(c, n);
  /* A stage reads what the earlier stages made: the fingerprint of the nearest earlier enabled
   * stage (itself chained to the ones before) is part of this one, so a changed argument of
   * any earlier stage (prep's, the estimate or augment block added, changed or removed)
   * changes every later fingerprint, and those stages run again (each skips by itself what
   * is still valid). */
  for (int p = stage - 1; p >= 0; p--)
    if (r->spec->stage_on[p]) {
      unsigned long long before = runner_fingerprint(r, p);
      h = cmds_fnv64(h, &before, sizeof before);
      break;
    }
  char *t = NULL;
  if (stage == ST_TRAIN) t = runner_train_tasks(r);
  if (stage == ST_SCORE) t = runner_score_tasks(r, -1);
  if (stage == ST_METRICS || stage == ST_REPORT) t = runner_metrics_list(r);
  if (t) h = cmds_fnv64(h, t, strlen(t));
  free(t);
  return h;
}

/* ---- the state file RUN/state/<stage>.done ---------------------------------------------- */

static void state_path(const runner *r, int stage, char *out, size_t cap) {
  snprintf(out, cap, "%s/state/%s.done", r->spec->run, job_stage_names[stage]);
}

void state_read(const runner *r, int stage, stage_state *st) {
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
  h = cmds_fnv64(h, path, strlen(path) + 1);
  if (stat(path, &st) != 0) return cmds_fnv64(h, "absent", 6);
  long long v[5] = {(long long)st.st_dev, (long long)st.st_ino, (long long)st.st_size, (long long)st.st_mtim.tv_sec,
                    (long long)st.st_mtim.tv_nsec};
  return cmds_fnv64(h, v, sizeof v);
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
