/* unet_tape: the tape of the UNet's training path (see unet.h, unet_internal.h): its
 * structure, the dry walk that sizes it and the scratch both passes take, the public sizes,
 * unet_tape_new / unet_tape_free, and the CMDS_UNET_PROFILE report both passes print.
 *
 * The passes themselves: unet_train_forward.c (the forward that fills the tape) and
 * unet_backward.c (the backward that reads it). Both run dry first (unet_internal.h): the
 * scratch and tape sizes are those counts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unet_internal.h"

/* ------------------------------------------------------------------ profile (CMDS_UNET_PROFILE) */

int unet_i_prof_wanted(void) {
  const char *e = getenv("CMDS_UNET_PROFILE");
  return e && *e && strcmp(e, "0") != 0;
}
void unet_i_prof_print(const double *p, int backward) {
  static const char *const names[] = {
      "forward", "  resnets", "  transformers", "  samplers", "  time emb, conv_in, head",
      "backward", "  head", "  resnets", "  transformers", "  samplers",
      "  recompute (in the units)", "  attention bwd", "  linear bwd (+LoRA)",
      "  conv bwd (dx)", "  norm bwd", "  activation bwd", "  adds / copies"};
  _Static_assert(sizeof names / sizeof names[0] == UP_N, "one name per profile slot (unet_prof_slot)");
  int lo = backward ? UP_B_TOTAL : UP_F_TOTAL, hi = backward ? UP_N : UP_B_TOTAL;
  fprintf(stderr, "unet profile (%s):", backward ? "backward" : "training forward");
  for (int i = lo; i < hi; i++) fprintf(stderr, "%s%s %.3f s", i == lo ? " " : ";", names[i], p[i]);
  fprintf(stderr, "\n");
}

/* ------------------------------------------------------------------ tape */

/* States of one training forward: conv_in, per down layer the resnet (+ the transformer),
 * per down sampler one, the mid block's three, per up layer the resnet (+ transformer), per
 * up sampler one. */
static int count_states(const unet_config *c) {
  int n = 1 + 3;
  for (int i = 0; i < c->n_blocks; i++) {
    n += (int)c->layers_per_block[i] * (1 + c->down_attn[i]) + (i < c->n_blocks - 1);
    n += ((int)c->layers_per_block[c->n_blocks - 1 - i] + 1) * (1 + c->up_attn[i]) + (i < c->n_blocks - 1);
  }
  return n;
}

static unet_tape *tape_struct(const unet_model *m) {
  unet_tape *T = cmds_xcalloc(1, sizeof *T);
  T->dev = m->device;
  T->cap = count_states(&m->cfg);
  T->st = cmds_xcalloc((size_t)T->cap, sizeof *T->st);
  T->units = cmds_xcalloc((size_t)T->cap, sizeof *T->units);
  return T;
}

static void tape_struct_free(unet_tape *T) {
  if (!T) return;
  free(T->st);
  free(T->units);
  free(T->blk);
  free(T);
}

/* ------------------------------------------------------------------ sizes and entry points */

/* Dry training forward and backward: scratch peak of each, tape bytes. */
void unet_i_dry_train(const unet_model *m, int64_t B, int64_t h, int64_t w, int64_t S_tokens, size_t *fwd, size_t *bwd,
                      size_t *tape_bytes) {
  unet_tape *T = tape_struct(m);
  ustate S = {0};
  cmds_error e;
  S.dev = m->device, S.dry = 1, S.err = &e, S.tape = T;
  nn_tensor x, out;
  u_shape(&x, m->device, 4, B, m->cfg.in_channels, h, w);
  u_shape(&out, m->device, 4, B, m->cfg.out_channels, h, w);
  u_shape(&T->enc, m->device, 3, B, S_tokens, m->cfg.cross_attention_dim, 0);
  double t0 = 0; /* not read in a dry walk */
  unet_i_train_forward(&S, m, &out, &x, &t0);
  if (fwd) *fwd = S.peak;
  if (tape_bytes) *tape_bytes = S.tape_used;
  S.used = S.peak = 0;
  unet_i_backward(&S, m, &out);
  if (bwd) *bwd = S.peak;
  tape_struct_free(T);
}

int unet_i_halves_evenly(const unet_model *m, int64_t h, int64_t w) {
  int64_t f = (int64_t)1 << (m->cfg.n_blocks - 1);
  return h > 0 && w > 0 && h % f == 0 && w % f == 0;
}

size_t unet_tape_bytes(const unet_model *m, int64_t B, int64_t h, int64_t w, int64_t S) {
  size_t t;
  unet_i_dry_train(m, B, h, w, S, NULL, NULL, &t);
  return t + 1024;
}

size_t unet_train_workspace_bytes(const unet_model *m, int64_t B, int64_t h, int64_t w, int64_t S) {
  size_t f, b;
  unet_i_dry_train(m, B, h, w, S, &f, &b, NULL);
  return (f > b ? f : b) + 512;
}

unet_tape *unet_tape_new(const unet_model *m, int64_t B, int64_t h, int64_t w, int64_t S, cmds_error *err) {
  if (B < 1 || S < 1 || !unet_i_halves_evenly(m, h, w)) {
    CMDS_FAIL(err, CMDS_EINPUT, "unet_tape_new: B %lld, %lld x %lld, %lld tokens: the training path needs B, S >= 1 "
              "and sizes divisible by %lld (every level halves evenly)", (long long)B, (long long)h, (long long)w,
              (long long)S, (long long)((int64_t)1 << (m->cfg.n_blocks - 1)));
    return NULL;
  }
  unet_tape *T = tape_struct(m);
  if (nn_arena_init(&T->store, m->device, unet_tape_bytes(m, B, h, w, S), err)) {
    cmds_error_wrap(err, "UNet tape for (B %lld, %lld x %lld)", (long long)B, (long long)h, (long long)w);
    tape_struct_free(T);
    return NULL;
  }
  return T;
}

void unet_tape_free(unet_tape *t) {
  if (!t) return;
  nn_arena_free(&t->store);
  tape_struct_free(t);
}

/* The scratch arena has `need` bytes free past its current use. */
int unet_i_scratch_room(nn_ctx *ctx, size_t need, const char *op, const nn_tensor *x, int64_t S, cmds_error *err) {
  size_t start = ALIGN256(ctx->scratch->used_bytes);
  if (start + need <= ctx->scratch->size_bytes) return 0;
  return CMDS_FAIL(err, CMDS_ENOMEM, "%s: the scratch arena has %zu bytes free, %zu needed for (B %lld, %lld x %lld, "
                   "%lld tokens): size it with unet_train_workspace_bytes", op,
                   ctx->scratch->size_bytes - (start < ctx->scratch->size_bytes ? start : ctx->scratch->size_bytes),
                   need, (long long)x->shape[0], (long long)x->shape[2], (long long)x->shape[3], (long long)S);
}
