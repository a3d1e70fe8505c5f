/* tasks_file: see tasks_file.h. */
#include "tasks_file.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"

int cmds_name_ok(const char *s) {
  if (!*s || *s == '.') return 0;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.') return 0;
  return 1;
}

int cmds_task_names(cmds_task *t, const char *dataset, const char *cat, const char *k, const char *tag,
                    const char *where, cmds_error *err) {
  if (!cmds_name_ok(dataset) || strlen(dataset) >= sizeof t->dataset)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: dataset '%s': expected a name of letters, digits, '_', '-', '.'", where, dataset);
  if (!cmds_name_ok(cat) || strlen(cat) >= sizeof t->category)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: category '%s': expected a name of letters, digits, '_', '-', '.'", where, cat);
  char *end = NULL;
  long v = strtol(k, &end, 10);
  if (!*k || *end || v < 1 || v > 1000000)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: k '%s': expected a positive integer (the shots: 1, 2, 4)", where, k);
  if (!cmds_name_ok(tag) || strlen(tag) >= sizeof t->tag)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: tag '%s': expected a name of letters, digits, '_', '-', '.' (at most %d)", where,
                     tag, (int)sizeof t->tag - 1);
  t->k = (int)v;
  snprintf(t->dataset, sizeof t->dataset, "%s", dataset);
  snprintf(t->category, sizeof t->category, "%s", cat);
  snprintf(t->tag, sizeof t->tag, "%s", tag);
  snprintf(t->origin, sizeof t->origin, "%s", where);
  return CMDS_OK;
}

int cmds_split_fields(char *line, char **fields, int cap) {
  char *hash = strchr(line, '#');
  if (hash) *hash = 0;
  int nf = 0;
  for (char *save = NULL, *tok = strtok_r(line, " \t\r\n", &save); tok; tok = strtok_r(NULL, " \t\r\n", &save)) {
    if (nf == cap) return -1;
    fields[nf++] = tok;
  }
  return nf;
}

static void push(cmds_task **tasks, int *n, const cmds_task *t) {
  *tasks = cmds_xrealloc(*tasks, sizeof(cmds_task) * (size_t)(*n + 1));
  (*tasks)[(*n)++] = *t;
}

int cmds_tasks_read(const char *path, const cmds_config *base, int64_t only, cmds_task **tasks, int *n,
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
    char *fields[256];
    int nf = cmds_split_fields(line, fields, 256);
    if (nf < 0) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: more than 256 fields", where);
      break;
    }
    if (nf == 0) continue;
    if (nf < 4) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: expected 'dataset category k tag [key=value ...]', got %d field%s", where, nf,
                     nf == 1 ? "" : "s");
      break;
    }
    cmds_task t;
    memset(&t, 0, sizeof t);
    t.cfg = *base;
    rc = cmds_task_names(&t, fields[0], fields[1], fields[2], fields[3], where, err);
    for (int i = 4; i < nf && !rc; i++) rc = cmds_config_set_arg(&t.cfg, fields[i], where, CMDS_KEYS_ALL, err);
    if (rc) break;
    if (only < 0 || index == only) push(tasks, n, &t);
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

int cmds_tasks_product(const char *dataset, char **categories, int ncat, const char *shots, const char *tag,
                       const cmds_config *cfg, cmds_task **tasks, int *n, cmds_error *err) {
  char **ks = NULL;
  int nk = cmds_split_commas(shots, &ks), rc = CMDS_OK;
  *tasks = NULL;
  *n = 0;
  if (nk == 0) rc = CMDS_FAIL(err, CMDS_EINPUT, "--shots '%s': expected a comma-separated list of positive integers", shots);
  for (int c = 0; c < ncat && !rc; c++)
    for (int i = 0; i < nk && !rc; i++) {
      cmds_task t;
      memset(&t, 0, sizeof t);
      t.cfg = *cfg;
      rc = cmds_task_names(&t, dataset, categories[c], ks[i], tag, "command line", err);
      if (!rc) push(tasks, n, &t);
    }
  if (ks) cmds_free_list(ks, nk);
  if (rc) {
    free(*tasks);
    *tasks = NULL;
    *n = 0;
  }
  return rc;
}

int cmds_categories(const char *given, const char *dir, const char *suffix, const char *skip, const char *what,
                    char ***cats, cmds_error *err) {
  *cats = NULL;
  if (given) {
    int n = cmds_split_commas(given, cats);
    if (n > 0) return n;
    CMDS_FAIL(err, CMDS_EINPUT, "--category '%s': expected a comma-separated list", given);
    return -1;
  }
  char **names = NULL;
  int nn = cmds_list_dir(dir, suffix, suffix ? 1 : 2, &names, err);
  if (nn < 0) return -1;
  size_t sl = suffix ? strlen(suffix) : 0, kl = skip ? strlen(skip) : 0;
  int n = 0;
  for (int i = 0; i < nn; i++) {
    size_t l = strlen(names[i]);
    if (kl && l >= kl && !strcmp(names[i] + l - kl, skip)) continue;
    names[i][l - sl] = 0;
    *cats = cmds_xrealloc(*cats, sizeof(char *) * (size_t)(n + 1));
    (*cats)[n++] = cmds_xstrdup(names[i]);
  }
  if (nn > 0) cmds_free_list(names, nn);
  if (n == 0) {
    CMDS_FAIL(err, CMDS_EINPUT, "%s: no %s", dir, what);
    return -1;
  }
  return n;
}

void cmds_task_opts_init(cmds_task_opts *o) {
  memset(o, 0, sizeof *o);
  o->task_index = -1;
  o->device = "auto";
  o->shots = "1,2,4";
  o->tag = "default";
  cmds_config_default(&o->cfg);
}

int cmds_task_opts_take(cmds_task_opts *o, const char *opt, const char *val, int *taken, cmds_error *err) {
  *taken = 1;
  if (!strcmp(opt, "--cache")) o->cache = val;
  else if (!strcmp(opt, "--run")) o->run = val;
  else if (!strcmp(opt, "--tasks")) o->tasks = val;
  else if (!strcmp(opt, "--dataset")) o->dataset = val;
  else if (!strcmp(opt, "--category")) o->categories = val;
  else if (!strcmp(opt, "--shots")) o->shots = val;
  else if (!strcmp(opt, "--tag")) o->tag = val;
  else if (!strcmp(opt, "--device")) o->device = val;
  else if (!strcmp(opt, "--set")) return cmds_config_set_arg(&o->cfg, val, "--set", CMDS_KEYS_ALL, err);
  else if (!strcmp(opt, "--task-index")) {
    char *end = NULL;
    long long i = strtoll(val, &end, 10);
    if (!*val || !end || *end || i < 0)
      return CMDS_FAIL(err, CMDS_EINPUT, "bad option or value: %s %s (see --help)", opt, val);
    o->task_index = i;
  } else *taken = 0;
  return CMDS_OK;
}

int cmds_task_opts_check(const cmds_task_opts *o, cmds_error *err) {
  if (!o->cache || !o->run) return CMDS_FAIL(err, CMDS_EINPUT, "--cache and --run are required (see --help)");
  if (!o->tasks == !o->dataset)
    return CMDS_FAIL(err, CMDS_EINPUT, "give either --tasks FILE or --dataset D (see --help)");
  if (o->task_index >= 0 && !o->tasks) return CMDS_FAIL(err, CMDS_EINPUT, "--task-index needs --tasks FILE");
  if (strcmp(o->device, "auto") && strcmp(o->device, "cpu") && strcmp(o->device, "cuda"))
    return CMDS_FAIL(err, CMDS_EINPUT, "--device: expected auto, cpu or cuda, got '%s'", o->device);
  return CMDS_OK;
}

int cmds_task_opts_tasks(const cmds_task_opts *o, cmds_task **tasks, int *n, cmds_error *err) {
  *tasks = NULL;
  *n = 0;
  if (o->tasks) return cmds_tasks_read(o->tasks, &o->cfg, o->task_index, tasks, n, err);
  char dir[4096], **cats = NULL;
  snprintf(dir, sizeof dir, "%s/%s", o->cache, o->dataset);
  int ncat = cmds_categories(o->categories, dir, ".features.h5", NULL,
                             "feature caches (*.features.h5; run cmds-features first)", &cats, err);
  if (ncat < 0) return err->code;
  int rc = cmds_tasks_product(o->dataset, cats, ncat, o->shots, o->tag, &o->cfg, tasks, n, err);
  cmds_free_list(cats, ncat);
  return rc;
}
