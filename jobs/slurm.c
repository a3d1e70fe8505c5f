/* slurm: cmds-run --slurm. Copies the sbatch templates (slurm/<stage>.sbatch) into
 * RUN/slurm/, writes RUN/slurm/submit.sh, a chain of sbatch calls (one job per stage,
 * each `--dependency=afterok` on the one before; train and score are arrays with one task
 * per training unit, one rank and, when the spec asks for GPUs, --gpus-per-task), and runs
 * it. Each job runs `cmds-run SPEC --stage S [--task-index $SLURM_ARRAY_TASK_ID]
 * --launcher srun|mpiexec`, the same stage command lines as a local cmds-run, so both give
 * the same results. Options given on the sbatch command line override the templates'
 * #SBATCH defaults. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "runner.h"

#ifndef CMDS_SLURM_DIR
#define CMDS_SLURM_DIR "slurm"
#endif

static void shq(FILE *f, const char *a) {
  fputc('\'', f);
  for (; *a; a++) {
    if (*a == '\'') fputs("'\\''", f);
    else fputc(*a, f);
  }
  fputc('\'', f);
}

static int copy_file(const char *from, const char *to, cmds_error *err) {
  FILE *f = fopen(from, "rb");
  if (!f) return CMDS_FAIL(err, CMDS_EINPUT, "%s: cannot open the sbatch template (--slurm-dir DIR)", from);
  char *buf = NULL;
  size_t len = 0, cap = 0, got;
  char tmp[65536];
  while ((got = fread(tmp, 1, sizeof tmp, f)) > 0) {
    if (len + got + 1 > cap) {
      cap = (len + got + 1) * 2;
      buf = cmds_xrealloc(buf, cap);
    }
    memcpy(buf + len, tmp, got);
    len += got;
  }
  fclose(f);
  if (!buf) buf = cmds_xstrdup("");
  else buf[len] = 0;
  int rc = write_atomic_unique(to, buf, err);
  free(buf);
  return rc;
}

static int uses_gpu(int st) { return st == ST_AUGMENT || st == ST_ESTIMATE || st == ST_FEATURES || st == ST_TRAIN || st == ST_SCORE; }

int slurm_submit(runner *r, const char *slurm_dir, int dry, cmds_error *err) {
  const job_spec *s = r->spec;
  const job_slurm *q = &s->slurm;
  char dir[4096], logs[4200], path[4400], self[4200];
  if (!slurm_dir) slurm_dir = CMDS_SLURM_DIR;
  snprintf(dir, sizeof dir, "%s/slurm", s->run);
  snprintf(logs, sizeof logs, "%s/logs", dir);
  int rc = cmds_mkdir_p(logs, err);
  if (rc) return rc;
  snprintf(self, sizeof self, "%s/cmds-run", r->bin);
  char *spec_abs = realpath(s->path, NULL);
  char cwd[4096];
  if (!getcwd(cwd, sizeof cwd)) snprintf(cwd, sizeof cwd, ".");
  char script[4400];
  snprintf(script, sizeof script, "%s/submit.sh", dir);
  char tmp[4500];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", script, (int)getpid());
  FILE *f = fopen(tmp, "w");
  if (!f) {
    free(spec_abs);
    return CMDS_FAIL(err, CMDS_EIO, "%s: cannot write", tmp);
  }
  const char *sbatch = getenv("CMDS_SBATCH") ? getenv("CMDS_SBATCH") : "sbatch";
  fprintf(f, "#!/bin/bash\n# Written by cmds-run --slurm for job %s: one Slurm job per stage, chained with\n"
             "# afterok; train and score are arrays over the %d training units. Re-running this file\n"
             "# submits the chain again; finished stages and tasks are skipped by the jobs themselves.\n"
             "set -euo pipefail\ncd ", s->name, r->plan->nu);
  shq(f, cwd);
  fprintf(f, "\nSBATCH=${SBATCH:-%s}\nprev=\"\"\n", sbatch);
  fprintf(f, "dep() { if [ -n \"$prev\" ]; then echo \"--dependency=afterok:$prev\"; fi; }\n");
  for (int st = 0; st < JOB_NSTAGES && !rc; st++) {
    if (!s->stage_on[st]) continue;
    char from[4400];
    snprintf(from, sizeof from, "%s/%s.sbatch", slurm_dir, job_stage_names[st]);
    snprintf(path, sizeof path, "%s/%s.sbatch", dir, job_stage_names[st]);
    rc = copy_file(from, path, err);
    if (rc) break;
    int array = st == ST_TRAIN || st == ST_SCORE;
    int ranks = array ? 1 : runner_ranks(r, st);
    fprintf(f, "\n# %s\n", job_stage_names[st]);
    fprintf(f, "%s=$(\"$SBATCH\" --parsable $(dep) --job-name=cmds-%s-%s --ntasks=%d --cpus-per-task=%d --time=%s",
            job_stage_names[st], s->name, job_stage_names[st], ranks, q->cpus_per_rank, q->time[st]);
    if (array) fprintf(f, " --array=0-%d", r->plan->nu - 1);
    if (uses_gpu(st) && q->gpus_per_rank > 0 && strcmp(s->device, "cpu")) fprintf(f, " --gpus-per-task=%d", q->gpus_per_rank);
    if (q->partition) fprintf(f, " --partition=%s", q->partition);
    if (q->account) fprintf(f, " --account=%s", q->account);
    if (q->qos) fprintf(f, " --qos=%s", q->qos);
    if (q->mem_per_cpu) fprintf(f, " --mem-per-cpu=%s", q->mem_per_cpu);
    if (q->extra) fprintf(f, " %s", q->extra);
    fprintf(f, " --output=");
    char out[4600];
    snprintf(out, sizeof out, "%s/%s", logs, array ? "%x-%A_%a.out" : "%x-%j.out");
    shq(f, out);
    fprintf(f, " ");
    shq(f, path);
    fprintf(f, " ");
    shq(f, self);
    fprintf(f, " ");
    shq(f, spec_abs ? spec_abs : s->path);
    fprintf(f, " --launcher %s --bin ", q->launcher);
    shq(f, r->bin);
    if (r->ranks_override > 0 && !array) fprintf(f, " -n %d", r->ranks_override);
    fprintf(f, ")\n%s=${%s%%%%;*}\necho \"cmds: %s -> job $%s\"\nprev=$%s\n", job_stage_names[st],
            job_stage_names[st], job_stage_names[st], job_stage_names[st], job_stage_names[st]);
  }
  fprintf(f, "echo \"$prev\" > ");
  snprintf(path, sizeof path, "%s/last_job_id", dir);
  shq(f, path);
  fprintf(f, "\n");
  free(spec_abs);
  if (fclose(f) != 0 && !rc) rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot write", tmp);
  if (!rc && rename(tmp, script) != 0) rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot rename", script);
  if (rc) {
    unlink(tmp);
    return rc;
  }
  if (dry) {
    printf("wrote %s (not submitted):\n", script);
    FILE *g = fopen(script, "r");
    char line[8192];
    while (g && fgets(line, sizeof line, g)) fputs(line, stdout);
    if (g) fclose(g);
    return CMDS_OK;
  }
  char cmd[4600];
  snprintf(cmd, sizeof cmd, "bash '%s'", script);
  fflush(stdout);
  int st = system(cmd);
  if (st != 0) return CMDS_FAIL(err, CMDS_EIO, "%s failed (status %d): see the sbatch messages above", script, st);
  printf("cmds-run: submitted job %s; logs in %s, manifest %s/manifest.json\n", s->name, logs, s->run);
  return CMDS_OK;
}
