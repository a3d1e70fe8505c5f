/* tasks: see tasks.h. */
#include "tasks.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"

int train_name_ok(const char *s) {
  if (!*s || *s == '.') return 0;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.') return 0;
  return 1;
}

static int parse_k(const char *s, int *k) {
  char *end = NULL;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < 1 || v > 1000000) return 0;
  *k = (int)v;
  return 1;
}

static int task_names(train_task *t, const char *dataset, const char *cat, const char *k, const char *tag,
                      const char *where, cmds_error *err) {
  if (!train_name_ok(dataset) || strlen(dataset) >= sizeof t->dataset)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: dataset '%s': expected a name of letters, digits, '_', '-', '.'", where, dataset);
  if (!train_name_ok(cat) || strlen(cat) >= sizeof t->category)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: category '%s': expected a name of letters, digits, '_', '-', '.'", where, cat);
  if (!parse_k(k, &t->k))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: k '%s': expected a positive integer (the shots: 1, 2, 4)", where, k);
  if (!train_name_ok(tag) || strlen(tag) >= sizeof t->tag)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: tag '%s': expected a name of letters, digits, '_', '-', '.' (at most %d)", where,
                     tag, (int)sizeof t->tag - 1);
  snprintf(t->dataset, sizeof t->dataset, "%s", dataset);
  snprintf(t->category, sizeof t->category, "%s", cat);
  snprintf(t->tag, sizeof t->tag, "%s", tag);
  snprintf(t->origin, sizeof t->origin, "%s", where);
  return CMDS_OK;
}

int train_tasks_read(const char *path, const train_config *base, int64_t only, train_task **tasks, int *n,
                     cmds_error *err) {
  *tasks = NULL;
  *n = 0;
  FILE *f = fopen(path, "r");
  if (!f) return CMDS_FAIL(err, CMDS_EINPUT, "%s: cannot open the tasks file", path);
  char line[8192];
  int lineno = 0, rc = CMDS_OK;
  int64_t index = 0;
  while (!rc && fgets(line, sizeof line, f)) {
    lineno++;
    char where[300];
    snprintf(where, sizeof where, "%s:%d", path, lineno);
    size_t len = strlen(line);
    if (len == sizeof line - 1 && line[len - 1] != '\n') {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: line longer than %d characters", where, (int)sizeof line - 2);
      break;
    }
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    char *fields[256];
    int nf = 0;
    for (char *tok = strtok(line, " \t\r\n"); tok; tok = strtok(NULL, " \t\r\n")) {
      if (nf == 256) {
        rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: more than 256 fields", where);
        break;
      }
      fields[nf++] = tok;
    }
    if (rc || nf == 0) continue;
    if (nf < 4) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: expected 'dataset category k tag [key=value ...]', got %d field%s", where, nf,
                     nf == 1 ? "" : "s");
      break;
    }
    train_task t;
    memset(&t, 0, sizeof t);
    t.cfg = *base;
    rc = task_names(&t, fields[0], fields[1], fields[2], fields[3], where, err);
    for (int i = 4; i < nf && !rc; i++) rc = train_config_set(&t.cfg, fields[i], where, err);
    if (rc) break;
    if (only < 0 || index == only) {
      *tasks = cmds_xrealloc(*tasks, sizeof(train_task) * (size_t)(*n + 1));
      (*tasks)[(*n)++] = t;
    }
    index++;
  }
  fclose(f);
  if (!rc && only >= 0 && *n == 0)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: --task-index %lld: the file has %lld task%s (indices 0 to %lld)", path,
                   (long long)only, (long long)index, index == 1 ? "" : "s", (long long)index - 1);
  if (!rc && *n == 0) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: no tasks in the file", path);
  if (rc) {
    free(*tasks);
    *tasks = NULL;
    *n = 0;
  }
  return rc;
}

int train_tasks_product(const char *dataset, char **categories, int ncat, const char *shots, const char *tag,
                        const train_config *cfg, train_task **tasks, int *n, cmds_error *err) {
  char **ks = NULL;
  int nk = cmds_split_commas(shots, &ks), rc = CMDS_OK;
  *tasks = NULL;
  *n = 0;
  if (nk == 0) rc = CMDS_FAIL(err, CMDS_EINPUT, "--shots '%s': expected a comma-separated list of positive integers", shots);
  for (int c = 0; c < ncat && !rc; c++)
    for (int i = 0; i < nk && !rc; i++) {
      train_task t;
      memset(&t, 0, sizeof t);
      t.cfg = *cfg;
      rc = task_names(&t, dataset, categories[c], ks[i], tag, "command line", err);
      if (rc) break;
      *tasks = cmds_xrealloc(*tasks, sizeof(train_task) * (size_t)(*n + 1));
      (*tasks)[(*n)++] = t;
    }
  if (ks) cmds_free_list(ks, nk);
  return rc;
}

int train_tasks_dedupe(train_task *tasks, int *n, cmds_error *err) {
  char a[2048], b[2048];
  int kept = 0;
  for (int i = 0; i < *n; i++) {
    int dup = 0;
    for (int j = 0; j < kept && !dup; j++) {
      train_task *p = &tasks[j], *q = &tasks[i];
      if (strcmp(p->dataset, q->dataset) || strcmp(p->category, q->category) || p->k != q->k || strcmp(p->tag, q->tag))
        continue;
      train_config_key(&p->cfg, a, sizeof a);
      train_config_key(&q->cfg, b, sizeof b);
      if (strcmp(a, b))
        return CMDS_FAIL(err, CMDS_EINPUT,
                         "%s and %s: the same model folder %s/%s/k%d/%s with different training configurations "
                         "(give them different tags)",
                         p->origin, q->origin, p->dataset, p->category, p->k, p->tag);
      dup = 1;
    }
    if (!dup) tasks[kept++] = tasks[i];
  }
  *n = kept;
  return CMDS_OK;
}
