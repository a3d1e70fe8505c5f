/* jsonread: see jsonread.h. A recursive-descent parser over a byte buffer; values are
 * built in growable arrays and shrunk when a container closes. */
#include "jsonread.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

#define JV_MAX_DEPTH 256

typedef struct jp {
  const char *s;
  size_t n, i;
  const char *what;
  cmds_error *err;
  int depth;
} jp;

static int jp_bad(jp *p, const char *expected) {
  if (p->i >= p->n)
    return CMDS_FAIL(p->err, CMDS_EINPUT, "%s: JSON ends early at byte %zu: %s expected", p->what, p->i, expected);
  unsigned char c = (unsigned char)p->s[p->i];
  return CMDS_FAIL(p->err, CMDS_EINPUT, "%s: invalid JSON at byte %zu ('%c'): %s expected", p->what, p->i,
                   c >= 32 && c < 127 ? c : '?', expected);
}

static void jp_ws(jp *p) {
  while (p->i < p->n) {
    char c = p->s[p->i];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    p->i++;
  }
}

static int jp_hex4(jp *p, unsigned *v) {
  *v = 0;
  for (int k = 0; k < 4; k++, p->i++) {
    if (p->i >= p->n) return jp_bad(p, "4 hex digits");
    char c = p->s[p->i];
    unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                 : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                 : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                        : 16u;
    if (d == 16) return jp_bad(p, "a hex digit");
    *v = *v * 16 + d;
  }
  return 0;
}

static void put_utf8(char *b, size_t *len, unsigned cp) {
  if (cp < 0x80) {
    b[(*len)++] = (char)cp;
  } else if (cp < 0x800) {
    b[(*len)++] = (char)(0xc0 | (cp >> 6));
    b[(*len)++] = (char)(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    b[(*len)++] = (char)(0xe0 | (cp >> 12));
    b[(*len)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
    b[(*len)++] = (char)(0x80 | (cp & 0x3f));
  } else {
    b[(*len)++] = (char)(0xf0 | (cp >> 18));
    b[(*len)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
    b[(*len)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
    b[(*len)++] = (char)(0x80 | (cp & 0x3f));
  }
}

/* The string at p->i (opening quote included) into a new buffer. */
static int jp_string(jp *p, char **out, size_t *out_len) {
  *out = NULL;
  if (p->i >= p->n || p->s[p->i] != '"') return jp_bad(p, "a string");
  p->i++;
  size_t cap = 16, len = 0;
  char *b = cmds_xmalloc(cap);
  for (;;) {
    if (p->i >= p->n) {
      free(b);
      return jp_bad(p, "a closing '\"'");
    }
    unsigned char c = (unsigned char)p->s[p->i++];
    if (c == '"') break;
    if (len + 5 > cap) b = cmds_xrealloc(b, cap *= 2);
    if (c < 0x20) {
      p->i--;
      free(b);
      return jp_bad(p, "no raw control character in a string");
    }
    if (c != '\\') {
      b[len++] = (char)c;
      continue;
    }
    if (p->i >= p->n) {
      free(b);
      return jp_bad(p, "an escape");
    }
    char e = p->s[p->i++];
    unsigned cp;
    switch (e) {
      case '"': case '\\': case '/': b[len++] = e; continue;
      case 'b': b[len++] = '\b'; continue;
      case 'f': b[len++] = '\f'; continue;
      case 'n': b[len++] = '\n'; continue;
      case 'r': b[len++] = '\r'; continue;
      case 't': b[len++] = '\t'; continue;
      case 'u': break;
      default:
        p->i--;
        free(b);
        return jp_bad(p, "a valid escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)");
    }
    if (jp_hex4(p, &cp)) {
      free(b);
      return p->err->code;
    }
    if (cp >= 0xd800 && cp < 0xdc00) {
      unsigned lo;
      if (p->i + 2 > p->n || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u') {
        free(b);
        return jp_bad(p, "a low surrogate \\uDC00-\\uDFFF after a high one");
      }
      p->i += 2;
      if (jp_hex4(p, &lo)) {
        free(b);
        return p->err->code;
      }
      if (lo < 0xdc00 || lo > 0xdfff) {
        free(b);
        return jp_bad(p, "a low surrogate \\uDC00-\\uDFFF after a high one");
      }
      cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    } else if (cp >= 0xdc00 && cp < 0xe000) {
      free(b);
      return jp_bad(p, "no lone low surrogate");
    }
    put_utf8(b, &len, cp);
  }
  b[len] = 0;
  *out = b;
  *out_len = len;
  return 0;
}

/* RFC 8259 number grammar, then strtod on the validated span. */
static int jp_number(jp *p, double *out) {
  size_t s = p->i;
  if (p->i < p->n && p->s[p->i] == '-') p->i++;
  if (p->i >= p->n) return jp_bad(p, "a digit");
  if (p->s[p->i] == '0') {
    p->i++;
  } else if (p->s[p->i] >= '1' && p->s[p->i] <= '9') {
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
  } else {
    return jp_bad(p, "a digit");
  }
  if (p->i < p->n && p->s[p->i] == '.') {
    p->i++;
    if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') return jp_bad(p, "a digit after '.'");
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
  }
  if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
    p->i++;
    if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
    if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') return jp_bad(p, "a digit in the exponent");
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
  }
  char buf[512];
  size_t len = p->i - s;
  if (len >= sizeof buf) {
    p->i = s;
    return jp_bad(p, "a number of at most 511 characters");
  }
  memcpy(buf, p->s + s, len);
  buf[len] = 0;
  errno = 0;
  *out = strtod(buf, NULL);
  if (!isfinite(*out)) {
    p->i = s;
    return jp_bad(p, "a number within the range of a double");
  }
  return 0;
}

static int jp_literal(jp *p, const char *lit) {
  size_t l = strlen(lit);
  if (p->n - p->i < l || memcmp(p->s + p->i, lit, l) != 0) return jp_bad(p, "a value");
  p->i += l;
  return 0;
}

static int jp_value(jp *p, cmds_jv *v);

/* The keys of one object seen so far, so that the duplicate check costs O(1) per member (a
 * CLIP vocab.json object has 49408 members: a linear scan made reading it take a minute). */
typedef struct jp_keyset {
  uint32_t cap, *slot; /* slot: member index + 1, 0 = empty */
} jp_keyset;

static uint32_t jp_key_hash(const char *s) {
  uint64_t h = cmds_fnv64(CMDS_FNV64_INIT, s, strlen(s));
  return (uint32_t)(h ^ (h >> 32));
}

/* Adds keys[n]; returns the index of an earlier member with the same key, or -1. */
static int64_t jp_keyset_add(jp_keyset *ks, char **keys, int64_t n) {
  if ((uint64_t)(n + 1) * 2 > ks->cap) {
    uint32_t cap = ks->cap ? ks->cap : 16;
    while ((uint64_t)(n + 1) * 2 > cap) cap *= 2;
    free(ks->slot);
    ks->slot = cmds_xcalloc(cap, sizeof *ks->slot);
    ks->cap = cap;
    for (int64_t k = 0; k < n; k++) {
      uint32_t i = jp_key_hash(keys[k]) & (cap - 1);
      while (ks->slot[i]) i = (i + 1) & (cap - 1);
      ks->slot[i] = (uint32_t)k + 1;
    }
  }
  uint32_t mask = ks->cap - 1, i = jp_key_hash(keys[n]) & mask;
  for (; ks->slot[i]; i = (i + 1) & mask)
    if (strcmp(keys[ks->slot[i] - 1], keys[n]) == 0) return ks->slot[i] - 1;
  ks->slot[i] = (uint32_t)n + 1;
  return -1;
}

static int jp_members(jp *p, cmds_jv *v, int is_obj, jp_keyset *ks);

static int jp_container(jp *p, cmds_jv *v, int is_obj) {
  jp_keyset ks = {0, NULL};
  int rc = jp_members(p, v, is_obj, &ks);
  free(ks.slot);
  return rc;
}

static int jp_members(jp *p, cmds_jv *v, int is_obj, jp_keyset *ks) {
  if (++p->depth > JV_MAX_DEPTH) return jp_bad(p, "nesting of at most 256 levels");
  p->i++; /* '[' or '{' */
  v->type = is_obj ? CMDS_JV_OBJ : CMDS_JV_ARR;
  int64_t cap = 0;
  jp_ws(p);
  char close = is_obj ? '}' : ']';
  if (p->i < p->n && p->s[p->i] == close) {
    p->i++;
    p->depth--;
    return 0;
  }
  for (;;) {
    if (v->n == cap) {
      cap = cap ? cap * 2 : 4;
      v->items = cmds_xrealloc(v->items, (size_t)cap * sizeof *v->items);
      if (is_obj) v->keys = cmds_xrealloc(v->keys, (size_t)cap * sizeof *v->keys);
    }
    cmds_jv *item = &v->items[v->n];
    memset(item, 0, sizeof *item);
    if (is_obj) {
      jp_ws(p);
      size_t klen, at = p->i;
      char *key;
      if (jp_string(p, &key, &klen)) return p->err->code;
      v->keys[v->n] = key;
      if (jp_keyset_add(ks, v->keys, v->n) >= 0) { /* keys[n] is not owned until n grows */
        p->i = at;
        int rc = CMDS_FAIL(p->err, CMDS_EINPUT, "%s: invalid JSON at byte %zu: key \"%s\" appears twice in one object",
                           p->what, at, key);
        free(key);
        return rc;
      }
      v->keys[v->n] = key;
      jp_ws(p);
      if (p->i >= p->n || p->s[p->i] != ':') {
        v->n++; /* the key is owned now; the item is an empty null */
        return jp_bad(p, "':' after an object key");
      }
      p->i++;
    }
    v->n++;
    if (jp_value(p, item)) return p->err->code;
    jp_ws(p);
    if (p->i < p->n && p->s[p->i] == ',') {
      p->i++;
      continue;
    }
    if (p->i < p->n && p->s[p->i] == close) {
      p->i++;
      break;
    }
    return jp_bad(p, is_obj ? "',' or '}'" : "',' or ']'");
  }
  if (v->n < cap) {
    v->items = cmds_xrealloc(v->items, (size_t)v->n * sizeof *v->items);
    if (is_obj) v->keys = cmds_xrealloc(v->keys, (size_t)v->n * sizeof *v->keys);
  }
  p->depth--;
  return 0;
}

static int jp_value(jp *p, cmds_jv *v) {
  memset(v, 0, sizeof *v);
  jp_ws(p);
  if (p->i >= p->n) return jp_bad(p, "a value");
  char c = p->s[p->i];
  switch (c) {
    case '{': return jp_container(p, v, 1);
    case '[': return jp_container(p, v, 0);
    case '"': v->type = CMDS_JV_STR; return jp_string(p, &v->str, &v->len);
    case 't': v->type = CMDS_JV_BOOL; v->b = 1; return jp_literal(p, "true");
    case 'f': v->type = CMDS_JV_BOOL; v->b = 0; return jp_literal(p, "false");
    case 'n': v->type = CMDS_JV_NULL; return jp_literal(p, "null");
    default:
      if (c == '-' || (c >= '0' && c <= '9')) {
        v->type = CMDS_JV_NUM;
        return jp_number(p, &v->num);
      }
      return jp_bad(p, "a value");
  }
}

void cmds_jv_free(cmds_jv *v) {
  if (!v) return;
  free(v->str);
  for (int64_t k = 0; k < v->n; k++) {
    if (v->items) cmds_jv_free(&v->items[k]);
    if (v->keys) free(v->keys[k]);
  }
  free(v->items);
  free(v->keys);
  memset(v, 0, sizeof *v);
}

int cmds_jv_parse(const char *text, size_t n, const char *what, cmds_jv *out, cmds_error *err) {
  jp p = {text, n, 0, what ? what : "JSON", err, 0};
  memset(out, 0, sizeof *out);
  /* a UTF-8 byte order mark is tolerated (some editors write one) */
  if (n >= 3 && (unsigned char)text[0] == 0xef && (unsigned char)text[1] == 0xbb && (unsigned char)text[2] == 0xbf) p.i = 3;
  int rc = jp_value(&p, out);
  if (!rc) {
    jp_ws(&p);
    if (p.i < p.n) rc = jp_bad(&p, "the end of the document");
  }
  if (rc) cmds_jv_free(out);
  return rc;
}

int cmds_jv_read_file(const char *path, cmds_jv *out, cmds_error *err) {
  memset(out, 0, sizeof *out);
  FILE *f = fopen(path, "rb");
  if (!f) return CMDS_FAIL(err, CMDS_EIO, "%s: cannot open: %s", path, strerror(errno));
  size_t cap = 1 << 16, len = 0;
  char *buf = cmds_xmalloc(cap);
  for (;;) {
    if (len == cap) buf = cmds_xrealloc(buf, cap *= 2);
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return CMDS_FAIL(err, CMDS_EIO, "%s: read error", path);
  }
  int rc = cmds_jv_parse(buf, len, path, out, err);
  free(buf);
  return rc;
}

const char *cmds_jv_type_name(cmds_jv_type t) {
  switch (t) {
    case CMDS_JV_NULL: return "null";
    case CMDS_JV_BOOL: return "a boolean";
    case CMDS_JV_NUM: return "a number";
    case CMDS_JV_STR: return "a string";
    case CMDS_JV_ARR: return "a list";
    case CMDS_JV_OBJ: return "an object";
  }
  return "?";
}

const cmds_jv *cmds_jv_member(const cmds_jv *obj, const char *key) {
  if (!obj || obj->type != CMDS_JV_OBJ) return NULL;
  for (int64_t k = 0; k < obj->n; k++)
    if (strcmp(obj->keys[k], key) == 0) return &obj->items[k];
  return NULL;
}

/* The member, or NULL for absent / null (then *rc says whether that is an error). */
static const cmds_jv *getter(const cmds_jv *obj, const char *what, const char *key, int required, int *rc,
                             cmds_error *err) {
  *rc = 0;
  if (!obj || obj->type != CMDS_JV_OBJ) {
    *rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: a JSON object expected at the top level, got %s", what,
                    obj ? cmds_jv_type_name(obj->type) : "nothing");
    return NULL;
  }
  const cmds_jv *m = cmds_jv_member(obj, key);
  if (m && m->type != CMDS_JV_NULL) return m;
  if (required) *rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s' is %s; it is required", what, key, m ? "null" : "missing");
  return NULL;
}

static int wrong(const cmds_jv *m, const char *what, const char *key, const char *expected, cmds_error *err) {
  if (m->type == CMDS_JV_NUM)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s': %s expected, got %.17g", what, key, expected, m->num);
  if (m->type == CMDS_JV_STR)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s': %s expected, got \"%.64s\"", what, key, expected, m->str);
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s': %s expected, got %s", what, key, expected, cmds_jv_type_name(m->type));
}

static int is_int(const cmds_jv *m) {
  return m->type == CMDS_JV_NUM && m->num == floor(m->num) && fabs(m->num) <= 9007199254740992.0;
}

int cmds_jv_get_num(const cmds_jv *obj, const char *what, const char *key, int required, double dflt, double *out,
                    cmds_error *err) {
  int rc;
  const cmds_jv *m = getter(obj, what, key, required, &rc, err);
  if (!m) {
    if (!rc) *out = dflt;
    return rc;
  }
  if (m->type != CMDS_JV_NUM) return wrong(m, what, key, "a number", err);
  *out = m->num;
  return 0;
}

int cmds_jv_get_int(const cmds_jv *obj, const char *what, const char *key, int required, int64_t dflt, int64_t *out,
                    cmds_error *err) {
  int rc;
  const cmds_jv *m = getter(obj, what, key, required, &rc, err);
  if (!m) {
    if (!rc) *out = dflt;
    return rc;
  }
  if (!is_int(m)) return wrong(m, what, key, "an integer", err);
  *out = (int64_t)m->num;
  return 0;
}

int cmds_jv_get_bool(const cmds_jv *obj, const char *what, const char *key, int required, int dflt, int *out,
                     cmds_error *err) {
  int rc;
  const cmds_jv *m = getter(obj, what, key, required, &rc, err);
  if (!m) {
    if (!rc) *out = dflt;
    return rc;
  }
  if (m->type != CMDS_JV_BOOL) return wrong(m, what, key, "true or false", err);
  *out = m->b;
  return 0;
}

int cmds_jv_get_str(const cmds_jv *obj, const char *what, const char *key, int required, const char *dflt,
                    const char **out, cmds_error *err) {
  int rc;
  const cmds_jv *m = getter(obj, what, key, required, &rc, err);
  if (!m) {
    if (!rc) *out = dflt;
    return rc;
  }
  if (m->type != CMDS_JV_STR) return wrong(m, what, key, "a string", err);
  *out = m->str;
  return 0;
}

int cmds_jv_get_ints(const cmds_jv *obj, const char *what, const char *key, int required, int64_t dflt, int n,
                     int64_t *out, cmds_error *err) {
  int rc;
  const cmds_jv *m = getter(obj, what, key, required, &rc, err);
  if (!m) {
    if (!rc)
      for (int k = 0; k < n; k++) out[k] = dflt;
    return rc;
  }
  if (is_int(m)) {
    for (int k = 0; k < n; k++) out[k] = (int64_t)m->num;
    return 0;
  }
  if (m->type != CMDS_JV_ARR) return wrong(m, what, key, "an integer or a list of integers", err);
  if (m->n != n)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s': a list of %d integers expected (one per block), got %lld entries",
                     what, key, n, (long long)m->n);
  for (int k = 0; k < n; k++) {
    if (!is_int(&m->items[k]))
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s': entry %d: an integer expected, got %s", what, key, k,
                       cmds_jv_type_name(m->items[k].type));
    out[k] = (int64_t)m->items[k].num;
  }
  return 0;
}

/* The member as a list of at most maxn items of type t; NULL with *rc = 0 when absent and
 * optional. */
static const cmds_jv *typed_list(const cmds_jv *obj, const char *what, const char *key, int required, int maxn,
                                 cmds_jv_type t, int *rc, cmds_error *err) {
  const cmds_jv *m = getter(obj, what, key, required, rc, err);
  if (!m) return NULL;
  const char *list = t == CMDS_JV_STR ? "a list of strings" : "a list of numbers";
  if (m->type != CMDS_JV_ARR) {
    *rc = wrong(m, what, key, list, err);
    return NULL;
  }
  if (m->n > maxn) {
    *rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s': at most %d entries supported, got %lld", what, key, maxn,
                    (long long)m->n);
    return NULL;
  }
  for (int64_t k = 0; k < m->n; k++)
    if (m->items[k].type != t) {
      *rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s': entry %lld: %s expected, got %s", what, key, (long long)k,
                      cmds_jv_type_name(t), cmds_jv_type_name(m->items[k].type));
      return NULL;
    }
  return m;
}

int cmds_jv_get_strs(const cmds_jv *obj, const char *what, const char *key, int required, int maxn,
                     const char **out, int *n_out, cmds_error *err) {
  int rc;
  *n_out = 0;
  const cmds_jv *m = typed_list(obj, what, key, required, maxn, CMDS_JV_STR, &rc, err);
  if (!m) return rc;
  for (int64_t k = 0; k < m->n; k++) out[k] = m->items[k].str;
  *n_out = (int)m->n;
  return 0;
}

int cmds_jv_get_nums(const cmds_jv *obj, const char *what, const char *key, int required, int maxn, double *out,
                     int *n_out, cmds_error *err) {
  int rc;
  *n_out = 0;
  const cmds_jv *m = typed_list(obj, what, key, required, maxn, CMDS_JV_NUM, &rc, err);
  if (!m) return rc;
  for (int64_t k = 0; k < m->n; k++) out[k] = m->items[k].num;
  *n_out = (int)m->n;
  return 0;
}
