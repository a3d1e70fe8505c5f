/* cmds-report: tables and plots in the paper's shape from the CSV sidecars that
 * cmds-metrics writes (one row per result, schemas/metrics_result_v1.md).
 *
 *   cmds-report --out DIR [--param KEY] [--metric M] [--curves KEY=VALUE[,KEY=VALUE...]]
 *               [--max-curves N] INPUT...
 *
 * INPUT: result CSV files, or folders whose *.csv files with the cmds-metrics header are
 * read (others are skipped). Writes into DIR:
 *   results.md                    per dataset: the main table (rows = methods/settings,
 *                                 columns = categories + mean, cells I-AUROC/AUPRO@30%,
 *                                 3 decimals, one block per shot) and the strict-FPR table
 *                                 (AUPRO@10%/5%/1% per category and shot)
 *   main_<dataset>.csv, strict_<dataset>.csv   the same tables as CSV
 *   pro_curves.png (+ .gp, data/)  PRO vs FPR up to 0.3 for the selected results (Fig. 6)
 *   param_<KEY>.png (+ .gp, .dat)  mean metric over categories vs the label KEY (Fig. 5)
 * Plots are drawn by gnuplot (pngcairo, else png); without gnuplot the tables are still
 * written and the program says so. A mean over categories marked '*' misses some
 * categories (or has undefined values); '-' is a missing result, 'n/a' an undefined one. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmds_error.h"
#include "fsutil.h"

#define CSV_HEADER                                                                        \
  "method,setting,dataset,category,shot,i_auroc,p_auroc,aupro_30,aupro_10,aupro_05,"      \
  "aupro_01,curve,labels,pro_curve,maps"
#define NCOL 15

enum { M_I = 0, M_P, M_A30, M_A10, M_A05, M_A01, NMETRIC };
static const char *const metric_names[NMETRIC] = {"i_auroc", "p_auroc", "aupro_30",
                                                  "aupro_10", "aupro_05", "aupro_01"};

typedef struct result_row {
  char *col[NCOL];
  double m[NMETRIC]; /* NAN = undefined */
  char *row_name;    /* method, or "method (setting)" */
  char *src;         /* the CSV it came from */
  char *curve_path;  /* pro_curve resolved beside the CSV */
} result_row;

typedef struct report {
  result_row *v;
  int n;
} report;

/* ---- reading ------------------------------------------------------------------ */

/* Splits one CSV line (RFC 4180 quotes) into at most NCOL fields. Returns the count. */
static int csv_split(const char *line, char **out) {
  int n = 0;
  const char *p = line;
  while (n < NCOL) {
    size_t cap = strlen(p) + 1, len = 0;
    char *f = cmds_xmalloc(cap);
    if (*p == '"') {
      p++;
      while (*p) {
        if (*p == '"' && p[1] == '"') {
          f[len++] = '"';
          p += 2;
        } else if (*p == '"') {
          p++;
          break;
        } else {
          f[len++] = *p++;
        }
      }
    } else {
      while (*p && *p != ',' && *p != '\n' && *p != '\r') f[len++] = *p++;
    }
    f[len] = 0;
    out[n++] = f;
    if (*p != ',') break;
    p++;
  }
  return n;
}

static double parse_metric(const char *s, const char *src, const char *what, int *bad) {
  if (!*s) return NAN;
  char *end;
  double v = strtod(s, &end);
  if (*end || !isfinite(v)) {
    fprintf(stderr, "cmds-report: %s: %s = '%s' is not a number\n", src, what, s);
    *bad = 1;
  }
  return v;
}

/* 0: read (or skipped when not a cmds-metrics CSV); CMDS_EINPUT on a malformed row. */
static int read_csv(report *r, const char *path, int explicit_file, cmds_error *err) {
  FILE *f = fopen(path, "r");
  if (!f) return CMDS_FAIL(err, CMDS_EIO, "%s: cannot open", path);
  char line[65536];
  if (!fgets(line, sizeof line, f) || strncmp(line, CSV_HEADER, strlen(CSV_HEADER)) != 0) {
    fclose(f);
    if (explicit_file)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: not a cmds-metrics CSV (expected the header '%s')",
                       path, CSV_HEADER);
    return CMDS_OK;
  }
  int ln = 1, rc = CMDS_OK;
  while (!rc && fgets(line, sizeof line, f)) {
    ln++;
    if (line[0] == '\n' || line[0] == 0) continue;
    char *fld[NCOL];
    int n = csv_split(line, fld);
    if (n != NCOL) {
      for (int k = 0; k < n; k++) free(fld[k]);
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s line %d: %d fields, expected %d", path, ln, n, NCOL);
      break;
    }
    r->v = cmds_xrealloc(r->v, (size_t)(r->n + 1) * sizeof *r->v);
    result_row *row = &r->v[r->n++];
    memset(row, 0, sizeof *row);
    int bad = 0;
    for (int k = 0; k < NCOL; k++) row->col[k] = fld[k];
    for (int k = 0; k < NMETRIC; k++) row->m[k] = parse_metric(fld[5 + k], path, metric_names[k], &bad);
    if (bad) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s line %d: a metric is not a number", path, ln);
    size_t nl = strlen(fld[0]) + strlen(fld[1]) + 8;
    row->row_name = cmds_xmalloc(nl);
    if (fld[1][0]) snprintf(row->row_name, nl, "%s (%s)", fld[0][0] ? fld[0] : "?", fld[1]);
    else snprintf(row->row_name, nl, "%s", fld[0][0] ? fld[0] : "?");
    row->src = cmds_xstrdup(path);
    if (fld[13][0]) {
      char dir[4096];
      snprintf(dir, sizeof dir, "%s", path);
      char *slash = strrchr(dir, '/');
      if (slash) *slash = 0;
      else snprintf(dir, sizeof dir, ".");
      size_t cl = strlen(dir) + strlen(fld[13]) + 2;
      row->curve_path = cmds_xmalloc(cl);
      snprintf(row->curve_path, cl, "%s/%s", dir, fld[13]);
    }
  }
  fclose(f);
  return rc;
}

static int read_input(report *r, const char *path, cmds_error *err) {
  if (!cmds_is_dir(path)) return read_csv(r, path, 1, err);
  char **names;
  int n = cmds_list_dir(path, ".csv", 1, &names, err);
  if (n < 0) return err->code;
  int rc = CMDS_OK;
  for (int i = 0; i < n && !rc; i++) {
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", path, names[i]);
    rc = read_csv(r, p, 0, err);
  }
  cmds_free_list(names, n);
  return rc;
}

static void report_free(report *r) {
  for (int i = 0; i < r->n; i++) {
    for (int k = 0; k < NCOL; k++) free(r->v[i].col[k]);
    free(r->v[i].row_name);
    free(r->v[i].src);
    free(r->v[i].curve_path);
  }
  free(r->v);
}

/* ---- tables ----------------------------------------------------------------------- */

enum { C_METHOD = 0, C_SETTING, C_DATASET, C_CATEGORY, C_SHOT };

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Shots sort numerically when they are numbers. */
static int cmp_shot(const void *a, const void *b) {
  const char *x = *(const char *const *)a, *y = *(const char *const *)b;
  char *ex, *ey;
  double dx = strtod(x, &ex), dy = strtod(y, &ey);
  if (*x && *y && !*ex && !*ey && dx != dy) return dx < dy ? -1 : 1;
  return strcmp(x, y);
}

/* Sorted distinct values of a field over rows matching (dataset, shot) when given. */
static int distinct(const report *r, int which, const char *dataset, const char *shot,
                    const char ***out, int (*cmp)(const void *, const void *)) {
  const char **v = cmds_xmalloc((size_t)(r->n + 1) * sizeof *v);
  int n = 0;
  for (int i = 0; i < r->n; i++) {
    if (dataset && strcmp(r->v[i].col[C_DATASET], dataset)) continue;
    if (shot && strcmp(r->v[i].col[C_SHOT], shot)) continue;
    const char *s = which < 0 ? r->v[i].row_name : r->v[i].col[which];
    int seen = 0;
    for (int k = 0; k < n && !seen; k++) seen = !strcmp(v[k], s);
    if (!seen) v[n++] = s;
  }
  qsort(v, (size_t)n, sizeof *v, cmp);
  *out = v;
  return n;
}

static const result_row *find(const report *r, const char *dataset, const char *shot,
                              const char *row_name, const char *category) {
  for (int i = 0; i < r->n; i++) {
    const result_row *x = &r->v[i];
    if (!strcmp(x->col[C_DATASET], dataset) && !strcmp(x->col[C_SHOT], shot) &&
        !strcmp(x->row_name, row_name) && !strcmp(x->col[C_CATEGORY], category))
      return x;
  }
  return NULL;
}

/* Two results for the same table cell would make the table ambiguous. */
static int check_duplicates(const report *r, cmds_error *err) {
  for (int i = 0; i < r->n; i++)
    for (int j = i + 1; j < r->n; j++) {
      const result_row *a = &r->v[i], *b = &r->v[j];
      if (!strcmp(a->col[C_DATASET], b->col[C_DATASET]) && !strcmp(a->col[C_SHOT], b->col[C_SHOT]) &&
          !strcmp(a->row_name, b->row_name) && !strcmp(a->col[C_CATEGORY], b->col[C_CATEGORY]))
        return CMDS_FAIL(err, CMDS_EINPUT,
                         "%s and %s: two results for %s / shot %s / %s / %s (give them different "
                         "method or setting labels)",
                         a->src, b->src, a->col[C_DATASET], a->col[C_SHOT], a->row_name,
                         a->col[C_CATEGORY]);
    }
  return CMDS_OK;
}

static void fmt3(char *buf, size_t cap, double v) {
  if (isnan(v)) snprintf(buf, cap, "n/a");
  else snprintf(buf, cap, "%.3f", v);
}

/* Cell text for metrics ms[0..nm) of one result ("-" when missing). */
static void cell(char *buf, size_t cap, const result_row *x, const int *ms, int nm) {
  size_t len = 0;
  buf[0] = 0;
  for (int k = 0; k < nm; k++) {
    char v[32];
    if (x) fmt3(v, sizeof v, x->m[ms[k]]);
    else snprintf(v, sizeof v, "-");
    len += (size_t)snprintf(buf + len, cap - len, "%s%s", k ? "/" : "", v);
  }
}

/* Mean over categories of each metric; '*' when some category is missing or undefined. */
static void mean_cell(char *buf, size_t cap, const report *r, const char *ds, const char *shot,
                      const char *row, const char **cats, int ncat, const int *ms, int nm) {
  size_t len = 0;
  int partial = 0;
  for (int k = 0; k < nm; k++) {
    double s = 0;
    int c = 0;
    for (int q = 0; q < ncat; q++) {
      const result_row *x = find(r, ds, shot, row, cats[q]);
      if (x && !isnan(x->m[ms[k]])) {
        s += x->m[ms[k]];
        c++;
      } else {
        partial = 1;
      }
    }
    char v[32];
    fmt3(v, sizeof v, c ? s / c : NAN);
    len += (size_t)snprintf(buf + len, cap - len, "%s%s", k ? "/" : "", v);
  }
  if (partial) snprintf(buf + len, cap - len, "*");
}

/* One table (main or strict) of one dataset, as Markdown into md and CSV into csv. */
static void write_table(FILE *md, FILE *csv, const report *r, const char *ds, const int *ms,
                        int nm, const char *title) {
  const char **cats, **shots;
  int ncat = distinct(r, C_CATEGORY, ds, NULL, &cats, cmp_str);
  int nshot = distinct(r, C_SHOT, ds, NULL, &shots, cmp_shot);
  fprintf(md, "## %s: %s\n\n", ds[0] ? ds : "(no dataset)", title);
  fprintf(csv, "shot,method");
  for (int q = 0; q < ncat; q++) fprintf(csv, ",%s", cats[q]);
  fprintf(csv, ",mean\n");
  for (int s = 0; s < nshot; s++) {
    const char **rows;
    int nrow = distinct(r, -1, ds, shots[s], &rows, cmp_str);
    fprintf(md, "### %s-shot\n\n| Method |", shots[s][0] ? shots[s] : "?");
    for (int q = 0; q < ncat; q++) fprintf(md, " %s |", cats[q]);
    fprintf(md, " Mean |\n|---|");
    for (int q = 0; q <= ncat; q++) fprintf(md, "---|");
    fprintf(md, "\n");
    for (int i = 0; i < nrow; i++) {
      char c[128];
      fprintf(md, "| %s |", rows[i]);
      fprintf(csv, "%s,%s", shots[s], rows[i]);
      for (int q = 0; q < ncat; q++) {
        cell(c, sizeof c, find(r, ds, shots[s], rows[i], cats[q]), ms, nm);
        fprintf(md, " %s |", c);
        fprintf(csv, ",%s", c);
      }
      mean_cell(c, sizeof c, r, ds, shots[s], rows[i], cats, ncat, ms, nm);
      fprintf(md, " %s |\n", c);
      fprintf(csv, ",%s\n", c);
    }
    fprintf(md, "\n");
    free(rows);
  }
  free(cats);
  free(shots);
}

static int write_tables(const report *r, const char *out, cmds_error *err) {
  char path[8192];
  snprintf(path, sizeof path, "%s/results.md", out);
  FILE *md = fopen(path, "w");
  if (!md) return CMDS_FAIL(err, CMDS_EIO, "%s: cannot write", path);
  fprintf(md, "# Results\n\nCells: 3 decimals; '-' no result, 'n/a' undefined (e.g. no "
              "anomalous sample), '*' mean over the categories available.\n\n");
  const char **dss;
  int nds = distinct(r, C_DATASET, NULL, NULL, &dss, cmp_str);
  static const int main_ms[2] = {M_I, M_A30}, strict_ms[3] = {M_A10, M_A05, M_A01};
  int rc = CMDS_OK;
  for (int d = 0; d < nds && !rc; d++) {
    for (int t = 0; t < 2 && !rc; t++) {
      snprintf(path, sizeof path, "%s/%s_%s.csv", out, t ? "strict" : "main", dss[d][0] ? dss[d] : "none");
      FILE *csv = fopen(path, "w");
      if (!csv) {
        rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot write", path);
        break;
      }
      if (t) write_table(md, csv, r, dss[d], strict_ms, 3, "AUPRO@10% / AUPRO@5% / AUPRO@1%");
      else write_table(md, csv, r, dss[d], main_ms, 2, "I-AUROC / AUPRO@30%");
      fclose(csv);
    }
  }
  free(dss);
  fclose(md);
  return rc;
}

/* ---- plots ------------------------------------------------------------------------ */

static int have_gnuplot(void) {
  const char *path = getenv("PATH");
  if (!path) return 0;
  char *dup = cmds_xstrdup(path), *save = NULL;
  int found = 0;
  for (char *d = strtok_r(dup, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
    char p[4200];
    snprintf(p, sizeof p, "%s/gnuplot", d);
    found = access(p, X_OK) == 0;
  }
  free(dup);
  return found;
}

static const char *terminal(void) {
  static const char *t = NULL;
  if (!t) t = system("gnuplot -e 'set terminal pngcairo' >/dev/null 2>&1") == 0 ? "pngcairo" : "png";
  return t;
}

/* Label value of `key` in a row: a standard column, else the labels column. */
static int row_value(const result_row *x, const char *key, char *buf, size_t cap) {
  static const char *const cols[5] = {"method", "setting", "dataset", "category", "shot"};
  for (int k = 0; k < 5; k++)
    if (!strcmp(key, cols[k])) {
      snprintf(buf, cap, "%s", x->col[k]);
      return x->col[k][0] != 0;
    }
  size_t kl = strlen(key);
  for (const char *p = x->col[12]; p && *p;) {
    if (!strncmp(p, key, kl) && p[kl] == '=') {
      const char *e = strchr(p, ';');
      size_t n = e ? (size_t)(e - p - kl - 1) : strlen(p + kl + 1);
      snprintf(buf, cap, "%.*s", (int)n, p + kl + 1);
      return 1;
    }
    p = strchr(p, ';');
    if (p) p++;
  }
  return 0;
}

static int matches(const result_row *x, const char *filter) {
  if (!filter || !*filter) return 1;
  char *dup = cmds_xstrdup(filter), *save = NULL;
  int ok = 1;
  for (char *t = strtok_r(dup, ",", &save); t && ok; t = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(t, '='), v[512];
    if (!eq) continue;
    *eq = 0;
    ok = row_value(x, t, v, sizeof v) && !strcmp(v, eq + 1);
  }
  free(dup);
  return ok;
}

static void gp_escape(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', f);
    fputc(*s, f);
  }
}

static int run_gnuplot(const char *script, const char *png) {
  char cmd[8400];
  snprintf(cmd, sizeof cmd, "gnuplot '%s'", script);
  int rc = system(cmd);
  if (rc != 0 || !cmds_is_file(png)) {
    fprintf(stderr, "cmds-report: gnuplot failed on %s\n", script);
    return CMDS_EIO;
  }
  printf("wrote %s\n", png);
  return CMDS_OK;
}

static int plot_curves(const report *r, const char *out, const char *filter, int max_curves,
                       cmds_error *err) {
  char data_dir[8192], script[8192], png[8192];
  snprintf(data_dir, sizeof data_dir, "%s/data", out);
  if (cmds_mkdir_p(data_dir, err)) return err->code;
  snprintf(script, sizeof script, "%s/pro_curves.gp", out);
  snprintf(png, sizeof png, "%s/pro_curves.png", out);
  FILE *f = fopen(script, "w");
  if (!f) return CMDS_FAIL(err, CMDS_EIO, "%s: cannot write", script);
  fprintf(f, "set terminal %s noenhanced size 900,650 font ',11'\nset output '%s'\n", terminal(), png);
  fprintf(f, "set xlabel 'FPR'\nset ylabel 'PRO'\nset xrange [0:0.3]\nset yrange [0:1]\n"
             "set key bottom right\nset grid\nset title 'PRO curves (up to FPR 0.3)'\n");
  int n = 0;
  for (int i = 0; i < r->n && n < max_curves; i++) {
    const result_row *x = &r->v[i];
    if (!x->curve_path || !matches(x, filter) || isnan(x->m[M_A30])) continue;
    char copy[8300];
    snprintf(copy, sizeof copy, "%s/curve_%d.tsv", data_dir, n);
    FILE *in = fopen(x->curve_path, "rb");
    if (!in) continue;
    FILE *o = fopen(copy, "wb");
    char buf[65536];
    size_t k;
    while (o && (k = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, k, o);
    fclose(in);
    if (o) fclose(o);
    fprintf(f, "%s '%s' using 1:2 with lines lw 2 title \"", n ? ", \\\n    " : "plot ", copy);
    gp_escape(f, x->row_name);
    fprintf(f, " ");
    gp_escape(f, x->col[C_CATEGORY]);
    fprintf(f, " %s-shot (AUPRO@30%% %.3f)\"", x->col[C_SHOT], x->m[M_A30]);
    n++;
  }
  fprintf(f, "\n");
  fclose(f);
  if (n == 0) {
    printf("no PRO curves to plot (filter '%s')\n", filter ? filter : "");
    return CMDS_OK;
  }
  return run_gnuplot(script, png);
}

typedef struct point {
  double x, y;
  int count;
} point;

static int cmp_point(const void *a, const void *b) {
  double x = ((const point *)a)->x, y = ((const point *)b)->x;
  return (x > y) - (x < y);
}

/* Mean over categories of `metric` against the numeric label `param`, one line per
 * (dataset, shot, method/setting). */
static int plot_param(const report *r, const char *out, const char *param, int metric,
                      cmds_error *err) {
  char dat[8192], script[8192], png[8192];
  snprintf(dat, sizeof dat, "%s/param_%s.dat", out, param);
  snprintf(script, sizeof script, "%s/param_%s.gp", out, param);
  snprintf(png, sizeof png, "%s/param_%s.png", out, param);
  /* series keys */
  char **keys = cmds_xcalloc((size_t)r->n + 1, sizeof *keys);
  int nk = 0;
  for (int i = 0; i < r->n; i++) {
    char v[256], key[1024];
    if (!row_value(&r->v[i], param, v, sizeof v)) continue;
    snprintf(key, sizeof key, "%s %s-shot %s", r->v[i].col[C_DATASET], r->v[i].col[C_SHOT],
             r->v[i].col[C_METHOD]);
    int seen = 0;
    for (int k = 0; k < nk && !seen; k++) seen = !strcmp(keys[k], key);
    if (!seen) keys[nk++] = cmds_xstrdup(key);
  }
  qsort(keys, (size_t)nk, sizeof *keys, cmp_str);
  FILE *d = fopen(dat, "w"), *f = d ? fopen(script, "w") : NULL;
  if (!d || !f) {
    if (d) fclose(d);
    for (int k = 0; k < nk; k++) free(keys[k]);
    free(keys);
    return CMDS_FAIL(err, CMDS_EIO, "%s: cannot write", d ? script : dat);
  }
  fprintf(f, "set terminal %s noenhanced size 900,650 font ',11'\nset output '%s'\n", terminal(), png);
  fprintf(f, "set xlabel \"");
  gp_escape(f, param);
  fprintf(f, "\"\nset ylabel \"%s (mean over categories)\"\nset key bottom right\nset grid\n"
             "set offsets graph 0.05, graph 0.05, graph 0.05, graph 0.05\n",
          metric_names[metric]);
  int plotted = 0;
  for (int k = 0; k < nk; k++) {
    point *p = cmds_xcalloc((size_t)r->n + 1, sizeof *p);
    int np = 0;
    for (int i = 0; i < r->n; i++) {
      char v[256], key[1024], *end;
      const result_row *x = &r->v[i];
      if (!row_value(x, param, v, sizeof v) || isnan(x->m[metric])) continue;
      snprintf(key, sizeof key, "%s %s-shot %s", x->col[C_DATASET], x->col[C_SHOT], x->col[C_METHOD]);
      double xv = strtod(v, &end);
      if (strcmp(key, keys[k]) || *end || !v[0]) continue;
      int q = 0;
      while (q < np && p[q].x != xv) q++;
      if (q == np) p[np++].x = xv;
      p[q].y += x->m[metric];
      p[q].count++;
    }
    qsort(p, (size_t)np, sizeof *p, cmp_point);
    fprintf(d, "# %s\n", keys[k]);
    for (int q = 0; q < np; q++) fprintf(d, "%.10g %.10g\n", p[q].x, p[q].y / p[q].count);
    fprintf(d, "\n\n");
    fprintf(f, "%s '%s' index %d using 1:2 with linespoints lw 2 pt 7 title \"", plotted ? ", \\\n    " : "plot ", dat, k);
    gp_escape(f, keys[k]);
    fprintf(f, "\"");
    plotted++;
    free(p);
  }
  fprintf(f, "\n");
  fclose(f);
  fclose(d);
  for (int k = 0; k < nk; k++) free(keys[k]);
  free(keys);
  if (!plotted) {
    printf("no result has a numeric label '%s': no parameter plot\n", param);
    return CMDS_OK;
  }
  return run_gnuplot(script, png);
}

/* ---- main ---------------------------------------------------------------------- */

static void usage(FILE *f) {
  fprintf(f,
          "usage: cmds-report --out DIR [options] INPUT...\n"
          "  INPUT                result CSVs of cmds-metrics, or folders holding them\n"
          "  --param KEY          plot a metric against the numeric label KEY (Figure 5)\n"
          "  --metric M           metric of that plot: i_auroc (default), p_auroc, aupro_30,\n"
          "                       aupro_10, aupro_05, aupro_01\n"
          "  --curves K=V[,K=V]   results whose PRO curves are plotted (default: all)\n"
          "  --max-curves N       at most N curves (default 12)\n");
}

int main(int argc, char **argv) {
  const char *out = NULL, *param = NULL, *filter = NULL;
  int metric = M_I, max_curves = 12;
  report r = {0};
  cmds_error err = {0};
  int rc = CMDS_OK;
  const char **inputs = cmds_xcalloc((size_t)argc, sizeof *inputs);
  int nin = 0;
  for (int i = 1; i < argc && !rc; i++) {
    const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
      usage(stdout);
      free(inputs);
      return 0;
    }
    if (o[0] != '-') {
      inputs[nin++] = o;
      continue;
    }
    if (!v) {
      rc = CMDS_FAIL(&err, CMDS_EINPUT, "%s needs a value (see --help)", o);
      break;
    }
    i++;
    if (!strcmp(o, "--out")) out = v;
    else if (!strcmp(o, "--param")) param = v;
    else if (!strcmp(o, "--curves")) filter = v;
    else if (!strcmp(o, "--max-curves")) max_curves = atoi(v) > 0 ? atoi(v) : 12;
    else if (!strcmp(o, "--metric")) {
      metric = -1;
      for (int k = 0; k < NMETRIC; k++)
        if (!strcmp(v, metric_names[k])) metric = k;
      if (metric < 0) rc = CMDS_FAIL(&err, CMDS_EINPUT, "--metric: unknown metric '%s'", v);
    } else rc = CMDS_FAIL(&err, CMDS_EINPUT, "unknown option '%s' (see --help)", o);
  }
  if (!rc && (!out || nin == 0)) rc = CMDS_FAIL(&err, CMDS_EINPUT, "--out DIR and at least one INPUT are required (see --help)");
  for (int i = 0; i < nin && !rc; i++) rc = read_input(&r, inputs[i], &err);
  if (!rc && r.n == 0) rc = CMDS_FAIL(&err, CMDS_EINPUT, "no cmds-metrics result CSV found in the inputs");
  if (!rc) rc = check_duplicates(&r, &err);
  if (!rc) rc = cmds_mkdir_p(out, &err);
  if (!rc) rc = write_tables(&r, out, &err);
  if (!rc) printf("wrote %s/results.md (%d results)\n", out, r.n);
  if (!rc) {
    if (!have_gnuplot()) {
      printf("gnuplot not found: plots skipped (tables written)\n");
    } else {
      int prc = plot_curves(&r, out, filter, max_curves, &err);
      if (!prc && param) prc = plot_param(&r, out, param, metric, &err);
      if (prc) rc = prc;
    }
  }
  if (rc && err.msg[0]) fprintf(stderr, "cmds-report: error (%s): %s\n", cmds_error_name(rc), err.msg);
  report_free(&r);
  free(inputs);
  return rc;
}
