/* tokenizer: the CLIP byte-level BPE tokenizer of a diffusers checkpoint (<root>/tokenizer/:
 * vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json), giving the ids that
 * transformers' CLIPTokenizer (5.x, the `tokenizers` backend; checked by the fixtures) gives:
 *
 *   1. special tokens (bos, eos, unk, pad, or every entry of added_tokens_decoder) are cut out
 *      of the text first, leftmost-longest: those marked "normalized": false in the raw text,
 *      the others in the normalised text;
 *   2. normalisation: NFC, every run of white space -> one space, lower case (full per-character
 *      mappings, no ftfy);
 *   3. pre-tokenisation by CLIP's pattern: <|startoftext|> | <|endoftext|> | 's 't 're 've 'm 'll 'd
 *      | letters+ | one number character | other non-space characters+; white space dropped;
 *   4. each word's UTF-8 bytes mapped to GPT-2's printable byte characters, "</w>" appended to the
 *      last, merged by merge rank (merges.txt order), symbols looked up in vocab.json (unknown:
 *      the unk token);
 *   5. [bos] + the first max_len - 2 tokens + [eos] (+ the pad token up to max_len when padding).
 *
 * Which special token is which comes from the files (SD 2 pads with "!" through the legacy
 * special_tokens_map.json, SD 1 with the eos token), not from constants. The vocabulary and
 * the merge ranks live in open-addressing hash tables (49408 and 48894 entries in the real
 * ones): a lookup is one hash and a probe or two. The tokenizer is read-only after loading, so
 * one can be shared by threads. Unicode data: tokenizer_unicode.h (gen_tokenizer_unicode.py).
 *
 *   clip_tokenizer t;
 *   if (clip_tokenizer_load(&t, root, "tokenizer", &err)) ...;
 *   int32_t ids[77];
 *   if (clip_tokenize(&t, "a photo of a bagel", ids, clip_tokenizer_max_length(&t), &err)) ...;
 *   clip_tokenizer_free(&t);
 */
#ifndef CMDS_DIFFUSION_TOKENIZER_H
#define CMDS_DIFFUSION_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "cmds_error.h"

/* Hash table of byte-string keys -> int32 values (internal; exposed for the struct size). */
typedef struct clip_strmap {
  uint32_t cap;      /* slots, a power of two */
  uint32_t n;        /* entries */
  uint32_t *slot;    /* entry index + 1, 0 = empty */
  uint32_t *koff;    /* per entry: key offset in pool */
  uint32_t *klen;    /* per entry: key bytes */
  int32_t *val;      /* per entry: value */
  char *pool;        /* keys */
  size_t pool_len, pool_cap;
} clip_strmap;

/* Hash table of (id, id) pairs -> (merge rank, merged id) (internal). */
typedef struct clip_pairmap {
  uint32_t cap;
  uint32_t n;
  uint64_t *key;     /* (a << 32 | b) + 1, 0 = empty */
  int32_t *rank;
  int32_t *merged;
} clip_pairmap;

#define CLIP_TOK_MAX_SPECIAL 64

typedef struct clip_special {
  uint32_t *cp;      /* content as code points */
  int len;
  int normalized;    /* matched in the normalised text (1) or the raw text (0) */
  int32_t id;
} clip_special;

typedef struct clip_tokenizer {
  clip_strmap vocab;          /* token string -> id */
  clip_pairmap merges;        /* (left id, right id) -> rank, merged id */
  int32_t byte_id[256];       /* id of byte b's character, -1 when not in the vocabulary */
  int32_t byte_end_id[256];   /* id of byte b's character + "</w>" */
  clip_special special[CLIP_TOK_MAX_SPECIAL];
  int n_special;
  int32_t bos_id, eos_id, pad_id, unk_id; /* unk_id -1: none */
  int model_max_length;
  char dir[1024];             /* <root>/<subfolder> (messages) */
} clip_tokenizer;

/* Reads <root>/<subfolder>/{vocab.json, merges.txt, tokenizer_config.json[, special_tokens_map.json]}.
 * Errors (CMDS_EINPUT / CMDS_EIO) name the file and the line, key or token at fault: a missing
 * file, a merges line that is not two tokens separated by one space, a merge whose parts or
 * result are not in the vocabulary, a special token not in the vocabulary, a missing
 * model_max_length. */
int clip_tokenizer_load(clip_tokenizer *t, const char *root, const char *subfolder, cmds_error *err);
void clip_tokenizer_free(clip_tokenizer *t);

/* padding="max_length", truncation=True as the SD pipelines call it: ids[0..max_len) = bos,
 * tokens, eos, pad... (max_len >= 2; normally clip_tokenizer_max_length). text is UTF-8
 * (invalid UTF-8 is CMDS_EINPUT). */
int clip_tokenize(const clip_tokenizer *t, const char *text, int32_t *ids, int max_len, cmds_error *err);
/* The general form: pad = 0 is padding="do_not_pad" (Marigold's empty prompt gives [bos, eos]);
 * *n_out (may be NULL) receives the number of ids before padding (<= max_len). ids holds max_len. */
int clip_tokenize_ex(const clip_tokenizer *t, const char *text, int32_t *ids, int max_len, int pad,
                     int *n_out, cmds_error *err);
int clip_tokenizer_max_length(const clip_tokenizer *t); /* model_max_length (77) */

#endif
