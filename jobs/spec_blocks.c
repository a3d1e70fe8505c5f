/* spec_blocks: the blocks of a job spec that say how and where the stages run
 * (spec_internal.h): ranks per stage, the estimate (Marigold) and augment (SD LoRA) stages'
 * settings, and the Slurm submission (partition, times, GPUs and CPUs per rank, launcher).
 * Each parser sets its defaults first, so an absent block means the defaults. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spec_internal.h"

/* source: dataset|cache (what the stage reads the RGB images from); v NULL: not a scalar. */
static int parse_source(yctx *y, const yaml_node_t *n, const char *where, const char *v, int *from_cache) {
  if (!v || (strcmp(v, "dataset") && strcmp(v, "cache")))
    return yfail(y, n, where, "expected dataset or cache, got '%s'", v ? v : "(not a plain value)");
  *from_cache = !strcmp(v, "cache");
  return CMDS_OK;
}

int spec_parse_ranks(yctx *y, yaml_node_t *n, job_spec *s) {
  for (int i = 0; i < JOB_NSTAGES; i++) s->ranks[i] = 1;
  if (!n) return CMDS_OK;
  long v;
  if (yscalar(n)) {
    int rc = ylong(y, n, "ranks", 1, 100000, &v);
    for (int i = 0; i < JOB_NSTAGES && !rc; i++) s->ranks[i] = (int)v;
    s->ranks[ST_SYNTH] = s->ranks[ST_REPORT] = 1; /* serial programs */
    return rc;
  }
  char stages[256], allowed[300];
  spec_stage_list(ST_PREP, ST_METRICS, "|", stages, sizeof stages);
  snprintf(allowed, sizeof allowed, "default|%s", stages);
  int rc = ykeys(y, n, "ranks", allowed);
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
int spec_parse_estimate(yctx *y, yaml_node_t *n, job_spec *s) {
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
  if (!rc && src) rc = parse_source(y, yget(y, n, "source"), "estimate.source", src, &e->from_cache);
  free(src);
  return rc;
}

/* augment: {sd: DIR, source: dataset|cache, checkpoint_every: N, <key>: value ...} where <key> is an
 * augment.* configuration key without its prefix (steps: 1000, images: 16, ...). */
int spec_parse_augment(yctx *y, yaml_node_t *n, job_spec *s) {
  job_augment *a = &s->aug;
  cmds_config_default(&a->cfg);
  a->checkpoint_every = -1;
  if (!n) return CMDS_OK;
  if (n->type != YAML_MAPPING_NODE) return yfail(y, n, "augment", "expected a mapping {sd: DIR, ...}");
  int rc = ystring(y, n, "sd", "augment", 1, 1, &a->sd);
  for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top && !rc; p++) {
    yaml_node_t *kn = ynode(y, p->key), *vn = ynode(y, p->value);
    const char *k = yscalar(kn);
    if (!k) return yfail(y, kn, "augment", "keys must be plain strings");
    if (!strcmp(k, "sd")) continue;
    if (!strcmp(k, "source")) {
      rc = parse_source(y, vn, "augment.source", yscalar(vn), &a->from_cache);
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
      return yfail(y, kn, "augment", "unknown key '%s' (known: %s)", k, known);
    }
    const char *v = yscalar(vn);
    if (!v) return yfail(y, vn, "augment", "%s: expected a plain value", k);
    char at[600], *ex = NULL;
    snprintf(at, sizeof at, "%s line %d: augment", y->path, ymark(vn));
    rc = yexpand_env(y, vn, "augment", v, &ex); /* steps: ${AUG_STEPS:-1000} */
    if (!rc) rc = cmds_config_set(&a->cfg, full, ex, at, y->err);
    free(ex);
  }
  return rc;
}

int spec_parse_slurm(yctx *y, yaml_node_t *n, job_spec *s) {
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
    rc = yfail(y, n, "slurm.launcher", "expected srun or mpiexec, got '%s'", q->launcher);
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
    char allowed[256];
    spec_stage_list(0, JOB_NSTAGES - 1, "|", allowed, sizeof allowed);
    rc = ykeys(y, t, "slurm.time", allowed);
    for (int i = 0; i < JOB_NSTAGES && !rc; i++) rc = ystring(y, t, job_stage_names[i], "slurm.time", 0, 0, &q->time[i]);
  }
  return rc;
}
