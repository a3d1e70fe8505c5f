/* config_keys: see config_keys.h. */
#include "config_keys.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Order = the CK_* enum. Defaults: METHOD.md sections 3-6, as canonical text. */
const cmds_key_def cmds_keys[CK_NKEYS] = {
    {"mapper.kind", CMDS_KT_ENUM, CMDS_KEY_TRAIN, "cmds", "cmds|mlp", 0, 0},
    {"mapper.resolution", CMDS_KT_INT, CMDS_KEY_TRAIN, "224", NULL, 8, 0},
    {"mapper.adapt_groups", CMDS_KT_INT, CMDS_KEY_TRAIN, "32", NULL, 1, 0},
    {"mapper.ca_reduction", CMDS_KT_INT, CMDS_KEY_TRAIN, "32", NULL, 1, 0},
    {"mapper.ca_groups", CMDS_KT_INT, CMDS_KEY_TRAIN, "8", NULL, 1, 0},
    {"mapper.sel_hidden", CMDS_KT_INT, CMDS_KEY_TRAIN, "128", NULL, 1, 0},
    {"mapper.proj_hidden", CMDS_KT_INT, CMDS_KEY_TRAIN, "0", NULL, 0, 0}, /* 0: 2*D */
    {"mapper.mlp_hidden", CMDS_KT_INT, CMDS_KEY_TRAIN, "0", NULL, 0, 0},  /* 0: L*D */
    {"train.steps", CMDS_KT_INT, CMDS_KEY_TRAIN, "3000", NULL, 1, 0},
    {"train.batch", CMDS_KT_INT, CMDS_KEY_TRAIN, "2", NULL, 1, 0},
    {"train.lr", CMDS_KT_NUM, CMDS_KEY_TRAIN, "0.0001", NULL, 0, 0},
    {"train.lr_min", CMDS_KT_NUM, CMDS_KEY_TRAIN, "1e-06", NULL, 0, 0},
    {"train.weight_decay", CMDS_KT_NUM, CMDS_KEY_TRAIN, "0.0001", NULL, 0, 0},
    {"train.noise_sigma", CMDS_KT_NUM, CMDS_KEY_TRAIN, "0.01", NULL, 0, 0},
    {"train.seed", CMDS_KT_INT, CMDS_KEY_TRAIN, "0", NULL, 0, 0},
    {"train.streams", CMDS_KT_ENUM, CMDS_KEY_TRAIN, "both", "both|real|est", 0, 0},
    {"loss.layer_weights", CMDS_KT_NUMS, CMDS_KEY_TRAIN, "1.2,1,0.8", NULL, 0, 0},
    /* not in METHOD.md (our ablation switch): 0 = the E stream leaves the sample cache's
     * augmented rows out, the paper's "w/o augmentation" on a shared augmented cache */
    {"train.augmented", CMDS_KT_BOOL, CMDS_KEY_TRAIN, "1", NULL, 0, 1},
    {"score.l1", CMDS_KT_NUM, CMDS_KEY_SCORE, "0.1", NULL, 0, 0},
    {"score.l2", CMDS_KT_NUM, CMDS_KEY_SCORE, "0.1", NULL, 0, 0},
    {"score.fusion", CMDS_KT_ENUM, CMDS_KEY_SCORE, "mul", "mul|add|max|2d|3d", 0, 0},
    {"score.streams", CMDS_KT_ENUM, CMDS_KEY_SCORE, "both", "both|real|est", 0, 0},
    /* pixels at 224; the blur kernel's radius must stay within the map (cmds-score) */
    {"score.sigma", CMDS_KT_NUM, CMDS_KEY_SCORE, "4", NULL, 0, 63},
    /* maps are 0 where the point cloud has no point (stages/score/README.md) */
    {"score.fg_mask", CMDS_KT_BOOL, CMDS_KEY_SCORE, "1", NULL, 0, 1},
    {"backbone.final_norm", CMDS_KT_BOOL, CMDS_KEY_FEATURES, "0", NULL, 0, 1},
    /* METHOD.md section 7: the LoRA fine-tune (train_text_to_image_lora.py's semantics) and
     * img2img; '{category}' in the prompt is the category name with '_' read as ' ' */
    {"augment.prompt", CMDS_KT_TEXT, CMDS_KEY_AUGMENT, "a photo of a {category}", NULL, 0, 0},
    {"augment.rank", CMDS_KT_INT, CMDS_KEY_AUGMENT, "16", NULL, 1, 1024},
    {"augment.alpha", CMDS_KT_NUM, CMDS_KEY_AUGMENT, "16", NULL, 0, 0}, /* peft scale alpha / rank */
    {"augment.steps", CMDS_KT_INT, CMDS_KEY_AUGMENT, "1000", NULL, 1, 0},
    {"augment.lr", CMDS_KT_NUM, CMDS_KEY_AUGMENT, "0.0001", NULL, 0, 0},
    {"augment.weight_decay", CMDS_KT_NUM, CMDS_KEY_AUGMENT, "0.01", NULL, 0, 0},
    {"augment.max_grad_norm", CMDS_KT_NUM, CMDS_KEY_AUGMENT, "1", NULL, 0, 0},
    {"augment.batch", CMDS_KT_INT, CMDS_KEY_AUGMENT, "1", NULL, 1, 1}, /* METHOD.md: batch 1 (the only one) */
    /* a multiple of 8 (the VAE's scale factor; cmds-augment checks the UNet's) */
    {"augment.resolution", CMDS_KT_INT, CMDS_KEY_AUGMENT, "512", NULL, 8, 4096},
    {"augment.strength", CMDS_KT_NUM, CMDS_KEY_AUGMENT, "0.3", NULL, 0, 1},
    {"augment.inference_steps", CMDS_KT_INT, CMDS_KEY_AUGMENT, "50", NULL, 1, 1000},
    {"augment.guidance", CMDS_KT_NUM, CMDS_KEY_AUGMENT, "7.5", NULL, 0, 0},
    {"augment.images", CMDS_KT_INT, CMDS_KEY_AUGMENT, "16", NULL, 1, 100000},
    {"augment.seed", CMDS_KT_INT, CMDS_KEY_AUGMENT, "0", NULL, 0, 0},
};

#define INT_LIMIT ((long long)1 << 40)

int cmds_key_find(const char *name, size_t len) {
  for (int k = 0; k < CK_NKEYS; k++)
    if (strlen(cmds_keys[k].name) == len && !strncmp(cmds_keys[k].name, name, len)) return k;
  return -1;
}

/* The shortest %g form that reads back as the same double (-0 is 0). */
static void canon_num(double v, char *out, size_t cap) {
  if (v == 0) v = 0;
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(out, cap, "%.*g", prec, v);
    if (strtod(out, NULL) == v) return;
  }
}

/* A finite number filling s[0..len) but for surrounding white space. */
static int parse_num(const char *s, size_t len, double *v) {
  char buf[64];
  while (len && isspace((unsigned char)*s)) s++, len--;
  while (len && isspace((unsigned char)s[len - 1])) len--;
  if (!len || len >= sizeof buf) return 0;
  memcpy(buf, s, len);
  buf[len] = 0;
  char *end = NULL;
  *v = strtod(buf, &end);
  return end && !*end && isfinite(*v);
}

static void expected(const cmds_key_def *d, char *why, size_t cap) {
  switch (d->type) {
    case CMDS_KT_ENUM: snprintf(why, cap, "one of %s", d->choices); break;
    case CMDS_KT_INT:
      if (d->max > 0) snprintf(why, cap, "an integer in [%g, %g]", d->min, d->max);
      else snprintf(why, cap, "an integer >= %g", d->min);
      break;
    case CMDS_KT_NUM:
      if (d->max > 0) snprintf(why, cap, "a number in [%g, %g]", d->min, d->max);
      else snprintf(why, cap, "a number >= %g", d->min);
      break;
    case CMDS_KT_NUMS:
      snprintf(why, cap, "a comma-separated list of 1 to %d numbers >= %g", CMDS_KEY_LIST_MAX, d->min);
      break;
    case CMDS_KT_BOOL: snprintf(why, cap, "0 or 1 (or true/false, on/off)"); break;
    case CMDS_KT_TEXT:
      snprintf(why, cap, "1 to %d printable characters without '\"', '\\' or ';'", CMDS_CFG_VALUE_MAX - 1);
      break;
  }
}

/* The canonical text into out[CMDS_CFG_VALUE_MAX]; 0 when not allowed. */
static int canon(const cmds_key_def *d, const char *v, char *out) {
  const size_t cap = CMDS_CFG_VALUE_MAX;
  size_t n = strlen(v);
  double x;
  switch (d->type) {
    case CMDS_KT_ENUM:
      for (const char *c = d->choices; c && *c;) {
        const char *bar = strchr(c, '|');
        size_t len = bar ? (size_t)(bar - c) : strlen(c);
        if (len == n && !strncmp(c, v, n)) {
          snprintf(out, cap, "%s", v);
          return 1;
        }
        c = bar ? bar + 1 : NULL;
      }
      return 0;
    case CMDS_KT_INT: {
      long long hi = d->max > 0 ? (long long)d->max : INT_LIMIT;
      /* decimal digits, or a number with an integral value ("3e3", "3000.0") */
      if (!parse_num(v, n, &x) || x != floor(x) || x < d->min || x > (double)hi) return 0;
      snprintf(out, cap, "%lld", (long long)x);
      return 1;
    }
    case CMDS_KT_NUM:
      if (!parse_num(v, n, &x) || x < d->min || (d->max > 0 && x > d->max)) return 0;
      canon_num(x, out, cap);
      return 1;
    case CMDS_KT_BOOL:
      if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "on")) snprintf(out, cap, "1");
      else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "off")) snprintf(out, cap, "0");
      else return 0;
      return 1;
    case CMDS_KT_TEXT:
      if (!n || n >= cap) return 0;
      for (const char *p = v; *p; p++)
        if (*p < 0x20 || *p > 0x7e || *p == '"' || *p == '\\' || *p == ';') return 0;
      memcpy(out, v, n + 1);
      return 1;
    case CMDS_KT_NUMS: {
      char buf[CMDS_CFG_VALUE_MAX];
      size_t used = 0;
      int count = 0;
      for (const char *p = v;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[32];
        if (!parse_num(p, len, &x) || x < d->min || ++count > CMDS_KEY_LIST_MAX) return 0;
        canon_num(x, item, sizeof item);
        used += (size_t)snprintf(buf + used, sizeof buf - used, "%s%s", count > 1 ? "," : "", item);
        if (used >= sizeof buf) return 0;
        if (!comma) break;
        p = comma + 1;
      }
      memcpy(out, buf, used + 1);
      return 1;
    }
  }
  return 0;
}

int cmds_key_canon(int k, const char *value, char *out, size_t cap, char *why, size_t why_cap) {
  if (why && why_cap) why[0] = 0;
  if (k < 0 || k >= CK_NKEYS) {
    if (why) snprintf(why, why_cap, "a known configuration key");
    return 0;
  }
  char buf[CMDS_CFG_VALUE_MAX];
  if (!canon(&cmds_keys[k], value, buf) || strlen(buf) >= cap) {
    if (why) expected(&cmds_keys[k], why, why_cap);
    return 0;
  }
  snprintf(out, cap, "%s", buf);
  return 1;
}

void cmds_config_default(cmds_config *c) {
  memset(c, 0, sizeof *c);
  for (int k = 0; k < CK_NKEYS; k++) snprintf(c->value[k], CMDS_CFG_VALUE_MAX, "%s", cmds_keys[k].def);
}

/* The names of the keys of `stages`, ", "-separated. */
static void key_names(unsigned stages, char *out, size_t cap) {
  size_t used = 0;
  out[0] = 0;
  for (int k = 0; k < CK_NKEYS && used < cap; k++)
    if (cmds_keys[k].stage & stages)
      used += (size_t)snprintf(out + used, cap - used, "%s%s", used ? ", " : "", cmds_keys[k].name);
}

static int unknown_key(const char *key, size_t klen, const char *where, unsigned stages, cmds_error *err) {
  char known[1024];
  key_names(stages, known, sizeof known);
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: unknown configuration key '%.*s' (known: %s)", where, (int)klen, key, known);
}

static int set_value(cmds_config *c, int k, const char *value, const char *where, cmds_error *err) {
  char why[128];
  if (!cmds_key_canon(k, value, c->value[k], CMDS_CFG_VALUE_MAX, why, sizeof why))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s='%s': expected %s", where, cmds_keys[k].name, value, why);
  return CMDS_OK;
}

int cmds_config_set(cmds_config *c, const char *key, const char *value, const char *where, cmds_error *err) {
  int k = cmds_key_find(key, strlen(key));
  if (k < 0) return unknown_key(key, strlen(key), where, CMDS_KEYS_ALL, err);
  return set_value(c, k, value, where, err);
}

int cmds_config_set_arg(cmds_config *c, const char *kv, const char *where, unsigned stages, cmds_error *err) {
  if (!where) where = "--set";
  const char *eq = strchr(kv, '=');
  if (!eq || eq == kv)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: '%s': expected key=value (e.g. train.steps=3000)", where, kv);
  size_t klen = (size_t)(eq - kv);
  int k = cmds_key_find(kv, klen);
  if (k < 0) return unknown_key(kv, klen, where, stages, err);
  if (!(cmds_keys[k].stage & stages)) {
    char known[1024];
    key_names(stages, known, sizeof known);
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %s cannot be set here (allowed: %s)", where, cmds_keys[k].name, known);
  }
  return set_value(c, k, eq + 1, where, err);
}

int cmds_config_equal(const cmds_config *a, const cmds_config *b, unsigned stages) {
  for (int k = 0; k < CK_NKEYS; k++)
    if ((cmds_keys[k].stage & stages) && strcmp(a->value[k], b->value[k])) return 0;
  return 1;
}

void cmds_config_join(const cmds_config *c, unsigned stages, char *out, size_t cap) {
  size_t used = 0;
  out[0] = 0;
  for (int k = 0; k < CK_NKEYS && used < cap; k++)
    if (cmds_keys[k].stage & stages)
      used += (size_t)snprintf(out + used, cap - used, "%s%s=%s", used ? ";" : "", cmds_keys[k].name, c->value[k]);
}

void cmds_config_json(const cmds_config *c, cmds_json *j, unsigned stages) {
  cmds_json_object_begin(j);
  for (int k = 0; k < CK_NKEYS; k++)
    if (cmds_keys[k].stage & stages) cmds_json_kv_str(j, cmds_keys[k].name, c->value[k]);
  cmds_json_object_end(j);
}

void cmds_config_setting_name(const cmds_config *c, char *out, size_t cap) {
  size_t used = 0;
  out[0] = 0;
  for (int k = 0; k < CK_NKEYS && used < cap; k++) {
    if (cmds_keys[k].stage != CMDS_KEY_SCORE || !strcmp(c->value[k], cmds_keys[k].def)) continue;
    const char *dot = strchr(cmds_keys[k].name, '.');
    used += (size_t)snprintf(out + used, cap - used, "%s%s-%s", used ? "_" : "", dot + 1, c->value[k]);
  }
  if (!out[0]) snprintf(out, cap, "default");
}
