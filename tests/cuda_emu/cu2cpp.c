/* cu2cpp: turns a .cu file into C++ for the CUDA emulation (tests/cuda_emu).
 *
 *   cu2cpp IN.cu OUT.cpp
 *
 * Every launch `kernel<<<cfg>>>(args)` becomes
 * `cmds_emu_launch("kernel", "IN.cu", line, kernel, cmds_emu_cfg(cfg), args)` on the same line,
 * kernel being an identifier with optional template arguments, and every dynamic shared memory
 * declaration `extern __shared__ T name[];` becomes
 * `T *name = (decltype(name))cmds_emu::dynamic_smem();`; the output starts with
 * `#include <cuda_runtime.h>` and a #line directive, so diagnostics name the .cu file. Comments
 * and string literals are copied untouched. Writes OUT through a temporary file and a rename. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *in, int line, const char *msg) {
  fprintf(stderr, "cu2cpp: %s:%d: %s\n", in, line, msg);
  exit(1);
}

static char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    perror(path);
    exit(1);
  }
  size_t cap = 1 << 16, len = 0;
  char *b = malloc(cap + 1);
  size_t r;
  while (b && (r = fread(b + len, 1, cap - len, f)) > 0) {
    len += r;
    if (len == cap) b = realloc(b, (cap *= 2) + 1);
  }
  if (!b || ferror(f)) {
    fprintf(stderr, "cu2cpp: cannot read %s\n", path);
    exit(1);
  }
  fclose(f);
  b[len] = 0;
  *n = len;
  return b;
}

/* Skips a comment, string or character literal at s[i]; returns the index after it, or i. */
static size_t skip_lexeme(const char *s, size_t n, size_t i) {
  if (s[i] == '/' && i + 1 < n && s[i + 1] == '/') {
    while (i < n && s[i] != '\n') i++;
    return i;
  }
  if (s[i] == '/' && i + 1 < n && s[i + 1] == '*') {
    const char *e = strstr(s + i + 2, "*/");
    return e ? (size_t)(e - s) + 2 : n;
  }
  if (s[i] == '"' || s[i] == '\'') {
    char q = s[i++];
    while (i < n && s[i] != q) i += s[i] == '\\' ? 2 : 1;
    return i < n ? i + 1 : n;
  }
  return i;
}

/* Appends s[a, b) on one line: comments become a space, newlines spaces. */
static void emit_flat(char **o, size_t *len, size_t *cap, const char *s, size_t n, size_t a, size_t b) {
  if (*len + (b - a) + 1 > *cap) {
    *cap = 2 * (*cap + (b - a));
    *o = realloc(*o, *cap);
    if (!*o) exit(1);
  }
  for (size_t t = a; t < b;) {
    size_t e = skip_lexeme(s, n, t);
    if (e != t && s[t] == '/') { /* a comment */
      (*o)[(*len)++] = ' ';
      t = e;
      continue;
    }
    if (e == t) e = t + 1;
    for (; t < e && t < b; t++) (*o)[(*len)++] = s[t] == '\n' ? ' ' : s[t];
  }
}

static int ident_char(char c) { return isalnum((unsigned char)c) || c == '_' || c == ':'; }

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: cu2cpp IN.cu OUT.cpp\n");
    return 2;
  }
  const char *in = argv[1];
  size_t n;
  char *s = slurp(in, &n);
  size_t cap = 2 * n + 4096, len = 0;
  char *o = malloc(cap);
  if (!o) return 1;
  len += (size_t)snprintf(o, cap, "#include <cuda_runtime.h>\n#line 1 \"%s\"\n", in);
  int line = 1;
  size_t i = 0, copied = 0; /* s[copied, i) not yet written */
#define EMIT(p, k)                                   \
  do {                                               \
    size_t k_ = (k);                                 \
    if (len + k_ + 1 > cap) o = realloc(o, cap = 2 * (cap + k_)); \
    if (!o) return 1;                                \
    memcpy(o + len, (p), k_);                        \
    len += k_;                                       \
  } while (0)
  while (i < n) {
    size_t j = skip_lexeme(s, n, i);
    if (j != i) {
      for (size_t t = i; t < j; t++) line += s[t] == '\n';
      i = j;
      continue;
    }
    if (s[i] == '\n') line++;
    if (s[i] == 'e' && (i == 0 || !ident_char(s[i - 1])) && !strncmp(s + i, "extern", 6) && i + 6 < n &&
        isspace((unsigned char)s[i + 6])) {
      size_t p = i + 6;
      while (p < n && isspace((unsigned char)s[p])) p++;
      if (!strncmp(s + p, "__shared__", 10) && p + 10 < n && !ident_char(s[p + 10])) {
        size_t t0 = p + 10;
        const char *semi = memchr(s + t0, ';', n - t0);
        if (!semi) die(in, line, "extern __shared__ without ';'");
        size_t e = (size_t)(semi - s), b = e;
        while (b > t0 && s[b - 1] != '[') b--;
        if (b == t0) die(in, line, "extern __shared__ declaration without []");
        size_t ne = b - 1;
        while (ne > t0 && isspace((unsigned char)s[ne - 1])) ne--;
        size_t ns = ne;
        while (ns > t0 && ident_char(s[ns - 1])) ns--;
        if (ns == ne) die(in, line, "extern __shared__ declaration without a name");
        EMIT(s + copied, i - copied);
        emit_flat(&o, &len, &cap, s, n, t0, ns);
        EMIT("*", 1);
        EMIT(s + ns, ne - ns);
        EMIT(" = (decltype(", 13);
        EMIT(s + ns, ne - ns);
        EMIT("))cmds_emu::dynamic_smem();", 27);
        for (size_t t = i; t < e; t++)
          if (s[t] == '\n') {
            EMIT("\n", 1);
            line++;
          }
        i = copied = e + 1;
        continue;
      }
    }
    if (!(s[i] == '<' && i + 2 < n && s[i + 1] == '<' && s[i + 2] == '<')) {
      i++;
      continue;
    }
    /* the kernel expression: back over spaces, a balanced <...>, an identifier */
    size_t k = i;
    while (k > 0 && isspace((unsigned char)s[k - 1])) k--;
    if (k > 0 && s[k - 1] == '>') {
      int depth = 0;
      do {
        k--;
        if (s[k] == '>') depth++;
        if (s[k] == '<') depth--;
      } while (k > 0 && depth > 0);
      if (depth) die(in, line, "unbalanced template arguments before <<<");
    }
    while (k > 0 && ident_char(s[k - 1])) k--;
    if (k == i || k < copied) die(in, line, "no kernel name before <<<");
    size_t cfg0 = i + 3;
    const char *end = strstr(s + cfg0, ">>>");
    if (!end) die(in, line, "<<< without >>>");
    size_t cfg1 = (size_t)(end - s), p = cfg1 + 3;
    while (p < n && isspace((unsigned char)s[p])) p++;
    if (p >= n || s[p] != '(') die(in, line, "no argument list after >>>");
    /* the argument list up to its closing parenthesis */
    size_t q = p + 1;
    int depth = 1;
    while (q < n && depth) {
      size_t e = skip_lexeme(s, n, q);
      if (e != q) {
        q = e;
        continue;
      }
      if (s[q] == '(') depth++;
      if (s[q] == ')') depth--;
      q++;
    }
    if (depth) die(in, line, "unterminated kernel argument list");
    size_t a0 = p + 1, a1 = q - 1; /* the arguments: s[a0, a1) */
    int no_args = 1;
    for (size_t t = a0; t < a1; t++)
      if (!isspace((unsigned char)s[t])) no_args = 0;
    size_t name_end = i;
    while (name_end > k && isspace((unsigned char)s[name_end - 1])) name_end--;
    EMIT(s + copied, k - copied);
    char head[1024];
    int hl = snprintf(head, sizeof head, "cmds_emu_launch(\"%.*s\", \"%s\", %d, cmds_emu_cfg(", (int)(name_end - k),
                      s + k, in, line);
    if (hl < 0 || (size_t)hl >= sizeof head) die(in, line, "kernel name too long");
    EMIT(head, (size_t)hl);
    emit_flat(&o, &len, &cap, s, n, cfg0, cfg1);
    EMIT("), [=] { ", 9);
    EMIT(s + k, name_end - k);
    EMIT("(", 1);
    emit_flat(&o, &len, &cap, s, n, a0, a1);
    EMIT("); }", 4);
    if (!no_args) { /* again, for the pointer checks; keeps the lines */
      EMIT(", ", 2);
      EMIT(s + a0, a1 - a0);
    }
    EMIT(")", 1);
    for (size_t t = i; t < a0; t++) /* keep the line count */
      if (s[t] == '\n') {
        EMIT("\n", 1);
        line++;
      }
    for (size_t t = a0; t < a1; t++) line += s[t] == '\n';
    i = copied = q;
    continue;
  }
  EMIT(s + copied, n - copied);
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", argv[2]);
  FILE *f = fopen(tmp, "wb");
  if (!f || fwrite(o, 1, len, f) != len || fclose(f)) {
    fprintf(stderr, "cu2cpp: cannot write %s\n", tmp);
    return 1;
  }
  if (rename(tmp, argv[2])) {
    perror(argv[2]);
    return 1;
  }
  free(o);
  free(s);
  return 0;
}
