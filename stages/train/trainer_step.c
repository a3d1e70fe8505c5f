/* trainer_step: the work of one training step on this rank's slots of the batch (see
 * trainer.h): which support or augmented rows the step draws (keyed permutations), staging
 * their features (or recomputing the RGB ones online with input noise), both mappers'
 * forward, loss and backward, and the gradient sum over the group. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image/normalize.h"
#include "trainer_internal.h"

/* The support row at position pos of a stream's sample sequence: epoch pos / k is a seeded
 * permutation of 0..k-1. */
static int sample_at(uint64_t seed, int stream, int64_t pos, int k, int *perm) {
  int64_t epoch = pos / k;
  cmds_rng r;
  cmds_rng_seed(&r, train_mix3(seed, 0x53414d50ull + (uint64_t)stream, (uint64_t)epoch));
  for (int i = 0; i < k; i++) perm[i] = i;
  for (int i = k - 1; i > 0; i--) {
    int j = (int)cmds_rng_below(&r, (uint64_t)i + 1);
    int tmp = perm[i];
    perm[i] = perm[j];
    perm[j] = tmp;
  }
  return perm[pos % k];
}

/* RGB features of `cnt` slots through the backbone: normalised image + sigma * N(0, 1),
 * noise of slot j seeded from (seed, step, stream, j). Output f16 rows (cnt, L, G, G, D). */
static int online_rgb(train_env *env, task_state *s, const int *rows, const int64_t *slots, int cnt, uint64_t seed,
                      int64_t step, int stream, double sigma, uint16_t *out, cmds_error *err) {
  size_t px = (size_t)s->S * (size_t)s->S;
  for (int i = 0; i < cnt; i++) {
    const uint8_t *src = s->rgb + (size_t)rows[i] * px * 3;
    float *dst = s->images + (size_t)i * 3 * px;
    cmds_rng r;
    cmds_rng_seed(&r, train_mix3(seed ^ 0x4e4f495345ull, (uint64_t)step, ((uint64_t)stream << 32) | (uint64_t)slots[i]));
    cmds_backbone_input_rgb8(src, s->S, dst);
    for (size_t p = 0; p < 3 * px; p++) dst[p] += (float)(sigma * cmds_rng_normal(&r));
  }
  vit_model *m = &env->vit;
  int64_t P = m->cfg.patch, NP = (int64_t)s->G * s->G, in = 3 * P * P;
  vit_patchify_cpu(s->images, cnt, s->S, s->S, P, s->host_patches);
  nn_tensor pv = nn_tensor_view(s->patches.data, NN_F32, s->ctx.device, cnt, NP, in, -1);
  nn_tensor ov = nn_tensor_view(s->vout.data, NN_F32, s->ctx.device, cnt, s->L, NP, s->D);
  nn_tensor hp = nn_tensor_view(s->host_patches, NN_F32, NN_CPU, cnt, NP, in, -1);
  nn_tensor ho = nn_tensor_view(s->host_out, NN_F32, NN_CPU, cnt, s->L, NP, s->D);
  int blocks[CMDS_FC_MAX_BLOCKS];
  for (int i = 0; i < s->L; i++) blocks[i] = (int)s->fi.blocks[i];
  int rc = nn_tensor_copy(&pv, &hp, err);
  /* One image per forward: a GEMM's rounding can depend on its row count, and a slot's
   * features must not depend on how many slots share its rank (the group size). */
  for (int i = 0; i < cnt && !rc; i++) {
    nn_tensor p1 = nn_tensor_view((float *)s->patches.data + (size_t)i * (size_t)(NP * in), NN_F32, s->ctx.device, 1, NP, in, -1);
    nn_tensor o1 = nn_tensor_view((float *)s->vout.data + (size_t)i * s->row_f16, NN_F32, s->ctx.device, 1, s->L, NP, s->D);
    rc = vit_forward(m, &s->ctx, &p1, blocks, s->L, (int)s->fi.final_norm, &o1, err);
  }
  if (!rc) rc = nn_ctx_sync(&s->ctx, err);
  if (!rc) rc = nn_tensor_copy(&ho, &ov, err);
  if (!rc)
    for (size_t i = 0; i < (size_t)cnt * s->row_f16; i++) out[i] = nn_f32_to_f16(s->host_out[i]);
  return rc;
}

static int stage_rows(task_state *s, int mod, const int *rows, int cnt, nn_tensor *x, cmds_error *err) {
  for (int i = 0; i < cnt; i++)
    memcpy(s->in_f16 + (size_t)i * s->row_f16, s->f16[mod] + (size_t)rows[i] * s->row_f16, sizeof(uint16_t) * s->row_f16);
  return mapper_input_from_f16(&s->ctx, x, s->in_f16, cnt, s->L, s->G, s->D, err);
}

int train_step_stream(train_env *env, task_state *s, const train_params *tp, uint64_t seed, int64_t step, int stream,
                       double loss[2], cmds_error *err) {
  int64_t B = tp->batch;
  int *rows = cmds_xmalloc(sizeof(int) * (size_t)B);
  /* R: the k support rows; E: the k support rows and the task's augmented rows (P = k without) */
  int pool = stream == STREAM_E ? s->P : s->k;
  for (int64_t j = 0; j < B; j++) rows[j] = sample_at(seed, stream, step * B + j, pool, s->perm);
  size_t hw = (size_t)s->H * (size_t)s->W;
  double denom;
  if (stream == STREAM_R) {
    denom = 1e-8;
    for (int64_t j = 0; j < B; j++) denom += s->mask_sum[rows[j]];
  } else {
    denom = (double)B * (double)hw;
  }
  int cnt = (int)(s->b1 - s->b0), rc = CMDS_OK;
  loss[0] = loss[1] = 0;
  if (cnt == 0) {
    free(rows);
    return CMDS_OK;
  }
  const int *mine = rows + s->b0;
  int64_t *slots = cmds_xmalloc(sizeof(int64_t) * (size_t)cnt);
  for (int i = 0; i < cnt; i++) slots[i] = s->b0 + i;
  nn_tensor xa = s->xa, xb = s->xb, p = s->p, dp = s->dp;
  /* xa: RGB features, xb: the 3D modality's (real normals for R, estimated for E) */
  if (s->online) {
    rc = online_rgb(env, s, mine, slots, cnt, seed, step, stream, tp->noise_sigma, s->in_f16, err);
    if (!rc) rc = mapper_input_from_f16(&s->ctx, &xa, s->in_f16, cnt, s->L, s->G, s->D, err);
  } else {
    rc = stage_rows(s, CMDS_FC_RGB, mine, cnt, &xa, err);
  }
  if (!rc) rc = stage_rows(s, stream == STREAM_R ? CMDS_FC_NORMALS : CMDS_FC_NORMALS_EST, mine, cnt, &xb, err);
  nn_tensor *mask = NULL;
  if (!rc && stream == STREAM_R) {
    float *hm = cmds_xmalloc(sizeof(float) * hw * (size_t)cnt);
    for (int i = 0; i < cnt; i++) memcpy(hm + (size_t)i * hw, s->masks + (size_t)mine[i] * hw, sizeof(float) * hw);
    nn_tensor hv = nn_tensor_view(hm, NN_F32, NN_CPU, cnt, s->H, s->W, -1);
    rc = nn_tensor_copy(&s->mask, &hv, err);
    free(hm);
    mask = &s->mask;
  }
  for (int dir = 0; dir < 2 && !rc; dir++) {
    const nn_tensor *in = dir == 0 ? &xa : &xb, *target = dir == 0 ? &xb : &xa;
    rc = mapper_forward(&s->model[dir], &s->ctx, in, &p, s->tape, err);
    if (!rc) rc = mapper_loss(&s->ctx, &p, target, mask, s->L, tp->layer_weights, denom, &loss[dir], &dp, err);
    if (!rc) rc = mapper_backward(&s->model[dir], &s->ctx, in, &dp, s->tape, err);
  }
  free(slots);
  free(rows);
  return rc;
}

int train_allreduce_grads(train_env *env, task_state *s, cmds_error *err) {
  if (env->group.size <= 1) return CMDS_OK;
  char *base = s->flat.data;
  size_t off = 0;
  int rc = CMDS_OK;
  for (int pass = 0; pass < 2 && !rc; pass++) {
    off = 0;
    for (int m = 0; m < 2 && !rc; m++)
      for (int i = 0; i < s->model[m].nparams && !rc; i++) {
        nn_tensor *g = &s->model[m].params[i].grad;
        int64_t n = nn_tensor_numel(g);
        nn_tensor fv = nn_tensor_view(base + off * sizeof(float), NN_F32, s->ctx.device, n, -1, -1, -1);
        nn_tensor gv = nn_tensor_view(g->data, NN_F32, g->device, n, -1, -1, -1);
        rc = pass == 0 ? nn_tensor_copy(&fv, &gv, err) : nn_tensor_copy(&gv, &fv, err);
        off += (size_t)n;
      }
    if (!rc && pass == 0) rc = cmds_allreduce_sum_f32(&env->coll, (float *)base, off, err);
  }
  return rc;
}
