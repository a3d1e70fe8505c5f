/* tokenizer: CLIP byte-level BPE (see tokenizer.h). */
#include "tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonread.h"
#include "hash.h"
#include "tokenizer_unicode.h"

/* ------------------------------------------------------------------ hash tables */

static uint64_t fnv1a(const char *s, size_t n) { return cmds_fnv64(CMDS_FNV64_INIT, s, n); }

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

static uint32_t pow2_at_least(uint64_t n) {
  uint32_t c = 16;
  while (c < n) c <<= 1;
  return c;
}

static void strmap_init(clip_strmap *m, uint32_t expect) {
  memset(m, 0, sizeof *m);
  m->cap = pow2_at_least((uint64_t)expect * 2 + 1);
  m->slot = cmds_xcalloc(m->cap, sizeof *m->slot);
  m->koff = cmds_xmalloc((size_t)expect * sizeof *m->koff + 1);
  m->klen = cmds_xmalloc((size_t)expect * sizeof *m->klen + 1);
  m->val = cmds_xmalloc((size_t)expect * sizeof *m->val + 1);
}

static void strmap_free(clip_strmap *m) {
  free(m->slot);
  free(m->koff);
  free(m->klen);
  free(m->val);
  free(m->pool);
  memset(m, 0, sizeof *m);
}

/* Slot index where key is or would go. */
static uint32_t strmap_find(const clip_strmap *m, const char *k, size_t n) {
  uint32_t mask = m->cap - 1, i = (uint32_t)fnv1a(k, n) & mask;
  for (;;) {
    uint32_t e = m->slot[i];
    if (!e) return i;
    e--;
    if (m->klen[e] == n && memcmp(m->pool + m->koff[e], k, n) == 0) return i;
    i = (i + 1) & mask;
  }
}

/* Returns -1 when absent. */
static int32_t strmap_get(const clip_strmap *m, const char *k, size_t n) {
  if (!m->cap) return -1;
  uint32_t e = m->slot[strmap_find(m, k, n)];
  return e ? m->val[e - 1] : -1;
}

/* Inserts (capacity reserved by strmap_init); returns 1 when the key was already there. */
static int strmap_put(clip_strmap *m, const char *k, size_t n, int32_t v) {
  uint32_t i = strmap_find(m, k, n);
  if (m->slot[i]) return 1;
  if (m->pool_len + n + 1 > m->pool_cap) {
    m->pool_cap = (m->pool_len + n + 1) * 2 + 4096;
    m->pool = cmds_xrealloc(m->pool, m->pool_cap);
  }
  memcpy(m->pool + m->pool_len, k, n);
  m->pool[m->pool_len + n] = 0;
  m->koff[m->n] = (uint32_t)m->pool_len;
  m->klen[m->n] = (uint32_t)n;
  m->val[m->n] = v;
  m->pool_len += n + 1;
  m->slot[i] = ++m->n;
  return 0;
}

static void pairmap_init(clip_pairmap *m, uint32_t expect) {
  memset(m, 0, sizeof *m);
  m->cap = pow2_at_least((uint64_t)expect * 2 + 1);
  m->key = cmds_xcalloc(m->cap, sizeof *m->key);
  m->rank = cmds_xmalloc(m->cap * sizeof *m->rank);
  m->merged = cmds_xmalloc(m->cap * sizeof *m->merged);
}

static void pairmap_free(clip_pairmap *m) {
  free(m->key);
  free(m->rank);
  free(m->merged);
  memset(m, 0, sizeof *m);
}

static uint32_t pairmap_find(const clip_pairmap *m, uint64_t k) {
  uint32_t mask = m->cap - 1, i = (uint32_t)mix64(k) & mask;
  while (m->key[i] && m->key[i] != k) i = (i + 1) & mask;
  return i;
}

static inline uint64_t pair_key(int32_t a, int32_t b) {
  return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
}

/* Rank of merging (a, b), or -1; *merged gets the id of the result. */
static int32_t pairmap_get(const clip_pairmap *m, int32_t a, int32_t b, int32_t *merged) {
  if (a < 0 || b < 0) return -1;
  uint32_t i = pairmap_find(m, pair_key(a, b));
  if (!m->key[i]) return -1;
  *merged = m->merged[i];
  return m->rank[i];
}

/* ------------------------------------------------------------------ Unicode */

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t c) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c < r[mid][0]) hi = mid;
    else if (c > r[mid][1]) lo = mid + 1;
    else return 1;
  }
  return 0;
}

static int is_space(uint32_t c) {
  if (c == 0x20) return 1;
  for (size_t i = 0; i < sizeof tku_space / sizeof tku_space[0]; i++)
    if (tku_space[i] == c) return 1;
  return 0;
}
static int is_letter(uint32_t c) { return in_ranges(tku_letter, sizeof tku_letter / sizeof tku_letter[0], c); }
static int is_number(uint32_t c) { return in_ranges(tku_number, sizeof tku_number / sizeof tku_number[0], c); }

static int ccc_of(uint32_t c) {
  if (c < TKU_NFC_FIRST_MAYBE) return 0;
  size_t lo = 0, hi = sizeof tku_ccc / sizeof tku_ccc[0];
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c < tku_ccc[mid][0]) hi = mid;
    else if (c > tku_ccc[mid][1]) lo = mid + 1;
    else return (int)tku_ccc[mid][2];
  }
  return 0;
}

/* Row of a table sorted by its first column(s), or -1. */
static long find_row3(const uint32_t (*t)[3], size_t n, uint32_t a) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (a < t[mid][0]) hi = mid;
    else if (a > t[mid][0]) lo = mid + 1;
    else return (long)mid;
  }
  return -1;
}

static long find_row4(const uint32_t (*t)[4], size_t n, uint32_t a) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (a < t[mid][0]) hi = mid;
    else if (a > t[mid][0]) lo = mid + 1;
    else return (long)mid;
  }
  return -1;
}

/* Hangul syllables (algorithmic decomposition / composition). */
enum { H_SBASE = 0xAC00, H_LBASE = 0x1100, H_VBASE = 0x1161, H_TBASE = 0x11A7, H_LCOUNT = 19,
       H_VCOUNT = 21, H_TCOUNT = 28, H_NCOUNT = H_VCOUNT * H_TCOUNT, H_SCOUNT = H_LCOUNT * H_NCOUNT };

/* Appends the full canonical decomposition of c to out (capacity checked by the caller: at most
 * 4 code points per input code point in Unicode's data; we allow 8). */
static size_t decompose(uint32_t c, uint32_t *out) {
  if (c >= H_SBASE && c < H_SBASE + H_SCOUNT) {
    uint32_t s = c - H_SBASE, n = 0;
    out[n++] = H_LBASE + s / H_NCOUNT;
    out[n++] = H_VBASE + (s % H_NCOUNT) / H_TCOUNT;
    if (s % H_TCOUNT) out[n++] = H_TBASE + s % H_TCOUNT;
    return n;
  }
  if (c < 0xC0) {
    out[0] = c;
    return 1;
  }
  long r = find_row3(tku_decomp, sizeof tku_decomp / sizeof tku_decomp[0], c);
  if (r < 0) {
    out[0] = c;
    return 1;
  }
  size_t n = decompose(tku_decomp[r][1], out);
  if (tku_decomp[r][2]) n += decompose(tku_decomp[r][2], out + n);
  return n;
}

static uint32_t compose_pair(uint32_t a, uint32_t b) {
  if (a >= H_LBASE && a < H_LBASE + H_LCOUNT && b >= H_VBASE && b < H_VBASE + H_VCOUNT)
    return H_SBASE + ((a - H_LBASE) * H_VCOUNT + (b - H_VBASE)) * H_TCOUNT;
  if (a >= H_SBASE && a < H_SBASE + H_SCOUNT && (a - H_SBASE) % H_TCOUNT == 0 && b > H_TBASE &&
      b < H_TBASE + H_TCOUNT)
    return a + (b - H_TBASE);
  size_t lo = 0, hi = sizeof tku_comp / sizeof tku_comp[0];
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (a < tku_comp[mid][0] || (a == tku_comp[mid][0] && b < tku_comp[mid][1])) hi = mid;
    else if (a > tku_comp[mid][0] || b > tku_comp[mid][1]) lo = mid + 1;
    else return tku_comp[mid][2];
  }
  return 0;
}

/* NFC of s[0..n) into out (capacity 8n); returns the new length. */
static size_t nfc(const uint32_t *s, size_t n, uint32_t *out) {
  int maybe = 0;
  for (size_t i = 0; i < n && !maybe; i++) maybe = s[i] >= TKU_NFC_FIRST_MAYBE;
  if (!maybe) {
    memcpy(out, s, n * sizeof *s);
    return n;
  }
  size_t m = 0;
  for (size_t i = 0; i < n; i++) m += decompose(s[i], out + m);
  /* canonical ordering: stable sort of each run of non-starters by combining class */
  for (size_t i = 1; i < m; i++) {
    int ci = ccc_of(out[i]);
    if (!ci) continue;
    size_t j = i;
    while (j > 0) {
      int cj = ccc_of(out[j - 1]);
      if (!cj || cj <= ci) break;
      uint32_t tmp = out[j];
      out[j] = out[j - 1];
      out[j - 1] = tmp;
      j--;
    }
  }
  if (m == 0) return 0;
  /* canonical composition */
  size_t starter = 0, w = 1;
  int last = ccc_of(out[0]) ? 256 : 0;
  for (size_t i = 1; i < m; i++) {
    uint32_t c = out[i];
    int cc = ccc_of(c);
    uint32_t comp = (last < cc || last == 0) ? compose_pair(out[starter], c) : 0;
    if (comp && (last < cc || last == 0)) {
      out[starter] = comp;
    } else {
      if (cc == 0) starter = w;
      last = cc;
      out[w++] = c;
    }
  }
  return w;
}

/* Lower case of c into out (1 to 3 code points). */
static size_t lower_of(uint32_t c, uint32_t *out) {
  if (c < 0x80) {
    out[0] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
    return 1;
  }
  long r = find_row4(tku_lower, sizeof tku_lower / sizeof tku_lower[0], c);
  if (r < 0) {
    out[0] = c;
    return 1;
  }
  size_t n = 0;
  for (int k = 1; k < 4 && tku_lower[r][k]; k++) out[n++] = tku_lower[r][k];
  return n;
}

static size_t utf8_put(uint32_t c, unsigned char *o) {
  if (c < 0x80) {
    o[0] = (unsigned char)c;
    return 1;
  }
  if (c < 0x800) {
    o[0] = (unsigned char)(0xC0 | (c >> 6));
    o[1] = (unsigned char)(0x80 | (c & 0x3F));
    return 2;
  }
  if (c < 0x10000) {
    o[0] = (unsigned char)(0xE0 | (c >> 12));
    o[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
    o[2] = (unsigned char)(0x80 | (c & 0x3F));
    return 3;
  }
  o[0] = (unsigned char)(0xF0 | (c >> 18));
  o[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
  o[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
  o[3] = (unsigned char)(0x80 | (c & 0x3F));
  return 4;
}

/* Strict UTF-8 decoding (no overlongs, surrogates or code points above U+10FFFF). Returns the
 * number of code points, or -1 with *bad = byte offset of the first invalid sequence. */
static long utf8_decode(const unsigned char *s, size_t n, uint32_t *out, size_t *bad) {
  size_t i = 0;
  long m = 0;
  while (i < n) {
    unsigned c = s[i];
    uint32_t cp;
    int k;
    if (c < 0x80) { cp = c; k = 0; }
    else if (c >= 0xC2 && c < 0xE0) { cp = c & 0x1F; k = 1; }
    else if (c >= 0xE0 && c < 0xF0) { cp = c & 0x0F; k = 2; }
    else if (c >= 0xF0 && c < 0xF5) { cp = c & 0x07; k = 3; }
    else { *bad = i; return -1; }
    if (k && i + (size_t)k >= n) { *bad = i; return -1; }
    for (int j = 1; j <= k; j++) {
      if ((s[i + j] & 0xC0) != 0x80) { *bad = i; return -1; }
      cp = (cp << 6) | (s[i + j] & 0x3F);
    }
    if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF))) {
      *bad = i;
      return -1;
    }
    out[m++] = cp;
    i += (size_t)k + 1;
  }
  return m;
}

/* GPT-2's reversible byte -> printable character map: printable Latin-1 bytes map to
 * themselves, the others to U+0100 + k in byte order. */
static uint32_t byte_char(int b) {
  static uint32_t map[256];
  static int ready = 0;
  if (!ready) {
    int k = 0;
    for (int i = 0; i < 256; i++) {
      int printable = (i >= '!' && i <= '~') || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF);
      map[i] = printable ? (uint32_t)i : (uint32_t)(256 + k++);
    }
    ready = 1; /* idempotent: racing threads write the same values */
  }
  return map[b];
}

/* ------------------------------------------------------------------ loading */

static int read_text_file(const char *path, char **buf, size_t *n, cmds_error *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return CMDS_FAIL(err, CMDS_EINPUT, "%s: cannot open (%s)", path, strerror(errno));
  size_t cap = 1 << 16, len = 0;
  char *b = cmds_xmalloc(cap);
  size_t r;
  while ((r = fread(b + len, 1, cap - len - 1, f)) > 0) {
    len += r;
    if (cap - len < 2) b = cmds_xrealloc(b, cap *= 2);
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(b);
    return CMDS_FAIL(err, CMDS_EIO, "%s: read error", path);
  }
  b[len] = 0;
  *buf = b;
  *n = len;
  return 0;
}

static int file_exists(const char *p) {
  FILE *f = fopen(p, "rb");
  if (f) fclose(f);
  return f != NULL;
}

/* A special token entry: a string, or an AddedToken object {"content": ..., "normalized": ...}. */
static int special_value(const cmds_jv *v, const char *what, const char *key, const char **content,
                         int *normalized, cmds_error *err) {
  if (v->type == CMDS_JV_STR) {
    *content = v->str;
    *normalized = 0;
    return 0;
  }
  if (v->type == CMDS_JV_OBJ) {
    const cmds_jv *c = cmds_jv_member(v, "content");
    if (!c || c->type != CMDS_JV_STR)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s': an object with a string 'content' expected", what, key);
    *content = c->str;
    return cmds_jv_get_bool(v, what, "normalized", 0, 0, normalized, err);
  }
  return CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s': a string or an AddedToken object expected, got %s", what, key,
                   cmds_jv_type_name(v->type));
}

static int add_special(clip_tokenizer *t, const char *content, int normalized, int32_t id, const char *what,
                       cmds_error *err) {
  size_t n = strlen(content);
  if (n == 0) return 0;
  for (int i = 0; i < t->n_special; i++) { /* same content: the later entry's flags win */
    clip_special *s = &t->special[i];
    int same = (size_t)s->len <= n;
    if (same) {
      uint32_t tmp[256];
      size_t bad;
      long m = n < 256 ? utf8_decode((const unsigned char *)content, n, tmp, &bad) : -1;
      same = m == s->len && memcmp(tmp, s->cp, (size_t)m * sizeof *tmp) == 0;
    }
    if (same) {
      s->normalized = normalized;
      s->id = id;
      return 0;
    }
  }
  if (t->n_special == CLIP_TOK_MAX_SPECIAL)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: more than %d added tokens", what, CLIP_TOK_MAX_SPECIAL);
  clip_special *s = &t->special[t->n_special];
  s->cp = cmds_xmalloc((n + 1) * sizeof *s->cp);
  size_t bad;
  long m = utf8_decode((const unsigned char *)content, n, s->cp, &bad);
  if (m < 0) {
    free(s->cp);
    s->cp = NULL;
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: token '%s' is not valid UTF-8", what, content);
  }
  s->len = (int)m;
  s->normalized = normalized;
  s->id = id;
  t->n_special++;
  return 0;
}

static int load_vocab(clip_tokenizer *t, const char *path, cmds_error *err) {
  cmds_jv v;
  int rc = cmds_jv_read_file(path, &v, err);
  if (rc) return rc;
  if (v.type != CMDS_JV_OBJ || v.n == 0) {
    cmds_jv_free(&v);
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: a non-empty object {token: id} expected", path);
  }
  strmap_init(&t->vocab, (uint32_t)v.n);
  for (int64_t i = 0; i < v.n; i++) {
    const cmds_jv *x = &v.items[i];
    if (x->type != CMDS_JV_NUM || x->num != (double)(int32_t)x->num || x->num < 0) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: token '%s': a non-negative integer id expected", path, v.keys[i]);
      break;
    }
    /* keys are NUL-terminated UTF-8 without NUL inside (a token never holds U+0000: byte 0 is
       mapped to U+0100) */
    strmap_put(&t->vocab, v.keys[i], strlen(v.keys[i]), (int32_t)x->num);
  }
  cmds_jv_free(&v);
  return rc;
}

static int load_merges(clip_tokenizer *t, const char *path, cmds_error *err) {
  char *buf = NULL;
  size_t n = 0;
  int rc = read_text_file(path, &buf, &n, err);
  if (rc) return rc;
  size_t lines = 1;
  for (size_t i = 0; i < n; i++) lines += buf[i] == '\n';
  pairmap_init(&t->merges, (uint32_t)lines);
  size_t pos = 0, lineno = 0;
  int32_t rank = 0;
  char joined[1024];
  while (pos < n) {
    size_t e = pos;
    while (e < n && buf[e] != '\n') e++;
    size_t len = e - pos;
    lineno++;
    char *line = buf + pos;
    int last_line = e >= n || e + 1 >= n;
    pos = e + 1;
    if (len && line[len - 1] == '\r') len--;
    if (len >= 8 && memcmp(line, "#version", 8) == 0) continue;
    if (len == 0 && last_line) break;
    char *sp = memchr(line, ' ', len);
    if (!sp || sp == line || sp == line + len - 1 || memchr(sp + 1, ' ', (size_t)(line + len - sp - 1))) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: line %zu: two tokens separated by one space expected, got '%.*s'",
                     path, lineno, (int)(len > 200 ? 200 : len), line);
      break;
    }
    size_t la = (size_t)(sp - line), lb = len - la - 1;
    int32_t a = strmap_get(&t->vocab, line, la), b = strmap_get(&t->vocab, sp + 1, lb);
    int32_t m = -1;
    if (la + lb < sizeof joined) {
      memcpy(joined, line, la);
      memcpy(joined + la, sp + 1, lb);
      m = strmap_get(&t->vocab, joined, la + lb);
    }
    if (a < 0 || b < 0 || m < 0) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: line %zu: merge '%.*s': %s not in vocab.json", path, lineno,
                     (int)(len > 200 ? 200 : len), line,
                     a < 0 ? "its first token is" : b < 0 ? "its second token is" : "the merged token is");
      break;
    }
    uint32_t i = pairmap_find(&t->merges, pair_key(a, b));
    if (!t->merges.key[i]) { /* a repeated merge keeps its first (lowest) rank */
      t->merges.key[i] = pair_key(a, b);
      t->merges.rank[i] = rank;
      t->merges.merged[i] = m;
      t->merges.n++;
    }
    rank++;
  }
  free(buf);
  return rc;
}

/* The special tokens: tokenizer_config.json, overridden by special_tokens_map.json when the
 * config has no added_tokens_decoder (transformers' legacy loading, how SD 2 gets pad "!"). */
static int load_specials(clip_tokenizer *t, const char *dir, cmds_error *err) {
  char cfg_path[1100], map_path[1100];
  snprintf(cfg_path, sizeof cfg_path, "%s/tokenizer_config.json", dir);
  snprintf(map_path, sizeof map_path, "%s/special_tokens_map.json", dir);
  cmds_jv cfg, map;
  memset(&map, 0, sizeof map);
  int have_map = 0;
  int rc = cmds_jv_read_file(cfg_path, &cfg, err);
  if (rc) return cmds_error_wrap(err, "CLIP tokenizer needs tokenizer_config.json (model_max_length)");
  if (cfg.type != CMDS_JV_OBJ) {
    cmds_jv_free(&cfg);
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: an object expected", cfg_path);
  }
  int64_t maxlen = 0;
  rc = cmds_jv_get_int(&cfg, cfg_path, "model_max_length", 1, 0, &maxlen, err);
  if (!rc && (maxlen < 2 || maxlen > 1 << 20))
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'model_max_length': 2..1048576 expected, got %lld", cfg_path,
                   (long long)maxlen);
  t->model_max_length = (int)maxlen;
  const cmds_jv *decoder = cmds_jv_member(&cfg, "added_tokens_decoder");
  if (decoder && decoder->type == CMDS_JV_NULL) decoder = NULL;
  if (!rc && !decoder && file_exists(map_path)) {
    rc = cmds_jv_read_file(map_path, &map, err);
    if (!rc && map.type != CMDS_JV_OBJ) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: an object expected", map_path);
    have_map = !rc;
  }
  /* added_tokens_decoder: {"49406": {"content": ..., "normalized": ...}, ...} */
  if (!rc && decoder) {
    if (decoder->type != CMDS_JV_OBJ)
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'added_tokens_decoder': an object expected", cfg_path);
    for (int64_t i = 0; !rc && i < decoder->n; i++) {
      char *end;
      long id = strtol(decoder->keys[i], &end, 10);
      const char *content;
      int normalized;
      if (*end || id < 0 || id > INT32_MAX)
        rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: added_tokens_decoder key '%s': an integer id expected", cfg_path,
                       decoder->keys[i]);
      else if (!(rc = special_value(&decoder->items[i], cfg_path, decoder->keys[i], &content, &normalized, err)))
        rc = add_special(t, content, normalized, (int32_t)id, cfg_path, err);
    }
  }
  static const char *keys[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
  static const char *dflt[4] = {"<|startoftext|>", "<|endoftext|>", "<|endoftext|>", "<|endoftext|>"};
  int32_t *ids[4] = {&t->bos_id, &t->eos_id, &t->unk_id, &t->pad_id};
  for (int k = 0; !rc && k < 4; k++) {
    const char *content = dflt[k], *what = "CLIPTokenizer's default";
    int normalized = 0;
    const cmds_jv *v = have_map ? cmds_jv_member(&map, keys[k]) : NULL;
    if (v && v->type != CMDS_JV_NULL) {
      what = map_path;
    } else {
      v = cmds_jv_member(&cfg, keys[k]);
      if (v && v->type != CMDS_JV_NULL) what = cfg_path;
      else v = NULL;
    }
    if (v && (rc = special_value(v, what, keys[k], &content, &normalized, err))) break;
    int32_t id = strmap_get(&t->vocab, content, strlen(content));
    for (int i = 0; id < 0 && i < t->n_special; i++) { /* an added token outside vocab.json */
      unsigned char u[1024];
      size_t m = 0;
      for (int j = 0; j < t->special[i].len && m + 4 < sizeof u; j++) m += utf8_put(t->special[i].cp[j], u + m);
      if (m == strlen(content) && memcmp(u, content, m) == 0) id = t->special[i].id;
    }
    if (id < 0) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: %s '%s' (from %s) is not in vocab.json", dir, keys[k], content, what);
      break;
    }
    *ids[k] = id;
    if (!decoder) rc = add_special(t, content, normalized, id, what, err);
  }
  cmds_jv_free(&cfg);
  if (have_map) cmds_jv_free(&map);
  return rc;
}

int clip_tokenizer_load(clip_tokenizer *t, const char *root, const char *subfolder, cmds_error *err) {
  memset(t, 0, sizeof *t);
  t->unk_id = -1;
  if (subfolder && *subfolder) snprintf(t->dir, sizeof t->dir, "%s/%s", root, subfolder);
  else snprintf(t->dir, sizeof t->dir, "%s", root);
  char path[1100];
  snprintf(path, sizeof path, "%s/vocab.json", t->dir);
  int rc;
  if (!file_exists(path)) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: missing (a CLIP tokenizer folder holds vocab.json and merges.txt)", path);
    goto fail;
  }
  if ((rc = load_vocab(t, path, err))) goto fail;
  snprintf(path, sizeof path, "%s/merges.txt", t->dir);
  if (!file_exists(path)) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: missing (a CLIP tokenizer folder holds vocab.json and merges.txt)", path);
    goto fail;
  }
  if ((rc = load_merges(t, path, err))) goto fail;
  if ((rc = load_specials(t, t->dir, err))) goto fail;
  for (int b = 0; b < 256; b++) {
    unsigned char u[16];
    size_t n = utf8_put(byte_char(b), u);
    t->byte_id[b] = strmap_get(&t->vocab, (const char *)u, n);
    memcpy(u + n, "</w>", 4);
    t->byte_end_id[b] = strmap_get(&t->vocab, (const char *)u, n + 4);
  }
  return 0;
fail:
  clip_tokenizer_free(t);
  return rc;
}

void clip_tokenizer_free(clip_tokenizer *t) {
  strmap_free(&t->vocab);
  pairmap_free(&t->merges);
  for (int i = 0; i < t->n_special; i++) free(t->special[i].cp);
  t->n_special = 0;
}

int clip_tokenizer_max_length(const clip_tokenizer *t) { return t->model_max_length; }

/* ------------------------------------------------------------------ encoding */

typedef struct tok_out {
  int32_t *ids;
  int n, cap; /* cap: tokens wanted (max_len - 2); more are dropped */
  const clip_tokenizer *t;
  int32_t *sym; /* BPE work space, one per byte of the longest word */
  unsigned char *bytes;
} tok_out;

static void emit(tok_out *o, int32_t id) {
  if (o->n < o->cap) o->ids[o->n] = id;
  o->n++;
}

/* BPE of one word (its code points) -> ids. */
static void bpe_word(tok_out *o, const uint32_t *cp, size_t n) {
  const clip_tokenizer *t = o->t;
  size_t nb = 0;
  for (size_t i = 0; i < n; i++) nb += utf8_put(cp[i], o->bytes + nb);
  if (!nb) return;
  int32_t *s = o->sym;
  for (size_t i = 0; i < nb; i++) s[i] = i + 1 < nb ? t->byte_id[o->bytes[i]] : t->byte_end_id[o->bytes[i]];
  size_t m = nb;
  for (;;) { /* merge the pair of lowest rank (leftmost on ties) until none is left */
    int32_t best = INT32_MAX, best_id = -1, merged;
    size_t at = 0;
    for (size_t i = 0; i + 1 < m; i++) {
      int32_t r = pairmap_get(&t->merges, s[i], s[i + 1], &merged);
      if (r >= 0 && r < best) {
        best = r;
        best_id = merged;
        at = i;
      }
    }
    if (best_id < 0) break;
    s[at] = best_id;
    memmove(s + at + 1, s + at + 2, (m - at - 2) * sizeof *s);
    m--;
  }
  for (size_t i = 0; i < m && o->n < o->cap; i++) emit(o, s[i] >= 0 ? s[i] : t->unk_id);
}

static int match_at(const uint32_t *s, size_t n, size_t i, const char *lit) {
  size_t k = strlen(lit);
  if (i + k > n) return 0;
  for (size_t j = 0; j < k; j++)
    if (s[i + j] != (unsigned char)lit[j]) return 0;
  return (int)k;
}

/* CLIP's pre-tokenisation of normalised text, then BPE of every word. */
static void pretokenize(tok_out *o, const uint32_t *s, size_t n) {
  static const char *contractions[7] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
  size_t i = 0;
  while (i < n && o->n < o->cap) {
    uint32_t c = s[i];
    if (is_space(c)) {
      i++;
      continue;
    }
    int k;
    if ((k = match_at(s, n, i, "<|startoftext|>")) || (k = match_at(s, n, i, "<|endoftext|>"))) {
      /* the byte-level pre-tokenizer's own pattern splits it again: "<|", name, "|>" */
      bpe_word(o, s + i, 2);
      bpe_word(o, s + i + 2, (size_t)k - 4);
      bpe_word(o, s + i + k - 2, 2);
      i += (size_t)k;
      continue;
    }
    k = 0;
    for (int j = 0; j < 7 && !k; j++) k = match_at(s, n, i, contractions[j]);
    if (k) {
      bpe_word(o, s + i, (size_t)k);
      i += (size_t)k;
      continue;
    }
    size_t e = i + 1;
    if (is_letter(c)) {
      while (e < n && is_letter(s[e])) e++;
    } else if (!is_number(c)) {
      while (e < n && !is_space(s[e]) && !is_letter(s[e]) && !is_number(s[e])) e++;
    }
    bpe_word(o, s + i, e - i);
    i = e;
  }
}

/* Leftmost-longest special token of the given kind at position i: its index, or -1. */
static int special_at(const clip_tokenizer *t, const uint32_t *s, size_t n, size_t i, int normalized, int *len) {
  int best = -1;
  *len = 0;
  for (int k = 0; k < t->n_special; k++) {
    const clip_special *sp = &t->special[k];
    if (sp->normalized != normalized || sp->len <= *len || i + (size_t)sp->len > n) continue;
    if (memcmp(s + i, sp->cp, (size_t)sp->len * sizeof *s) == 0) {
      best = k;
      *len = sp->len;
    }
  }
  return best;
}

/* Normalises raw[0..n) (NFC, white space runs -> " ", lower case), cuts out the normalised
 * special tokens, pre-tokenises the rest. work holds 24 n + 8 code points. */
static void normalize_and_encode(tok_out *o, const uint32_t *raw, size_t n, uint32_t *work) {
  uint32_t *a = work, *b = work + 8 * n + 4;
  size_t m = nfc(raw, n, a), w = 0;
  for (size_t i = 0; i < m;) { /* white space runs -> one space */
    if (is_space(a[i])) {
      while (i < m && is_space(a[i])) i++;
      a[w++] = ' ';
    } else {
      a[w++] = a[i++];
    }
  }
  size_t l = 0;
  for (size_t i = 0; i < w; i++) l += lower_of(a[i], b + l);
  const clip_tokenizer *t = o->t;
  size_t start = 0;
  for (size_t i = 0; i < l && o->n < o->cap;) {
    int len, k = special_at(t, b, l, i, 1, &len);
    if (k < 0) {
      i++;
      continue;
    }
    pretokenize(o, b + start, i - start);
    emit(o, t->special[k].id);
    i += (size_t)len;
    start = i;
  }
  if (o->n < o->cap) pretokenize(o, b + start, l - start);
}

int clip_tokenize_ex(const clip_tokenizer *t, const char *text, int32_t *ids, int max_len, int pad, int *n_out,
                     cmds_error *err) {
  if (max_len < 2)
    return CMDS_FAIL(err, CMDS_EINPUT, "clip_tokenize: max_len %d leaves no room for the bos and eos tokens", max_len);
  size_t nb = strlen(text);
  uint32_t *raw = cmds_xmalloc((nb + 1) * sizeof *raw);
  size_t bad;
  long n = utf8_decode((const unsigned char *)text, nb, raw, &bad);
  if (n < 0) {
    free(raw);
    return CMDS_FAIL(err, CMDS_EINPUT, "clip_tokenize: the prompt is not valid UTF-8 (byte %zu)", bad);
  }
  /* NFC output <= 8n code points (a code point decomposes into at most 4), lower casing <= 3x:
     8n + 24n code points of work space; a word has at most 24n code points, 96n bytes */
  uint32_t *work = cmds_xmalloc(((size_t)n * 32 + 16) * sizeof *work);
  tok_out o = {ids + 1, 0, max_len - 2, t, NULL, NULL};
  o.sym = cmds_xmalloc(((size_t)n * 96 + 16) * sizeof *o.sym);
  o.bytes = cmds_xmalloc((size_t)n * 96 + 16);
  size_t start = 0;
  for (size_t i = 0; i < (size_t)n && o.n < o.cap;) { /* raw-matched special tokens first */
    int len, k = special_at(t, raw, (size_t)n, i, 0, &len);
    if (k < 0) {
      i++;
      continue;
    }
    normalize_and_encode(&o, raw + start, i - start, work);
    emit(&o, t->special[k].id);
    i += (size_t)len;
    start = i;
  }
  if (o.n < o.cap) normalize_and_encode(&o, raw + start, (size_t)n - start, work);
  free(raw);
  free(work);
  free(o.sym);
  free(o.bytes);
  int nt = o.n < o.cap ? o.n : o.cap;
  ids[0] = t->bos_id;
  ids[nt + 1] = t->eos_id;
  int total = nt + 2;
  if (pad)
    for (int i = total; i < max_len; i++) ids[i] = t->pad_id;
  if (n_out) *n_out = total;
  return 0;
}

int clip_tokenize(const clip_tokenizer *t, const char *text, int32_t *ids, int max_len, cmds_error *err) {
  return clip_tokenize_ex(t, text, ids, max_len, 1, NULL, err);
}
