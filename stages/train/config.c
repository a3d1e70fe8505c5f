/* config: see config.h. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { T_INT, T_NUM, T_ENUM, T_LIST } key_type;

typedef struct key_def {
  const char *name;
  key_type type;
  const char *def;
  const char *choices; /* T_ENUM: "a|b|c" */
  double min;          /* T_INT, T_NUM, T_LIST items: smallest allowed value */
  int train;           /* changes the trained mapper */
} key_def;

/* Order = the enum in config.h. Defaults: METHOD.md sections 3-6. */
static const key_def keys[K_NKEYS] = {
    {"mapper.kind", T_ENUM, "cmds", "cmds|mlp", 0, 1},
    {"mapper.resolution", T_INT, "224", NULL, 1, 1},
    {"mapper.adapt_groups", T_INT, "32", NULL, 1, 1},
    {"mapper.ca_reduction", T_INT, "32", NULL, 1, 1},
    {"mapper.ca_groups", T_INT, "8", NULL, 1, 1},
    {"mapper.sel_hidden", T_INT, "128", NULL, 1, 1},
    {"mapper.proj_hidden", T_INT, "0", NULL, 0, 1},
    {"mapper.mlp_hidden", T_INT, "0", NULL, 0, 1},
    {"train.steps", T_INT, "3000", NULL, 1, 1},
    {"train.batch", T_INT, "2", NULL, 1, 1},
    {"train.lr", T_NUM, "1e-4", NULL, 0, 1},
    {"train.lr_min", T_NUM, "1e-6", NULL, 0, 1},
    {"train.weight_decay", T_NUM, "1e-4", NULL, 0, 1},
    {"train.noise_sigma", T_NUM, "0.01", NULL, 0, 1},
    {"train.seed", T_INT, "0", NULL, 0, 1},
    {"train.streams", T_ENUM, "both", "both|real|est", 0, 1},
    {"loss.layer_weights", T_LIST, "1.2,1.0,0.8", NULL, 0, 1},
    {"score.l1", T_NUM, "0.1", NULL, 0, 0},
    {"score.l2", T_NUM, "0.1", NULL, 0, 0},
    {"score.fusion", T_ENUM, "mul", "mul|add|max|2d|3d", 0, 0},
    {"score.streams", T_ENUM, "both", "both|real|est", 0, 0},
    {"score.sigma", T_NUM, "4", NULL, 0, 0},
    {"score.fg_mask", T_INT, "1", NULL, 0, 0},
    {"backbone.final_norm", T_INT, "0", NULL, 0, 1},
};

const char *train_config_key_name(int k) { return keys[k].name; }

/* The shortest %g form that reads back as the same double. */
static void canon_num(double v, char *out, size_t cap) {
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(out, cap, "%.*g", prec, v);
    if (strtod(out, NULL) == v) return;
  }
}

static int parse_num(const char *s, double *v) {
  char *end = NULL;
  if (!*s) return 0;
  *v = strtod(s, &end);
  return end && !*end && isfinite(*v);
}

static int canon_value(const key_def *d, const char *v, char *out, size_t cap, char *why, size_t why_cap) {
  if (d->type == T_INT) {
    char *end = NULL;
    long long n = strtoll(v, &end, 10);
    if (!*v || !end || *end || n < (long long)d->min || n > (long long)1 << 40) {
      snprintf(why, why_cap, "an integer >= %g", d->min);
      return 0;
    }
    snprintf(out, cap, "%lld", n);
    return 1;
  }
  if (d->type == T_NUM) {
    double x;
    if (!parse_num(v, &x) || x < d->min) {
      snprintf(why, why_cap, "a number >= %g", d->min);
      return 0;
    }
    canon_num(x, out, cap);
    return 1;
  }
  if (d->type == T_ENUM) {
    const char *c = d->choices;
    size_t n = strlen(v);
    while (c && *c) {
      const char *bar = strchr(c, '|');
      size_t len = bar ? (size_t)(bar - c) : strlen(c);
      if (len == n && !strncmp(c, v, n)) {
        snprintf(out, cap, "%s", v);
        return 1;
      }
      c = bar ? bar + 1 : NULL;
    }
    snprintf(why, why_cap, "one of %s", d->choices);
    return 0;
  }
  /* T_LIST: comma-separated numbers >= min, at most TRAIN_MAX_LAYERS */
  char buf[TRAIN_CFG_VALUE_MAX * 2];
  size_t used = 0;
  int count = 0;
  const char *p = v;
  snprintf(why, why_cap, "a comma-separated list of 1 to %d numbers >= %g", TRAIN_MAX_LAYERS, d->min);
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    char item[64];
    double x;
    if (len == 0 || len >= sizeof item) return 0;
    memcpy(item, p, len);
    item[len] = 0;
    if (!parse_num(item, &x) || x < d->min || ++count > TRAIN_MAX_LAYERS) return 0;
    char c[32];
    canon_num(x, c, sizeof c);
    used += (size_t)snprintf(buf + used, sizeof buf - used, "%s%s", count > 1 ? "," : "", c);
    if (used >= cap) return 0;
    if (!comma) break;
    p = comma + 1;
  }
  snprintf(out, cap, "%s", buf);
  return 1;
}

void train_config_default(train_config *c) {
  memset(c, 0, sizeof *c);
  char why[128];
  for (int k = 0; k < K_NKEYS; k++) canon_value(&keys[k], keys[k].def, c->value[k], TRAIN_CFG_VALUE_MAX, why, sizeof why);
}

int train_config_set(train_config *c, const char *kv, const char *where, cmds_error *err) {
  if (!where) where = "--set";
  const char *eq = strchr(kv, '=');
  if (!eq || eq == kv)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: '%s': expected key=value (e.g. train.steps=3000)", where, kv);
  size_t klen = (size_t)(eq - kv);
  for (int k = 0; k < K_NKEYS; k++) {
    if (strlen(keys[k].name) != klen || strncmp(keys[k].name, kv, klen)) continue;
    char why[128];
    if (!canon_value(&keys[k], eq + 1, c->value[k], TRAIN_CFG_VALUE_MAX, why, sizeof why))
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s='%s': expected %s", where, keys[k].name, eq + 1, why);
    return CMDS_OK;
  }
  char known[1024];
  size_t used = 0;
  for (int k = 0; k < K_NKEYS && used < sizeof known; k++)
    used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", k ? ", " : "", keys[k].name);
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: unknown configuration key '%.*s' (known: %s)", where, (int)klen, kv, known);
}

void train_config_params(const train_config *c, train_params *p) {
  memset(p, 0, sizeof *p);
#define I(k) strtoll(c->value[k], NULL, 10)
#define D(k) strtod(c->value[k], NULL)
  p->mlp = !strcmp(c->value[K_MAPPER_KIND], "mlp");
  p->resolution = I(K_RESOLUTION);
  p->adapt_groups = I(K_ADAPT_GROUPS);
  p->ca_reduction = I(K_CA_REDUCTION);
  p->ca_groups = I(K_CA_GROUPS);
  p->sel_hidden = I(K_SEL_HIDDEN);
  p->proj_hidden = I(K_PROJ_HIDDEN);
  p->mlp_hidden = I(K_MLP_HIDDEN);
  p->steps = I(K_STEPS);
  p->batch = I(K_BATCH);
  p->lr = D(K_LR);
  p->lr_min = D(K_LR_MIN);
  p->weight_decay = D(K_WEIGHT_DECAY);
  p->noise_sigma = D(K_NOISE_SIGMA);
  p->seed = (uint64_t)I(K_SEED);
  p->stream_real = strcmp(c->value[K_STREAMS], "est") != 0;
  p->stream_est = strcmp(c->value[K_STREAMS], "real") != 0;
  p->final_norm = (int)I(K_FINAL_NORM);
  const char *s = c->value[K_LAYER_WEIGHTS];
  while (*s && p->n_layer_weights < TRAIN_MAX_LAYERS) {
    char *end = NULL;
    p->layer_weights[p->n_layer_weights++] = (float)strtod(s, &end);
    s = *end == ',' ? end + 1 : end;
  }
#undef I
#undef D
}

void train_config_key(const train_config *c, char *out, size_t cap) {
  size_t used = 0;
  out[0] = 0;
  for (int k = 0; k < K_NKEYS && used < cap; k++)
    if (keys[k].train)
      used += (size_t)snprintf(out + used, cap - used, "%s%s=%s", used ? ";" : "", keys[k].name, c->value[k]);
}

void train_config_json(const train_config *c, cmds_json *j) {
  cmds_json_object_begin(j);
  for (int k = 0; k < K_NKEYS; k++) cmds_json_kv_str(j, keys[k].name, c->value[k]);
  cmds_json_object_end(j);
}
