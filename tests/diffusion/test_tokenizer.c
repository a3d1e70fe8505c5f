/* test_tokenizer: the CLIP tokenizer (kernels/diffusion/tokenizer.h) against the ids that
 * transformers' CLIPTokenizer gives on tests/fixtures/diffusion_clip (gen_diffusion_clip.py):
 * two tokenizer folders (SD 1 style: pad = eos, model_max_length 16, saved by transformers;
 * SD 2 style: pad "!" from the legacy special_tokens_map.json, 77), a set of tricky strings
 * (empty, case, white space, punctuation, numbers, contractions, combining accents, other
 * scripts, emoji, special tokens inside the text, longer than max length), padded and not
 * padded; then broken folders (missing vocab.json, a broken merges line, a merge not in the
 * vocabulary) and invalid UTF-8 must give errors that name the file and line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "jsonread.h"
#include "tokenizer.h"

static void check_rows(const clip_tokenizer *t, const cmds_jv *strings, const cmds_jv *rows, int pad,
                       const char *name) {
  int L = clip_tokenizer_max_length(t);
  int32_t *ids = malloc((size_t)L * sizeof *ids);
  CHECK(rows && rows->type == CMDS_JV_ARR && rows->n == strings->n, "%s: fixture rows", name);
  if (!rows || rows->n != strings->n) return;
  for (int64_t s = 0; s < strings->n; s++) {
    cmds_error err = {0};
    int n = -1;
    int rc = clip_tokenize_ex(t, strings->items[s].str, ids, L, pad, &n, &err);
    CHECK(rc == 0, "%s: tokenize string %lld: %s", name, (long long)s, err.msg);
    const cmds_jv *want = &rows->items[s];
    int want_n = (int)want->n, same = rc == 0 && (pad ? L : n) == want_n;
    for (int i = 0; same && i < want_n; i++) same = ids[i] == (int32_t)want->items[i].num;
    CHECK(same, "%s pad=%d string %lld '%.60s': %d ids, want %d", name, pad, (long long)s, strings->items[s].str,
          pad ? L : n, want_n);
    if (!same) {
      fprintf(stderr, "  got :");
      for (int i = 0; i < (pad ? L : n) && i < 40; i++) fprintf(stderr, " %d", ids[i]);
      fprintf(stderr, "\n  want:");
      for (int i = 0; i < want_n && i < 40; i++) fprintf(stderr, " %d", (int)want->items[i].num);
      fprintf(stderr, "\n");
    }
    if (pad && rc == 0) { /* the fixed API form gives the same */
      int32_t *ids2 = malloc((size_t)L * sizeof *ids2);
      CHECK(clip_tokenize(t, strings->items[s].str, ids2, L, &err) == 0 &&
                memcmp(ids, ids2, (size_t)L * sizeof *ids) == 0,
            "clip_tokenize == clip_tokenize_ex(pad=1)");
      free(ids2);
    }
  }
  free(ids);
}

static void expect_error(const char *root, const char *what, const char *needle1, const char *needle2) {
  clip_tokenizer t;
  cmds_error err = {0};
  int rc = clip_tokenizer_load(&t, root, "tokenizer", &err);
  CHECK(rc == CMDS_EINPUT, "%s: rc %d (%s)", what, rc, err.msg);
  CHECK(strstr(err.msg, needle1) != NULL && (!needle2 || strstr(err.msg, needle2) != NULL),
        "%s: message '%s' should name '%s'%s%s", what, err.msg, needle1, needle2 ? " and " : "", needle2 ? needle2 : "");
  printf("%s -> %s\n", what, err.msg);
  if (rc == 0) clip_tokenizer_free(&t);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s FIXTURE_DIR (tests/fixtures/diffusion_clip)\n", argv[0]);
    return 2;
  }
  const char *fx = argv[1];
  char path[2048];
  cmds_error err = {0};
  cmds_jv tok;
  snprintf(path, sizeof path, "%s/tokens.json", fx);
  if (cmds_jv_read_file(path, &tok, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  const cmds_jv *strings = cmds_jv_member(&tok, "strings");
  const char *names[2] = {"sd1", "sd2"};
  for (int r = 0; r < 2; r++) {
    const cmds_jv *exp = cmds_jv_member(&tok, names[r]);
    snprintf(path, sizeof path, "%s/%s", fx, names[r]);
    clip_tokenizer t;
    int rc = clip_tokenizer_load(&t, path, "tokenizer", &err);
    CHECK(rc == 0, "load %s: %s", path, err.msg);
    if (rc) continue;
    CHECK(t.vocab.n == 730 && t.merges.n == 216, "%s: %u tokens, %u merges", names[r], t.vocab.n, t.merges.n);
    CHECK(clip_tokenizer_max_length(&t) == (int)cmds_jv_member(exp, "model_max_length")->num, "%s: max length %d",
          names[r], clip_tokenizer_max_length(&t));
    CHECK(t.pad_id == (int32_t)cmds_jv_member(exp, "pad_id")->num, "%s: pad id %d", names[r], t.pad_id);
    CHECK(t.bos_id == (int32_t)cmds_jv_member(exp, "bos_id")->num, "%s: bos id %d", names[r], t.bos_id);
    CHECK(t.eos_id == (int32_t)cmds_jv_member(exp, "eos_id")->num, "%s: eos id %d", names[r], t.eos_id);
    check_rows(&t, strings, cmds_jv_member(exp, "padded"), 1, names[r]);
    check_rows(&t, strings, cmds_jv_member(exp, "unpadded"), 0, names[r]);

    /* invalid UTF-8, too small max_len */
    int32_t ids[80];
    rc = clip_tokenize(&t, "ab\xC3(", ids, 77, &err);
    CHECK(rc == CMDS_EINPUT && strstr(err.msg, "UTF-8") && strstr(err.msg, "byte 2"), "bad UTF-8: %d %s", rc, err.msg);
    rc = clip_tokenize(&t, "a", ids, 1, &err);
    CHECK(rc == CMDS_EINPUT, "max_len 1 refused: %d", rc);
    /* a very long prompt: truncated, not slow (stops once max_len tokens exist) */
    size_t big = 1 << 20;
    char *s = malloc(big + 1);
    for (size_t i = 0; i < big; i++) s[i] = "photo of a bagel, "[i % 18];
    s[big] = 0;
    int n = 0;
    rc = clip_tokenize_ex(&t, s, ids, 77, 0, &n, &err);
    CHECK(rc == 0 && n == 77 && ids[76] == t.eos_id, "long prompt: rc %d n %d", rc, n);
    free(s);
    clip_tokenizer_free(&t);
  }
  cmds_jv_free(&tok);

  snprintf(path, sizeof path, "%s/bad/novocab", fx);
  expect_error(path, "missing vocab.json", "vocab.json", "missing");
  snprintf(path, sizeof path, "%s/bad/badmerge", fx);
  expect_error(path, "broken merges line", "merges.txt", "line 218");
  snprintf(path, sizeof path, "%s/bad/unknownmerge", fx);
  expect_error(path, "merge not in vocab", "merges.txt", "line 218");
  snprintf(path, sizeof path, "%s/nonexistent", fx);
  expect_error(path, "missing folder", "nonexistent/tokenizer/vocab.json", NULL);
  return CHECK_DONE();
}
