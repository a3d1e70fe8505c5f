/* result_write: the files one result leaves (schemas/metrics_result_v1.md):
 *   <stem>.json       the result (metrics, counts, PRO curve for plotting, labels)
 *   <stem>.csv        one header line + one row, for cmds-report
 *   <stem>.pro.tsv    the plotted PRO curve as two columns (fpr, pro), for gnuplot
 * The result JSON holds nothing that depends on the number of ranks or on time, so runs
 * with different rank counts give byte-identical files; timings go to the stage record. */
#ifndef CMDS_METRICS_RESULT_WRITE_H
#define CMDS_METRICS_RESULT_WRITE_H

#include "cmds_error.h"
#include "json.h"
#include "metrics_compute.h"

#define CMDS_METRICS_RESULT_SCHEMA "cmds.metrics_result"
#define CMDS_METRICS_RESULT_VERSION 1
/* The CSV columns, in order (cmds-report checks this header). */
#define CMDS_METRICS_CSV_HEADER                                                            \
  "method,setting,dataset,category,shot,i_auroc,p_auroc,aupro_30,aupro_10,aupro_05,"       \
  "aupro_01,curve,labels,pro_curve,maps"

typedef struct metrics_job {
  char *maps, *out;  /* input; output JSON path */
  char **labels;     /* "KEY=VALUE" */
  int n_labels;
} metrics_job;

/* Value of label `key` or NULL. */
const char *metrics_job_label(const metrics_job *job, const char *key);
/* "<out without .json>" + suffix into buf. */
void metrics_out_path(const char *out_json, const char *suffix, char *buf, size_t cap);

/* Writes the three files atomically (rank 0 of the result's group). */
int metrics_result_write(const metrics_job *job, const char *curve, const metrics_result *res,
                         cmds_error *err);
/* Adds the result's counts and phase timings to a stage record's JSON. */
void metrics_result_record(cmds_json *j, const metrics_job *job, const metrics_result *res);
/* Why a result is (re)computed: METRICS_CURRENT (0) when out_json holds a complete result of
 * this curve (JSON + CSV) for the maps as they are now, which is:
 *   - maps with a `maps_id` (cmds-score's content identity): the result records the same id;
 *     file times do not matter (maps copied with preserved times, rewritten within a second,
 *     written on a node whose clock is off are all judged right);
 *   - maps without one (any other tool, cmds-score before the attribute): the result is not
 *     older than the maps file (mtime), and records no id either.
 * A result that predates the attribute (no maps_id recorded) for maps that have one is
 * measured once more. maps NULL: not checked. Rank-local. */
enum {
  METRICS_CURRENT = 0,
  METRICS_NO_RESULT,      /* no complete result of this curve */
  METRICS_FORCED,         /* --force */
  METRICS_MAPS_CHANGED,   /* the maps' maps_id differs from the result's */
  METRICS_RESULT_NO_ID,   /* the maps have a maps_id, the result records none */
  METRICS_MAPS_NEWER,     /* maps without maps_id, modified after the result (mtime rule) */
  METRICS_MAPS_UNREADABLE /* the maps file does not open (measuring reports why) */
};
int metrics_result_status(const char *out_json, const char *curve, const char *maps);
/* Words for a status ("maps changed (maps_id differs)", ...), for logs and the record. */
const char *metrics_status_word(int status);

#endif
