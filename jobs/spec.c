/* spec: reading a job spec (see spec.h): the file (checksum, YAML document), its top-level
 * keys in order, the stages to run, and freeing it. The blocks are parsed in
 * spec_experiments.c (datasets, shots, experiments) and spec_blocks.c (ranks, estimate,
 * augment, slurm) through the YAML accessors of spec_yaml.c; the plan is in spec_plan.c. */
#include "spec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"
#include "hash.h"
#include "spec_internal.h"

const char *const job_stage_names[JOB_NSTAGES] = {"synth", "prep",  "augment", "estimate", "features",
                                                  "train", "score", "metrics", "report"};

int job_stage_find(const char *name) {
  for (int i = 0; i < JOB_NSTAGES; i++)
    if (!strcmp(name, job_stage_names[i])) return i;
  return -1;
}

void spec_stage_list(int first, int last, const char *sep, char *out, size_t cap) {
  size_t used = 0;
  out[0] = 0;
  for (int i = first; i <= last && used < cap; i++)
    used += (size_t)snprintf(out + used, cap - used, "%s%s", i > first ? sep : "", job_stage_names[i]);
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
    s->checksum = cmds_fnv64(s->checksum, buf, got);
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
    if (!v) rc = yfail(&y, root, "top level", "'version: 1' is required");
    else if (!(rc = ylong(&y, v, "version", 0, 1000, &version)) && version != 1)
      rc = yfail(&y, v, "version", "this cmds-run reads version 1 specs, the file says %ld", version);
  }
  if (!rc) rc = ystring(&y, root, "job", "top level", 1, 0, &s->name);
  if (!rc) rc = ycheck_label(&y, root, "job", s->name);
  if (!rc) rc = ystring(&y, root, "run", "top level", 1, 1, &s->run);
  if (!rc) rc = ystring(&y, root, "cache", "top level", 1, 1, &s->cache);
  if (!rc) rc = spec_parse_ranks(&y, yget(&y, root, "ranks"), s);
  s->device = cmds_xstrdup("auto");
  if (!rc) rc = ystring(&y, root, "device", "top level", 0, 0, &s->device);
  if (!rc && strcmp(s->device, "auto") && strcmp(s->device, "cpu") && strcmp(s->device, "cuda"))
    rc = yfail(&y, yget(&y, root, "device"), "device", "expected auto, cpu or cuda, got '%s'", s->device);
  if (!rc) {
    yaml_node_t *b = yget(&y, root, "backbone");
    if (!b) rc = yfail(&y, root, "top level", "'backbone' is required: {weights: FILE.safetensors} or {random: SEED}");
    if (!rc) rc = ykeys(&y, b, "backbone", "weights|random");
    if (!rc) rc = ystring(&y, b, "weights", "backbone", 0, 1, &s->weights);
    yaml_node_t *r = rc ? NULL : yget(&y, b, "random");
    if (!rc && r) rc = ylong(&y, r, "backbone.random", 0, 1L << 40, &s->random_seed);
    if (!rc && !!r == !!s->weights) rc = yfail(&y, b, "backbone", "give exactly one of weights: FILE or random: SEED");
  }
  if (!rc) rc = spec_parse_augment(&y, yget(&y, root, "augment"), s);
  if (!rc) rc = spec_parse_estimate(&y, yget(&y, root, "estimate"), s);
  if (!rc) rc = spec_parse_datasets(&y, yget(&y, root, "datasets"), s);
  if (!rc) {
    yaml_node_t *sh = yget(&y, root, "shots");
    if (!sh) rc = yfail(&y, root, "top level", "'shots' is required (e.g. [1, 2, 4])");
    else rc = spec_parse_shots(&y, sh, "shots", s->shots, &s->nshots);
  }
  job_kvlist cfg = {0};
  if (!rc) rc = yconfig(&y, yget(&y, root, "config"), "config", &cfg);
  for (int i = 0; i < cfg.n && !rc; i++) rc = cmds_config_set(&s->base, cfg.v[i].key, cfg.v[i].value, path, err);
  spec_kvlist_free(&cfg);
  s->curve = cmds_xstrdup("exact");
  if (!rc) {
    yaml_node_t *m = yget(&y, root, "metrics");
    if (m) rc = ykeys(&y, m, "metrics", "curve");
    if (!rc && m) rc = ystring(&y, m, "curve", "metrics", 0, 0, &s->curve);
    if (!rc && strcmp(s->curve, "exact") && strncmp(s->curve, "thresholds:", 11))
      rc = yfail(&y, m, "metrics.curve", "expected exact or thresholds:N, got '%s'", s->curve);
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
      char known[256];
      spec_stage_list(0, JOB_NSTAGES - 1, ", ", known, sizeof known);
      for (int i = 0; i < m && !rc; i++) {
        int k = job_stage_find(names[i]);
        if (k < 0) rc = yfail(&y, st, "stages", "unknown stage '%s' (%s)", names[i], known);
        else s->stage_on[k] = 1;
      }
      cmds_free_list(names, m); /* NULL, 0 when ylist failed */
      if (!rc && s->stage_on[ST_SYNTH] && !any_synth)
        rc = yfail(&y, st, "stages", "synth is listed but no dataset has a synth: block");
      if (!rc && s->stage_on[ST_ESTIMATE] && !s->est.marigold)
        rc = yfail(&y, st, "stages", "estimate is listed but the spec has no estimate: {marigold: DIR} block");
      if (!rc && s->stage_on[ST_AUGMENT] && !s->aug.sd)
        rc = yfail(&y, st, "stages", "augment is listed but the spec has no augment: {sd: DIR} block");
    }
  }
  if (!rc) {
    yaml_node_t *ex = yget(&y, root, "experiments");
    if (!ex) {
      s->exps = cmds_xcalloc(1, sizeof *s->exps);
      s->nexp = 1;
      spec_default_experiment(s, &s->exps[0]);
    } else if (ex->type != YAML_SEQUENCE_NODE) {
      rc = yfail(&y, ex, "experiments", "expected a list of experiments");
    } else {
      int m = ylen(ex);
      s->exps = cmds_xcalloc((size_t)m + 1, sizeof *s->exps);
      for (int i = 0; i < m && !rc; i++) {
        s->nexp = i + 1;
        rc = spec_parse_experiment(&y, ynode(&y, ex->data.sequence.items.start[i]), i, s, &s->exps[i]);
        for (int j = 0; j < i && !rc; j++)
          if (!strcmp(s->exps[j].name, s->exps[i].name))
            rc = yfail(&y, ex, "experiments", "experiment name '%s' given twice", s->exps[i].name);
      }
    }
  }
  if (!rc) rc = spec_parse_slurm(&y, yget(&y, root, "slurm"), s);
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
    spec_kvlist_free(&x->config);
    for (int i = 0; i < x->nsettings; i++) {
      free(x->settings[i].name);
      spec_kvlist_free(&x->settings[i].kv);
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
