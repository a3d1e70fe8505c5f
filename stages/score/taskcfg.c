/* taskcfg: see taskcfg.h. */
#include "taskcfg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"

int score_setting_set(cmds_config *c, const char *kv, const char *where, cmds_error *err) {
  const char *eq = strchr(kv, '=');
  int k = eq ? cmds_key_find(kv, (size_t)(eq - kv)) : -1;
  if (k >= 0 && cmds_keys[k].stage != CMDS_KEY_SCORE)
    return CMDS_FAIL(err, CMDS_EINPUT,
                     "%s: %s: a setting may only change score.* keys (the other keys select the trained model: "
                     "put them in the task)", where ? where : "--set", cmds_keys[k].name);
  return cmds_config_set_arg(c, kv, where, CMDS_KEY_SCORE, err);
}

static void add_setting(score_task *t, const char *name, const cmds_config *cfg, const char *origin) {
  t->settings = cmds_xrealloc(t->settings, sizeof(score_setting) * (size_t)(t->nsettings + 1));
  score_setting *s = &t->settings[t->nsettings++];
  memset(s, 0, sizeof *s);
  snprintf(s->name, sizeof s->name, "%s", name);
  s->cfg = *cfg;
  snprintf(s->origin, sizeof s->origin, "%s", origin);
}

/* A setting of the same name must have the same keys; the same keys under another name is
 * allowed (two files). */
static int check_setting_names(const score_task *t, cmds_error *err) {
  for (int i = 0; i < t->nsettings; i++)
    for (int j = 0; j < i; j++)
      if (!strcmp(t->settings[i].name, t->settings[j].name) &&
          !cmds_config_equal(&t->settings[i].cfg, &t->settings[j].cfg, CMDS_KEY_SCORE))
        return CMDS_FAIL(err, CMDS_EINPUT, "%s and %s: setting '%s' given twice with different score.* keys",
                         t->settings[j].origin, t->settings[i].origin, t->settings[i].name);
  return CMDS_OK;
}

/* Merges task `t` into the list: the same model folder with the same training keys adds a
 * setting to the existing task. */
static int merge_task(score_task **tasks, int *n, const cmds_task *t, const char *setting, cmds_error *err) {
  char name[SCORE_NAME_MAX];
  if (setting) snprintf(name, sizeof name, "%s", setting);
  else cmds_config_setting_name(&t->cfg, name, sizeof name);
  for (int i = 0; i < *n; i++) {
    score_task *p = &(*tasks)[i];
    const cmds_task *q = &p->task;
    if (strcmp(q->dataset, t->dataset) || strcmp(q->category, t->category) || q->k != t->k || strcmp(q->tag, t->tag))
      continue;
    if (!cmds_config_equal(&q->cfg, &t->cfg, CMDS_KEYS_MODEL))
      return CMDS_FAIL(err, CMDS_EINPUT,
                       "%s and %s: the same model folder %s/%s/k%d/%s with different training configurations "
                       "(give them different tags)", q->origin, t->origin, q->dataset, q->category, q->k, q->tag);
    for (int s = 0; s < p->nsettings; s++)
      if (!strcmp(p->settings[s].name, name) && cmds_config_equal(&p->settings[s].cfg, &t->cfg, CMDS_KEY_SCORE))
        return CMDS_OK;
    add_setting(p, name, &t->cfg, t->origin);
    return check_setting_names(p, err);
  }
  *tasks = cmds_xrealloc(*tasks, sizeof(score_task) * (size_t)(*n + 1));
  score_task *q = &(*tasks)[(*n)++];
  memset(q, 0, sizeof *q);
  q->task = *t;
  add_setting(q, name, &t->cfg, t->origin);
  return CMDS_OK;
}

void score_tasks_free(score_task *tasks, int n) {
  for (int i = 0; i < n; i++) free(tasks[i].settings);
  free(tasks);
}

int score_tasks_merge(const cmds_task *parsed, int np, const char *setting, score_task **tasks, int *n,
                      cmds_error *err) {
  *tasks = NULL;
  *n = 0;
  if (setting && (!cmds_name_ok(setting) || strlen(setting) >= SCORE_NAME_MAX))
    return CMDS_FAIL(err, CMDS_EINPUT, "--setting '%s': expected a name of letters, digits, '_', '-', '.' (at most %d)",
                     setting, SCORE_NAME_MAX - 1);
  int rc = CMDS_OK;
  for (int i = 0; i < np && !rc; i++) rc = merge_task(tasks, n, &parsed[i], setting, err);
  if (rc) {
    score_tasks_free(*tasks, *n);
    *tasks = NULL;
    *n = 0;
  }
  return rc;
}

int score_tasks_apply_settings_file(score_task *tasks, int n, const char *path, cmds_error *err) {
  FILE *f = fopen(path, "r");
  if (!f) return CMDS_FAIL(err, CMDS_EINPUT, "%s: cannot open the settings file", path);
  char line[8192];
  int lineno = 0, rc = CMDS_OK, count = 0;
  for (int i = 0; i < n; i++) {
    free(tasks[i].settings);
    tasks[i].settings = NULL;
    tasks[i].nsettings = 0;
  }
  while (!rc && fgets(line, sizeof line, f)) {
    lineno++;
    char where[300];
    snprintf(where, sizeof where, "%s:%d", path, lineno);
    char *fields[64];
    int nf = cmds_split_fields(line, fields, 64);
    if (nf < 0) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: more than 64 fields", where);
    if (rc || nf == 0) continue;
    if (!cmds_name_ok(fields[0]) || strlen(fields[0]) >= SCORE_NAME_MAX || strchr(fields[0], '=')) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: expected 'name score.key=value ...' with a name of letters, digits, "
                     "'_', '-', '.' (at most %d), got '%s'", where, SCORE_NAME_MAX - 1, fields[0]);
      break;
    }
    count++;
    for (int i = 0; i < n && !rc; i++) {
      cmds_config c = tasks[i].task.cfg;
      for (int q = 1; q < nf && !rc; q++) rc = score_setting_set(&c, fields[q], where, err);
      if (!rc) add_setting(&tasks[i], fields[0], &c, where);
      if (!rc) rc = check_setting_names(&tasks[i], err);
    }
  }
  fclose(f);
  if (!rc && !count) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: no settings in the file", path);
  return rc;
}
