/* progress: see progress.h. */
#include "progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fmt_time(char *b, size_t n, double s) {
  if (s < 0 || s > 1e8) {
    snprintf(b, n, "?");
    return;
  }
  long t = (long)(s + 0.5);
  if (t >= 3600) snprintf(b, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else snprintf(b, n, "%ld:%02ld", t / 60, t % 60);
}

static void report(const cmds_progress *p, double now, int final) {
  char el[32], eta[32];
  double dt = now - p->t0, rate = dt > 0 ? (double)p->done / dt : 0;
  fmt_time(el, sizeof el, dt);
  fmt_time(eta, sizeof eta, rate > 0 ? (double)(p->total - p->done) / rate : -1);
  fprintf(stderr, "[%s r%d/%d] %s: %lld/%lld (%.0f%%)  %.3g/s  elapsed %s  %s%s\n", p->stage,
          p->rank, p->size, p->label, (long long)p->done, (long long)p->total,
          p->total ? 100.0 * (double)p->done / (double)p->total : 100.0, rate, el,
          final ? "done" : "ETA ", final ? "" : eta);
  fflush(stderr);
}

void cmds_progress_begin(cmds_progress *p, const cmds_mpi *mpi, const char *stage,
                         const char *label, int64_t total) {
  memset(p, 0, sizeof *p);
  snprintf(p->stage, sizeof p->stage, "%s", stage);
  snprintf(p->label, sizeof p->label, "%s", label);
  p->total = total;
  p->rank = mpi->rank;
  p->size = mpi->size;
  const char *mode = getenv("CMDS_PROGRESS");
  const char *iv = getenv("CMDS_PROGRESS_INTERVAL");
  p->interval = iv ? atof(iv) : 10.0;
  if (p->interval <= 0) p->interval = 10.0;
  if (mode && strcmp(mode, "off") == 0) p->enabled = 0;
  else if (mode && strcmp(mode, "all") == 0) p->enabled = 1;
  else p->enabled = mpi->rank == 0;
  p->t0 = p->last = cmds_now();
}

void cmds_progress_step(cmds_progress *p, int64_t n) {
  p->done += n;
  if (!p->enabled) return;
  double now = cmds_now();
  if (now - p->last >= p->interval && p->done < p->total) {
    report(p, now, 0);
    p->last = now;
  }
}

void cmds_progress_end(cmds_progress *p) {
  if (p->enabled) report(p, cmds_now(), 1);
}
