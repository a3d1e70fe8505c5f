/* Unit test of the train configuration keys and the tasks file: canonical values (two
 * spellings of one number are one configuration), score keys outside the training key,
 * messages that name the key / file:line, --task-index counting tasks not lines, dedupe. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "tasks.h"

static int fails = 0, passes = 0;
#define CHECK(c, ...)                      \
  do {                                     \
    if (c) passes++;                       \
    else {                                 \
      fails++;                             \
      printf("FAIL line %d: ", __LINE__);  \
      printf(__VA_ARGS__);                 \
      printf("\n");                        \
    }                                      \
  } while (0)

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : ".";
  mkdir(dir, 0755);
  cmds_error err = {0};
  cmds_config a, b;
  cmds_config_default(&a);
  cmds_config_default(&b);
  CHECK(!strcmp(a.value[CK_LR], "0.0001"), "default lr canonical: %s", a.value[CK_LR]);
  CHECK(!cmds_config_set_arg(&b, "train.lr=1e-4", NULL, CMDS_KEYS_ALL, &err), "set lr");
  CHECK(!cmds_config_set_arg(&b, "score.l1=0.7", NULL, CMDS_KEYS_ALL, &err), "set score.l1");
  CHECK(!cmds_config_set_arg(&b, "loss.layer_weights=1.20,1,0.80", NULL, CMDS_KEYS_ALL, &err), "set weights");
  char ka[2048], kb[2048];
  cmds_config_join(&a, CMDS_KEYS_MODEL, ka, sizeof ka);
  cmds_config_join(&b, CMDS_KEYS_MODEL, kb, sizeof kb);
  CHECK(!strcmp(ka, kb), "same training key: %s vs %s", ka, kb);
  CHECK(!strstr(ka, "score."), "score keys outside the training key");
  CHECK(!cmds_config_set_arg(&b, "train.steps=10", NULL, CMDS_KEYS_ALL, &err), "set steps");
  cmds_config_join(&b, CMDS_KEYS_MODEL, kb, sizeof kb);
  CHECK(strcmp(ka, kb) != 0, "steps change the key");
  train_params p;
  train_config_params(&b, &p);
  CHECK(p.steps == 10 && p.n_layer_weights == 3 && p.layer_weights[0] == 1.2f && p.stream_real && p.stream_est,
        "params");
  CHECK(cmds_config_set_arg(&b, "train.seed=-1", "x.txt:4", CMDS_KEYS_ALL, &err) == CMDS_EINPUT && strstr(err.msg, "x.txt:4: train.seed='-1'"),
        "negative seed: %s", err.msg);
  CHECK(cmds_config_set_arg(&b, "loss.layer_weights=1,,2", NULL, CMDS_KEYS_ALL, &err) && strstr(err.msg, "loss.layer_weights"), "empty item");
  CHECK(cmds_config_set_arg(&b, "nokey", NULL, CMDS_KEYS_ALL, &err) && strstr(err.msg, "expected key=value"), "no '='");
  CHECK(cmds_config_set_arg(&b, "train.nan=1", NULL, CMDS_KEYS_ALL, &err) && strstr(err.msg, "unknown configuration key 'train.nan'") &&
            strstr(err.msg, "train.steps"),
        "unknown key lists the known ones: %s", err.msg);
  CHECK(cmds_config_set_arg(&b, "train.lr=nan", NULL, CMDS_KEYS_ALL, &err), "NaN refused");

  char path[4096];
  snprintf(path, sizeof path, "%s/tasks.txt", dir);
  FILE *f = fopen(path, "w");
  fprintf(f, "# header\n\nmvtec3d bagel 1 a\n  mvtec3d cookie 2 b train.steps=5 # note\nmvtec3d bagel 1 a\n");
  fclose(f);
  cmds_task *t = NULL;
  int n = 0;
  CHECK(!cmds_tasks_read(path, &a, -1, &t, &n, &err) && n == 3, "three tasks: %d %s", n, err.msg);
  CHECK(n == 3 && !strcmp(t[1].category, "cookie") && t[1].k == 2 && !strcmp(t[1].cfg.value[CK_STEPS], "5") &&
            strstr(t[1].origin, "tasks.txt:4"),
        "task 1 fields");
  CHECK(!train_tasks_dedupe(t, &n, &err) && n == 2, "duplicate of the same configuration dropped: %d", n);
  free(t);
  CHECK(!cmds_tasks_read(path, &a, 1, &t, &n, &err) && n == 1 && !strcmp(t[0].category, "cookie"),
        "--task-index 1 counts tasks, not lines");
  free(t);
  f = fopen(path, "w");
  fprintf(f, "mvtec3d bagel 1 a\nmvtec3d ../x 1 a\n");
  fclose(f);
  CHECK(cmds_tasks_read(path, &a, -1, &t, &n, &err) == CMDS_EINPUT && strstr(err.msg, "tasks.txt:2: category '../x'"),
        "path-like category refused: %s", err.msg);
  printf("%d passed, %d failed\n", passes, fails);
  return fails ? 1 : 0;
}
