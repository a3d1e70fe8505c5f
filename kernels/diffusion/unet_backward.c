/* unet_backward: the UNet's backward, unet_backward (see unet.h), which trains the LoRA
 * adapters from the tape a training forward (unet_train_forward.c) filled.
 *
 * The backward walks the units in reverse: each one
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
 * Like the forward it runs dry first (unet_internal.h; sizes in unet_tape.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ------------------------------------------------------------------ backward pieces */

/* OP, its time added to a profile slot */
#define TOP(slot, call)              \
  do {                               \
    double t0_ = u_prof_now(S);        \
    OP(call);                        \
    u_prof_add(S, (slot), t0_);        \
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
  double t0 = u_prof_now(S);
  int rc = lin_bw_(S, dx, dy, x, p);
  u_prof_add(S, UP_B_LINEAR_BWD, t0);
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
  double tr = u_prof_now(S);
  OP(nn_layernorm_forward(S->ctx, &n1, &sv->xin, &b->norm1.w, &b->norm1.b, UNET_LN_EPS, S->err));
  OP(nn_layernorm_forward(S->ctx, &n2, &sv->x1, &b->norm2.w, &b->norm2.b, UNET_LN_EPS, S->err));
  u_prof_add(S, UP_B_RECOMPUTE, tr);
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
  double tr = u_prof_now(S);
  OP(nn_groupnorm_forward(S->ctx, &a1, x, G, &r->norm1.w, &r->norm1.b, eps, S->err));
  OP(nn_groupnorm_forward(S->ctx, &a2, h1, G, &r->norm2.w, &r->norm2.b, eps, S->err));
  u_prof_add(S, UP_B_RECOMPUTE, tr);
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

int unet_i_backward(ustate *S, const unet_model *m, const nn_tensor *dout) {
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
  double th = u_prof_now(S);
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
  u_prof_add(S, UP_B_HEAD, th);

  for (int u = T->n_units - 1; u >= first && !rc; u--) {
    const unet_unit *U = &T->units[u];
    if (!g.set[U->out]) continue; /* nothing reaches it (cannot happen past the head) */
    const nn_tensor *dy = &g.d[U->out], *x = &T->st[U->in];
    int need_in = U->in >= g.lo, need_skip = U->skip >= g.lo;
    size_t mk = u_mark(S);
    nn_tensor tmp, *into = NULL;
    double tu = u_prof_now(S);
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
    u_prof_add(S, U->kind == UNET_U_RESNET ? UP_B_RESNET : U->kind == UNET_U_TRANSFORMER ? UP_B_TRANSFORMER : UP_B_SAMPLER,
             tu);
    u_rewind(S, mk);
  }
  free(g.d);
  free(g.set);
  u_rewind(S, mk0);
  return rc;
}

/* ------------------------------------------------------------------ entry point */

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
  unet_i_dry_train(m, B, h, w, tape->enc.shape[1], NULL, &bwd, NULL);
  nn_tensor xs;
  u_shape(&xs, m->device, 4, B, m->cfg.in_channels, h, w);
  if ((rc = unet_i_scratch_room(ctx, bwd, op, &xs, tape->enc.shape[1], err))) return rc;
  ustate S = {0};
  double prof[UP_N] = {0};
  S.ctx = ctx, S.dev = m->device, S.err = err, S.tape = tape, S.prof = unet_i_prof_wanted() ? prof : NULL;
  size_t mk = nn_arena_mark(ctx->scratch);
  double t0 = u_prof_now(&S);
  rc = unet_i_backward(&S, m, dout);
  nn_arena_rewind(ctx->scratch, mk);
  if (S.prof && !rc) {
    u_prof_add(&S, UP_B_TOTAL, t0);
    unet_i_prof_print(prof, 1);
  }
  return rc;
}
