/* test_jsonread: comm/jsonread against Python's json module (tests/fixtures/gen_jsonread.py):
 * every document is read and flattened to "path type value" lines exactly as the generator
 * flattens Python's reading of it (numbers compared as doubles, bit-exact); every bad document
 * is rejected with a message naming the source and a byte offset; the typed getters. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "jsonread.h"

static char *hex(const char *s, size_t n) {
  char *h = malloc(2 * n + 1);
  for (size_t i = 0; i < n; i++) sprintf(h + 2 * i, "%02x", (unsigned char)s[i]);
  h[2 * n] = 0;
  return h;
}

typedef struct lines {
  char **v;
  int n, cap;
} lines;

static void add(lines *L, char *s) {
  if (L->n == L->cap) L->v = realloc(L->v, (size_t)(L->cap = L->cap ? 2 * L->cap : 64) * sizeof *L->v);
  L->v[L->n++] = s;
}

static void flatten(lines *L, const char *path, const cmds_jv *v) {
  char buf[4096];
  switch (v->type) {
    case CMDS_JV_OBJ:
    case CMDS_JV_ARR:
      snprintf(buf, sizeof buf, "%s\t%s\t%lld", path, v->type == CMDS_JV_OBJ ? "object" : "list", (long long)v->n);
      add(L, strdup(buf));
      for (int64_t k = 0; k < v->n; k++) {
        char p[2048];
        if (v->type == CMDS_JV_OBJ) {
          char *h = hex(v->keys[k], strlen(v->keys[k]));
          snprintf(p, sizeof p, "%s/%s", path, h);
          free(h);
        } else {
          snprintf(p, sizeof p, "%s/#%lld", path, (long long)k);
        }
        flatten(L, p, &v->items[k]);
      }
      break;
    case CMDS_JV_NULL: snprintf(buf, sizeof buf, "%s\tnull\t", path); add(L, strdup(buf)); break;
    case CMDS_JV_BOOL: snprintf(buf, sizeof buf, "%s\tbool\t%d", path, v->b); add(L, strdup(buf)); break;
    case CMDS_JV_NUM: snprintf(buf, sizeof buf, "%s\tnum\t%a", path, v->num); add(L, strdup(buf)); break;
    case CMDS_JV_STR: {
      char *h = hex(v->str, v->len);
      snprintf(buf, sizeof buf, "%s\tstr\t%s", path, h);
      free(h);
      add(L, strdup(buf));
      break;
    }
  }
}

static void read_lines(lines *L, const char *path) {
  FILE *f = fopen(path, "r");
  CHECK(f != NULL, "open %s", path);
  if (!f) return;
  char buf[8192];
  while (fgets(buf, sizeof buf, f)) {
    buf[strcspn(buf, "\n")] = 0;
    add(L, strdup(buf));
  }
  fclose(f);
}

/* Same line, numbers compared as values (Python writes float.hex, we write %a). */
static int same_line(const char *a, const char *b) {
  if (!strcmp(a, b)) return 1;
  const char *ta = strstr(a, "\tnum\t"), *tb = strstr(b, "\tnum\t");
  if (!ta || !tb || ta - a != tb - b || strncmp(a, b, (size_t)(ta - a))) return 0;
  return strtod(ta + 5, NULL) == strtod(tb + 5, NULL);
}

static void unescape(char *s) {
  char *o = s;
  for (; *s; s++) {
    if (*s == '\\' && s[1]) {
      s++;
      *o++ = *s == 'n' ? '\n' : *s == 't' ? '\t' : *s;
    } else {
      *o++ = *s;
    }
  }
  *o = 0;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s FIXTURE_DIR\n", argv[0]);
    return 2;
  }
  const char *dir = argv[1];
  const char *docs[] = {"config", "strings", "nested", "bom_ws"};
  for (int d = 0; d < 4; d++) {
    char path[1024], flat[1024];
    snprintf(path, sizeof path, "%s/%s.json", dir, docs[d]);
    snprintf(flat, sizeof flat, "%s/%s.flat", dir, docs[d]);
    cmds_jv v;
    cmds_error err = {0};
    int rc = cmds_jv_read_file(path, &v, &err);
    CHECK(rc == 0, "%s: %s", path, err.msg);
    if (rc) continue;
    lines got = {0}, want = {0};
    flatten(&got, "", &v);
    read_lines(&want, flat);
    CHECK(got.n == want.n, "%s: %d leaves, python has %d", docs[d], got.n, want.n);
    for (int i = 0; i < got.n && i < want.n; i++)
      CHECK(same_line(got.v[i], want.v[i]), "%s line %d: got '%s' want '%s'", docs[d], i, got.v[i], want.v[i]);
    for (int i = 0; i < got.n; i++) free(got.v[i]);
    for (int i = 0; i < want.n; i++) free(want.v[i]);
    free(got.v);
    free(want.v);

    if (d == 0) { /* typed getters on the diffusers-like config */
      const char *w = "config.json";
      int64_t i64, heads[4];
      double x;
      int b, n;
      const char *s, *types[8];
      CHECK(cmds_jv_get_int(&v, w, "cross_attention_dim", 1, 0, &i64, &err) == 0 && i64 == 1024, "int");
      CHECK(cmds_jv_get_num(&v, w, "scaling_factor", 1, 0, &x, &err) == 0 && x == 0.18215, "num");
      CHECK(cmds_jv_get_bool(&v, w, "center_input_sample", 1, 1, &b, &err) == 0 && b == 0, "bool");
      CHECK(cmds_jv_get_str(&v, w, "act_fn", 1, NULL, &s, &err) == 0 && !strcmp(s, "silu"), "str");
      CHECK(cmds_jv_get_ints(&v, w, "attention_head_dim", 1, 0, 4, heads, &err) == 0 && heads[3] == 20, "ints list");
      CHECK(cmds_jv_get_ints(&v, w, "sample_size", 1, 0, 4, heads, &err) == 0 && heads[0] == 96 && heads[3] == 96,
            "ints scalar broadcast");
      CHECK(cmds_jv_get_strs(&v, w, "down_block_types", 1, 8, types, &n, &err) == 0 && n == 2 &&
                !strcmp(types[1], "DownBlock2D"), "strs");
      /* optional: absent and null take the default; required: an error naming key and file */
      CHECK(cmds_jv_get_int(&v, w, "num_class_embeds", 0, -7, &i64, &err) == 0 && i64 == -7, "null -> default");
      CHECK(cmds_jv_get_int(&v, w, "absent", 0, 5, &i64, &err) == 0 && i64 == 5, "absent -> default");
      rc = cmds_jv_get_int(&v, w, "absent", 1, 5, &i64, &err);
      CHECK(rc == CMDS_EINPUT && strstr(err.msg, "config.json") && strstr(err.msg, "'absent'") && strstr(err.msg, "missing"),
            "required missing: %s", err.msg);
      rc = cmds_jv_get_int(&v, w, "scaling_factor", 1, 0, &i64, &err);
      CHECK(rc == CMDS_EINPUT && strstr(err.msg, "an integer expected") && strstr(err.msg, "0.18215"), "type: %s", err.msg);
      rc = cmds_jv_get_ints(&v, w, "block_out_channels", 1, 0, 3, heads, &err);
      CHECK(rc == CMDS_EINPUT && strstr(err.msg, "3 integers") && strstr(err.msg, "4 entries"), "count: %s", err.msg);
      rc = cmds_jv_get_str(&v, w, "sample_size", 1, NULL, &s, &err);
      CHECK(rc == CMDS_EINPUT && strstr(err.msg, "a string expected"), "str type: %s", err.msg);
    }
    if (d == 1) { /* the NUL inside a string keeps its length */
      const cmds_jv *nul = cmds_jv_member(&v, "nul");
      CHECK(nul && nul->len == 3 && nul->str[1] == 0, "embedded NUL");
    }
    cmds_jv_free(&v);
  }

  char path[1024];
  snprintf(path, sizeof path, "%s/bad.txt", dir);
  lines bad = {0};
  read_lines(&bad, path);
  CHECK(bad.n >= 20, "%d bad documents", bad.n);
  for (int i = 0; i < bad.n; i++) {
    unescape(bad.v[i]);
    cmds_jv v;
    cmds_error err = {0};
    int rc = cmds_jv_parse(bad.v[i], strlen(bad.v[i]), "bad.json", &v, &err);
    CHECK(rc == CMDS_EINPUT && strstr(err.msg, "bad.json") && strstr(err.msg, "byte"), "accepted or unclear for '%s': %s",
          bad.v[i], err.msg);
    CHECK(v.type == CMDS_JV_NULL && v.items == NULL, "output left empty");
    free(bad.v[i]);
  }
  free(bad.v);

  /* depth limit and a missing file */
  char deep[600];
  memset(deep, '[', 300);
  memset(deep + 300, ']', 300);
  cmds_jv v;
  cmds_error err = {0};
  CHECK(cmds_jv_parse(deep, 600, "deep", &v, &err) == CMDS_EINPUT && strstr(err.msg, "nesting"), "depth: %s", err.msg);
  CHECK(cmds_jv_parse(deep + 50, 500, "ok", &v, &err) == 0, "250 levels are fine: %s", err.msg);
  cmds_jv_free(&v);
  CHECK(cmds_jv_read_file("/nonexistent/config.json", &v, &err) == CMDS_EIO && strstr(err.msg, "/nonexistent/config.json"),
        "missing file: %s", err.msg);
  return CHECK_DONE();
}
