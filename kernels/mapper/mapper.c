/* mapper: the tape and the feature mapper's forward and backward (see mapper.h). The
 * convolutions, group norms and GELUs are the nn ops (kernels/nn, forward and backward.h);
 * the mapper's own steps are in mapper_ops.c, the parameter table in mapper_model.c.
 * Symbols as in METHOD.md section 4 with C = L*D:
 *   A_l = conv(x_l), N_l = GN(A_l), F = concat GELU(N_l)           (B, C, H, W)
 *   Y = [mean_W F | mean_H F] (B, C, H+W), Z = conv1(Y), Zn = GN(Z), Zh = hswish(Zn)
 *   ah = sigmoid(conv_h(Zh[:H])) (B, C, H), aw = sigmoid(conv_w(Zh[H:])) (B, C, W)
 *   Ft = F * ah * aw, R = relu(conv3x3(Ft)), wgt = softmax_L(conv(R))   (B, L, H, W)
 *   S = sum_l wgt_l F_l (B, D, H, W), Q = proj.0(S), G = GELU(Q), P = proj.2(G) */
#include "mapper.h"

#include <stdlib.h>
#include <string.h>

#include "mapper_internal.h"
#include "nn.h"

/* ---------------------------------------------------------------- activations */

typedef struct mapper_acts {
  nn_tensor A, N, F, Y, Z, Zn, Zhh, Zhw, ah, aw, Ft, R, wgt, S, Q, G;
} mapper_acts;

struct mapper_tape {
  mapper_config cfg;
  int64_t B, H, W;
  nn_device device;
  nn_arena store;
  mapper_acts a;
};

/* Carves the activations of one forward from `a` (NULL: only counts the bytes). */
static int acts_layout(const mapper_config *c, int64_t B, int64_t H, int64_t W, mapper_acts *t,
                       nn_arena *a, size_t *bytes, cmds_error *err) {
  int64_t D = c->width, L = c->layers, C = D * L, M = cfg_M(c);
  struct {
    nn_tensor *t;
    int64_t s[4];
  } list[16];
  int n = 0;
#define ACT(field, d0, d1, d2, d3) \
  (list[n].t = &t->field, list[n].s[0] = d0, list[n].s[1] = d1, list[n].s[2] = d2, list[n].s[3] = d3, n++)
  if (c->kind == MAPPER_MLP) {
    ACT(Q, B, cfg_mlp(c), H, W);
    ACT(G, B, cfg_mlp(c), H, W);
  } else {
    ACT(A, B, C, H, W);
    ACT(N, B, C, H, W);
    ACT(F, B, C, H, W);
    ACT(Y, B, C, 1, H + W);
    ACT(Z, B, M, 1, H + W);
    ACT(Zn, B, M, 1, H + W);
    ACT(Zhh, B, M, 1, H);
    ACT(Zhw, B, M, 1, W);
    ACT(ah, B, C, 1, H);
    ACT(aw, B, C, 1, W);
    ACT(Ft, B, C, H, W);
    ACT(R, B, c->sel_hidden, H, W);
    ACT(wgt, B, L, H, W);
    ACT(S, B, D, H, W);
    ACT(Q, B, cfg_proj(c), H, W);
    ACT(G, B, cfg_proj(c), H, W);
  }
#undef ACT
  size_t total = 256;
  for (int i = 0; i < n; i++) {
    size_t e = 1;
    for (int d = 0; d < 4; d++) e *= (size_t)list[i].s[d];
    total += round256(e * sizeof(float));
    if (a) {
      int rc = nn_tensor_alloc(list[i].t, a, NN_F32, 4, list[i].s, err);
      if (rc) return rc;
    }
  }
  if (bytes) *bytes = total;
  return CMDS_OK;
}

size_t mapper_tape_bytes(const mapper_config *c, int64_t B, int64_t H, int64_t W) {
  mapper_acts t;
  size_t n = 0;
  acts_layout(c, B, H, W, &t, NULL, &n, NULL);
  return n;
}

/* Backward's temporaries (cmds: dG, dS, dF, dFt, dR, dwgt, dah, daw, dZhh, dZhw, dZ, dY;
 * mlp: dG) plus the largest op scratch (3x3 columns, or group-norm statistics). */
size_t mapper_scratch_bytes_train(const mapper_config *c, int64_t B, int64_t H, int64_t W) {
  int64_t D = c->width, L = c->layers, C = D * L, M = cfg_M(c), HW = H * W;
  int64_t e[12];
  int n = 0;
  size_t cols;
  if (c->kind == MAPPER_MLP) {
    e[n++] = B * cfg_mlp(c) * HW;
    cols = 0;
  } else {
    e[n++] = B * cfg_proj(c) * HW;
    e[n++] = B * D * HW;
    e[n++] = B * C * HW;
    e[n++] = B * C * HW;
    e[n++] = B * c->sel_hidden * HW;
    e[n++] = B * L * HW;
    e[n++] = B * C * H;
    e[n++] = B * C * W;
    e[n++] = B * M * H;
    e[n++] = B * M * W;
    e[n++] = B * M * (H + W);
    e[n++] = B * C * (H + W);
    cols = (size_t)C * 9 * (size_t)HW * sizeof(float);
  }
  size_t total = 1024;
  for (int i = 0; i < n; i++) total += round256((size_t)e[i] * sizeof(float));
  size_t small = round256((size_t)(2 * B * (c->adapt_groups + c->ca_groups + 1)) * sizeof(float)) +
                 round256((size_t)(B * HW + 4) * sizeof(float));
  return total + (cols > small ? cols : small);
}

size_t mapper_scratch_bytes(const mapper_config *c, int64_t B, int64_t H, int64_t W) {
  size_t train = mapper_scratch_bytes_train(c, B, H, W);
  size_t infer = mapper_tape_bytes(c, B, H, W) + 1024 +
                 (c->kind == MAPPER_MLP ? 0 : (size_t)c->layers * c->width * 9 * (size_t)(H * W) * sizeof(float));
  return train > infer ? train : infer;
}

mapper_tape *mapper_tape_new(const mapper_config *c, int64_t B, int64_t H, int64_t W,
                             nn_device device, cmds_error *err) {
  if (mapper_config_check(c, err)) return NULL;
  if (B < 1 || H < 1 || W < 1) {
    CMDS_FAIL(err, CMDS_EINPUT, "mapper_tape_new: batch %lld of %lld x %lld", (long long)B,
              (long long)H, (long long)W);
    return NULL;
  }
  mapper_tape *t = cmds_xcalloc(1, sizeof *t);
  t->cfg = *c;
  t->B = B, t->H = H, t->W = W;
  t->device = device;
  if (nn_arena_init(&t->store, device, mapper_tape_bytes(c, B, H, W), err) ||
      acts_layout(c, B, H, W, &t->a, &t->store, NULL, err)) {
    cmds_error_wrap(err, "mapper tape");
    nn_arena_free(&t->store);
    free(t);
    return NULL;
  }
  return t;
}

void mapper_tape_free(mapper_tape *t) {
  if (!t) return;
  nn_arena_free(&t->store);
  free(t);
}

/* ---------------------------------------------------------------- forward / backward */

static nn_tensor view4(const nn_tensor *t, int64_t offset, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
  return nn_tensor_view((float *)t->data + offset, NN_F32, t->device, d0, d1, d2, d3);
}

#define TRY(call)          \
  do {                     \
    rc = (call);           \
    if (rc) goto done;     \
  } while (0)

/* What forward and backward check before any work: model and context on one device; x
 * (B, L*D, H, W); y (P or dP) of x's shape; the tape (backward: required) made for this
 * configuration, batch and device; a scratch arena. Sets B, H, W. */
static int check_call(const mapper_model *m, nn_ctx *ctx, const char *op, const nn_tensor *x,
                      const nn_tensor *y, const char *yname, const mapper_tape *t, int need_tape,
                      int64_t *B, int64_t *H, int64_t *W, cmds_error *err) {
  if (ctx->device != m->device)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: model on %s, context on %s", op, nn_device_name(m->device),
                     nn_device_name(ctx->device));
  if (!x || x->ndim != 4 || x->shape[1] != m->cfg.layers * m->cfg.width)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: x must be (B, L*D = %lld, H, W)", op,
                     (long long)(m->cfg.layers * m->cfg.width));
  *B = x->shape[0], *H = x->shape[2], *W = x->shape[3];
  int rc = nn_tensor_expect(x, op, "x", ctx->device, 4, x->shape, err);
  if (!rc) rc = nn_tensor_expect(y, op, yname, ctx->device, 4, x->shape, err);
  if (rc) return rc;
  if (need_tape && !t) return CMDS_FAIL(err, CMDS_EINPUT, "%s: needs the tape of the forward", op);
  if (t && (!mapper_cfg_same(&t->cfg, &m->cfg) || t->B != *B || t->H != *H || t->W != *W || t->device != m->device))
    return CMDS_FAIL(err, CMDS_EINPUT,
                     "%s: the tape was made for another configuration, batch (%lld, %lld x %lld) or "
                     "device; this call has (%lld, %lld x %lld)",
                     op, (long long)t->B, (long long)t->H, (long long)t->W, (long long)*B, (long long)*H,
                     (long long)*W);
  if (!ctx->scratch) return mapper_no_scratch(op, err);
  return CMDS_OK;
}

int mapper_forward(mapper_model *m, nn_ctx *ctx, const nn_tensor *x, nn_tensor *p,
                   mapper_tape *tape, cmds_error *err) {
  const char *op = "mapper_forward";
  int64_t B = 0, H = 0, W = 0;
  int rc = check_call(m, ctx, op, x, p, "P", tape, 0, &B, &H, &W, err);
  if (rc) return rc;
  const mapper_config *c = &m->cfg;
  int64_t D = c->width, L = c->layers, C = L * D, HW = H * W, M = cfg_M(c);
  mapper_param *P = m->params;
  size_t mark = nn_arena_mark(ctx->scratch);
  mapper_acts tmp, *a = tape ? &tape->a : &tmp;
  if (!tape) TRY(acts_layout(c, B, H, W, &tmp, ctx->scratch, NULL, err));

  if (c->kind == MAPPER_MLP) {
    TRY(nn_conv2d_forward(ctx, &a->Q, x, &P[0].value, &P[1].value, err));
    TRY(nn_gelu_forward(ctx, &a->G, &a->Q, err));
    TRY(nn_conv2d_forward(ctx, p, &a->G, &P[2].value, &P[3].value, err));
    goto done;
  }
  /* 1. local adaptation, one (image, block) slice at a time (x's blocks are channel slices) */
  for (int64_t l = 0; l < L; l++) {
    mapper_param *pa = &P[p_adapt(l)];
    for (int64_t b = 0; b < B; b++) {
      int64_t off = (b * C + l * D) * HW;
      nn_tensor xs = view4(x, off, 1, D, H, W), as = view4(&a->A, off, 1, D, H, W),
                ns = view4(&a->N, off, 1, D, H, W);
      TRY(nn_conv2d_forward(ctx, &as, &xs, &pa[0].value, &pa[1].value, err));
      TRY(nn_groupnorm_forward(ctx, &ns, &as, c->adapt_groups, &pa[2].value, &pa[3].value, GN_EPS, err));
    }
  }
  TRY(nn_gelu_forward(ctx, &a->F, &a->N, err));
  /* 3. coordinate attention */
  mapper_param *pc = &P[p_coord(c)];
  TRY(mapper_op_pool(ctx, a->Y.data, a->F.data, B * C, H, W, err));
  TRY(nn_conv2d_forward(ctx, &a->Z, &a->Y, &pc[0].value, &pc[1].value, err));
  TRY(nn_groupnorm_forward(ctx, &a->Zn, &a->Z, c->ca_groups, &pc[2].value, &pc[3].value, GN_EPS, err));
  TRY(mapper_op_hswish_split(ctx, a->Zhh.data, a->Zhw.data, a->Zn.data, B * M, H, W, err));
  TRY(nn_conv2d_forward(ctx, &a->ah, &a->Zhh, &pc[4].value, &pc[5].value, err));
  TRY(nn_conv2d_forward(ctx, &a->aw, &a->Zhw, &pc[6].value, &pc[7].value, err));
  TRY(mapper_op_sigmoid(ctx, &a->ah, err));
  TRY(mapper_op_sigmoid(ctx, &a->aw, err));
  TRY(mapper_op_ca_apply(ctx, a->Ft.data, a->F.data, a->ah.data, a->aw.data, B * C, H, W, err));
  /* 4. spatial selector; the 3x3 conv one image at a time keeps its columns at C*9*HW */
  mapper_param *ps = &P[p_sel(c)];
  for (int64_t b = 0; b < B; b++) {
    nn_tensor fs = view4(&a->Ft, b * C * HW, 1, C, H, W),
              rs = view4(&a->R, b * c->sel_hidden * HW, 1, c->sel_hidden, H, W);
    TRY(nn_conv2d_forward(ctx, &rs, &fs, &ps[0].value, &ps[1].value, err));
  }
  TRY(mapper_op_relu(ctx, &a->R, err));
  TRY(nn_conv2d_forward(ctx, &a->wgt, &a->R, &ps[2].value, &ps[3].value, err));
  TRY(mapper_op_softmax_ch(ctx, a->wgt.data, B, L, HW, err));
  /* 5. fusion and projection */
  TRY(mapper_op_fuse(ctx, a->S.data, a->wgt.data, a->F.data, B, L, D, HW, err));
  mapper_param *pp = &P[p_proj(c)];
  TRY(nn_conv2d_forward(ctx, &a->Q, &a->S, &pp[0].value, &pp[1].value, err));
  TRY(nn_gelu_forward(ctx, &a->G, &a->Q, err));
  TRY(nn_conv2d_forward(ctx, p, &a->G, &pp[2].value, &pp[3].value, err));
done:
  nn_arena_rewind(ctx->scratch, mark);
  return rc ? cmds_error_wrap(err, "%s", op) : CMDS_OK;
}

static int scratch_tensor(nn_ctx *ctx, nn_tensor *t, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                          cmds_error *err) {
  int64_t s[4] = {d0, d1, d2, d3};
  return nn_tensor_alloc(t, ctx->scratch, NN_F32, 4, s, err);
}

int mapper_backward(mapper_model *m, nn_ctx *ctx, const nn_tensor *x, const nn_tensor *dp,
                    mapper_tape *tape, cmds_error *err) {
  const char *op = "mapper_backward";
  int64_t B = 0, H = 0, W = 0;
  int rc = check_call(m, ctx, op, x, dp, "dP", tape, 1, &B, &H, &W, err);
  if (rc) return rc;
  const mapper_config *c = &m->cfg;
  int64_t D = c->width, L = c->layers, C = L * D, HW = H * W, M = cfg_M(c);
  mapper_param *P = m->params;
  mapper_acts *a = &tape->a;
  size_t mark = nn_arena_mark(ctx->scratch);
  nn_tensor dG, dS, dF, dFt, dR, dwgt, dah, daw, dZhh, dZhw, dZ, dY;

  if (c->kind == MAPPER_MLP) {
    TRY(scratch_tensor(ctx, &dG, B, cfg_mlp(c), H, W, err));
    TRY(nn_conv2d_backward(ctx, &dG, &P[2].grad, &P[3].grad, dp, &a->G, &P[2].value, err));
    TRY(nn_gelu_backward(ctx, &dG, &dG, &a->Q, err));
    TRY(nn_conv2d_backward(ctx, NULL, &P[0].grad, &P[1].grad, &dG, x, &P[0].value, err));
    goto done;
  }
  TRY(scratch_tensor(ctx, &dG, B, cfg_proj(c), H, W, err));
  TRY(scratch_tensor(ctx, &dS, B, D, H, W, err));
  TRY(scratch_tensor(ctx, &dF, B, C, H, W, err));
  TRY(scratch_tensor(ctx, &dFt, B, C, H, W, err));
  TRY(scratch_tensor(ctx, &dR, B, c->sel_hidden, H, W, err));
  TRY(scratch_tensor(ctx, &dwgt, B, L, H, W, err));
  TRY(scratch_tensor(ctx, &dah, B, C, 1, H, err));
  TRY(scratch_tensor(ctx, &daw, B, C, 1, W, err));
  TRY(scratch_tensor(ctx, &dZhh, B, M, 1, H, err));
  TRY(scratch_tensor(ctx, &dZhw, B, M, 1, W, err));
  TRY(scratch_tensor(ctx, &dZ, B, M, 1, H + W, err));
  TRY(scratch_tensor(ctx, &dY, B, C, 1, H + W, err));
  /* 5. projection and fusion */
  mapper_param *pp = &P[p_proj(c)];
  TRY(nn_conv2d_backward(ctx, &dG, &pp[2].grad, &pp[3].grad, dp, &a->G, &pp[2].value, err));
  TRY(nn_gelu_backward(ctx, &dG, &dG, &a->Q, err));
  TRY(nn_conv2d_backward(ctx, &dS, &pp[0].grad, &pp[1].grad, &dG, &a->S, &pp[0].value, err));
  TRY(mapper_op_fuse_bwd(ctx, dF.data, dwgt.data, dS.data, a->wgt.data, a->F.data, B, L, D, HW, err));
  /* 4. selector */
  mapper_param *ps = &P[p_sel(c)];
  TRY(mapper_op_softmax_ch_bwd(ctx, dwgt.data, a->wgt.data, B, L, HW, err));
  TRY(nn_conv2d_backward(ctx, &dR, &ps[2].grad, &ps[3].grad, &dwgt, &a->R, &ps[2].value, err));
  TRY(mapper_op_relu_bwd(ctx, &dR, &a->R, err));
  TRY(nn_conv2d_backward(ctx, &dFt, &ps[0].grad, &ps[1].grad, &dR, &a->Ft, &ps[0].value, err));
  /* 3. coordinate attention */
  mapper_param *pc = &P[p_coord(c)];
  TRY(mapper_op_ca_apply_bwd(ctx, dF.data, dah.data, daw.data, dFt.data, a->F.data, a->ah.data, a->aw.data,
                      B * C, H, W, err));
  TRY(nn_conv2d_backward(ctx, &dZhh, &pc[4].grad, &pc[5].grad, &dah, &a->Zhh, &pc[4].value, err));
  TRY(nn_conv2d_backward(ctx, &dZhw, &pc[6].grad, &pc[7].grad, &daw, &a->Zhw, &pc[6].value, err));
  TRY(mapper_op_hswish_bwd(ctx, dZ.data, dZhh.data, dZhw.data, a->Zn.data, B * M, H, W, err));
  TRY(nn_groupnorm_backward(ctx, &dZ, &pc[2].grad, &pc[3].grad, &dZ, &a->Z, c->ca_groups, &pc[2].value,
                            GN_EPS, err));
  TRY(nn_conv2d_backward(ctx, &dY, &pc[0].grad, &pc[1].grad, &dZ, &a->Y, &pc[0].value, err));
  TRY(mapper_op_pool_bwd(ctx, dF.data, dY.data, B * C, H, W, err));
  /* 1. local adaptation */
  TRY(nn_gelu_backward(ctx, &dF, &dF, &a->N, err));
  for (int64_t l = 0; l < L; l++) {
    mapper_param *pa = &P[p_adapt(l)];
    for (int64_t b = 0; b < B; b++) {
      int64_t off = (b * C + l * D) * HW;
      nn_tensor xs = view4(x, off, 1, D, H, W), as = view4(&a->A, off, 1, D, H, W),
                ds = view4(&dF, off, 1, D, H, W);
      TRY(nn_groupnorm_backward(ctx, &ds, &pa[2].grad, &pa[3].grad, &ds, &as, c->adapt_groups,
                                &pa[2].value, GN_EPS, err));
      TRY(nn_conv2d_backward(ctx, NULL, &pa[0].grad, &pa[1].grad, &ds, &xs, &pa[0].value, err));
    }
  }
done:
  nn_arena_rewind(ctx->scratch, mark);
  return rc ? cmds_error_wrap(err, "%s", op) : CMDS_OK;
}
