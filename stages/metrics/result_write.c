/* result_write: see result_write.h. */
#include "result_write.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fsutil.h"
#include "maps_input.h"
#include "record.h"

const char *metrics_job_label(const metrics_job *job, const char *key) {
  size_t kl = strlen(key);
  const char *found = NULL; /* the last one wins: per-line labels override global ones */
  for (int i = 0; i < job->n_labels; i++)
    if (!strncmp(job->labels[i], key, kl) && job->labels[i][kl] == '=') found = job->labels[i] + kl + 1;
  return found;
}

void metrics_out_path(const char *out_json, const char *suffix, char *buf, size_t cap) {
  size_t n = strlen(out_json);
  if (n >= 5 && !strcmp(out_json + n - 5, ".json")) n -= 5;
  snprintf(buf, cap, "%.*s%s", (int)n, out_json, suffix);
}

static const char *basename_of(const char *p) {
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

/* A column value: label, else the maps file's attribute (dataset, category), else "". */
static const char *column(const metrics_job *job, const metrics_result *res, const char *key) {
  const char *v = metrics_job_label(job, key);
  if (v) return v;
  if (!strcmp(key, "dataset")) return res->dataset;
  if (!strcmp(key, "category")) return res->category;
  return "";
}

static const char *const columns[] = {"method", "setting", "dataset", "category", "shot"};

static void num_or_null(cmds_json *j, const char *key, double v, const char *why_key,
                        const char *why) {
  cmds_json_kv_num(j, key, v); /* NaN is written as null */
  if (!isfinite(v) && why_key) cmds_json_kv_str(j, why_key, why ? why : "undefined");
}

/* Plot points: 10 significant digits are plenty for a figure and keep the file small. */
static char *number_array(const double *v, int n) {
  size_t cap = (size_t)n * 26 + 4, len = 0;
  char *s = cmds_xmalloc(cap);
  s[len++] = '[';
  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(s + len, cap - len, "%s%.10g", i ? ", " : "", v[i]);
  s[len++] = ']';
  s[len] = 0;
  return s;
}

/* CSV field: quoted when it holds a comma, quote or line break. */
static void csv_field(FILE *f, const char *s, int last) {
  if (strpbrk(s, ",\"\n\r")) {
    fputc('"', f);
    for (const char *p = s; *p; p++) {
      if (*p == '"') fputc('"', f);
      fputc(*p, f);
    }
    fputc('"', f);
  } else {
    fputs(s, f);
  }
  fputc(last ? '\n' : ',', f);
}

static void csv_num(FILE *f, double v) {
  if (isfinite(v)) fprintf(f, "%.17g,", v);
  else fputc(',', f);
}

static int write_csv(const metrics_job *job, const char *curve, const metrics_result *res,
                     const char *pro_name, cmds_error *err) {
  char path[4200], *buf = NULL;
  size_t len = 0;
  metrics_out_path(job->out, ".csv", path, sizeof path);
  FILE *f = open_memstream(&buf, &len);
  if (!f) return CMDS_FAIL(err, CMDS_EIO, "%s: cannot build the CSV row", path);
  fputs(CMDS_METRICS_CSV_HEADER "\n", f);
  for (size_t c = 0; c < sizeof columns / sizeof *columns; c++) csv_field(f, column(job, res, columns[c]), 0);
  csv_num(f, res->i_auroc);
  csv_num(f, res->p_auroc);
  for (int l = 0; l < METRICS_NLIMITS; l++) csv_num(f, res->aupro[l]);
  csv_field(f, curve, 0);
  char labels[4096] = "";
  size_t ll = 0;
  for (int i = 0; i < job->n_labels; i++)
    ll += (size_t)snprintf(labels + ll, ll < sizeof labels ? sizeof labels - ll : 0, "%s%s",
                           i ? ";" : "", job->labels[i]);
  csv_field(f, labels, 0);
  csv_field(f, pro_name, 0);
  csv_field(f, job->maps, 1);
  fclose(f);
  int rc = cmds_write_file_atomic(path, buf, len, err);
  free(buf);
  return rc;
}

int metrics_result_write(const metrics_job *job, const char *curve, const metrics_result *res,
                         cmds_error *err) {
  char pro_path[4200];
  metrics_out_path(job->out, ".pro.tsv", pro_path, sizeof pro_path);
  /* the plotted PRO curve, two columns for gnuplot */
  {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return CMDS_FAIL(err, CMDS_EIO, "%s: cannot build the curve", pro_path);
    fprintf(f, "# fpr\tpro\t(%s curve of %s)\n", curve, job->maps);
    for (int i = 0; i < res->n_curve; i++)
      fprintf(f, "%.10g\t%.10g\n", res->curve_fpr[i], res->curve_pro[i]);
    fclose(f);
    int rc = cmds_write_file_atomic(pro_path, buf, len, err);
    free(buf);
    if (rc) return rc;
  }
  int rc = write_csv(job, curve, res, basename_of(pro_path), err);
  if (rc) return rc;

  cmds_json j;
  cmds_json_init(&j, 2);
  cmds_json_object_begin(&j);
  cmds_json_kv_str(&j, "schema", CMDS_METRICS_RESULT_SCHEMA);
  cmds_json_kv_int(&j, "schema_version", CMDS_METRICS_RESULT_VERSION);
  cmds_json_kv_str(&j, "code_version", cmds_code_version());
  cmds_json_kv_str(&j, "maps", job->maps);
  if (res->maps_id[0]) cmds_json_kv_str(&j, "maps_id", res->maps_id);
  else {
    cmds_json_key(&j, "maps_id");
    cmds_json_null(&j);
  }
  char hash[32];
  snprintf(hash, sizeof hash, "%016llx", (unsigned long long)res->content_hash);
  cmds_json_kv_str(&j, "content_hash", hash);
  for (size_t c = 0; c < sizeof columns / sizeof *columns; c++)
    cmds_json_kv_str(&j, columns[c], column(job, res, columns[c]));
  cmds_json_key(&j, "labels");
  cmds_json_object_begin(&j);
  for (int i = 0; i < job->n_labels; i++) {
    char key[256];
    const char *eq = strchr(job->labels[i], '=');
    snprintf(key, sizeof key, "%.*s", (int)(eq - job->labels[i]), job->labels[i]);
    if (metrics_job_label(job, key) == eq + 1) cmds_json_kv_str(&j, key, eq + 1);
  }
  cmds_json_object_end(&j);
  cmds_json_kv_str(&j, "curve", curve);
  cmds_json_kv_str(&j, "image_score_source", res->image_scores_from_file ? "/image_scores" : "max of map");
  num_or_null(&j, "i_auroc", res->i_auroc, "i_auroc_undefined", res->i_auroc_why);
  num_or_null(&j, "p_auroc", res->p_auroc, "p_auroc_undefined", res->p_auroc_why);
  static const char *const keys[METRICS_NLIMITS] = {"aupro_30", "aupro_10", "aupro_05", "aupro_01"};
  for (int l = 0; l < METRICS_NLIMITS; l++)
    num_or_null(&j, keys[l], res->aupro[l], l == 0 ? "aupro_undefined" : NULL, res->aupro_why);
  cmds_json_key(&j, "counts");
  cmds_json_object_begin(&j);
  cmds_json_kv_int(&j, "images", res->n_images);
  cmds_json_kv_int(&j, "height", res->height);
  cmds_json_kv_int(&j, "width", res->width);
  cmds_json_kv_int(&j, "pixels", res->n_pixels);
  cmds_json_kv_int(&j, "normal_images", res->n_normal_images);
  cmds_json_kv_int(&j, "anomalous_images", res->n_anom_images);
  cmds_json_kv_int(&j, "normal_pixels", res->n_normal_pixels);
  cmds_json_kv_int(&j, "anomalous_pixels", res->n_anom_pixels);
  cmds_json_kv_int(&j, "regions", res->n_regions);
  cmds_json_kv_int(&j, "distinct_scores", res->distinct_scores);
  cmds_json_object_end(&j);
  cmds_json_key(&j, "pro_curve");
  cmds_json_object_begin(&j);
  cmds_json_kv_num(&j, "fpr_max", METRICS_GRID_MAX);
  cmds_json_kv_str(&j, "file", basename_of(pro_path));
  char *a = number_array(res->curve_fpr, res->n_curve);
  cmds_json_key(&j, "fpr");
  cmds_json_raw(&j, a);
  free(a);
  a = number_array(res->curve_pro, res->n_curve);
  cmds_json_key(&j, "pro");
  cmds_json_raw(&j, a);
  free(a);
  cmds_json_object_end(&j);
  cmds_json_object_end(&j);
  cmds_json_raw(&j, "\n");
  rc = cmds_write_file_atomic(job->out, j.buf, j.len, err);
  cmds_json_free(&j);
  return rc;
}

void metrics_result_record(cmds_json *j, const metrics_job *job, const metrics_result *res) {
  cmds_json_kv_str(j, "maps", job->maps);
  cmds_json_kv_str(j, "maps_id", res->maps_id);
  cmds_json_kv_str(j, "output", job->out);
  cmds_json_kv_int(j, "images", res->n_images);
  cmds_json_kv_int(j, "pixels", res->n_pixels);
  cmds_json_kv_int(j, "regions", res->n_regions);
  cmds_json_kv_int(j, "distinct_scores", res->distinct_scores);
  cmds_json_kv_num(j, "read_s", res->t_read_s);
  cmds_json_kv_num(j, "exchange_s", res->t_exchange_s);
  cmds_json_kv_num(j, "curve_s", res->t_curve_s);
  cmds_json_kv_int(j, "peak_rss_kb_max_rank", res->peak_rss_kb_max);
}

/* 1 when a was modified no earlier than b, or b is gone (nothing to tell). */
static int not_older(const char *a, const char *b) {
  struct stat sa, sb;
  if (stat(b, &sb) != 0) return 1;
  if (stat(a, &sa) != 0) return 0;
  return sa.st_mtim.tv_sec > sb.st_mtim.tv_sec ||
         (sa.st_mtim.tv_sec == sb.st_mtim.tv_sec && sa.st_mtim.tv_nsec >= sb.st_mtim.tv_nsec);
}

/* The result's recorded maps_id into id ("" when none: null, or a result older than the key).
 * Only the top-level key, at the writer's indent of 2 (a label may be called maps_id too; it
 * sits at indent 4 inside "labels"). */
static void result_maps_id(const char *head, char *id, size_t cap) {
  static const char key[] = "\n  \"maps_id\": ";
  id[0] = 0;
  const char *p = strstr(head, key);
  if (!p) return;
  p += strlen(key);
  if (*p++ != '"') return; /* null */
  const char *q = strchr(p, '"');
  if (q && (size_t)(q - p) < cap) snprintf(id, cap, "%.*s", (int)(q - p), p);
}

int metrics_result_status(const char *out_json, const char *curve, const char *maps) {
  FILE *f = fopen(out_json, "rb");
  if (!f) return METRICS_NO_RESULT;
  char head[8192];
  size_t n = fread(head, 1, sizeof head - 1, f);
  fclose(f);
  head[n] = 0;
  char want[128];
  snprintf(want, sizeof want, "\"curve\": \"%s\"", curve);
  char csv[4200];
  metrics_out_path(out_json, ".csv", csv, sizeof csv);
  if (!strstr(head, "\"schema\": \"" CMDS_METRICS_RESULT_SCHEMA "\"") || !strstr(head, want) || !cmds_is_file(csv))
    return METRICS_NO_RESULT;
  if (!maps || !cmds_is_file(maps)) return METRICS_CURRENT; /* nothing to tell; measuring would fail */
  char have[METRICS_MAPS_ID_MAX], now[METRICS_MAPS_ID_MAX];
  result_maps_id(head, have, sizeof have);
  int got = metrics_maps_id(maps, now, sizeof now);
  if (got < 0) return METRICS_MAPS_UNREADABLE;
  if (got == 1) return !have[0] ? METRICS_RESULT_NO_ID : strcmp(have, now) ? METRICS_MAPS_CHANGED : METRICS_CURRENT;
  /* Maps without maps_id (written by another tool, or by cmds-score before the attribute
   * existed): only the file times can tell, so the old rule stands: a result modified no earlier
   * than the maps is current. A result that records an id was made from other maps. */
  if (have[0]) return METRICS_MAPS_CHANGED;
  return not_older(out_json, maps) ? METRICS_CURRENT : METRICS_MAPS_NEWER;
}

const char *metrics_status_word(int status) {
  switch (status) {
  case METRICS_CURRENT: return "complete";
  case METRICS_NO_RESULT: return "no complete result";
  case METRICS_FORCED: return "--force";
  case METRICS_MAPS_CHANGED: return "maps changed (maps_id differs from the result's)";
  case METRICS_RESULT_NO_ID: return "result older than maps_id (records none; measured once more)";
  case METRICS_MAPS_NEWER: return "maps without maps_id modified after the result";
  case METRICS_MAPS_UNREADABLE: return "maps file does not open";
  }
  return "?";
}
