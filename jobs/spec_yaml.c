/* spec_yaml: the job spec's YAML access (spec_internal.h). The document is read with
 * libyaml's document API; every mapping is checked for unknown keys (a typo must not silently
 * fall back to a default) and every failure names the file, the line and the field. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"
#include "spec_internal.h"

int ymark(const yaml_node_t *n) { return n ? (int)n->start_mark.line + 1 : 0; }

int yfail(yctx *y, const yaml_node_t *n, const char *where, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return CMDS_FAIL(y->err, CMDS_EINPUT, "%s line %d: %s: %s", y->path, ymark(n), where, msg);
}

yaml_node_t *ynode(yctx *y, int id) { return yaml_document_get_node(&y->doc, id); }

const char *yscalar(const yaml_node_t *n) {
  return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

int ylen(const yaml_node_t *n) {
  if (n && n->type == YAML_SEQUENCE_NODE) return (int)(n->data.sequence.items.top - n->data.sequence.items.start);
  if (n && n->type == YAML_MAPPING_NODE) return (int)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
  return 0;
}

/* Value of key in a mapping, NULL when absent. */
yaml_node_t *yget(yctx *y, yaml_node_t *map, const char *key) {
  if (!map || map->type != YAML_MAPPING_NODE) return NULL;
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    const char *k = yscalar(ynode(y, p->key));
    if (k && !strcmp(k, key)) return ynode(y, p->value);
  }
  return NULL;
}

/* Every key of map must be in the '|'-separated list. */
int ykeys(yctx *y, yaml_node_t *map, const char *where, const char *allowed) {
  if (!map || map->type != YAML_MAPPING_NODE) return yfail(y, map, where, "expected a mapping");
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    yaml_node_t *kn = ynode(y, p->key);
    const char *k = yscalar(kn);
    if (!k) return yfail(y, kn, where, "keys must be plain strings");
    int ok = 0;
    size_t kl = strlen(k);
    for (const char *a = allowed; *a && !ok;) {
      const char *bar = strchr(a, '|');
      size_t n = bar ? (size_t)(bar - a) : strlen(a);
      ok = n == kl && !strncmp(a, k, n);
      a = bar ? bar + 1 : a + n;
    }
    if (!ok) {
      char list[512];
      snprintf(list, sizeof list, "%s", allowed);
      for (char *c = list; *c; c++)
        if (*c == '|') *c = ',';
      return yfail(y, kn, where, "unknown key '%s' (expected one of: %s)", k, list);
    }
  }
  return CMDS_OK;
}

/* ${NAME} and ${NAME:-default} from the environment. */
int yexpand_env(yctx *y, const yaml_node_t *n, const char *where, const char *in, char **out) {
  size_t cap = strlen(in) + 256, len = 0;
  char *o = cmds_xmalloc(cap);
  for (const char *p = in; *p;) {
    if (p[0] == '$' && p[1] == '{') {
      const char *close = strchr(p, '}');
      if (!close) {
        free(o);
        return yfail(y, n, where, "'${' without '}' in '%s'", in);
      }
      char name[256], def[1024];
      int has_def = 0;
      size_t nl = (size_t)(close - p - 2);
      if (nl >= sizeof name) nl = sizeof name - 1;
      memcpy(name, p + 2, nl);
      name[nl] = 0;
      char *dash = strstr(name, ":-");
      if (dash) {
        *dash = 0;
        snprintf(def, sizeof def, "%s", dash + 2);
        has_def = 1;
      }
      const char *v = getenv(name);
      if (!v || (!*v && has_def)) v = has_def ? def : NULL;
      if (!v) {
        free(o);
        return yfail(y, n, where, "environment variable %s is not set (write ${%s:-default} for a default)", name, name);
      }
      size_t vl = strlen(v);
      if (len + vl + 1 > cap) {
        cap = (len + vl + 1) * 2;
        o = cmds_xrealloc(o, cap);
      }
      memcpy(o + len, v, vl);
      len += vl;
      p = close + 1;
    } else {
      if (len + 2 > cap) {
        cap *= 2;
        o = cmds_xrealloc(o, cap);
      }
      o[len++] = *p++;
    }
  }
  o[len] = 0;
  *out = o;
  return CMDS_OK;
}

int ystring(yctx *y, yaml_node_t *map, const char *key, const char *where, int required,
                   int expand, char **out) {
  yaml_node_t *n = yget(y, map, key);
  if (!n) {
    if (required) return yfail(y, map, where, "'%s' is required", key);
    return CMDS_OK;
  }
  const char *s = yscalar(n);
  if (!s || !*s) return yfail(y, n, where, "'%s': expected a non-empty string", key);
  free(*out);
  *out = NULL;
  if (expand) return yexpand_env(y, n, where, s, out);
  *out = cmds_xstrdup(s);
  return CMDS_OK;
}

/* An integer; ${VAR} forms are expanded first (`ranks: ${NP:-2}`). */
int ylong(yctx *y, yaml_node_t *n, const char *where, long min, long max, long *out) {
  const char *raw = yscalar(n);
  char *s = NULL, *end = NULL;
  if (raw) {
    int rc = yexpand_env(y, n, where, raw, &s);
    if (rc) return rc;
  }
  long v = s ? strtol(s, &end, 10) : 0;
  int bad = !s || !*s || *end || v < min || v > max;
  if (bad) yfail(y, n, where, "expected an integer in [%ld, %ld], got '%s'", min, max, s ? s : "(not a scalar)");
  free(s);
  if (bad) return CMDS_EINPUT;
  *out = v;
  return CMDS_OK;
}

/* A scalar or a sequence of scalars as a list of strings. */
int ylist(yctx *y, yaml_node_t *n, const char *where, char ***out, int *count) {
  *out = NULL;
  *count = 0;
  if (yscalar(n)) {
    *out = cmds_xmalloc(sizeof **out);
    (*out)[0] = cmds_xstrdup(yscalar(n));
    *count = 1;
    return CMDS_OK;
  }
  if (!n || n->type != YAML_SEQUENCE_NODE) return yfail(y, n, where, "expected a value or a list of values");
  int m = ylen(n);
  *out = cmds_xcalloc((size_t)m + 1, sizeof **out);
  for (int i = 0; i < m; i++) {
    yaml_node_t *it = ynode(y, n->data.sequence.items.start[i]);
    if (!yscalar(it)) {
      cmds_free_list(*out, i);
      *out = NULL;
      return yfail(y, it, where, "item %d: expected a plain value", i);
    }
    (*out)[i] = cmds_xstrdup(yscalar(it));
  }
  *count = m;
  return CMDS_OK;
}

void spec_kvlist_free(job_kvlist *l) {
  for (int i = 0; i < l->n; i++) {
    free(l->v[i].key);
    free(l->v[i].value);
  }
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

int yconfig_probe(yctx *y, const char *at, const char *key, const char *value) {
  cmds_config probe;
  cmds_config_default(&probe);
  return cmds_config_set(&probe, key, value, at, y->err);
}

/* A mapping of configuration keys: checked against the key table right away. Values may be
 * scalars or (loss.layer_weights) lists. */
int yconfig(yctx *y, yaml_node_t *map, const char *where, job_kvlist *out) {
  if (!map) return CMDS_OK;
  if (map->type != YAML_MAPPING_NODE) return yfail(y, map, where, "expected a mapping of configuration keys");
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    const char *k = yscalar(ynode(y, p->key));
    yaml_node_t *vn = ynode(y, p->value);
    char **items;
    int n;
    if (!k) return yfail(y, map, where, "keys must be plain strings");
    char w[512];
    snprintf(w, sizeof w, "%s.%s", where, k);
    int rc = ylist(y, vn, w, &items, &n);
    if (rc) return rc;
    char val[1024];
    size_t len = 0;
    val[0] = 0;
    for (int i = 0; i < n; i++) len += (size_t)snprintf(val + len, sizeof val - len, "%s%s", i ? "," : "", items[i]);
    cmds_free_list(items, n);
    char at[600];
    snprintf(at, sizeof at, "%s line %d: %s", y->path, ymark(vn), where);
    int kk = cmds_key_find(k, strlen(k));
    if (kk >= 0 && cmds_keys[kk].stage == CMDS_KEY_AUGMENT)
      return yfail(y, vn, where, "%s: the augment stage's keys go in the spec's augment: block, without the 'augment.' "
                  "prefix (augment: {sd: DIR, %s: %s})", k, k + 8, val);
    rc = yconfig_probe(y, at, k, val);
    if (rc) return rc;
    out->v = cmds_xrealloc(out->v, (size_t)(out->n + 1) * sizeof *out->v);
    out->v[out->n].key = cmds_xstrdup(k);
    out->v[out->n].value = cmds_xstrdup(val);
    out->n++;
  }
  return CMDS_OK;
}

int ycheck_label(yctx *y, const yaml_node_t *n, const char *where, const char *name) {
  if (!*name) return yfail(y, n, where, "empty name");
  for (const char *p = name; *p; p++)
    if (isspace((unsigned char)*p) || *p == ';' || *p == ',' || *p == '"' || *p == '/')
      return yfail(y, n, where, "name '%s': no spaces, ';', ',', '/' or '\"' (it becomes a table label)", name);
  return CMDS_OK;
}
