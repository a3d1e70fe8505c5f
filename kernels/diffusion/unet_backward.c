/* unet_backward: the UNet's training forward (keeping a tape of unit outputs) and the
 * backward pass that trains the LoRA adapters (see unet.h).
 *
 * Units are the resnets, transformers and samplers of unet.c's forward (same op sequences,
 * same results). The tape holds every unit's output state (each down state is also a skip),
 * the SiLU'd time embedding, a view of the encoder states and, for every unit from the first
 * transformer on, the internals whose recomputation would cost a GEMM (unet_unit,
 * unet_tblock_save in unet_internal.h). The backward walks the units in reverse: each one
 * recomputes only its norms into ctx->scratch, is back-propagated, and its scratch handed
 * back; no conv, linear or attention forward runs twice in a step (that recomputation was
 * ~20 % of the step's work, analysis/sd_bench.md). Gradients are
 * kept for every state from the first transformer's output on (dL/d state, set by the first
 * contribution and accumulated by the next: a state that is also a skip gets its concat
 * share), nothing before it (no adapter there). Only the adapters' dA, dB are accumulated;
 * no other parameter gradient is formed.
 *
 * Per linear with an adapter, y = W x + b + s B (A x), u = s A x:
 *   dB += dy^T u,  du = s (dy B),  dA += du^T x,  dx = dy W + du A.
 *
 * Both passes run dry first (unet_internal.h): the scratch and tape sizes are those counts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/activation.h"
#include "nn/attention.h"
#include "nn/backward.h"
#include "nn/conv.h"
#include "nn/elementwise.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "unet_internal.h"

#ifdef CMDS_CUDA
/* unet_backward.cu: dx (P, H, W) = the 2x2 block sums of dy (P, 2H, 2W) */
int unet_up2x_backward_cuda(nn_ctx *ctx, float *dx, const float *dy, int64_t P, int64_t H, int64_t W, cmds_error *err);
#endif

/* ------------------------------------------------------------------ profile (CMDS_UNET_PROFILE) */

static double prof_now(const ustate *S) {
  if (!S->prof || S->dry) return 0.0;
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static void prof_add(ustate *S, unet_prof_slot slot, double t0) {
  if (S->prof && !S->dry) S->prof[slot] += prof_now(S) - t0;
}
static int prof_wanted(void) {
  const char *e = getenv("CMDS_UNET_PROFILE");
  return e && *e && strcmp(e, "0") != 0;
}
static void prof_print(const double *p, int backward) {
  static const char *names[UP_N] = {
      "forward", "  resnets", "  transformers", "  samplers", "  time emb, conv_in, head",
      "backward", "  head", "  resnets", "  transformers", "  samplers",
      "  recompute (in the units)", "    of which attention", "  attention bwd", "  linear bwd (+LoRA)",
      "  conv bwd (dx)", "  norm bwd", "  activation bwd", "  adds / copies"};
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
  double t0 = prof_now(S);
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
  prof_add(S, UP_F_TRANSFORMER, t0);
  return 0;
}

/* ResnetBlock2D: out (B,cout,H,W) from x (B,cin,H,W), out not x; keeps h1 (conv1's output
 * plus the time projection) when keep is set (units with a backward). */
static int resnet_keep(ustate *S, nn_tensor *out, const nn_tensor *x, const unet_resnet *r, const nn_tensor *emb,
                       int64_t G, float eps, unet_unit *U, int keep) {
  double t0 = prof_now(S);
  int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3];
  size_t mk = u_mark(S);
  nn_tensor t, tp, t2, h1s, *h1 = keep ? &U->h1 : &h1s;
  int rc;
  if ((rc = u_alloc(S, &t, 4, B, r->cin, H, W))) return rc;
  if ((rc = keep ? tape_tensor(S, h1, 4, B, r->cout, H, W) : u_alloc(S, h1, 4, B, r->cout, H, W))) return rc;
  OP(nn_groupnorm_forward(S->ctx, &t, x, G, &r->norm1.w, &r->norm1.b, eps, S->err));
  OP(nn_silu_forward(S->ctx, &t, &t, S->err));
  if ((rc = unet_i_conv(S, h1, &t, &r->conv1, 1, 1))) return rc;
  if ((rc = u_alloc(S, &tp, 2, B, r->cout, 0, 0)) || (rc = unet_i_linear(S, &tp, emb, &r->time_emb_proj))) return rc;
  OP(nn_add_channel_forward(S->ctx, h1, h1, &tp, S->err));
  if ((rc = u_alloc(S, &t2, 4, B, r->cout, H, W))) return rc;
  OP(nn_groupnorm_forward(S->ctx, &t2, h1, G, &r->norm2.w, &r->norm2.b, eps, S->err));
  OP(nn_silu_forward(S->ctx, &t2, &t2, S->err));
  if ((rc = unet_i_conv(S, out, &t2, &r->conv2, 1, 1))) return rc;
  if (r->has_shortcut) {
    nn_tensor sc;
    if ((rc = u_alloc(S, &sc, 4, B, r->cout, H, W)) || (rc = unet_i_conv(S, &sc, x, &r->conv_shortcut, 1, 0))) return rc;
    OP(nn_add_forward(S->ctx, out, out, &sc, S->err));
  } else {
    OP(nn_add_forward(S->ctx, out, out, x, S->err));
  }
  u_rewind(S, mk);
  prof_add(S, UP_F_RESNET, t0);
  return 0;
}

static int f_sampler(ustate *S, nn_tensor *y, const nn_tensor *x, const unet_proj *p, int stride) {
  double t0 = prof_now(S);
  int rc = unet_i_conv(S, y, x, p, stride, 1);
  prof_add(S, UP_F_SAMPLER, t0);
  return rc;
}

static int run_train(ustate *S, const unet_model *m, nn_tensor *out, const nn_tensor *x, const double *t) {
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
      int r, o;
      if ((rc = new_state(S, &r, B, Ci, Hs[i], Ws[i]))) return rc;
      U = add_unit(S, UNET_U_RESNET, cur, -1, r, &b->resnets[j]);
      if ((rc = resnet_keep(S, &T->st[r], &T->st[cur], &b->resnets[j], emb, G, eps, U, kept))) return rc;
      cur = r;
      if (b->has_attn) {
        if ((rc = new_state(S, &o, B, Ci, Hs[i], Ws[i]))) return rc;
        U = add_unit(S, UNET_U_TRANSFORMER, r, -1, o, &b->attns[j]);
        if ((rc = transformer_keep(S, &T->st[o], &T->st[r], enc, &b->attns[j], G, U))) return rc;
        kept = 1;
        cur = o;
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

  int L = nb - 1, r0, o, r1;
  int64_t Cm = c->block_out_channels[L];
  if ((rc = new_state(S, &r0, B, Cm, Hs[L], Ws[L]))) return rc;
  U = add_unit(S, UNET_U_RESNET, cur, -1, r0, &m->mid_resnets[0]);
  if ((rc = resnet_keep(S, &T->st[r0], &T->st[cur], &m->mid_resnets[0], emb, G, eps, U, kept))) return rc;
  if ((rc = new_state(S, &o, B, Cm, Hs[L], Ws[L]))) return rc;
  U = add_unit(S, UNET_U_TRANSFORMER, r0, -1, o, &m->mid_attn);
  if ((rc = transformer_keep(S, &T->st[o], &T->st[r0], enc, &m->mid_attn, G, U))) return rc;
  kept = 1;
  if ((rc = new_state(S, &r1, B, Cm, Hs[L], Ws[L]))) return rc;
  U = add_unit(S, UNET_U_RESNET, o, -1, r1, &m->mid_resnets[1]);
  if ((rc = resnet_keep(S, &T->st[r1], &T->st[o], &m->mid_resnets[1], emb, G, eps, U, kept))) return rc;
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
        if ((rc = new_state(S, &o, B, Co, Hs[L], Ws[L]))) return rc;
        U = add_unit(S, UNET_U_TRANSFORMER, r, -1, o, &b->attns[j]);
        if ((rc = transformer_keep(S, &T->st[o], &T->st[r], enc, &b->attns[j], G, U))) return rc;
        kept = 1;
        cur = o;
      }
    }
    if (b->has_sampler) {
      L--;
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

/* ------------------------------------------------------------------ backward pieces */

/* OP, its time added to a profile slot */
#define TOP(slot, call)              \
  do {                               \
    double t0_ = prof_now(S);        \
    OP(call);                        \
    prof_add(S, (slot), t0_);        \
  } while (0)

/* dL/dx of a linear (SET; dx NULL: not wanted) and, with an adapter, dA / dB (+=). */
static int lin_bw_(ustate *S, nn_tensor *dx, const nn_tensor *dy, const nn_tensor *x, const unet_proj *p) {
  unet_lora *L = p->lora;
  if (!L && !dx) return 0;
  size_t mk = u_mark(S);
  int rc;
  nn_tensor tmp = {0};
  if (L) {
    nn_tensor u = u_lead(x, L->A.shape[0]), du = u;
    if ((rc = u_alloc_like(S, &u, &u)) || (rc = u_alloc_like(S, &du, &du))) return rc;
    OP(nn_linear_forward(S->ctx, &u, x, &L->A, NULL, S->err));
    OP(nn_scale_forward(S->ctx, &u, &u, L->scale, S->err));
    OP(nn_linear_backward(S->ctx, &du, &L->dB, NULL, dy, &u, &L->B, S->err));
    OP(nn_scale_forward(S->ctx, &du, &du, L->scale, S->err));
    if (dx) {
      tmp = u_lead(x, x->shape[x->ndim - 1]);
      if ((rc = u_alloc_like(S, &tmp, &tmp))) return rc;
    }
    OP(nn_linear_backward(S->ctx, dx ? &tmp : NULL, &L->dA, NULL, &du, x, &L->A, S->err));
  }
  if (dx) {
    OP(nn_linear_backward(S->ctx, dx, NULL, NULL, dy, x, &p->w, S->err));
    if (L) OP(nn_add_forward(S->ctx, dx, dx, &tmp, S->err));
  }
  u_rewind(S, mk);
  return 0;
}

static int lin_bw(ustate *S, nn_tensor *dx, const nn_tensor *dy, const nn_tensor *x, const unet_proj *p) {
  double t0 = prof_now(S);
  int rc = lin_bw_(S, dx, dy, x, p);
  prof_add(S, UP_B_LINEAR_BWD, t0);
  return rc;
}

/* Group norm backward without parameter gradients (the op wants dgamma / dbeta: throwaway
 * buffers). dx may be dy. */
static int gn_bw(ustate *S, nn_tensor *dx, const nn_tensor *dy, const nn_tensor *x, const unet_norm *n, int64_t G,
                 float eps) {
  size_t mk = u_mark(S);
  nn_tensor dg, db;
  int rc;
  int64_t C = x->shape[1];
  if ((rc = u_alloc(S, &dg, 1, C, 0, 0, 0)) || (rc = u_alloc(S, &db, 1, C, 0, 0, 0))) return rc;
  u_need(S, 2 * (size_t)x->shape[0] * (size_t)G * sizeof(float) + 256);
  TOP(UP_B_NORM_BWD, nn_groupnorm_backward(S->ctx, dx, &dg, &db, dy, x, G, &n->w, eps, S->err));
  u_rewind(S, mk);
  return 0;
}

/* Layer norm backward (eps 1e-5) in place on d (B,N,D), without parameter gradients (the op
 * wants dgamma / dbeta with gamma: throwaway buffers). */
static int ln_bw(ustate *S, nn_tensor *d, const nn_tensor *x, const unet_norm *n) {
  int64_t C = x->shape[x->ndim - 1];
  size_t mk = u_mark(S);
  nn_tensor dg, db;
  int rc;
  if ((rc = u_alloc(S, &dg, 1, C, 0, 0, 0)) || (rc = u_alloc(S, &db, 1, C, 0, 0, 0))) return rc;
  u_need(S, nn_layernorm_backward_scratch_bytes(nn_tensor_numel(x) / C, C) + 256);
  TOP(UP_B_NORM_BWD, nn_layernorm_backward(S->ctx, d, &dg, &db, d, x, &n->w, UNET_LN_EPS, S->err));
  u_rewind(S, mk);
  return 0;
}

static int conv_bw(ustate *S, nn_tensor *dx, const nn_tensor *dy, const nn_tensor *x, const unet_proj *p, int stride,
                   int pad) {
  u_need(S, nn_conv2d_ex_backward_scratch_bytes(x, &p->w, stride, pad, pad, pad, pad));
  TOP(UP_B_CONV_BWD, nn_conv2d_ex_backward(S->ctx, dx, NULL, NULL, dy, x, &p->w, stride, pad, pad, pad, pad, S->err));
  return 0;
}

/* dxq (SET, or NULL) from dy (B,N,dim) with the attention's kept internals; self-attention
 * adds the key / value paths into dxq. */
static int attn_bw(ustate *S, nn_tensor *dxq, const nn_tensor *dy, const nn_tensor *xq, const nn_tensor *xkv,
                   const unet_attention *a, const unet_attn_save *sv, int self) {
  int64_t B = xq->shape[0], N = xq->shape[1], M = xkv->shape[1], I = a->heads * a->dim_head;
  size_t mk = u_mark(S);
  nn_tensor d_o, dq, dk, dv;
  int rc;
  if ((rc = u_alloc(S, &d_o, 3, B, N, I, 0)) || (rc = lin_bw(S, &d_o, dy, &sv->o, &a->to_out))) return rc;
  if ((rc = u_alloc(S, &dq, 3, B, N, I, 0)) || (rc = u_alloc(S, &dk, 3, B, M, I, 0)) ||
      (rc = u_alloc(S, &dv, 3, B, M, I, 0)))
    return rc;
  u_need(S, nn_attention_ex_backward_scratch_bytes(B, N, M, I, a->heads));
  const nn_tensor *lse = sv->lse.data ? &sv->lse : NULL;
  TOP(UP_B_ATTN_BWD, nn_attention_ex_backward_lse(S->ctx, &dq, &dk, &dv, &d_o, &sv->q, &sv->k, &sv->v,
                                                  lse ? &sv->o : NULL, lse, a->heads, 0, S->err));
  if ((rc = lin_bw(S, dxq, &dq, xq, &a->to_q))) return rc;
  if (self && dxq) {
    nn_tensor tmp;
    if ((rc = u_alloc_like(S, &tmp, xq)) || (rc = lin_bw(S, &tmp, &dk, xkv, &a->to_k))) return rc;
    TOP(UP_B_ADD, nn_add_forward(S->ctx, dxq, dxq, &tmp, S->err));
    if ((rc = lin_bw(S, &tmp, &dv, xkv, &a->to_v))) return rc;
    TOP(UP_B_ADD, nn_add_forward(S->ctx, dxq, dxq, &tmp, S->err));
  } else if ((rc = lin_bw(S, NULL, &dk, xkv, &a->to_k)) || (rc = lin_bw(S, NULL, &dv, xkv, &a->to_v))) {
    return rc;
  }
  u_rewind(S, mk);
  return 0;
}

/* BasicTransformerBlock: dx (SET, or NULL) of its input from dy, with its kept internals sv;
 * the layer norms n1, n2 (inputs of the LoRA'd projections) are recomputed. Tensors passed
 * as `x` to a linear's backward without an adapter only give the shape (no dW is formed). */
static int tblock_bw(ustate *S, nn_tensor *dx, const nn_tensor *dy, const nn_tensor *enc,
                     const unet_transformer_block *b, const unet_tblock_save *sv) {
  int64_t B = sv->xin.shape[0], N = sv->xin.shape[1], D = sv->xin.shape[2], F = b->ff_out.in;
  size_t mk = u_mark(S);
  nn_tensor n1, n2, df, dg, dn, dr;
  int rc;
  if ((rc = u_alloc(S, &n1, 3, B, N, D, 0)) || (rc = u_alloc(S, &n2, 3, B, N, D, 0))) return rc;
  double tr = prof_now(S);
  OP(nn_layernorm_forward(S->ctx, &n1, &sv->xin, &b->norm1.w, &b->norm1.b, UNET_LN_EPS, S->err));
  OP(nn_layernorm_forward(S->ctx, &n2, &sv->x1, &b->norm2.w, &b->norm2.b, UNET_LN_EPS, S->err));
  prof_add(S, UP_B_RECOMPUTE, tr);
  if ((rc = u_alloc(S, &df, 3, B, N, F, 0)) || (rc = u_alloc(S, &dg, 3, B, N, 2 * F, 0)) ||
      (rc = u_alloc(S, &dn, 3, B, N, D, 0)) || (rc = u_alloc(S, &dr, 3, B, N, D, 0)))
    return rc;
  /* feed-forward: ff_out's input f (B,N,F) and ff_in's n3 (B,N,D) only as shapes */
  nn_tensor f_shape = u_view(&sv->g, 3, B, N, F, 0), n3_shape = u_view(&sv->x2, 3, B, N, D, 0);
  TOP(UP_B_LINEAR_BWD, nn_linear_backward(S->ctx, &df, NULL, NULL, dy, &f_shape, &b->ff_out.w, S->err));
  TOP(UP_B_ACT_BWD, nn_geglu_backward(S->ctx, &dg, &df, &sv->g, S->err));
  TOP(UP_B_LINEAR_BWD, nn_linear_backward(S->ctx, &dn, NULL, NULL, &dg, &n3_shape, &b->ff_in.w, S->err));
  if ((rc = ln_bw(S, &dn, &sv->x2, &b->norm3))) return rc;
  TOP(UP_B_ADD, nn_add_forward(S->ctx, &dr, dy, &dn, S->err)); /* dr = dL/dx2 */
  /* cross-attention */
  if ((rc = attn_bw(S, &dn, &dr, &n2, enc, &b->attn2, &sv->a2, 0))) return rc;
  if ((rc = ln_bw(S, &dn, &sv->x1, &b->norm2))) return rc;
  TOP(UP_B_ADD, nn_add_forward(S->ctx, &dr, &dr, &dn, S->err)); /* dr = dL/dx1 */
  /* self-attention */
  if ((rc = attn_bw(S, dx ? &dn : NULL, &dr, &n1, &n1, &b->attn1, &sv->a1, 1))) return rc;
  if (dx) {
    if ((rc = ln_bw(S, &dn, &sv->xin, &b->norm1))) return rc;
    TOP(UP_B_ADD, nn_add_forward(S->ctx, dx, &dr, &dn, S->err));
  }
  u_rewind(S, mk);
  return 0;
}

/* Transformer2DModel, out = h + T(h): dh (SET, or NULL) from dy with the unit's kept blocks.
 * Nothing is recomputed: proj_in / proj_out carry no adapter, so their backward needs only
 * shapes (given by h, dy and the first block's input), and the group norm's backward reads h. */
static int transformer_bw(ustate *S, nn_tensor *dh, const nn_tensor *dy, const nn_tensor *h, const nn_tensor *enc,
                          const unet_transformer *T, int64_t G, const unet_unit *U) {
  int64_t B = h->shape[0], C = h->shape[1], H = h->shape[2], W = h->shape[3], N = H * W, I = T->inner;
  int linear = T->proj_in.k == 0, nl = T->n_layers, rc;
  const unet_tblock_save *sv = S->tape->blk + U->blk0;
  size_t mk = u_mark(S);
  nn_tensor dX[2];
  if ((rc = u_alloc(S, &dX[0], 3, B, N, I, 0)) || (rc = u_alloc(S, &dX[1], 3, B, N, I, 0))) return rc;
  nn_tensor dyv = u_view(dy, 3, B, C, N, 0);
  {
    size_t mp = u_mark(S);
    if (linear) {
      nn_tensor dyt;
      if ((rc = u_alloc(S, &dyt, 3, B, N, C, 0))) return rc;
      OP(nn_transpose12_forward(S->ctx, &dyt, &dyv, S->err));
      TOP(UP_B_LINEAR_BWD, nn_linear_backward(S->ctx, &dX[0], NULL, NULL, &dyt, &sv[0].xin, &T->proj_out.w, S->err));
    } else {
      nn_tensor dxt;
      if ((rc = u_alloc(S, &dxt, 3, B, I, N, 0))) return rc;
      nn_tensor xv = u_view(&sv[0].xin, 4, B, I, H, W), dxv = u_view(&dxt, 4, B, I, H, W);
      if ((rc = conv_bw(S, &dxv, dy, &xv, &T->proj_out, 1, 0))) return rc;
      OP(nn_transpose12_forward(S->ctx, &dX[0], &dxt, S->err));
    }
    u_rewind(S, mp);
  }
  /* the blocks, last first */
  int c = 0;
  for (int l = nl - 1; l >= 0; l--) {
    int want = l > 0 || dh != NULL;
    if ((rc = tblock_bw(S, want ? &dX[1 - c] : NULL, &dX[c], enc, &T->blocks[l], &sv[l]))) return rc;
    c = 1 - c;
  }
  if (dh) {
    nn_tensor dgn;
    if ((rc = u_alloc(S, &dgn, 4, B, C, H, W))) return rc;
    nn_tensor dgv = u_view(&dgn, 3, B, C, N, 0);
    if (linear) {
      nn_tensor dtok, tok_shape = u_view(dy, 3, B, N, C, 0);
      if ((rc = u_alloc(S, &dtok, 3, B, N, C, 0))) return rc;
      TOP(UP_B_LINEAR_BWD, nn_linear_backward(S->ctx, &dtok, NULL, NULL, &dX[c], &tok_shape, &T->proj_in.w, S->err));
      OP(nn_transpose12_forward(S->ctx, &dgv, &dtok, S->err));
    } else {
      nn_tensor dp;
      if ((rc = u_alloc(S, &dp, 3, B, I, N, 0))) return rc;
      OP(nn_transpose12_forward(S->ctx, &dp, &dX[c], S->err));
      nn_tensor dpv = u_view(&dp, 4, B, I, H, W);
      if ((rc = conv_bw(S, &dgn, &dpv, h, &T->proj_in, 1, 0))) return rc;
    }
    if ((rc = gn_bw(S, dh, &dgn, h, &T->norm, G, UNET_TGN_EPS))) return rc;
    TOP(UP_B_ADD, nn_add_forward(S->ctx, dh, dh, dy, S->err));
  }
  u_rewind(S, mk);
  return 0;
}

/* ResnetBlock2D: dx (SET, or NULL) of x (B,cin,H,W) from dy (B,cout,H,W), with h1 kept by
 * the forward; the group norms' outputs are recomputed (the SiLUs' backward reads them). */
static int resnet_bw(ustate *S, nn_tensor *dx, const nn_tensor *dy, const nn_tensor *x, const unet_resnet *r,
                     const nn_tensor *h1, int64_t G, float eps) {
  if (!dx) return 0; /* no adapter inside */
  if (!S->dry && !h1->data)
    return CMDS_FAIL(S->err, CMDS_EINTERNAL, "UNet backward: a resnet's internals were not kept by the forward");
  int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3];
  size_t mk = u_mark(S);
  nn_tensor a1, s1, a2, s2, ds2, ds1;
  int rc;
  if ((rc = u_alloc(S, &a1, 4, B, r->cin, H, W)) || (rc = u_alloc(S, &s1, 4, B, r->cin, H, W)) ||
      (rc = u_alloc(S, &a2, 4, B, r->cout, H, W)) || (rc = u_alloc(S, &s2, 4, B, r->cout, H, W)))
    return rc;
  double tr = prof_now(S);
  OP(nn_groupnorm_forward(S->ctx, &a1, x, G, &r->norm1.w, &r->norm1.b, eps, S->err));
  OP(nn_groupnorm_forward(S->ctx, &a2, h1, G, &r->norm2.w, &r->norm2.b, eps, S->err));
  prof_add(S, UP_B_RECOMPUTE, tr);
  /* back: conv2 -> SiLU -> GN2 -> conv1 -> SiLU -> GN1, plus the shortcut; the convs' inputs
   * (SiLU(a2), SiLU(a1)) are only shapes to their backward: s2 / s1 hold gradients */
  if ((rc = u_alloc(S, &ds2, 4, B, r->cout, H, W))) return rc;
  if ((rc = conv_bw(S, &ds2, dy, &s2, &r->conv2, 1, 1))) return rc;
  TOP(UP_B_ACT_BWD, nn_silu_backward(S->ctx, &s2, &ds2, &a2, S->err)); /* s2 := dL/da2 */
  if ((rc = gn_bw(S, &s2, &s2, h1, &r->norm2, G, eps))) return rc; /* s2 := dL/dh1 */
  if ((rc = u_alloc(S, &ds1, 4, B, r->cin, H, W))) return rc;
  if ((rc = conv_bw(S, &ds1, &s2, &s1, &r->conv1, 1, 1))) return rc;
  TOP(UP_B_ACT_BWD, nn_silu_backward(S->ctx, &s1, &ds1, &a1, S->err)); /* s1 := dL/da1 */
  if ((rc = gn_bw(S, dx, &s1, x, &r->norm1, G, eps))) return rc;
  if (r->has_shortcut) {
    if ((rc = conv_bw(S, &ds1, dy, x, &r->conv_shortcut, 1, 0))) return rc;
    TOP(UP_B_ADD, nn_add_forward(S->ctx, dx, dx, &ds1, S->err));
  } else {
    TOP(UP_B_ADD, nn_add_forward(S->ctx, dx, dx, dy, S->err));
  }
  u_rewind(S, mk);
  return 0;
}

/* dx (B,C,H,W) = the 2x2 block sums of dy (B,C,2H,2W): nearest 2x upsampling's backward. */
static int up2x_bw(ustate *S, nn_tensor *dx, const nn_tensor *dy) {
  if (S->dry) return 0;
  int64_t P = dx->shape[0] * dx->shape[1], H = dx->shape[2], W = dx->shape[3];
  if (S->dev == NN_CPU) {
    float *o = dx->data;
    const float *g = dy->data;
    for (int64_t p = 0; p < P; p++)
      for (int64_t i = 0; i < H; i++) {
        const float *r0 = g + (p * 2 * H + 2 * i) * 2 * W, *r1 = r0 + 2 * W;
        float *y = o + (p * H + i) * W;
        for (int64_t j = 0; j < W; j++) y[j] = (r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1]);
      }
    return 0;
  }
#ifdef CMDS_CUDA
  return unet_up2x_backward_cuda(S->ctx, dx->data, dy->data, P, H, W, S->err);
#else
  return CMDS_FAIL(S->err, CMDS_EINTERNAL, "UNet backward: tensors on %s in a build without CUDA",
                   nn_device_name(S->dev));
#endif
}

/* ------------------------------------------------------------------ backward */

typedef struct grads {
  nn_tensor *d;        /* dL/d state, for states >= lo */
  unsigned char *set;  /* written once (later contributions add) */
  int lo;
} grads;

/* Where a SET-writing op puts its contribution to dL/d state k: the gradient itself when it
 * has none yet, else a temporary that g_end adds in. */
static int g_begin(ustate *S, grads *g, int k, nn_tensor *tmp, nn_tensor **into) {
  if (!g->set[k]) {
    *into = &g->d[k];
    return 0;
  }
  *into = tmp;
  return u_alloc_like(S, tmp, &g->d[k]);
}
static int g_end(ustate *S, grads *g, int k, nn_tensor *into) {
  if (g->set[k]) OP(nn_add_forward(S->ctx, &g->d[k], &g->d[k], into, S->err));
  g->set[k] = 1;
  return 0;
}

static int run_backward(ustate *S, const unet_model *m, const nn_tensor *dout) {
  const unet_config *c = &m->cfg;
  unet_tape *T = S->tape;
  int64_t G = c->norm_num_groups;
  float eps = (float)c->norm_eps;
  int first = -1, rc;
  for (int u = 0; u < T->n_units && first < 0; u++)
    if (T->units[u].kind == UNET_U_TRANSFORMER) first = u;
  if (first < 0) return CMDS_FAIL(S->err, CMDS_EINPUT, "unet_backward: the UNet has no attention layer to train");
  size_t mk0 = u_mark(S);
  grads g;
  g.lo = T->units[first].out;
  g.d = cmds_xcalloc((size_t)T->n_states, sizeof *g.d);
  g.set = cmds_xcalloc((size_t)T->n_states, 1);
  rc = 0;
  for (int k = g.lo; k < T->n_states && !rc; k++) rc = u_alloc_like(S, &g.d[k], &T->st[k]);

  /* head: conv_out(SiLU(GN(state))) */
  double th = prof_now(S);
  if (!rc) {
    size_t mk = u_mark(S);
    const nn_tensor *xs = &T->st[T->final];
    nn_tensor a, s, ds;
    if (!(rc = u_alloc_like(S, &a, xs)) && !(rc = u_alloc_like(S, &s, xs)) && !(rc = u_alloc_like(S, &ds, xs))) {
      if (!S->dry) {
        rc = nn_groupnorm_forward(S->ctx, &a, xs, G, &m->conv_norm_out.w, &m->conv_norm_out.b, eps, S->err);
        if (!rc) rc = nn_silu_forward(S->ctx, &s, &a, S->err);
      }
      if (!rc) rc = conv_bw(S, &ds, dout, &s, &m->conv_out, 1, 1);
      if (!rc && !S->dry) rc = nn_silu_backward(S->ctx, &s, &ds, &a, S->err);
      if (!rc) rc = gn_bw(S, &g.d[T->final], &s, xs, &m->conv_norm_out, G, eps);
      g.set[T->final] = 1;
    }
    u_rewind(S, mk);
  }
  prof_add(S, UP_B_HEAD, th);

  for (int u = T->n_units - 1; u >= first && !rc; u--) {
    const unet_unit *U = &T->units[u];
    if (!g.set[U->out]) continue; /* nothing reaches it (cannot happen past the head) */
    const nn_tensor *dy = &g.d[U->out], *x = &T->st[U->in];
    int need_in = U->in >= g.lo, need_skip = U->skip >= g.lo;
    size_t mk = u_mark(S);
    nn_tensor tmp, *into = NULL;
    double tu = prof_now(S);
    switch (U->kind) {
      case UNET_U_TRANSFORMER:
        if (need_in && (rc = g_begin(S, &g, U->in, &tmp, &into))) break;
        if ((rc = transformer_bw(S, need_in ? into : NULL, dy, x, &T->enc, U->mod, G, U))) break;
        if (need_in) rc = g_end(S, &g, U->in, into);
        break;
      case UNET_U_RESNET:
        if (U->skip < 0) {
          if (!need_in) break;
          if (!(rc = g_begin(S, &g, U->in, &tmp, &into)) && !(rc = resnet_bw(S, into, dy, x, U->mod, &U->h1, G, eps)))
            rc = g_end(S, &g, U->in, into);
        } else if (need_in || need_skip) {
          const nn_tensor *sk = &T->st[U->skip];
          nn_tensor cat, dcat, tmp2, *into2 = NULL;
          int64_t B = x->shape[0], Cc = x->shape[1] + sk->shape[1], H = x->shape[2], W = x->shape[3];
          if ((rc = u_alloc(S, &cat, 4, B, Cc, H, W)) || (rc = u_alloc(S, &dcat, 4, B, Cc, H, W))) break;
          if (!S->dry && (rc = nn_concat_channels_forward(S->ctx, &cat, x, sk, S->err))) break;
          if ((rc = resnet_bw(S, &dcat, dy, &cat, U->mod, &U->h1, G, eps))) break;
          if (need_in && (rc = g_begin(S, &g, U->in, &tmp, &into))) break;
          if (need_skip && (rc = g_begin(S, &g, U->skip, &tmp2, &into2))) break;
          if (!S->dry && (rc = nn_split_channels_forward(S->ctx, need_in ? into : NULL, need_skip ? into2 : NULL,
                                                          &dcat, S->err)))
            break;
          if (need_in && (rc = g_end(S, &g, U->in, into))) break;
          if (need_skip) rc = g_end(S, &g, U->skip, into2);
        }
        break;
      case UNET_U_DOWN:
        if (!need_in) break;
        if (!(rc = g_begin(S, &g, U->in, &tmp, &into)) && !(rc = conv_bw(S, into, dy, x, U->mod, 2, 1)))
          rc = g_end(S, &g, U->in, into);
        break;
      case UNET_U_UP: {
        if (!need_in) break;
        nn_tensor dup; /* the conv's input, the upsampled state, is only a shape to its backward */
        if ((rc = u_alloc_like(S, &dup, dy)) || (rc = conv_bw(S, &dup, dy, dy, U->mod, 1, 1))) break;
        if (!(rc = g_begin(S, &g, U->in, &tmp, &into)) && !(rc = up2x_bw(S, into, &dup))) rc = g_end(S, &g, U->in, into);
        break;
      }
    }
    prof_add(S, U->kind == UNET_U_RESNET ? UP_B_RESNET : U->kind == UNET_U_TRANSFORMER ? UP_B_TRANSFORMER : UP_B_SAMPLER,
             tu);
    u_rewind(S, mk);
  }
  free(g.d);
  free(g.set);
  u_rewind(S, mk0);
  return rc;
}

/* ------------------------------------------------------------------ sizes and entry points */

/* Dry training forward and backward: scratch peak of each, tape bytes. */
static void dry_train(const unet_model *m, int64_t B, int64_t h, int64_t w, int64_t S_tokens, size_t *fwd, size_t *bwd,
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
  run_train(&S, m, &out, &x, &t0);
  if (fwd) *fwd = S.peak;
  if (tape_bytes) *tape_bytes = S.tape_used;
  S.used = S.peak = 0;
  run_backward(&S, m, &out);
  if (bwd) *bwd = S.peak;
  tape_struct_free(T);
}

static int halves_evenly(const unet_model *m, int64_t h, int64_t w) {
  int64_t f = (int64_t)1 << (m->cfg.n_blocks - 1);
  return h > 0 && w > 0 && h % f == 0 && w % f == 0;
}

size_t unet_tape_bytes(const unet_model *m, int64_t B, int64_t h, int64_t w, int64_t S) {
  size_t t;
  dry_train(m, B, h, w, S, NULL, NULL, &t);
  return t + 1024;
}

size_t unet_train_workspace_bytes(const unet_model *m, int64_t B, int64_t h, int64_t w, int64_t S) {
  size_t f, b;
  dry_train(m, B, h, w, S, &f, &b, NULL);
  return (f > b ? f : b) + 512;
}

unet_tape *unet_tape_new(const unet_model *m, int64_t B, int64_t h, int64_t w, int64_t S, cmds_error *err) {
  if (B < 1 || S < 1 || !halves_evenly(m, h, w)) {
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
static int room(nn_ctx *ctx, size_t need, const char *op, const nn_tensor *x, int64_t S, cmds_error *err) {
  size_t start = ALIGN256(ctx->scratch->used_bytes);
  if (start + need <= ctx->scratch->size_bytes) return 0;
  return CMDS_FAIL(err, CMDS_ENOMEM, "%s: the scratch arena has %zu bytes free, %zu needed for (B %lld, %lld x %lld, "
                   "%lld tokens): size it with unet_train_workspace_bytes", op,
                   ctx->scratch->size_bytes - (start < ctx->scratch->size_bytes ? start : ctx->scratch->size_bytes),
                   need, (long long)x->shape[0], (long long)x->shape[2], (long long)x->shape[3], (long long)S);
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
  if (!halves_evenly(m, h, w))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: %lld x %lld: the training path needs sizes divisible by %lld", op,
                     (long long)h, (long long)w, (long long)((int64_t)1 << (c->n_blocks - 1)));
  if (ctx->device != m->device || !ctx->scratch || tape->dev != m->device)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: the context and the tape must be on %s (with a scratch arena)", op,
                     nn_device_name(m->device));
  size_t fwd, bwd, tb;
  dry_train(m, B, h, w, enc->shape[1], &fwd, &bwd, &tb);
  if (tb + 256 > tape->store.size_bytes)
    return CMDS_FAIL(err, CMDS_ENOMEM, "%s: the tape holds %zu bytes, %zu needed for (B %lld, %lld x %lld): make it "
                     "with unet_tape_new for these sizes", op, tape->store.size_bytes, tb, (long long)B, (long long)h,
                     (long long)w);
  if ((rc = room(ctx, fwd, op, x, enc->shape[1], err))) return rc;
  tape->ready = 0;
  nn_arena_reset(&tape->store);
  tape->enc = *enc;
  ustate S = {0};
  double prof[UP_N] = {0};
  S.ctx = ctx, S.dev = m->device, S.err = err, S.tape = tape, S.prof = prof_wanted() ? prof : NULL;
  size_t mk = nn_arena_mark(ctx->scratch);
  double t0 = prof_now(&S);
  rc = run_train(&S, m, out, x, t);
  nn_arena_rewind(ctx->scratch, mk);
  if (S.prof && !rc) {
    prof_add(&S, UP_F_TOTAL, t0);
    prof[UP_F_OTHER] = prof[UP_F_TOTAL] - prof[UP_F_RESNET] - prof[UP_F_TRANSFORMER] - prof[UP_F_SAMPLER];
    prof_print(prof, 0);
  }
  if (!rc) tape->ready = 1;
  return rc;
}

int unet_backward(unet_model *m, nn_ctx *ctx, unet_tape *tape, const nn_tensor *dout, cmds_error *err) {
  const char *op = "unet_backward";
  if (!m->lora) return CMDS_FAIL(err, CMDS_EINPUT, "%s: no LoRA adapters attached (unet_lora_attach)", op);
  if (!tape || !tape->ready)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: the tape holds no training forward (unet_forward_train first)", op);
  int64_t B = tape->B, h = tape->h, w = tape->w;
  int rc = nn_tensor_expect(dout, op, "dout", m->device, 4, (int64_t[]){B, m->cfg.out_channels, h, w}, err);
  if (rc) return rc;
  if (ctx->device != m->device || !ctx->scratch)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: the context must be on %s with a scratch arena", op,
                     nn_device_name(m->device));
  size_t bwd;
  dry_train(m, B, h, w, tape->enc.shape[1], NULL, &bwd, NULL);
  nn_tensor xs;
  u_shape(&xs, m->device, 4, B, m->cfg.in_channels, h, w);
  if ((rc = room(ctx, bwd, op, &xs, tape->enc.shape[1], err))) return rc;
  ustate S = {0};
  double prof[UP_N] = {0};
  S.ctx = ctx, S.dev = m->device, S.err = err, S.tape = tape, S.prof = prof_wanted() ? prof : NULL;
  size_t mk = nn_arena_mark(ctx->scratch);
  double t0 = prof_now(&S);
  rc = run_backward(&S, m, dout);
  nn_arena_rewind(ctx->scratch, mk);
  if (S.prof && !rc) {
    prof_add(&S, UP_B_TOTAL, t0);
    prof_print(prof, 1);
  }
  return rc;
}
