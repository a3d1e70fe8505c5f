/* unet_train_forward: the UNet's training forward, unet_forward_train (see unet.h): the
 * forward of unet.c, unit by unit, keeping in the tape what the backward (unet_backward.c)
 * needs.
 *
 * Units are the resnets, transformers and samplers of unet.c's forward (same op sequences,
 * same results). The tape holds every unit's output state (each down state is also a skip),
 * the SiLU'd time embedding, a view of the encoder states and, for every unit from the first
 * transformer on, the internals whose recomputation would cost a GEMM (unet_unit,
 * unet_tblock_save in unet_internal.h); units before the first transformer keep nothing (no
 * adapter there, no backward). The tape's structure and sizes: unet_tape.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/activation.h"
#include "nn/attention.h"
#include "nn/conv.h"
#include "nn/elementwise.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "unet_internal.h"

/* ------------------------------------------------------------------ filling the tape */

/* A tensor of the tape (the states, the units' kept internals, the embedding): counted when
 * dry, else from its arena. */
static int tape_tensor(ustate *S, nn_tensor *t, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
  u_shape(t, S->dev, ndim, d0, d1, d2, d3);
  size_t bytes = (size_t)nn_tensor_numel(t) * sizeof(float);
  if (S->dry) {
    S->tape_used = ALIGN256(S->tape_used) + bytes;
    return 0;
  }
  t->data = nn_arena_alloc(&S->tape->store, bytes, S->err);
  return t->data ? 0 : cmds_error_wrap(S->err, "UNet tape (size it with unet_tape_bytes)");
}

static int new_state(ustate *S, int *idx, int64_t B, int64_t C, int64_t H, int64_t W) {
  unet_tape *T = S->tape;
  if (T->n_states >= T->cap)
    return CMDS_FAIL(S->err, CMDS_EINTERNAL, "UNet tape: more than the %d states counted", T->cap);
  *idx = T->n_states;
  int rc = tape_tensor(S, &T->st[T->n_states], 4, B, C, H, W);
  if (!rc) T->n_states++;
  return rc;
}

static unet_unit *add_unit(ustate *S, unet_unit_kind kind, int in, int skip, int out, const void *mod) {
  unet_tape *T = S->tape;
  unet_unit *U = &T->units[T->n_units++];
  memset(U, 0, sizeof *U);
  U->kind = kind, U->in = in, U->skip = skip, U->out = out, U->mod = mod, U->blk0 = -1;
  return U;
}

/* n block saves, the first at *first (the array may move: index it, keep no pointers). */
static int new_blocks(ustate *S, int n, int *first) {
  unet_tape *T = S->tape;
  if (T->n_blk + n > T->cap_blk) {
    int cap = T->cap_blk ? T->cap_blk : 16;
    while (cap < T->n_blk + n) cap *= 2;
    T->blk = cmds_xrealloc(T->blk, (size_t)cap * sizeof *T->blk);
    T->cap_blk = cap;
  }
  *first = T->n_blk;
  memset(T->blk + T->n_blk, 0, (size_t)n * sizeof *T->blk);
  T->n_blk += n;
  return 0;
}

/* ------------------------------------------------------------------ training forward */

/* The units of the forward, each keeping in the tape what its backward needs (see
 * unet_unit). Their op sequences are those of unet.c's inference units (same results). */

/* out (B,N,dim) = to_out(MHA(to_q(xq), to_k(xkv), to_v(xkv))); q, k, v, o into the tape. */
static int attn_keep(ustate *S, nn_tensor *out, const nn_tensor *xq, const nn_tensor *xkv, const unet_attention *a,
                     unet_attn_save *sv) {
  int64_t B = xq->shape[0], N = xq->shape[1], M = xkv->shape[1], I = a->heads * a->dim_head;
  int rc;
  if ((rc = tape_tensor(S, &sv->q, 3, B, N, I, 0)) || (rc = tape_tensor(S, &sv->k, 3, B, M, I, 0)) ||
      (rc = tape_tensor(S, &sv->v, 3, B, M, I, 0)) || (rc = tape_tensor(S, &sv->o, 3, B, N, I, 0)))
    return rc;
  sv->lse.data = NULL; /* CPU: the softmax's log-sum-exp too (attention backward's fast path) */
  if (S->dev == NN_CPU && (rc = tape_tensor(S, &sv->lse, 3, B, a->heads, N, 0))) return rc;
  if ((rc = unet_i_linear(S, &sv->q, xq, &a->to_q)) || (rc = unet_i_linear(S, &sv->k, xkv, &a->to_k)) ||
      (rc = unet_i_linear(S, &sv->v, xkv, &a->to_v)))
    return rc;
  u_need(S, nn_attention_ex_scratch_bytes(S->dev, N, M, a->heads, a->dim_head));
  OP(nn_attention_ex_forward_lse(S->ctx, &sv->o, sv->lse.data ? &sv->lse : NULL, &sv->q, &sv->k, &sv->v, a->heads,
                                 0, S->err));
  return unet_i_linear(S, out, &sv->o, &a->to_out);
}

/* BasicTransformerBlock: xo (B,N,D) from sv->xin (already in the tape); keeps x1, x2, g and
 * both attentions' internals. xo must not be sv->xin. */
static int tblock_keep(ustate *S, nn_tensor *xo, const nn_tensor *enc, const unet_transformer_block *b,
                       unet_tblock_save *sv) {
  const nn_tensor *x0 = &sv->xin;
  int64_t B = x0->shape[0], N = x0->shape[1], D = x0->shape[2], F = b->ff_out.in;
  size_t mk = u_mark(S);
  nn_tensor n, a, f;
  int rc;
  if ((rc = u_alloc(S, &n, 3, B, N, D, 0)) || (rc = u_alloc(S, &a, 3, B, N, D, 0)) ||
      (rc = tape_tensor(S, &sv->x1, 3, B, N, D, 0)) || (rc = tape_tensor(S, &sv->x2, 3, B, N, D, 0)) ||
      (rc = tape_tensor(S, &sv->g, 3, B, N, 2 * F, 0)))
    return rc;
  OP(nn_layernorm_forward(S->ctx, &n, x0, &b->norm1.w, &b->norm1.b, UNET_LN_EPS, S->err));
  if ((rc = attn_keep(S, &a, &n, &n, &b->attn1, &sv->a1))) return rc;
  OP(nn_add_forward(S->ctx, &sv->x1, x0, &a, S->err));
  OP(nn_layernorm_forward(S->ctx, &n, &sv->x1, &b->norm2.w, &b->norm2.b, UNET_LN_EPS, S->err));
  if ((rc = attn_keep(S, &a, &n, enc, &b->attn2, &sv->a2))) return rc;
  OP(nn_add_forward(S->ctx, &sv->x2, &sv->x1, &a, S->err));
  OP(nn_layernorm_forward(S->ctx, &n, &sv->x2, &b->norm3.w, &b->norm3.b, UNET_LN_EPS, S->err));
  if ((rc = unet_i_linear(S, &sv->g, &n, &b->ff_in)) || (rc = u_alloc(S, &f, 3, B, N, F, 0))) return rc;
  OP(nn_geglu_forward(S->ctx, &f, &sv->g, S->err));
  if ((rc = unet_i_linear(S, &a, &f, &b->ff_out))) return rc;
  OP(nn_add_forward(S->ctx, xo, &sv->x2, &a, S->err));
  u_rewind(S, mk);
  return 0;
}

/* Transformer2DModel, out = h + T(h) (B,C,H,W), out not h; keeps every block's internals
 * (U->blk0 on). */
static int transformer_keep(ustate *S, nn_tensor *out, const nn_tensor *h, const nn_tensor *enc,
                            const unet_transformer *T, int64_t G, unet_unit *U) {
  double t0 = u_prof_now(S);
  int64_t B = h->shape[0], N = h->shape[2] * h->shape[3], I = T->inner;
  int nl = T->n_layers, rc;
  if (nl < 1) return CMDS_FAIL(S->err, CMDS_EINPUT, "UNet training: a transformer without blocks");
  if ((rc = new_blocks(S, nl, &U->blk0))) return rc;
  unet_tblock_save *sv = S->tape->blk + U->blk0; /* no more blocks are added below */
  size_t mk = u_mark(S);
  if ((rc = tape_tensor(S, &sv[0].xin, 3, B, N, I, 0)) || (rc = unet_i_transformer_in(S, &sv[0].xin, h, T, G))) return rc;
  nn_tensor x;
  if ((rc = u_alloc(S, &x, 3, B, N, I, 0))) return rc;
  for (int l = 0; l < nl; l++) {
    nn_tensor *xo = &x;
    if (l + 1 < nl) {
      if ((rc = tape_tensor(S, &sv[l + 1].xin, 3, B, N, I, 0))) return rc;
      xo = &sv[l + 1].xin;
    }
    if ((rc = tblock_keep(S, xo, enc, &T->blocks[l], &sv[l]))) return rc;
  }
  if ((rc = unet_i_transformer_out(S, out, h, &x, T))) return rc;
  u_rewind(S, mk);
  u_prof_add(S, UP_F_TRANSFORMER, t0);
  return 0;
}

/* ResnetBlock2D: out (B,cout,H,W) from x (B,cin,H,W), out not x; keeps h1 (conv1's output
 * plus the time projection) when keep is set (units with a backward). */
static int resnet_keep(ustate *S, nn_tensor *out, const nn_tensor *x, const unet_resnet *r, const nn_tensor *emb,
                       int64_t G, float eps, unet_unit *U, int keep) {
  double t0 = u_prof_now(S);
  int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3];
  size_t mk = u_mark(S);
  nn_tensor t, tp, h1s, *h1 = keep ? &U->h1 : &h1s;
  int rc;
  if ((rc = u_alloc(S, &t, 4, B, r->cin, H, W))) return rc;
  if ((rc = keep ? tape_tensor(S, h1, 4, B, r->cout, H, W) : u_alloc(S, h1, 4, B, r->cout, H, W))) return rc;
  OP(nn_groupnorm_forward(S->ctx, &t, x, G, &r->norm1.w, &r->norm1.b, eps, S->err));
  OP(nn_silu_forward(S->ctx, &t, &t, S->err));
  if ((rc = unet_i_conv(S, h1, &t, &r->conv1, 1, 1))) return rc;
  if ((rc = u_alloc(S, &tp, 2, B, r->cout, 0, 0)) || (rc = unet_i_linear(S, &tp, emb, &r->time_emb_proj))) return rc;
  OP(nn_add_channel_forward(S->ctx, h1, h1, &tp, S->err));
  if ((rc = unet_i_resnet_out(S, out, h1, x, r, G, eps))) return rc;
  u_rewind(S, mk);
  u_prof_add(S, UP_F_RESNET, t0);
  return 0;
}

/* A transformer on state *cur: its output state (the same shape), its unit and the taped
 * forward; *cur becomes the output. */
static int transformer_step(ustate *S, int *cur, const nn_tensor *enc, const unet_transformer *a, int64_t G) {
  unet_tape *T = S->tape;
  const int64_t *sh = T->st[*cur].shape;
  int o, rc = new_state(S, &o, sh[0], sh[1], sh[2], sh[3]);
  if (rc) return rc;
  unet_unit *U = add_unit(S, UNET_U_TRANSFORMER, *cur, -1, o, a);
  if ((rc = transformer_keep(S, &T->st[o], &T->st[*cur], enc, a, G, U))) return rc;
  *cur = o;
  return 0;
}

static int f_sampler(ustate *S, nn_tensor *y, const nn_tensor *x, const unet_proj *p, int stride) {
  double t0 = u_prof_now(S);
  int rc = unet_i_conv(S, y, x, p, stride, 1);
  u_prof_add(S, UP_F_SAMPLER, t0);
  return rc;
}

int unet_i_train_forward(ustate *S, const unet_model *m, nn_tensor *out, const nn_tensor *x, const double *t) {
  const unet_config *c = &m->cfg;
  unet_tape *T = S->tape;
  int nb = (int)c->n_blocks, rc;
  int64_t B = x->shape[0], h = x->shape[2], w = x->shape[3], C0 = c->block_out_channels[0];
  int64_t G = c->norm_num_groups;
  float eps = (float)c->norm_eps;
  int64_t Hs[UNET_MAX_BLOCKS], Ws[UNET_MAX_BLOCKS];
  unet_i_level_sizes(c, h, w, Hs, Ws);
  T->n_states = T->n_units = T->n_blk = 0;
  unet_unit *U;
  int kept = 0; /* the units before the first transformer have no backward: nothing kept */
  T->B = B, T->h = h, T->w = w;
  if ((rc = tape_tensor(S, &T->emb, 2, B, c->time_embed_dim, 0, 0)) || (rc = unet_i_time_embedding(S, m, t, &T->emb)))
    return rc;
  const nn_tensor *enc = &T->enc, *emb = &T->emb;

  int cur, skips[UNET_MAX_SKIPS], ns = 0;
  if ((rc = new_state(S, &cur, B, C0, h, w)) || (rc = unet_i_conv(S, &T->st[cur], x, &m->conv_in, 1, 1))) return rc;
  skips[ns++] = cur;
  for (int i = 0; i < nb; i++) {
    const unet_block *b = &m->down[i];
    int64_t Ci = c->block_out_channels[i];
    for (int j = 0; j < b->n_layers; j++) {
      int r;
      if ((rc = new_state(S, &r, B, Ci, Hs[i], Ws[i]))) return rc;
      U = add_unit(S, UNET_U_RESNET, cur, -1, r, &b->resnets[j]);
      if ((rc = resnet_keep(S, &T->st[r], &T->st[cur], &b->resnets[j], emb, G, eps, U, kept))) return rc;
      cur = r;
      if (b->has_attn) {
        if ((rc = transformer_step(S, &cur, enc, &b->attns[j], G))) return rc;
        kept = 1;
      }
      skips[ns++] = cur;
    }
    if (b->has_sampler) {
      int o;
      if ((rc = new_state(S, &o, B, Ci, Hs[i + 1], Ws[i + 1]))) return rc;
      add_unit(S, UNET_U_DOWN, cur, -1, o, &b->sampler);
      if ((rc = f_sampler(S, &T->st[o], &T->st[cur], &b->sampler, 2))) return rc;
      cur = o;
      skips[ns++] = cur;
    }
  }

  int L = nb - 1, r0, r1;
  int64_t Cm = c->block_out_channels[L];
  if ((rc = new_state(S, &r0, B, Cm, Hs[L], Ws[L]))) return rc;
  U = add_unit(S, UNET_U_RESNET, cur, -1, r0, &m->mid_resnets[0]);
  if ((rc = resnet_keep(S, &T->st[r0], &T->st[cur], &m->mid_resnets[0], emb, G, eps, U, kept))) return rc;
  cur = r0;
  if ((rc = transformer_step(S, &cur, enc, &m->mid_attn, G))) return rc;
  kept = 1;
  if ((rc = new_state(S, &r1, B, Cm, Hs[L], Ws[L]))) return rc;
  U = add_unit(S, UNET_U_RESNET, cur, -1, r1, &m->mid_resnets[1]);
  if ((rc = resnet_keep(S, &T->st[r1], &T->st[cur], &m->mid_resnets[1], emb, G, eps, U, kept))) return rc;
  cur = r1;

  for (int i = 0; i < nb; i++) {
    const unet_block *b = &m->up[i];
    int64_t Co = c->block_out_channels[nb - 1 - i];
    for (int j = 0; j < b->n_layers; j++) {
      int sk = skips[--ns], r;
      const nn_tensor *a = &T->st[cur], *s = &T->st[sk];
      int64_t Cc = a->shape[1] + s->shape[1];
      if (Cc != b->resnets[j].cin || s->shape[2] != Hs[L] || s->shape[3] != Ws[L])
        return CMDS_FAIL(S->err, CMDS_EINTERNAL, "UNet up block %d layer %d: %lld channels for a resnet of %lld", i, j,
                         (long long)Cc, (long long)b->resnets[j].cin);
      size_t mk = u_mark(S);
      nn_tensor cat;
      if ((rc = u_alloc(S, &cat, 4, B, Cc, Hs[L], Ws[L]))) return rc;
      OP(nn_concat_channels_forward(S->ctx, &cat, a, s, S->err));
      if ((rc = new_state(S, &r, B, Co, Hs[L], Ws[L]))) return rc;
      U = add_unit(S, UNET_U_RESNET, cur, sk, r, &b->resnets[j]);
      if ((rc = resnet_keep(S, &T->st[r], &cat, &b->resnets[j], emb, G, eps, U, kept))) return rc;
      u_rewind(S, mk);
      cur = r;
      if (b->has_attn) {
        if ((rc = transformer_step(S, &cur, enc, &b->attns[j], G))) return rc;
        kept = 1;
      }
    }
    if (b->has_sampler) {
      L--;
      int o;
      size_t mk = u_mark(S);
      nn_tensor up;
      if ((rc = u_alloc(S, &up, 4, B, Co, Hs[L], Ws[L])) || (rc = unet_i_upsample(S, &up, &T->st[cur]))) return rc;
      if ((rc = new_state(S, &o, B, Co, Hs[L], Ws[L]))) return rc;
      add_unit(S, UNET_U_UP, cur, -1, o, &b->sampler);
      if ((rc = f_sampler(S, &T->st[o], &up, &b->sampler, 1))) return rc;
      u_rewind(S, mk);
      cur = o;
    }
  }

  T->final = cur;
  size_t mk = u_mark(S);
  nn_tensor gn;
  if ((rc = u_alloc(S, &gn, 4, B, C0, h, w))) return rc;
  OP(nn_groupnorm_forward(S->ctx, &gn, &T->st[cur], G, &m->conv_norm_out.w, &m->conv_norm_out.b, eps, S->err));
  OP(nn_silu_forward(S->ctx, &gn, &gn, S->err));
  if ((rc = unet_i_conv(S, out, &gn, &m->conv_out, 1, 1))) return rc;
  u_rewind(S, mk);
  return 0;
}

int unet_forward_train(unet_model *m, nn_ctx *ctx, unet_tape *tape, nn_tensor *out, const nn_tensor *x,
                       const double *t, const nn_tensor *enc, cmds_error *err) {
  const unet_config *c = &m->cfg;
  const char *op = "unet_forward_train";
  if (!tape || !t) return CMDS_FAIL(err, CMDS_EINPUT, "%s: a tape and the timesteps are needed", op);
  if (x->ndim != 4 || x->shape[1] != c->in_channels)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: x must be (B, %lld, h, w), got ndim %d channels %lld", op,
                     (long long)c->in_channels, x->ndim, (long long)(x->ndim > 1 ? x->shape[1] : 0));
  int64_t B = x->shape[0], h = x->shape[2], w = x->shape[3];
  int rc;
  if ((rc = nn_tensor_expect(x, op, "x", m->device, 4, x->shape, err)) ||
      (rc = nn_tensor_expect(enc, op, "enc (B, S, cross_attention_dim)", m->device, 3,
                             (int64_t[]){B, enc->ndim == 3 ? enc->shape[1] : 0, c->cross_attention_dim}, err)) ||
      (rc = nn_tensor_expect(out, op, "out", m->device, 4, (int64_t[]){B, c->out_channels, h, w}, err)))
    return rc;
  if (enc->shape[1] < 1) return CMDS_FAIL(err, CMDS_EINPUT, "%s: enc has no tokens", op);
  if (!unet_i_halves_evenly(m, h, w))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %lld x %lld: the training path needs sizes divisible by %lld", op,
                     (long long)h, (long long)w, (long long)((int64_t)1 << (c->n_blocks - 1)));
  if (ctx->device != m->device || !ctx->scratch || tape->dev != m->device)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: the context and the tape must be on %s (with a scratch arena)", op,
                     nn_device_name(m->device));
  size_t fwd, bwd, tb;
  unet_i_dry_train(m, B, h, w, enc->shape[1], &fwd, &bwd, &tb);
  if (tb + 256 > tape->store.size_bytes)
    return CMDS_FAIL(err, CMDS_ENOMEM, "%s: the tape holds %zu bytes, %zu needed for (B %lld, %lld x %lld): make it "
                     "with unet_tape_new for these sizes", op, tape->store.size_bytes, tb, (long long)B, (long long)h,
                     (long long)w);
  if ((rc = unet_i_scratch_room(ctx, fwd, op, x, enc->shape[1], err))) return rc;
  tape->ready = 0;
  nn_arena_reset(&tape->store);
  tape->enc = *enc;
  ustate S = {0};
  double prof[UP_N] = {0};
  S.ctx = ctx, S.dev = m->device, S.err = err, S.tape = tape, S.prof = unet_i_prof_wanted() ? prof : NULL;
  size_t mk = nn_arena_mark(ctx->scratch);
  double t0 = u_prof_now(&S);
  rc = unet_i_train_forward(&S, m, out, x, t);
  nn_arena_rewind(ctx->scratch, mk);
  if (S.prof && !rc) {
    u_prof_add(&S, UP_F_TOTAL, t0);
    prof[UP_F_OTHER] = prof[UP_F_TOTAL] - prof[UP_F_RESNET] - prof[UP_F_TRANSFORMER] - prof[UP_F_SAMPLER];
    unet_i_prof_print(prof, 0);
  }
  if (!rc) tape->ready = 1;
  return rc;
}
