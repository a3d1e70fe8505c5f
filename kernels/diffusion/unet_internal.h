/* unet_internal: what unet.c (inference forward, LoRA) and the training path share: the tape
 * (unet_tape.c: structure, sizes, profile report), the training forward that fills it
 * (unet_train_forward.c) and the backward with per-unit recomputation (unet_backward.c). Not
 * part of the public API.
 *
 * Every pass runs twice over the same code: a "dry" walk that only counts the bytes it would
 * take (scratch: peak of the stack; tape: the states it keeps), then the real pass; both
 * allocate in the same order, so the counts are exact. */
#ifndef CMDS_DIFFUSION_UNET_INTERNAL_H
#define CMDS_DIFFUSION_UNET_INTERNAL_H

#include <string.h>
#include <time.h>

#include "jsonread.h"
#include "unet.h"

#define UNET_LN_EPS 1e-5f  /* BasicTransformerBlock's LayerNorms (Transformer2DModel default) */
#define UNET_TGN_EPS 1e-6f /* Transformer2DModel's GroupNorm */
#define UNET_MAX_SKIPS 256

/* unet_config.c: fills cfg from the parsed unet/config.json c (what = its path, for
 * messages); CMDS_EINPUT naming the key for anything missing, mistyped or unsupported. */
int unet_parse_config(unet_config *cfg, const cmds_jv *c, const char *what, cmds_error *err);

/* One unit of the training forward: its input state(s) and output state (indices into the
 * tape's states); the backward walks them in reverse. */
typedef enum { UNET_U_RESNET, UNET_U_TRANSFORMER, UNET_U_DOWN, UNET_U_UP } unet_unit_kind;
typedef struct unet_unit {
  unet_unit_kind kind;
  int in, skip, out; /* skip >= 0: an up resnet whose input is concat(state in, state skip) */
  const void *mod;   /* unet_resnet, unet_transformer, or the sampler's unet_proj */
  /* what the training forward kept of the unit's internals (in the tape) for its backward:
   * resnet: h1 = conv1(SiLU(GN1(x))) + temb_proj (no data: not kept, the unit needs no
   * backward); transformer: n_layers block saves from tape->blk[blk0] */
  nn_tensor h1;
  int blk0;
} unet_unit;

/* One attention's internals: q (B,N,I), k, v (B,M,I), o = MHA(q,k,v) (B,N,I); on the CPU also
 * lse (B,heads,N), the softmax rows' log-sum-exp for the backward's fast path (data NULL on CUDA). */
typedef struct unet_attn_save {
  nn_tensor q, k, v, o, lse;
} unet_attn_save;

/* One BasicTransformerBlock's internals, kept by the training forward: its input xin, the
 * residual states after attn1 (x1) and attn2 (x2), both attentions' internals and the GEGLU's
 * input g (B,N,2F). Everything whose recomputation costs a GEMM is kept; the layer norms
 * (n1, n2) are recomputed in the backward (one pass over the tokens each). */
typedef struct unet_tblock_save {
  nn_tensor xin, x1, x2, g;
  unet_attn_save a1, a2;
} unet_tblock_save;

struct unet_tape {
  nn_device dev;
  nn_arena store; /* the states, the units' kept internals, the time embedding (unet_tape_bytes) */
  int ready;      /* a training forward filled it */
  int n_states, n_units, cap;
  nn_tensor *st;  /* cap states */
  unet_unit *units;
  unet_tblock_save *blk; /* n_blk used of cap_blk (grown as the forward meets blocks) */
  int n_blk, cap_blk;
  int final;      /* the state the output head reads */
  nn_tensor emb;  /* SiLU(time embedding) (B, T) */
  nn_tensor enc;  /* the caller's encoder states (a view) */
  int64_t B, h, w;
};

/* CMDS_UNET_PROFILE=1 in the environment: unet_forward_train / unet_backward print where their
 * wall time went (stderr; CPU: on CUDA the launches are asynchronous and the figures mean
 * little). Slots are inclusive: a unit's time contains its ops' times. */
typedef enum {
  UP_F_TOTAL, UP_F_RESNET, UP_F_TRANSFORMER, UP_F_SAMPLER, UP_F_OTHER,
  UP_B_TOTAL, UP_B_HEAD, UP_B_RESNET, UP_B_TRANSFORMER, UP_B_SAMPLER,
  UP_B_RECOMPUTE,  /* the forward work redone inside the backward's units (the norms only) */
  UP_B_ATTN_BWD, UP_B_LINEAR_BWD, UP_B_CONV_BWD, UP_B_NORM_BWD, UP_B_ACT_BWD, UP_B_ADD,
  UP_N
} unet_prof_slot;

typedef struct ustate {
  nn_ctx *ctx;
  double *prof;      /* UP_N seconds, or NULL: not profiling */
  nn_device dev;
  int dry;           /* count only: no op runs, no memory is touched */
  size_t used, peak; /* dry: bytes relative to the aligned start */
  size_t tape_used;  /* dry: bytes of the tape's arena */
  unet_tape *tape;   /* training forward: states go here */
  cmds_error *err;
} ustate;

#define ALIGN256(x) (((x) + 255) & ~(size_t)255)
#define OP(call)           \
  do {                     \
    if (!S->dry) {         \
      int rc_ = (call);    \
      if (rc_) return rc_; \
    }                      \
  } while (0)

static inline size_t u_mark(ustate *S) { return S->dry ? S->used : nn_arena_mark(S->ctx->scratch); }
static inline void u_rewind(ustate *S, size_t mk) {
  if (S->dry) S->used = mk;
  else nn_arena_rewind(S->ctx->scratch, mk);
}
/* An op will take `bytes` of scratch (possibly in a few aligned pieces) and hand it back. */
static inline void u_need(ustate *S, size_t bytes) {
  if (!S->dry || !bytes) return;
  size_t top = ALIGN256(S->used) + bytes + 1024;
  if (top > S->peak) S->peak = top;
}
static inline void u_shape(nn_tensor *t, nn_device dev, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
  int64_t shape[4] = {d0, d1, d2, d3};
  memset(t, 0, sizeof *t);
  t->dtype = NN_F32, t->device = dev, t->ndim = ndim;
  for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
}
static inline int u_alloc(ustate *S, nn_tensor *t, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
  u_shape(t, S->dev, ndim, d0, d1, d2, d3);
  size_t n = (size_t)nn_tensor_numel(t);
  if (S->dry) {
    S->used = ALIGN256(S->used) + n * sizeof(float);
    if (S->used > S->peak) S->peak = S->used;
    return 0;
  }
  t->data = nn_arena_alloc(S->ctx->scratch, n * sizeof(float), S->err);
  return t->data ? 0 : cmds_error_wrap(S->err, "UNet scratch");
}
/* The same memory seen with another shape (same element count). */
static inline nn_tensor u_view(const nn_tensor *t, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
  nn_tensor v = *t;
  int64_t shape[4] = {d0, d1, d2, d3};
  v.ndim = ndim;
  for (int d = 0; d < 4; d++) v.shape[d] = d < ndim ? shape[d] : 0;
  return v;
}
/* x's leading dims with the last one replaced by `last` (the shape of x through a linear). */
static inline nn_tensor u_lead(const nn_tensor *x, int64_t last) {
  nn_tensor v = *x;
  v.data = NULL;
  v.shape[v.ndim - 1] = last;
  return v;
}
static inline int u_alloc_like(ustate *S, nn_tensor *t, const nn_tensor *shape_of) {
  const nn_tensor *s = shape_of;
  return u_alloc(S, t, s->ndim, s->shape[0], s->ndim > 1 ? s->shape[1] : 0, s->ndim > 2 ? s->shape[2] : 0,
                 s->ndim > 3 ? s->shape[3] : 0);
}
static inline const nn_tensor *opt(const nn_tensor *b) { return b->data ? b : NULL; }

/* Profile clock (CMDS_UNET_PROFILE): 0 when not profiling or dry; u_prof_add adds the time
 * since t0 to a slot. */
static inline double u_prof_now(const ustate *S) {
  if (!S->prof || S->dry) return 0.0;
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static inline void u_prof_add(ustate *S, unet_prof_slot slot, double t0) {
  if (S->prof && !S->dry) S->prof[slot] += u_prof_now(S) - t0;
}

/* unet.c */
int unet_i_linear(ustate *S, nn_tensor *y, const nn_tensor *x, const unet_proj *p); /* + LoRA */
int unet_i_conv(ustate *S, nn_tensor *y, const nn_tensor *x, const unet_proj *p, int stride, int pad);
/* ResnetBlock2D after conv1 + time projection (h1): norm2, SiLU, conv2, shortcut; scratch not rewound. */
int unet_i_resnet_out(ustate *S, nn_tensor *out, const nn_tensor *h1, const nn_tensor *x, const unet_resnet *r,
                      int64_t groups, float eps);
int unet_i_upsample(ustate *S, nn_tensor *y, const nn_tensor *x);
int unet_i_resnet(ustate *S, nn_tensor *out, const nn_tensor *x, const unet_resnet *r, const nn_tensor *emb_act,
                  int64_t groups, float eps);
/* the transformer's input side, x (B, N, I) = proj_in(GroupNorm(h)) as tokens; its output side,
 * out = h + proj_out(x) (out may be h). Both leave their scratch allocated (the caller rewinds). */
int unet_i_transformer_in(ustate *S, nn_tensor *x, const nn_tensor *h, const unet_transformer *T, int64_t groups);
int unet_i_transformer_out(ustate *S, nn_tensor *out, const nn_tensor *h, const nn_tensor *x,
                           const unet_transformer *T);
/* out = h + transformer(h); out may be h */
int unet_i_transformer(ustate *S, nn_tensor *out, const nn_tensor *h, const nn_tensor *enc, const unet_transformer *T,
                       int64_t groups);
/* BasicTransformerBlock in place on x (B, N, D) */
int unet_i_tblock(ustate *S, nn_tensor *x, const nn_tensor *enc, const unet_transformer_block *b);
/* emb (B, T) = SiLU(time_embedding(sinusoid(t[b]))) */
int unet_i_time_embedding(ustate *S, const unet_model *m, const double *t, nn_tensor *emb);
void unet_i_level_sizes(const unet_config *c, int64_t h, int64_t w, int64_t *Hs, int64_t *Ws);

/* unet_train_forward.c: the training forward on S (dry or real), filling S->tape (its states,
 * units and kept internals) and out (B, out_channels, h, w). */
int unet_i_train_forward(ustate *S, const unet_model *m, nn_tensor *out, const nn_tensor *x, const double *t);
/* unet_backward.c: the backward on S (dry or real) from dout, reading S->tape; adds into the
 * adapters' dA, dB. */
int unet_i_backward(ustate *S, const unet_model *m, const nn_tensor *dout);

/* unet_tape.c */
/* Dry training forward and backward: scratch peak of each, tape bytes (any may be NULL). */
void unet_i_dry_train(const unet_model *m, int64_t B, int64_t h, int64_t w, int64_t S_tokens, size_t *fwd, size_t *bwd,
                      size_t *tape_bytes);
/* 1 when h, w > 0 halve evenly at every level (divisible by 2^(n_blocks-1)). */
int unet_i_halves_evenly(const unet_model *m, int64_t h, int64_t w);
/* CMDS_ENOMEM naming op and the sizes unless ctx->scratch has `need` bytes free past its use. */
int unet_i_scratch_room(nn_ctx *ctx, size_t need, const char *op, const nn_tensor *x, int64_t S, cmds_error *err);
/* CMDS_UNET_PROFILE is set (and not "0"); the report of one pass's slots to stderr. */
int unet_i_prof_wanted(void);
void unet_i_prof_print(const double *p, int backward);

#endif
