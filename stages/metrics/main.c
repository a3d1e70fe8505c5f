/* cmds-metrics: the `metrics` stage. Scores anomaly maps against ground truth (METHOD.md
 * section 1): I-AUROC, P-AUROC, AUPRO at FPR 0.30 / 0.10 / 0.05 / 0.01 and the PRO curve,
 * exactly, for any number of ranks.
 *
 *   mpiexec -n R cmds-metrics (--maps FILE [--maps FILE ...] | --list FILE)
 *                [--out FILE | --out-dir DIR] [--curve exact|thresholds:N]
 *                [--label KEY=VALUE ...] [--force] [--batch-pixels P]
 *
 * Work sharing: with J results and R ranks, the ranks form G = min(J, R) groups (rank
 * r in group r % G); group g computes results g, g + G, ... with all of its ranks, each
 * reading a contiguous block of the images. One big result therefore uses every rank,
 * many small ones run side by side (--groups caps G). The numbers never depend on R or G (integer and
 * fixed-point reductions, see metrics_compute.h). A result that is complete and current
 * (it records the maps' maps_id; for maps without one: not older than them) is skipped
 * unless --force (metrics_result_status in result_write.h). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds_mpi.h"
#include "fsutil.h"
#include "metrics_compute.h"
#include "record.h"
#include "result_write.h"

typedef struct metrics_args {
  metrics_job *jobs;
  int n_jobs;
  const char *out, *out_dir, *list;
  char curve[32];
  metrics_options opt;
  char **labels;
  int n_labels, force, groups;
} metrics_args;

static void usage(FILE *f) {
  fprintf(f,
          "usage: cmds-metrics (--maps FILE [--maps FILE ...] | --list FILE) [options]\n"
          "  --maps FILE            a maps file (schemas/maps_v1.md); repeatable\n"
          "  --list FILE            lines 'maps.h5 result.json [KEY=VALUE ...]' ('#' comments)\n"
          "  --out FILE             result JSON (only with one --maps)\n"
          "  --out-dir DIR          results as DIR/<maps name>.metrics.json\n"
          "                         (default: beside each maps file)\n"
          "  --curve C              exact (default, MVTec's compute_pro) or thresholds:N\n"
          "                         (the M3DM/CFM approximation with N thresholds)\n"
          "  --label KEY=VALUE      written into the JSON and CSV (method, setting, dataset,\n"
          "                         category, shot are CSV columns); repeatable\n"
          "  --force                recompute results that are complete and current (the\n"
          "                         maps' maps_id recorded; maps without one: by mtime)\n"
          "  --batch-pixels P       pixels read at once per rank (default 16777216)\n"
          "  --groups G             results computed side by side (default min(results,\n"
          "                         ranks)); 1 = every rank on each result in turn\n"
          "Writes <out>.json, <out>.csv, <out>.pro.tsv and the stage record <out>.record.json.\n");
}

/* KEY: letters, digits, '_', '-', '.'; VALUE: no ',', ';', '"', '=' or control characters
 * (the CSV and the labels column stay plain). */
static int label_check(const char *s, const char *where, cmds_error *err) {
  const char *eq = strchr(s, '=');
  int ok = eq && eq > s && eq - s < 200;
  for (const char *p = s; ok && p < eq; p++) ok = isalnum((unsigned char)*p) || strchr("_-.", *p);
  for (const char *p = eq ? eq + 1 : s; ok && *p; p++)
    ok = !strchr(",;\"=", *p) && !iscntrl((unsigned char)*p);
  if (!ok)
    return CMDS_FAIL(err, CMDS_EINPUT,
                     "%s: label '%s': expected KEY=VALUE (KEY of letters, digits, _-.; VALUE "
                     "without , ; \" =)",
                     where, s);
  return CMDS_OK;
}

static void job_add(metrics_args *a, const char *maps, const char *out) {
  a->jobs = cmds_xrealloc(a->jobs, (size_t)(a->n_jobs + 1) * sizeof *a->jobs);
  metrics_job *j = &a->jobs[a->n_jobs++];
  memset(j, 0, sizeof *j);
  j->maps = cmds_xstrdup(maps);
  j->out = out ? cmds_xstrdup(out) : NULL;
  j->labels = cmds_xmalloc((size_t)(a->n_labels + 1) * sizeof *j->labels);
  for (int i = 0; i < a->n_labels; i++) j->labels[j->n_labels++] = cmds_xstrdup(a->labels[i]);
}

static void job_label(metrics_job *j, const char *l) {
  j->labels = cmds_xrealloc(j->labels, (size_t)(j->n_labels + 1) * sizeof *j->labels);
  j->labels[j->n_labels++] = cmds_xstrdup(l);
}

static int read_list(metrics_args *a, cmds_error *err) {
  FILE *f = fopen(a->list, "r");
  if (!f) return CMDS_FAIL(err, CMDS_EIO, "--list %s: cannot open", a->list);
  char line[8192];
  int ln = 0, rc = CMDS_OK;
  while (!rc && fgets(line, sizeof line, f)) {
    ln++;
    char *save = NULL, *tok[64];
    int nt = 0;
    for (char *t = strtok_r(line, " \t\r\n", &save); t && nt < 64; t = strtok_r(NULL, " \t\r\n", &save))
      tok[nt++] = t;
    if (nt == 0 || tok[0][0] == '#') continue;
    char where[4200];
    snprintf(where, sizeof where, "%s line %d", a->list, ln);
    if (nt < 2) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: expected 'maps.h5 result.json [KEY=VALUE ...]'", where);
      break;
    }
    job_add(a, tok[0], tok[1]);
    for (int k = 2; k < nt && !rc; k++) {
      rc = label_check(tok[k], where, err);
      if (!rc) job_label(&a->jobs[a->n_jobs - 1], tok[k]);
    }
  }
  fclose(f);
  if (!rc && a->n_jobs == 0) rc = CMDS_FAIL(err, CMDS_EINPUT, "--list %s: no results listed", a->list);
  return rc;
}

static int parse_args(int argc, char **argv, metrics_args *a, cmds_error *err) {
  memset(a, 0, sizeof *a);
  snprintf(a->curve, sizeof a->curve, "exact");
  a->opt.batch_pixels = (int64_t)1 << 24;
  char **maps = cmds_xcalloc((size_t)argc, sizeof *maps);
  a->labels = cmds_xcalloc((size_t)argc, sizeof *a->labels);
  int n_maps = 0, rc = CMDS_OK;
  for (int i = 1; i < argc && !rc; i++) {
    const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
      free(maps);
      return -1;
    }
    if (!strcmp(o, "--force")) {
      a->force = 1;
      continue;
    }
    if (!v) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s needs a value (see --help)", o);
      break;
    }
    i++;
    if (!strcmp(o, "--maps")) maps[n_maps++] = (char *)v;
    else if (!strcmp(o, "--list")) a->list = v;
    else if (!strcmp(o, "--out")) a->out = v;
    else if (!strcmp(o, "--out-dir")) a->out_dir = v;
    else if (!strcmp(o, "--label")) {
      rc = label_check(v, "--label", err);
      a->labels[a->n_labels++] = (char *)v;
    } else if (!strcmp(o, "--curve")) {
      char *end = NULL;
      long n = 0;
      if (!strncmp(v, "thresholds:", 11)) n = strtol(v + 11, &end, 10);
      if (!strcmp(v, "exact")) a->opt.thresholds = 0;
      else if (end && !*end && n >= 2 && n <= 1000000) a->opt.thresholds = (int)n;
      else rc = CMDS_FAIL(err, CMDS_EINPUT, "--curve: expected exact or thresholds:N (2 <= N <= 1000000), got '%s'", v);
      snprintf(a->curve, sizeof a->curve, "%s", v);
    } else if (!strcmp(o, "--groups")) {
      char *end = NULL;
      long n = strtol(v, &end, 10);
      if (*end || n < 1 || n > 1000000) rc = CMDS_FAIL(err, CMDS_EINPUT, "--groups: expected a positive integer, got '%s'", v);
      a->groups = (int)n;
    } else if (!strcmp(o, "--batch-pixels")) {
      char *end = NULL;
      long long n = strtoll(v, &end, 10);
      if (*end || n < 1) rc = CMDS_FAIL(err, CMDS_EINPUT, "--batch-pixels: expected a positive integer, got '%s'", v);
      a->opt.batch_pixels = n;
    } else rc = CMDS_FAIL(err, CMDS_EINPUT, "unknown option '%s' (see --help)", o);
  }
  if (!rc && (n_maps > 0) == (a->list != NULL))
    rc = CMDS_FAIL(err, CMDS_EINPUT, "give --maps FILE (one or more) or --list FILE (see --help)");
  if (!rc && a->out && (n_maps != 1 || a->out_dir))
    rc = CMDS_FAIL(err, CMDS_EINPUT, "--out FILE needs exactly one --maps and no --out-dir");
  if (!rc && a->list && (a->out || a->out_dir))
    rc = CMDS_FAIL(err, CMDS_EINPUT, "--list names each output; drop --out / --out-dir");
  for (int i = 0; !rc && i < n_maps; i++) job_add(a, maps[i], a->out);
  if (!rc && a->list) rc = read_list(a, err);
  free(maps);
  /* default outputs: <maps without .h5>.metrics.json, beside it or in --out-dir */
  for (int i = 0; !rc && i < a->n_jobs; i++) {
    metrics_job *j = &a->jobs[i];
    if (j->out) continue;
    const char *base = a->out_dir ? (strrchr(j->maps, '/') ? strrchr(j->maps, '/') + 1 : j->maps) : j->maps;
    size_t n = strlen(base);
    if (n > 3 && !strcmp(base + n - 3, ".h5")) n -= 3;
    char path[8192];
    snprintf(path, sizeof path, "%s%s%.*s.metrics.json", a->out_dir ? a->out_dir : "",
             a->out_dir ? "/" : "", (int)n, base);
    j->out = cmds_xstrdup(path);
  }
  return rc;
}

static void args_free(metrics_args *a) {
  for (int i = 0; i < a->n_jobs; i++) {
    for (int k = 0; k < a->jobs[i].n_labels; k++) free(a->jobs[i].labels[k]);
    free(a->jobs[i].labels);
    free(a->jobs[i].maps);
    free(a->jobs[i].out);
  }
  free(a->jobs);
  free(a->labels);
}

/* One result by the ranks of `grp`: compute, write (group rank 0), stage record. */
static int run_job(const cmds_mpi *grp, const metrics_args *a, const metrics_job *job, int why, int argc,
                   char **argv, cmds_error *err) {
  cmds_record rec;
  cmds_record_begin(&rec, "metrics", argc, argv, grp);
  char rec_path[8300];
  metrics_out_path(job->out, ".record.json", rec_path, sizeof rec_path);
  metrics_result res;
  int rc = metrics_compute(grp, job->maps, &a->opt, &res, err);
  if (!rc) { /* metrics_compute agreed already on failure; this agrees on the writing */
    if (grp->rank == 0) {
      char dir[8192];
      snprintf(dir, sizeof dir, "%s", job->out);
      char *slash = strrchr(dir, '/');
      if (slash && slash != dir) {
        *slash = 0;
        rc = cmds_mkdir_p(dir, err);
      }
      if (!rc) rc = metrics_result_write(job, a->curve, &res, err);
    }
    rc = cmds_mpi_agree(grp, err, rc);
  }
  cmds_json_kv_str(&rec.json, "curve", a->curve);
  cmds_json_kv_str(&rec.json, "measured_because", metrics_status_word(why));
  if (!rc) metrics_result_record(&rec.json, job, &res);
  else cmds_json_kv_str(&rec.json, "error", err->msg);
  char status[64];
  snprintf(status, sizeof status, rc ? "failed: %s" : "ok", cmds_error_name(rc));
  cmds_error e2;
  if (grp->rank == 0 && !rc)
    printf("%s: I-AUROC %.4f  P-AUROC %.4f  AUPRO@30%% %.4f  @10%% %.4f  @5%% %.4f  @1%% %.4f\n",
           job->out, res.i_auroc, res.p_auroc, res.aupro[0], res.aupro[1], res.aupro[2],
           res.aupro[3]);
  cmds_record_finish(&rec, rec_path, status, &e2);
  metrics_result_free(&res);
  return rc;
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  metrics_args a;
  cmds_error err = {0};
  int rc = parse_args(argc, argv, &a, &err);
  if (rc < 0) {
    if (mpi.rank == 0) usage(stdout);
    args_free(&a);
    return cmds_mpi_finalize(&mpi, 0);
  }
  rc = cmds_mpi_agree(&mpi, &err, rc);
  if (rc) {
    args_free(&a);
    return cmds_mpi_finalize(&mpi, rc);
  }
  /* resume: rank 0 decides which results are current, before anyone writes; pending[i] is
   * why result i is measured (METRICS_CURRENT = 0: skipped), see metrics_result_status */
  unsigned char *pending = cmds_xmalloc((size_t)a.n_jobs);
  for (int i = 0; i < a.n_jobs; i++)
    pending[i] = (unsigned char)(mpi.rank != 0 ? 0
                                 : a.force    ? METRICS_FORCED
                                              : metrics_result_status(a.jobs[i].out, a.curve, a.jobs[i].maps));
  MPI_CHECK(MPI_Bcast(pending, a.n_jobs, MPI_UNSIGNED_CHAR, 0, mpi.comm));
  int n_pending = 0;
  for (int i = 0; i < a.n_jobs; i++) {
    n_pending += pending[i] != METRICS_CURRENT;
    if (mpi.rank != 0) continue;
    if (pending[i] == METRICS_CURRENT) printf("%s: complete, skipped (--force recomputes)\n", a.jobs[i].out);
    else if (pending[i] != METRICS_NO_RESULT && pending[i] != METRICS_FORCED)
      printf("%s: measured again: %s\n", a.jobs[i].out, metrics_status_word(pending[i]));
  }
  int groups = n_pending < mpi.size ? n_pending : mpi.size;
  if (a.groups > 0 && a.groups < groups) groups = a.groups;
  int worst = CMDS_OK;
  if (groups > 0) {
    cmds_mpi grp = mpi;
    int color = mpi.rank % groups;
    MPI_CHECK(MPI_Comm_split(mpi.comm, color, mpi.rank, &grp.comm));
    MPI_CHECK(MPI_Comm_rank(grp.comm, &grp.rank));
    MPI_CHECK(MPI_Comm_size(grp.comm, &grp.size));
    for (int i = 0, k = 0; i < a.n_jobs; i++) {
      if (pending[i] == METRICS_CURRENT) continue;
      if (k++ % groups != color) continue;
      cmds_error e = {0};
      int jrc = run_job(&grp, &a, &a.jobs[i], pending[i], argc, argv, &e);
      if (jrc && !worst) worst = jrc;
    }
    MPI_CHECK(MPI_Comm_free(&grp.comm));
  }
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_INT, MPI_MAX, mpi.comm));
  free(pending);
  args_free(&a);
  return cmds_mpi_finalize(&mpi, worst);
}
