/* tasks: see tasks.h. */
#include "tasks.h"

#include <stdio.h>
#include <string.h>

int train_tasks_dedupe(cmds_task *tasks, int *n, cmds_error *err) {
  char a[2048], b[2048];
  int kept = 0;
  for (int i = 0; i < *n; i++) {
    int dup = 0;
    for (int j = 0; j < kept && !dup; j++) {
      cmds_task *p = &tasks[j], *q = &tasks[i];
      if (strcmp(p->dataset, q->dataset) || strcmp(p->category, q->category) || p->k != q->k || strcmp(p->tag, q->tag))
        continue;
      cmds_config_join(&p->cfg, CMDS_KEYS_MODEL, a, sizeof a);
      cmds_config_join(&q->cfg, CMDS_KEYS_MODEL, b, sizeof b);
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
