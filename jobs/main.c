/* cmds-run: runs a job spec end to end on one machine, or submits it to Slurm.
 *
 *   cmds-run jobs/demo.yaml [-n N] [--dry-run] [--stage S [--task-index I]]
 *            [--launcher mpiexec|srun|none] [--bin DIR] [--slurm [--no-submit]]
 *
 * Resolves the spec (jobs/spec.c) into tasks, writes the tasks files, runs each stage in
 * order under the launcher with the ranks asked for, skips a stage whose fingerprint is
 * recorded as done and whose outputs all exist (the stages themselves skip finished
 * tasks, so a killed run redoes nothing complete); a stage that changed its outputs makes
 * every later stage run again (they skip what is still valid), rewrites RUN/manifest.json after every
 * stage, and prints the experiments' tables (cmds-report) at the end. Not an MPI program:
 * it starts them. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fsutil.h"
#include "hash.h"
#include "record.h"
#include "runner.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: cmds-run SPEC.yaml [options]\n"
          "  -n N                 ranks of every MPI stage (default: the spec's `ranks`)\n"
          "  --dry-run            print the plan (tasks, stage commands, what is done) and exit\n"
          "  --stage S            run only stage S: synth, prep, augment, estimate, features, train, score,\n"
          "                       metrics, report (what the Slurm jobs run)\n"
          "  --task-index I       with --stage train|score: only training unit I (a Slurm array task)\n"
          "  --launcher L         mpiexec (default; --oversubscribe, --allow-run-as-root as root),\n"
          "                       srun (inside a Slurm allocation) or none (programs run directly)\n"
          "  --bin DIR            folder of the stage programs (default: cmds-run's own folder)\n"
          "  --slurm              write the sbatch chain (RUN/slurm/) and submit it with sbatch\n"
          "  --no-submit          with --slurm: write the chain and print it, submit nothing\n"
          "  --slurm-dir DIR      the sbatch templates (default: <bin>/../../slurm, then ./slurm)\n"
          "Files: RUN/manifest.json (schemas/run_manifest_v1.md), RUN/tasks/, RUN/state/,\n"
          "RUN/report/<experiment>/results.md. Spec format: schemas/job_spec_v1.md.\n");
}

static volatile sig_atomic_t g_child = 0, g_stop = 0;

static void on_signal(int sig) {
  g_stop = sig;
  if (g_child > 0) kill(g_child, sig);
}

/* Runs argv, waits, returns the exit status (128 + signal when killed). */
static int run_child(char **argv, const char *omp_threads) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "cmds-run: fork: %s\n", strerror(errno));
    return 127;
  }
  if (pid == 0) {
    /* If cmds-run is killed (even with SIGKILL), the stage is told to stop: it saves its
     * state and leaves no complete-looking output, so the next cmds-run resumes. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGUSR1, SIG_DFL);
    if (omp_threads && !getenv("OMP_NUM_THREADS")) setenv("OMP_NUM_THREADS", omp_threads, 1);
    execvp(argv[0], argv);
    fprintf(stderr, "cmds-run: cannot start %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  g_child = pid;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_child = 0;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

static void print_argv(FILE *f, const str_list *l) {
  for (int i = 0; i < l->n; i++) {
    const char *a = l->v[i];
    int quote = !*a || strpbrk(a, " \t'\"$\\;&|<>*?()") != NULL;
    if (quote) {
      fputc('\'', f);
      for (; *a; a++) {
        if (*a == '\'') fputs("'\\''", f);
        else fputc(*a, f);
      }
      fputc('\'', f);
    } else {
      fputs(a, f);
    }
    fputc(i + 1 < l->n ? ' ' : '\n', f);
  }
}

static void print_plan(const runner *r) {
  const job_spec *s = r->spec;
  const job_plan *p = r->plan;
  printf("job %s (%s): %d datasets, shots", s->name, s->path, s->nds);
  for (int i = 0; i < s->nshots; i++) printf(" %d", s->shots[i]);
  printf("; run %s, cache %s\n", s->run, s->cache);
  for (int d = 0; d < s->nds; d++) {
    printf("  dataset %s (%s): %d categories:", s->ds[d].name, s->ds[d].root, s->ds[d].ncat);
    for (int c = 0; c < s->ds[d].ncat; c++) printf(" %s", s->ds[d].cats[c]);
    printf("\n");
  }
  printf("%d results, %d trained models\n", p->nt, p->nu);
  for (int e = 0; e < s->nexp; e++) {
    int trains = 0;
    for (int u = 0; u < p->nu; u++) {
      int in = 0;
      for (int i = 0; i < p->exp_nt[e] && !in; i++) in = p->t[p->exp_tasks[e][i]].unit == u;
      trains += in;
    }
    printf("  experiment %s: %d results from %d models\n", s->exps[e].name, p->exp_nt[e], trains);
  }
  for (int st = 0; st < JOB_NSTAGES; st++) {
    if (!s->stage_on[st]) continue;
    printf("stage %s (%d ranks): %s\n", job_stage_names[st], runner_ranks(r, st),
           runner_stage_is_done(r, st) ? "done, skipped" : "to run");
    stage_cmd *c;
    int n = runner_stage_cmds(r, st, -1, &c);
    for (int i = 0; i < n; i++) {
      str_list full;
      runner_full_argv(r, st, &c[i], &full);
      printf("  ");
      print_argv(stdout, &full);
      sl_free(&full);
    }
    runner_cmds_free(c, n);
  }
  char *t = runner_train_tasks(r);
  printf("train tasks (RUN/tasks/train.tasks):\n%s", t);
  free(t);
  t = runner_score_tasks(r, -1);
  printf("score tasks (RUN/tasks/score.tasks):\n%s", t);
  free(t);
  t = runner_metrics_list(r);
  printf("metrics list (RUN/tasks/metrics.list):\n%s", t);
  free(t);
}

/* Default stage programs: beside cmds-run. */
static void self_dir(char *out, size_t cap) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) {
    snprintf(out, cap, ".");
    return;
  }
  exe[n] = 0;
  char *slash = strrchr(exe, '/');
  if (slash) *slash = 0;
  snprintf(out, cap, "%s", exe);
}

static void weights_identity(runner *r) {
  const job_spec *s = r->spec;
  if (!s->weights) {
    snprintf(r->weights_id, sizeof r->weights_id, "random:%ld", s->random_seed);
    return;
  }
  FILE *f = fopen(s->weights, "rb");
  if (!f) {
    snprintf(r->weights_id, sizeof r->weights_id, "missing");
    return;
  }
  unsigned long long h = CMDS_FNV64_INIT, n = 0;
  unsigned char buf[1 << 16];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
    h = cmds_fnv64(h, buf, got);
    n += got;
  }
  fclose(f);
  snprintf(r->weights_id, sizeof r->weights_id, "fnv64:%016llx:%llu", h, n);
}

/* Runs one stage (all its commands, or one array task). */
static int run_stage(runner *r, int st, int task_index, cmds_error *err) {
  char started[32];
  utc_now(started, sizeof started);
  double t0 = cmds_now();
  int saved_override = r->ranks_override;
  if (task_index >= 0) r->ranks_override = 1; /* an array task is one rank (the submitter's --ntasks=1) */
  stage_cmd *c;
  int n = runner_stage_cmds(r, st, task_index, &c);
  /* Did this run change the stage's outputs (or might an earlier, stopped one have)? Then
   * every later stage must check again (runner_invalidate_after). */
  int pending = 0;
  int rc = runner_work_begin(r, st, task_index, &pending, err), began = !rc;
  unsigned long long outputs_before = runner_outputs_signature(r, st, task_index);
  char omp[16];
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  const char *slurm_cpt = getenv("SLURM_CPUS_PER_TASK");
  long per = slurm_cpt ? atol(slurm_cpt) : ncpu / runner_ranks(r, st);
  snprintf(omp, sizeof omp, "%ld", per > 0 ? per : 1);
  if (!strcmp(r->launcher, "mpiexec") || task_index < 0) runner_write_manifest(r, job_stage_names[st], err);
  for (int i = 0; i < n && !rc && !g_stop; i++) {
    str_list full;
    runner_full_argv(r, st, &c[i], &full);
    fprintf(stderr, "[cmds-run] %s: ", job_stage_names[st]);
    print_argv(stderr, &full);
    int code = run_child(full.v, omp);
    if (code) {
      rc = CMDS_FAIL(err, code == CMDS_EINTERRUPTED || code == 130 || code == 143 || g_stop ? CMDS_EINTERRUPTED : CMDS_EINPUT,
                     "stage %s: %s exited with status %d (its messages are above); fix the cause and run "
                     "cmds-run again: finished work is kept",
                     job_stage_names[st], c[i].argv.v[0], code);
    }
    sl_free(&full);
  }
  runner_cmds_free(c, n);
  r->ranks_override = saved_override;
  if (!rc && g_stop) rc = CMDS_FAIL(err, CMDS_EINTERRUPTED, "stopped by signal %d; run cmds-run again to resume", (int)g_stop);
  double el = cmds_now() - t0;
  int did_work = began && (pending || runner_outputs_signature(r, st, task_index) != outputs_before); /* else it only skipped */
  /* Later stages lose their state before this one is recorded (a kill in between only makes
   * them check again), also when this run failed after changing outputs; array tasks of this
   * stage leave each other's alone. */
  if (did_work) {
    cmds_error e3 = {0};
    int irc = runner_invalidate_after(r, st, rc ? &e3 : err);
    if (!rc) rc = irc;
  }
  if (!rc) {
    char missing[4096];
    int complete = runner_outputs_complete(r, st, missing, sizeof missing);
    if (task_index < 0 && !complete)
      rc = CMDS_FAIL(err, CMDS_EINTERNAL, "stage %s finished but %s is missing", job_stage_names[st], missing);
    if (!rc) runner_work_end(r, st, task_index);
    /* an array task: the stage is done when every unit's outputs exist */
    if (!rc && complete) rc = runner_mark_done(r, st, el, started, did_work, err);
    if (!rc) fprintf(stderr, "[cmds-run] %s: done in %.1f s\n", job_stage_names[st], el);
  }
  cmds_error e2 = {0};
  runner_write_manifest(r, NULL, &e2);
  return rc;
}

static void print_tables(const runner *r) {
  const job_spec *s = r->spec;
  for (int e = 0; e < s->nexp; e++) {
    char p[4400];
    snprintf(p, sizeof p, "%s/report/%s/results.md", s->run, s->exps[e].name);
    FILE *f = fopen(p, "r");
    if (!f) continue;
    printf("\n==== experiment %s (%s) ====\n\n", s->exps[e].name, p);
    char line[8192];
    while (fgets(line, sizeof line, f)) fputs(line, stdout);
    fclose(f);
  }
}

int main(int argc, char **argv) {
  const char *spec_path = NULL, *stage_name = NULL, *bin = NULL, *launcher = "mpiexec", *slurm_dir = NULL;
  int dry = 0, nranks = 0, task_index = -1, slurm = 0, no_submit = 0;
  cmds_error err = {0};
  int rc = CMDS_OK;
  for (int i = 1; i < argc && !rc; i++) {
    const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(o, "--dry-run")) { dry = 1; continue; }
    if (!strcmp(o, "--slurm")) { slurm = 1; continue; }
    if (!strcmp(o, "--no-submit")) { no_submit = 1; continue; }
    if (o[0] != '-') {
      if (spec_path) rc = CMDS_FAIL(&err, CMDS_EINPUT, "two specs given: %s and %s", spec_path, o);
      spec_path = o;
      continue;
    }
    if (!v) {
      rc = CMDS_FAIL(&err, CMDS_EINPUT, "%s needs a value (see --help)", o);
      break;
    }
    i++;
    char *end;
    long n = strtol(v, &end, 10);
    if (!strcmp(o, "-n") && !*end && n > 0 && n <= 100000) nranks = (int)n;
    else if (!strcmp(o, "--task-index") && !*end && n >= 0) task_index = (int)n;
    else if (!strcmp(o, "--stage")) stage_name = v;
    else if (!strcmp(o, "--bin")) bin = v;
    else if (!strcmp(o, "--slurm-dir")) slurm_dir = v;
    else if (!strcmp(o, "--launcher") && (!strcmp(v, "mpiexec") || !strcmp(v, "srun") || !strcmp(v, "none"))) launcher = v;
    else rc = CMDS_FAIL(&err, CMDS_EINPUT, "bad option or value: %s %s (see --help)", o, v);
  }
  if (!rc && !spec_path) rc = CMDS_FAIL(&err, CMDS_EINPUT, "no job spec given (see --help)");
  int only = -1;
  if (!rc && stage_name && (only = job_stage_find(stage_name)) < 0)
    rc = CMDS_FAIL(&err, CMDS_EINPUT, "--stage: unknown stage '%s'", stage_name);
  if (!rc && task_index >= 0 && only != ST_TRAIN && only != ST_SCORE)
    rc = CMDS_FAIL(&err, CMDS_EINPUT, "--task-index needs --stage train or --stage score");
  if (rc) {
    fprintf(stderr, "cmds-run: error: %s\n", err.msg);
    return rc;
  }
  job_spec spec;
  job_plan plan = {0};
  rc = job_spec_load(spec_path, &spec, &err);
  if (!rc) rc = job_plan_build(&spec, &plan, &err);
  runner r = {.spec = &spec, .plan = &plan, .ranks_override = nranks, .argc = argc, .argv = argv};
  snprintf(r.launcher, sizeof r.launcher, "%s", launcher);
  if (bin) snprintf(r.bin, sizeof r.bin, "%s", bin);
  else self_dir(r.bin, sizeof r.bin);
  if (!rc && only == ST_AUGMENT && !spec.aug.sd)
    rc = CMDS_FAIL(&err, CMDS_EINPUT, "--stage augment: %s has no augment: {sd: DIR} block", spec_path);
  if (!rc && only == ST_ESTIMATE && !spec.est.marigold)
    rc = CMDS_FAIL(&err, CMDS_EINPUT, "--stage estimate: %s has no estimate: {marigold: DIR} block", spec_path);
  if (!rc && task_index >= 0 && task_index >= plan.nu)
    rc = CMDS_FAIL(&err, CMDS_EINPUT, "--task-index %d: the job has %d training units (0..%d)", task_index, plan.nu, plan.nu - 1);
  if (!rc && dry && !slurm) {
    print_plan(&r);
    job_plan_free(&plan);
    job_spec_free(&spec);
    return 0;
  }
  if (!rc) weights_identity(&r);
  if (!rc && slurm) {
    rc = runner_write_tasks(&r, &err);
    if (!rc) rc = runner_write_manifest(&r, NULL, &err);
    if (!rc) rc = slurm_submit(&r, slurm_dir, no_submit || dry, &err);
  } else if (!rc) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    rc = cmds_mkdir_p(spec.run, &err);
    /* One cmds-run per RUN at a time. The lock descriptor is inherited by the stages, so a
     * new cmds-run also waits for the stages of a killed one to finish stopping. Array tasks
     * (--task-index) run side by side and do not lock. */
    int lock_fd = -1;
    if (!rc && task_index < 0) {
      char lp[4200];
      snprintf(lp, sizeof lp, "%s/.cmds-run.lock", spec.run);
      lock_fd = open(lp, O_RDWR | O_CREAT, 0644);
      if (lock_fd < 0) rc = CMDS_FAIL(&err, CMDS_EIO, "%s: cannot open: %s", lp, strerror(errno));
      else if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr, "[cmds-run] %s is in use by another cmds-run (or the stages of a stopped one); waiting\n", spec.run);
        while (flock(lock_fd, LOCK_EX) != 0 && errno == EINTR && !g_stop) {
        }
        if (g_stop) rc = CMDS_FAIL(&err, CMDS_EINTERRUPTED, "stopped while waiting for the lock");
      }
    }
    if (!rc && (task_index < 0 || only == ST_TRAIN)) rc = runner_write_tasks(&r, &err);
    for (int st = 0; st < JOB_NSTAGES && !rc; st++) {
      if (only >= 0 ? st != only : !spec.stage_on[st]) continue;
      if (task_index < 0 && runner_stage_is_done(&r, st)) {
        fprintf(stderr, "[cmds-run] %s: done in an earlier run, skipped\n", job_stage_names[st]);
        continue;
      }
      rc = run_stage(&r, st, task_index, &err);
    }
    /* The tables at the end of a whole run, and in the report job's output under Slurm. */
    if (!rc && (only < 0 ? spec.stage_on[ST_REPORT] : only == ST_REPORT)) print_tables(&r);
    if (!rc && only < 0) fprintf(stderr, "[cmds-run] job %s complete: %s/manifest.json\n", spec.name, spec.run);
    if (lock_fd >= 0) close(lock_fd);
  }
  if (rc) fprintf(stderr, "cmds-run: error (%s): %s\n", cmds_error_name(rc), err.msg);
  job_plan_free(&plan);
  job_spec_free(&spec);
  return rc;
}
