/* Unit test of the one configuration-key table (comm/config_keys.h) and the shared task list
 * (comm/tasks_file.h): the table is COMMON.md's contract with METHOD.md's defaults, in the
 * order sidecars list it; every type canonicalises its values and refuses bad ones with a
 * message naming the place, the key and what is expected; unknown keys list the known ones;
 * stage masks; the joined key, JSON and derived setting name; tasks files (comments, fields,
 * --task-index counting tasks, errors naming file:line) and the category listing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "config_keys.h"
#include "fsutil.h"
#include "json.h"
#include "tasks_file.h"

/* Sets kv and expects failure with every `want` fragment in the message. */
static void refuse(cmds_config *c, const char *kv, unsigned stages, const char *want1, const char *want2) {
  cmds_config before = *c;
  cmds_error err = {0};
  int rc = cmds_config_set_arg(c, kv, "f.txt:7", stages, &err);
  CHECK(rc == CMDS_EINPUT, "%s: rc %d", kv, rc);
  CHECK(strstr(err.msg, "f.txt:7: ") == err.msg, "%s: message starts with the place: %s", kv, err.msg);
  CHECK(!want1 || strstr(err.msg, want1), "%s: '%s' in: %s", kv, want1, err.msg);
  CHECK(!want2 || strstr(err.msg, want2), "%s: '%s' in: %s", kv, want2, err.msg);
  CHECK(!memcmp(&before, c, sizeof before), "%s: a refused value leaves the configuration as it was", kv);
}

/* Sets kv and expects the canonical text `want` for its key. */
static void accept(cmds_config *c, const char *kv, const char *want) {
  cmds_error err = {0};
  int rc = cmds_config_set_arg(c, kv, NULL, CMDS_KEYS_ALL | CMDS_KEY_AUGMENT, &err);
  CHECK(rc == 0, "%s: %s", kv, err.msg);
  const char *eq = strchr(kv, '=');
  int k = cmds_key_find(kv, (size_t)(eq - kv));
  CHECK(k >= 0 && !strcmp(c->value[k], want), "%s: canonical '%s', want '%s'", kv, k >= 0 ? c->value[k] : "?", want);
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f) {
    perror(path);
    exit(1);
  }
  fputs(text, f);
  fclose(f);
}

static void test_table(void) {
  /* COMMON.md's contract, in table order, with METHOD.md's defaults (canonical text). */
  static const char *const contract[][2] = {
      {"mapper.kind", "cmds"}, {"mapper.resolution", "224"}, {"mapper.adapt_groups", "32"},
      {"mapper.ca_reduction", "32"}, {"mapper.ca_groups", "8"}, {"mapper.sel_hidden", "128"},
      {"mapper.proj_hidden", "0"}, {"mapper.mlp_hidden", "0"}, {"train.steps", "3000"}, {"train.batch", "2"},
      {"train.lr", "0.0001"}, {"train.lr_min", "1e-06"}, {"train.weight_decay", "0.0001"},
      {"train.noise_sigma", "0.01"}, {"train.seed", "0"}, {"train.streams", "both"},
      {"loss.layer_weights", "1.2,1,0.8"}, {"train.augmented", "1"}, {"score.l1", "0.1"}, {"score.l2", "0.1"}, {"score.fusion", "mul"},
      {"score.streams", "both"}, {"score.sigma", "4"}, {"score.fg_mask", "1"}, {"backbone.final_norm", "0"},
      /* METHOD.md section 7 */
      {"augment.prompt", "a photo of a {category}"}, {"augment.rank", "16"}, {"augment.alpha", "16"},
      {"augment.steps", "1000"}, {"augment.lr", "0.0001"}, {"augment.weight_decay", "0.01"},
      {"augment.max_grad_norm", "1"}, {"augment.batch", "1"}, {"augment.resolution", "512"},
      {"augment.strength", "0.3"}, {"augment.inference_steps", "50"}, {"augment.guidance", "7.5"},
      {"augment.images", "16"}, {"augment.seed", "0"}};
  CHECK(sizeof contract / sizeof contract[0] == CK_NKEYS, "%d keys", CK_NKEYS);
  cmds_config d;
  cmds_config_default(&d);
  for (int k = 0; k < CK_NKEYS; k++) {
    CHECK(!strcmp(cmds_keys[k].name, contract[k][0]), "key %d: %s, want %s", k, cmds_keys[k].name, contract[k][0]);
    CHECK(!strcmp(d.value[k], contract[k][1]), "%s default %s, want %s", contract[k][0], d.value[k], contract[k][1]);
    char canon[CMDS_CFG_VALUE_MAX];
    CHECK(cmds_key_canon(k, cmds_keys[k].def, canon, sizeof canon, NULL, 0) && !strcmp(canon, cmds_keys[k].def),
          "%s: the default is canonical", cmds_keys[k].name);
    CHECK(cmds_key_find(cmds_keys[k].name, strlen(cmds_keys[k].name)) == k, "find %s", cmds_keys[k].name);
    int score = !strncmp(cmds_keys[k].name, "score.", 6);
    CHECK(score == (cmds_keys[k].stage == CMDS_KEY_SCORE), "%s: stage %d", cmds_keys[k].name, cmds_keys[k].stage);
    int aug = !strncmp(cmds_keys[k].name, "augment.", 8);
    CHECK(aug == (cmds_keys[k].stage == CMDS_KEY_AUGMENT), "%s: stage %d", cmds_keys[k].name, cmds_keys[k].stage);
  }
  CHECK(!(CMDS_KEYS_ALL & CMDS_KEY_AUGMENT), "augment keys are no task's keys");
  CHECK(cmds_keys[CK_FINAL_NORM].stage == CMDS_KEY_FEATURES, "final_norm changes the feature cache");
  CHECK(cmds_keys[CK_LR].type == CMDS_KT_NUM && cmds_keys[CK_STEPS].type == CMDS_KT_INT &&
            cmds_keys[CK_SCORE_FUSION].type == CMDS_KT_ENUM && cmds_keys[CK_LAYER_WEIGHTS].type == CMDS_KT_NUMS &&
            cmds_keys[CK_SCORE_FG_MASK].type == CMDS_KT_BOOL,
        "types");
  CHECK(cmds_key_find("train.steps=3", 11) == CK_STEPS, "find by prefix length");
  CHECK(cmds_key_find("train.step", 10) < 0 && cmds_key_find("train.stepss", 12) < 0, "no partial matches");
  char why[128], out[CMDS_CFG_VALUE_MAX];
  CHECK(!cmds_key_canon(-1, "1", out, sizeof out, why, sizeof why) && !cmds_key_canon(CK_NKEYS, "1", out, sizeof out, NULL, 0),
        "out-of-range key index refused");
  CHECK(!cmds_key_canon(CK_STEPS, "12345", out, 4, why, sizeof why) && strstr(why, "integer"), "too small a buffer refused");
}

/* Values each key type takes, with their canonical text (set under every stage's mask). */
static const struct {
  const char *kv, *canon;
} accepted[] = {
    /* enum */
    {"mapper.kind=mlp", "mlp"},
    {"score.fusion=3d", "3d"},
    /* int */
    {"train.steps=10", "10"},
    {"train.steps=3e3", "3000"},
    {"train.seed=0", "0"},
    {"mapper.proj_hidden=0", "0"},
    /* number */
    {"train.lr=1e-4", "0.0001"},
    {"train.lr=0.00010", "0.0001"},
    {"score.l1=3e-1", "0.3"},
    {"score.l2=-0", "0"},
    {"score.sigma=63", "63"},
    /* list of numbers */
    {"loss.layer_weights=1.20,1,0.80", "1.2,1,0.8"},
    {"loss.layer_weights=2", "2"},
    {"loss.layer_weights=1, 2 ,3", "1,2,3"},
    /* bool */
    {"score.fg_mask=0", "0"},
    {"score.fg_mask=true", "1"},
    {"backbone.final_norm=on", "1"},
    {"backbone.final_norm=false", "0"},
    /* text (augment.prompt: cmds-augment --set, a spec's augment block; never in a tasks file):
     * spaces kept as written */
    {"augment.prompt=a close-up photo of a {category}, studio light", "a close-up photo of a {category}, studio light"},
    {"augment.lr=1e-4", "0.0001"},
    {"augment.strength=1", "1"},
};

/* Values refused under a stage mask, with two fragments (NULL: none) the message must hold. */
static const struct {
  const char *kv;
  unsigned stages;
  const char *want1, *want2;
} refused[] = {
    /* enum */
    {"score.fusion=sum", CMDS_KEYS_ALL, "score.fusion='sum'", "expected one of mul|add|max|2d|3d"},
    {"mapper.kind=MLP", CMDS_KEYS_ALL, "mapper.kind='MLP'", "one of cmds|mlp"},
    {"train.streams=", CMDS_KEYS_ALL, "train.streams=''", "one of both|real|est"},
    /* int */
    {"train.steps=abc", CMDS_KEYS_ALL, "train.steps='abc'", "expected an integer >= 1"},
    {"train.steps=0", CMDS_KEYS_ALL, "train.steps='0'", "an integer >= 1"},
    {"train.steps=2.5", CMDS_KEYS_ALL, "train.steps='2.5'", "an integer"},
    {"train.seed=-1", CMDS_KEYS_ALL, "train.seed='-1'", "an integer >= 0"},
    {"mapper.resolution=4", CMDS_KEYS_ALL, "mapper.resolution='4'", "an integer >= 8"},
    {"train.batch=1e300", CMDS_KEYS_ALL, "train.batch", "an integer"},
    /* number */
    {"train.lr=fast", CMDS_KEYS_ALL, "train.lr='fast'", "expected a number >= 0"},
    {"train.lr=nan", CMDS_KEYS_ALL, "train.lr='nan'", "a number"},
    {"train.lr=inf", CMDS_KEYS_ALL, "train.lr='inf'", "a number"},
    {"score.l1=-0.1", CMDS_KEYS_ALL, "score.l1='-0.1'", "a number >= 0"},
    {"score.sigma=63.5", CMDS_KEYS_ALL, "score.sigma='63.5'", "a number in [0, 63]"},
    /* list of numbers */
    {"loss.layer_weights=1,,2", CMDS_KEYS_ALL, "loss.layer_weights='1,,2'", "comma-separated list of 1 to 8 numbers >= 0"},
    {"loss.layer_weights=1,2,", CMDS_KEYS_ALL, "loss.layer_weights", "comma-separated"},
    {"loss.layer_weights=1,-2", CMDS_KEYS_ALL, "loss.layer_weights", ">= 0"},
    {"loss.layer_weights=1,2,3,4,5,6,7,8,9", CMDS_KEYS_ALL, "loss.layer_weights", "1 to 8"},
    {"loss.layer_weights=", CMDS_KEYS_ALL, "loss.layer_weights=''", "numbers"},
    /* bool */
    {"score.fg_mask=2", CMDS_KEYS_ALL, "score.fg_mask='2'", "0 or 1"},
    {"backbone.final_norm=yes", CMDS_KEYS_ALL, "backbone.final_norm='yes'", "0 or 1"},
    /* text */
    {"augment.prompt=", CMDS_KEY_AUGMENT, "augment.prompt=''", "printable characters"},
    {"augment.prompt=say \"hi\"", CMDS_KEY_AUGMENT, "augment.prompt=", "without '\"'"},
    {"augment.prompt=a;b", CMDS_KEY_AUGMENT, "augment.prompt='a;b'", "';'"},
    {"augment.prompt=tab\there", CMDS_KEY_AUGMENT, "augment.prompt=", "printable"},
    {"augment.prompt=0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789",
     CMDS_KEY_AUGMENT, "augment.prompt=", "1 to 95"},
    {"augment.strength=1.5", CMDS_KEY_AUGMENT, "augment.strength='1.5'", "a number in [0, 1]"},
    {"augment.batch=2", CMDS_KEY_AUGMENT, "augment.batch='2'", "an integer in [1, 1]"},
    /* keys of another stage */
    {"augment.steps=4", CMDS_KEYS_ALL, "augment.steps cannot be set here", "allowed: mapper.kind"},
    {"train.steps=4", CMDS_KEY_AUGMENT, "train.steps cannot be set here", "allowed: augment.prompt, augment.rank"},
    /* the form of the argument, unknown keys, stage masks */
    {"train.steps", CMDS_KEYS_ALL, "'train.steps': expected key=value", NULL},
    {"=3", CMDS_KEYS_ALL, "expected key=value", NULL},
    {"train.stepz=3", CMDS_KEYS_ALL, "unknown configuration key 'train.stepz'", "known: mapper.kind, "},
    {"score.l9=1", CMDS_KEY_SCORE, "unknown configuration key 'score.l9' (known: score.l1, score.l2, score.fusion", NULL},
    {"train.steps=5", CMDS_KEY_SCORE, "train.steps cannot be set here", "allowed: score.l1"},
};

static void test_values(void) {
  cmds_config c;
  cmds_config_default(&c);
  for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++) accept(&c, accepted[i].kv, accepted[i].canon);
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
    refuse(&c, refused[i].kv, refused[i].stages, refused[i].want1, refused[i].want2);
  cmds_error err = {0};
  CHECK(cmds_config_set_arg(&c, "score.l1=0.5", NULL, CMDS_KEY_SCORE, &err) == 0, "score key under a score mask");
  CHECK(cmds_config_set_arg(&c, "train.steps=x", NULL, CMDS_KEYS_ALL, &err) && strstr(err.msg, "--set: ") == err.msg,
        "where defaults to --set: %s", err.msg);
  /* the key/value form (specs) */
  CHECK(cmds_config_set(&c, "train.batch", "4", "spec.yaml: experiments[0]", &err) == 0 && !strcmp(c.value[CK_BATCH], "4"),
        "set key, value");
  CHECK(cmds_config_set(&c, "train.batch", "-4", "spec.yaml: experiments[0]", &err) == CMDS_EINPUT &&
            strstr(err.msg, "spec.yaml: experiments[0]: train.batch='-4': expected an integer >= 1"),
        "key, value error: %s", err.msg);
  CHECK(cmds_config_set(&c, "nope", "1", "spec.yaml", &err) == CMDS_EINPUT &&
            strstr(err.msg, "spec.yaml: unknown configuration key 'nope'"),
        "key, value unknown: %s", err.msg);
}

static void test_views(void) {
  cmds_config a, b;
  cmds_config_default(&a);
  cmds_config_default(&b);
  char ja[2048], jb[2048], name[64];
  cmds_config_join(&a, CMDS_KEYS_MODEL, ja, sizeof ja);
  CHECK(!strcmp(ja, "mapper.kind=cmds;mapper.resolution=224;mapper.adapt_groups=32;mapper.ca_reduction=32;"
                    "mapper.ca_groups=8;mapper.sel_hidden=128;mapper.proj_hidden=0;mapper.mlp_hidden=0;"
                    "train.steps=3000;train.batch=2;train.lr=0.0001;train.lr_min=1e-06;train.weight_decay=0.0001;"
                    "train.noise_sigma=0.01;train.seed=0;train.streams=both;loss.layer_weights=1.2,1,0.8;"
                    "train.augmented=1;backbone.final_norm=0"),
        "model key: %s", ja);
  cmds_config_join(&a, CMDS_KEY_SCORE, ja, sizeof ja);
  CHECK(!strcmp(ja, "score.l1=0.1;score.l2=0.1;score.fusion=mul;score.streams=both;score.sigma=4;score.fg_mask=1"),
        "score key: %s", ja);
  cmds_config_setting_name(&a, name, sizeof name);
  CHECK(!strcmp(name, "default"), "default setting name: %s", name);
  cmds_error err = {0};
  cmds_config_set_arg(&b, "score.l1=3e-1", NULL, CMDS_KEYS_ALL, &err);
  cmds_config_set_arg(&b, "score.fusion=add", NULL, CMDS_KEYS_ALL, &err);
  cmds_config_set_arg(&b, "train.lr=0.0001", NULL, CMDS_KEYS_ALL, &err);
  cmds_config_setting_name(&b, name, sizeof name);
  CHECK(!strcmp(name, "l1-0.3_fusion-add"), "derived setting name: %s", name);
  cmds_config_setting_name(&b, name, 8);
  CHECK(!strcmp(name, "l1-0.3_"), "setting name cut to cap - 1: %s", name);
  cmds_config_join(&a, CMDS_KEYS_MODEL, ja, sizeof ja);
  cmds_config_join(&b, CMDS_KEYS_MODEL, jb, sizeof jb);
  CHECK(!strcmp(ja, jb), "score keys and a respelled lr leave the model key");
  CHECK(cmds_config_equal(&a, &b, CMDS_KEYS_MODEL) && !cmds_config_equal(&a, &b, CMDS_KEY_SCORE) &&
            !cmds_config_equal(&a, &b, CMDS_KEYS_ALL),
        "equal by stage");
  cmds_config_set_arg(&b, "backbone.final_norm=1", NULL, CMDS_KEYS_ALL, &err);
  CHECK(cmds_config_equal(&a, &b, CMDS_KEY_TRAIN) && !cmds_config_equal(&a, &b, CMDS_KEYS_MODEL), "final_norm: model, not train");
  cmds_json j;
  cmds_json_init(&j, 0);
  cmds_config_json(&b, &j, CMDS_KEY_SCORE);
  CHECK(j.buf && !strcmp(j.buf, "{\"score.l1\":\"0.3\",\"score.l2\":\"0.1\",\"score.fusion\":\"add\","
                                "\"score.streams\":\"both\",\"score.sigma\":\"4\",\"score.fg_mask\":\"1\"}"),
        "json: %s", j.buf ? j.buf : "(null)");
  cmds_json_free(&j);
}

static void test_tasks(const char *dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s/tasks.txt", dir);
  write_file(path, "# sweep\n\nmvtec3d bagel 1 a\n  mvtec3d cookie 2 b train.steps=5 score.l1=0.3 # note\n"
                   "\t# only a comment\nmvtec3d bagel 4 a\n");
  cmds_config base;
  cmds_config_default(&base);
  cmds_error err = {0};
  cmds_config_set_arg(&base, "train.batch=4", NULL, CMDS_KEYS_ALL, &err);
  cmds_task *t = NULL;
  int n = 0;
  CHECK(!cmds_tasks_read(path, &base, -1, &t, &n, &err) && n == 3, "three tasks: %d %s", n, err.msg);
  if (n == 3) {
    CHECK(!strcmp(t[1].dataset, "mvtec3d") && !strcmp(t[1].category, "cookie") && t[1].k == 2 && !strcmp(t[1].tag, "b"),
          "names");
    CHECK(!strcmp(t[1].cfg.value[CK_STEPS], "5") && !strcmp(t[1].cfg.value[CK_SCORE_L1], "0.3") &&
              !strcmp(t[1].cfg.value[CK_BATCH], "4") && !strcmp(t[0].cfg.value[CK_STEPS], "3000"),
          "line keys over the base");
    CHECK(strstr(t[1].origin, "tasks.txt:4") != NULL, "origin %s", t[1].origin);
  }
  free(t);
  CHECK(!cmds_tasks_read(path, &base, 2, &t, &n, &err) && n == 1 && t[0].k == 4, "--task-index 2 counts tasks, not lines");
  free(t);
  CHECK(cmds_tasks_read(path, &base, 3, &t, &n, &err) == CMDS_EINPUT && strstr(err.msg, "--task-index 3") &&
            strstr(err.msg, "3 tasks (indices 0 to 2)") && !t && !n,
        "index past the end: %s", err.msg);
  struct {
    const char *text, *want;
  } bad[] = {
      {"mvtec3d bagel 1\n", "tasks.txt:1: expected 'dataset category k tag [key=value ...]', got 3 fields"},
      {"\nmvtec3d bagel 0 a\n", "tasks.txt:2: k '0': expected a positive integer"},
      {"mvtec3d ../x 1 a\n", "tasks.txt:1: category '../x'"},
      {"mvtec3d bagel 1 .hidden\n", "tasks.txt:1: tag '.hidden'"},
      {"mvtec3d bagel 1 a train.lr=fast\n", "tasks.txt:1: train.lr='fast': expected a number >= 0"},
      {"mvtec3d bagel 1 a score.l9=1\n", "tasks.txt:1: unknown configuration key 'score.l9'"},
      {"# nothing\n\n", "no tasks in the file"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    write_file(path, bad[i].text);
    CHECK(cmds_tasks_read(path, &base, -1, &t, &n, &err) == CMDS_EINPUT && strstr(err.msg, bad[i].want) && !t && !n,
          "bad tasks file %zu: %s", i, err.msg);
  }
  snprintf(path, sizeof path, "%s/missing.txt", dir);
  CHECK(cmds_tasks_read(path, &base, -1, &t, &n, &err) == CMDS_EINPUT && strstr(err.msg, "missing.txt: cannot open"),
        "missing file: %s", err.msg);

  char *cats[] = {"bagel", "cookie"};
  CHECK(!cmds_tasks_product("mvtec3d", cats, 2, "1,4", "t", &base, &t, &n, &err) && n == 4, "product: %d", n);
  if (n == 4)
    CHECK(!strcmp(t[1].category, "bagel") && t[1].k == 4 && !strcmp(t[2].category, "cookie") && t[2].k == 1 &&
              !strcmp(t[3].origin, "command line") && !strcmp(t[3].cfg.value[CK_BATCH], "4"),
          "product order category-major");
  free(t);
  CHECK(cmds_tasks_product("mvtec3d", cats, 2, "1,x", "t", &base, &t, &n, &err) == CMDS_EINPUT && strstr(err.msg, "k 'x'") &&
            !t && !n,
        "bad shots: %s", err.msg);
  CHECK(cmds_tasks_product("mvtec3d", cats, 2, ",", "t", &base, &t, &n, &err) == CMDS_EINPUT && strstr(err.msg, "--shots"),
        "empty shots: %s", err.msg);

  char line[] = "a\tb  c # d e\n", *f[4];
  CHECK(cmds_split_fields(line, f, 4) == 3 && !strcmp(f[2], "c"), "split fields");
  char line2[] = "a b c d e";
  CHECK(cmds_split_fields(line2, f, 4) == -1, "too many fields");
  CHECK(cmds_name_ok("Candy_Cane-1.x") && !cmds_name_ok("") && !cmds_name_ok(".x") && !cmds_name_ok("a/b"), "names");
}

static void test_categories(const char *dir) {
  char ds[4096], p[4200];
  snprintf(ds, sizeof ds, "%s/cache", dir);
  mkdir(ds, 0755);
  const char *files[] = {"cookie.h5", "bagel.h5", "bagel.features.h5", "tire.features.h5", ".hidden.features.h5"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    snprintf(p, sizeof p, "%s/%s", ds, files[i]);
    write_file(p, "x");
  }
  snprintf(p, sizeof p, "%s/foam.features.h5", ds);
  mkdir(p, 0755); /* a folder is not a cache */
  cmds_error err = {0};
  char **c = NULL;
  int n = cmds_categories(NULL, ds, ".features.h5", NULL, "feature caches", &c, &err);
  CHECK(n == 2 && !strcmp(c[0], "bagel") && !strcmp(c[1], "tire"), "feature caches: %d", n);
  if (n > 0) cmds_free_list(c, n);
  n = cmds_categories(NULL, ds, ".h5", ".features.h5", "sample caches", &c, &err);
  CHECK(n == 2 && !strcmp(c[0], "bagel") && !strcmp(c[1], "cookie"), "sample caches, features skipped: %d", n);
  if (n > 0) cmds_free_list(c, n);
  n = cmds_categories("tire,,bagel", ds, ".h5", NULL, "x", &c, &err);
  CHECK(n == 2 && !strcmp(c[0], "tire") && !strcmp(c[1], "bagel"), "given list kept in order: %d", n);
  if (n > 0) cmds_free_list(c, n);
  CHECK(cmds_categories(",", ds, ".h5", NULL, "x", &c, &err) == -1 && strstr(err.msg, "--category ','") && !c,
        "empty --category: %s", err.msg);
  CHECK(cmds_categories(NULL, ds, ".npz", NULL, "npz files (run x first)", &c, &err) == -1 &&
            strstr(err.msg, "cache: no npz files (run x first)") && !c,
        "none found: %s", err.msg);
  n = cmds_categories(NULL, dir, NULL, NULL, "folders", &c, &err);
  CHECK(n == 1 && !strcmp(c[0], "cache"), "sub-folders: %d", n);
  if (n > 0) cmds_free_list(c, n);
  snprintf(p, sizeof p, "%s/absent", dir);
  CHECK(cmds_categories(NULL, p, ".h5", NULL, "x", &c, &err) == -1 && strstr(err.msg, "absent: cannot open folder"),
        "missing folder: %s", err.msg);
}

/* The shared options: take, check, and the task list from --dataset's feature caches. */
static void test_opts(const char *dir) {
  cmds_task_opts o;
  cmds_task_opts_init(&o);
  CHECK(o.task_index == -1 && !strcmp(o.shots, "1,2,4") && !strcmp(o.tag, "default") && !strcmp(o.device, "auto") &&
            !strcmp(o.cfg.value[CK_STEPS], "3000"),
        "defaults");
  cmds_error err = {0};
  int taken = 0;
  CHECK(cmds_task_opts_check(&o, &err) == CMDS_EINPUT && strstr(err.msg, "--cache and --run are required"), "%s", err.msg);
  char cache[4096];
  snprintf(cache, sizeof cache, "%s", dir);
  const char *args[][2] = {{"--cache", cache}, {"--run", "r"}, {"--dataset", "cache"}, {"--shots", "2"},
                           {"--set", "train.steps=7"}, {"--tag", "t1"}};
  for (size_t i = 0; i < sizeof args / sizeof args[0]; i++)
    CHECK(!cmds_task_opts_take(&o, args[i][0], args[i][1], &taken, &err) && taken, "%s", args[i][0]);
  CHECK(!cmds_task_opts_take(&o, "--heads", "2", &taken, &err) && !taken, "a stage's own option is not taken");
  CHECK(cmds_task_opts_take(&o, "--set", "train.steps=x", &taken, &err) == CMDS_EINPUT &&
            strstr(err.msg, "--set: train.steps='x'"),
        "--set error: %s", err.msg);
  CHECK(cmds_task_opts_take(&o, "--task-index", "-1", &taken, &err) == CMDS_EINPUT && strstr(err.msg, "--task-index -1"),
        "bad index: %s", err.msg);
  CHECK(!cmds_task_opts_check(&o, &err), "complete: %s", err.msg);
  cmds_task *t = NULL;
  int n = 0;
  CHECK(!cmds_task_opts_tasks(&o, &t, &n, &err) && n == 2 && !strcmp(t[0].category, "bagel") && t[0].k == 2 &&
            !strcmp(t[1].category, "tire") && !strcmp(t[1].tag, "t1") && !strcmp(t[1].cfg.value[CK_STEPS], "7"),
        "tasks from the feature caches: %d %s", n, err.msg);
  free(t);
  o.device = "gpu";
  CHECK(cmds_task_opts_check(&o, &err) == CMDS_EINPUT && strstr(err.msg, "--device: expected auto, cpu or cuda"), "device");
  o.device = "cpu";
  o.task_index = 0;
  CHECK(cmds_task_opts_check(&o, &err) == CMDS_EINPUT && strstr(err.msg, "--task-index needs --tasks"), "index alone");
  o.tasks = "x.txt";
  CHECK(cmds_task_opts_check(&o, &err) == CMDS_EINPUT && strstr(err.msg, "either --tasks FILE or --dataset D"), "both");
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : ".";
  cmds_error err = {0};
  if (cmds_mkdir_p(dir, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  test_table();
  test_values();
  test_views();
  test_tasks(dir);
  test_categories(dir);
  test_opts(dir);
  return CHECK_DONE();
}
