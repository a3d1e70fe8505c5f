/* spec: the job spec (YAML, schemas/job_spec_v1.md) and its resolution into a plan:
 * the unique tasks (dataset, category, k, configuration), the training units they share
 * (scoring-only keys never cause retraining) and, per experiment, which tasks make its
 * tables. Everything here is pure (no stage is run): cmds-run --dry-run prints the plan. */
#ifndef CMDS_JOBS_SPEC_H
#define CMDS_JOBS_SPEC_H

#include "cmds_error.h"
#include "config_keys.h"
#include "config_names.h"

typedef enum {
  ST_SYNTH = 0, ST_PREP, ST_AUGMENT, ST_ESTIMATE, ST_FEATURES, ST_TRAIN, ST_SCORE, ST_METRICS, ST_REPORT, JOB_NSTAGES
} job_stage;
extern const char *const job_stage_names[JOB_NSTAGES];
int job_stage_find(const char *name); /* -1 when unknown */

typedef struct job_kv {
  char *key, *value;
} job_kv;

typedef struct job_kvlist {
  job_kv *v;
  int n;
} job_kvlist;

typedef struct job_dataset {
  char *name, *root;      /* mvtec3d | eyecandies; the dataset's folder */
  char **cats;
  int ncat;
  int synth;              /* generate it with cmds-synth first */
  long synth_seed, synth_size;
} job_dataset;

typedef struct job_axis {  /* one sweep axis: the keys take each value together */
  char **keys;
  int nkeys;
  char **values;
  int nvalues;
} job_axis;

typedef struct job_setting {
  char *name;
  job_kvlist kv;
} job_setting;

typedef struct job_experiment {
  char *name;
  int *ds, nds;           /* indices into spec->ds */
  int *shots, nshots;
  job_kvlist config;      /* overrides of the spec's config for this experiment */
  job_setting *settings;  /* named settings (ablations); none = one unnamed setting */
  int nsettings;
  job_axis *axes;         /* sweep: cross product of the axes */
  int naxes;
} job_experiment;

typedef struct job_slurm {
  char *partition, *account, *qos, *extra; /* extra: more sbatch options, verbatim */
  char *time[JOB_NSTAGES];
  int gpus_per_rank;      /* GPUs per rank of features/train/score (0: CPU-only cluster) */
  int cpus_per_rank;
  char *mem_per_cpu;
  char *launcher;         /* how the stage programs start inside an allocation: srun | mpiexec */
} job_slurm;

/* The estimate stage (Marigold normals into the sample cache): the spec's `estimate` block. */
typedef struct job_estimate {
  char *marigold;         /* checkpoint folder (diffusers layout); NULL: no estimate block */
  long steps, processing_res; /* -1: the checkpoint's */
  long ensemble, seed;
  int from_cache;         /* 1: Marigold sees the cached RGB instead of the dataset's images */
} job_estimate;

/* The augment stage (SD LoRA + img2img samples into the sample cache): the spec's `augment`
 * block {sd: DIR, source: dataset|cache, checkpoint_every: N, <augment key without the
 * "augment." prefix>: value ...}. */
typedef struct job_augment {
  char *sd;               /* checkpoint folder (diffusers layout); NULL: no augment block */
  int from_cache;         /* 1: the LoRA sees the cached RGB instead of the dataset's images */
  long checkpoint_every;  /* -1: cmds-augment's default */
  cmds_config cfg;        /* METHOD.md's augment.* keys + the block's */
} job_augment;

typedef struct job_spec {
  char *path, *name;
  unsigned long long checksum; /* FNV-1a 64 of the spec file's bytes */
  long file_size;
  char *run, *cache;
  int ranks[JOB_NSTAGES];
  char *device;           /* auto | cpu | cuda */
  char *weights;          /* DINO safetensors, or NULL: random backbone */
  long random_seed;
  char *curve;            /* metrics curve: exact | thresholds:N */
  job_estimate est;
  job_augment aug;
  job_dataset *ds;
  int nds;
  int shots[8], nshots;
  cmds_config base;        /* METHOD.md defaults + the spec's config */
  job_experiment *exps;
  int nexp;
  int stage_on[JOB_NSTAGES];
  job_slurm slurm;
} job_spec;

/* One unique result: (dataset, category, k, configuration). */
typedef struct job_task {
  int ds, k;
  const char *cat;
  cmds_config cfg;
  char tag[128];          /* training configuration's name: RUN/models/<ds>/<cat>/k<k>/<tag> */
  char setting[128];      /* scoring configuration's name: maps.<setting>.h5, results/<setting>.json */
  char *label;            /* the table row's setting label ("" = the spec's base configuration) */
  char *labels;           /* more "key=value" labels (swept keys), space-separated */
  int unit;               /* its training unit */
} job_task;

/* One trained model: (dataset, category, k, training configuration). */
typedef struct job_unit {
  int ds, k;
  const char *cat;
  char tag[128];
  int first_task;         /* a task of this unit (its configuration's training keys) */
  int ntasks;
} job_unit;

typedef struct job_plan {
  job_task *t;
  int nt;
  job_unit *u;
  int nu;
  int nexp;
  int **exp_tasks, *exp_nt; /* per experiment: its tasks */
} job_plan;

/* Reads and checks a spec (${VAR} and ${VAR:-default} in paths come from the environment).
 * Errors name the file, the line and the field. */
int job_spec_load(const char *path, job_spec *s, cmds_error *err);
void job_spec_free(job_spec *s);

int job_plan_build(const job_spec *s, job_plan *p, cmds_error *err);
void job_plan_free(job_plan *p);

#endif
