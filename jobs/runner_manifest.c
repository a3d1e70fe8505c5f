/* runner_manifest: RUN/manifest.json (schemas/run_manifest_v1.md; see runner.h): the job,
 * its resolved configuration and the inputs' checksums, every task, and every stage's
 * status, fingerprint, timings, command lines and the records its outputs carry. */
#define _GNU_SOURCE
#include "runner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "json.h"
#include "record.h"
#include "runner_internal.h"

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
