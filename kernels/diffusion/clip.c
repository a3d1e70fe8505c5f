/* clip: CLIP text encoder (see clip.h). */
#include "clip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "nn/activation.h"
#include "nn/attention.h"
#include "nn/elementwise.h"
#include "nn/linear.h"
#include "nn/norm.h"

int clip_text_load(clip_text_model *m, const char *root, const char *subfolder, nn_device dev, cmds_error *err) {
  memset(m, 0, sizeof *m);
  m->device = dev;
  dfs_component c;
  int rc = dfs_component_open(&c, root, subfolder ? subfolder : "text_encoder", NULL, 1, err);
  if (rc) return rc;
  const cmds_jv *cfg = &c.config;
  const char *what = c.config_path;
  int64_t v[6];
  static const char *keys[6] = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                "num_attention_heads", "max_position_embeddings"};
  for (int i = 0; i < 6 && !rc; i++) {
    rc = cmds_jv_get_int(cfg, what, keys[i], 1, 0, &v[i], err);
    if (!rc && (v[i] < 1 || v[i] > (1 << 24)))
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s': a positive integer expected, got %lld", what, keys[i],
                     (long long)v[i]);
  }
  const char *act = NULL;
  double eps = 1e-5;
  if (!rc) rc = cmds_jv_get_str(cfg, what, "hidden_act", 0, "quick_gelu", &act, err);
  if (!rc) rc = cmds_jv_get_num(cfg, what, "layer_norm_eps", 0, 1e-5, &eps, err);
  if (rc) goto fail;
  m->vocab = v[0];
  m->hidden = v[1];
  m->intermediate = v[2];
  m->layers = v[3];
  m->heads = v[4];
  m->max_pos = v[5];
  m->eps = (float)eps;
  if (strcmp(act, "gelu") == 0) m->quick_gelu = 0;
  else if (strcmp(act, "quick_gelu") == 0) m->quick_gelu = 1;
  else {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'hidden_act': \"gelu\" or \"quick_gelu\" expected, got \"%s\"", what, act);
    goto fail;
  }
  if (m->hidden % m->heads) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: hidden_size %lld is not a multiple of num_attention_heads %lld", what,
                   (long long)m->hidden, (long long)m->heads);
    goto fail;
  }
  snprintf(m->path, sizeof m->path, "%s", c.weights_path);
  if ((rc = nn_arena_init(&m->params, dev, dfs_component_param_bytes(&c), err))) goto fail;
  dfs_loader L;
  dfs_loader_init(&L, &c, &m->params);
  const char *p = dfs_has(&L, "text_model.embeddings.token_embedding.weight") ? "text_model." : "";
  const int64_t D = m->hidden, F = m->intermediate;
  dfs_load(&L, &m->tok_emb, 2, (int64_t[]){m->vocab, D}, "%sembeddings.token_embedding.weight", p);
  dfs_load(&L, &m->pos_emb, 2, (int64_t[]){m->max_pos, D}, "%sembeddings.position_embedding.weight", p);
  m->layer = cmds_xcalloc((size_t)m->layers, sizeof *m->layer);
  for (int64_t l = 0; l < m->layers; l++) {
    clip_layer *y = &m->layer[l];
    const char *e = "encoder.layers";
    long long i = (long long)l;
    dfs_load(&L, &y->ln1_w, 1, (int64_t[]){D}, "%s%s.%lld.layer_norm1.weight", p, e, i);
    dfs_load(&L, &y->ln1_b, 1, (int64_t[]){D}, "%s%s.%lld.layer_norm1.bias", p, e, i);
    dfs_load(&L, &y->q_w, 2, (int64_t[]){D, D}, "%s%s.%lld.self_attn.q_proj.weight", p, e, i);
    dfs_load(&L, &y->q_b, 1, (int64_t[]){D}, "%s%s.%lld.self_attn.q_proj.bias", p, e, i);
    dfs_load(&L, &y->k_w, 2, (int64_t[]){D, D}, "%s%s.%lld.self_attn.k_proj.weight", p, e, i);
    dfs_load(&L, &y->k_b, 1, (int64_t[]){D}, "%s%s.%lld.self_attn.k_proj.bias", p, e, i);
    dfs_load(&L, &y->v_w, 2, (int64_t[]){D, D}, "%s%s.%lld.self_attn.v_proj.weight", p, e, i);
    dfs_load(&L, &y->v_b, 1, (int64_t[]){D}, "%s%s.%lld.self_attn.v_proj.bias", p, e, i);
    dfs_load(&L, &y->o_w, 2, (int64_t[]){D, D}, "%s%s.%lld.self_attn.out_proj.weight", p, e, i);
    dfs_load(&L, &y->o_b, 1, (int64_t[]){D}, "%s%s.%lld.self_attn.out_proj.bias", p, e, i);
    dfs_load(&L, &y->ln2_w, 1, (int64_t[]){D}, "%s%s.%lld.layer_norm2.weight", p, e, i);
    dfs_load(&L, &y->ln2_b, 1, (int64_t[]){D}, "%s%s.%lld.layer_norm2.bias", p, e, i);
    dfs_load(&L, &y->fc1_w, 2, (int64_t[]){F, D}, "%s%s.%lld.mlp.fc1.weight", p, e, i);
    dfs_load(&L, &y->fc1_b, 1, (int64_t[]){F}, "%s%s.%lld.mlp.fc1.bias", p, e, i);
    dfs_load(&L, &y->fc2_w, 2, (int64_t[]){D, F}, "%s%s.%lld.mlp.fc2.weight", p, e, i);
    dfs_load(&L, &y->fc2_b, 1, (int64_t[]){D}, "%s%s.%lld.mlp.fc2.bias", p, e, i);
  }
  dfs_load(&L, &m->fin_w, 1, (int64_t[]){D}, "%sfinal_layer_norm.weight", p);
  dfs_load(&L, &m->fin_b, 1, (int64_t[]){D}, "%sfinal_layer_norm.bias", p);
  /* older checkpoints keep the position_ids buffer (int64 0..max_pos-1): not a weight */
  char name[128];
  snprintf(name, sizeof name, "%sembeddings.position_ids", p);
  const cmds_st_tensor *pid = cmds_st_find(&c.st, name);
  if (pid) c.used[pid - c.st.tensors] = 1;
  rc = dfs_loader_finish(&L, 1, err);
  if (rc) goto fail;
  dfs_component_close(&c);
  return 0;
fail:
  dfs_component_close(&c);
  clip_text_free(m);
  return rc;
}

void clip_text_free(clip_text_model *m) {
  if (m->params.base) nn_arena_free(&m->params);
  free(m->layer);
  m->layer = NULL;
}

size_t clip_text_workspace_bytes(const clip_text_model *m, int64_t B, int64_t S) {
  size_t bsd = (size_t)(B * S * m->hidden) * sizeof(float) + 256;
  size_t bsf = (size_t)(B * S * m->intermediate) * sizeof(float) + 256;
  return 6 * bsd + bsf + nn_attention_ex_scratch_bytes(m->device, S, S, m->heads, m->hidden / m->heads) + 256;
}

#define TRY(x) \
  do { \
    if ((rc = (x))) goto done; \
  } while (0)

int clip_text_forward(clip_text_model *m, nn_ctx *ctx, nn_tensor *out, const int32_t *ids, int64_t B, int64_t S,
                      cmds_error *err) {
  const int64_t D = m->hidden, F = m->intermediate;
  if (ctx->device != m->device)
    return CMDS_FAIL(err, CMDS_EINPUT, "clip_text_forward: context on %s, model on %s", nn_device_name(ctx->device),
                     nn_device_name(m->device));
  if (B < 1 || S < 1 || S > m->max_pos)
    return CMDS_FAIL(err, CMDS_EINPUT, "clip_text_forward: %lld x %lld ids; 1..%lld tokens per row expected (%s)",
                     (long long)B, (long long)S, (long long)m->max_pos, m->path);
  int rc = nn_tensor_expect(out, "clip_text_forward", "out", m->device, 3, (int64_t[]){B, S, D}, err);
  if (rc) return rc;
  for (int64_t i = 0; i < B * S; i++)
    if (ids[i] < 0 || ids[i] >= m->vocab)
      return CMDS_FAIL(err, CMDS_EINPUT, "clip_text_forward: id %d at (%lld, %lld) outside the vocabulary (0..%lld)",
                       ids[i], (long long)(i / S), (long long)(i % S), (long long)m->vocab - 1);
  nn_arena *A = ctx->scratch;
  size_t mark = nn_arena_mark(A);
  nn_tensor h, x, q, k, v, a, f;
  const int64_t sd[3] = {B, S, D}, sf[3] = {B, S, F};
  TRY(nn_tensor_alloc(&h, A, NN_F32, 3, sd, err));
  TRY(nn_tensor_alloc(&x, A, NN_F32, 3, sd, err));
  TRY(nn_tensor_alloc(&q, A, NN_F32, 3, sd, err));
  TRY(nn_tensor_alloc(&k, A, NN_F32, 3, sd, err));
  TRY(nn_tensor_alloc(&v, A, NN_F32, 3, sd, err));
  TRY(nn_tensor_alloc(&a, A, NN_F32, 3, sd, err));
  TRY(nn_tensor_alloc(&f, A, NN_F32, 3, sf, err));
  /* token embeddings: one row copy per token (host memcpy, or device-to-device) */
  for (int64_t i = 0; i < B * S; i++) {
    nn_tensor dst = nn_tensor_view((float *)h.data + i * D, NN_F32, m->device, D, -1, -1, -1);
    nn_tensor src = nn_tensor_view((float *)m->tok_emb.data + (int64_t)ids[i] * D, NN_F32, m->device, D, -1, -1, -1);
    TRY(nn_tensor_copy(&dst, &src, err));
  }
  nn_tensor pos = nn_tensor_view(m->pos_emb.data, NN_F32, m->device, S, D, -1, -1);
  TRY(nn_add_forward(ctx, &h, &h, &pos, err));
  for (int64_t l = 0; l < m->layers; l++) {
    const clip_layer *y = &m->layer[l];
    TRY(nn_layernorm_forward(ctx, &x, &h, &y->ln1_w, &y->ln1_b, m->eps, err));
    TRY(nn_linear_forward(ctx, &q, &x, &y->q_w, &y->q_b, err));
    TRY(nn_linear_forward(ctx, &k, &x, &y->k_w, &y->k_b, err));
    TRY(nn_linear_forward(ctx, &v, &x, &y->v_w, &y->v_b, err));
    TRY(nn_attention_ex_forward(ctx, &a, &q, &k, &v, m->heads, 1, err));
    TRY(nn_linear_forward(ctx, &x, &a, &y->o_w, &y->o_b, err));
    TRY(nn_add_forward(ctx, &h, &h, &x, err));
    TRY(nn_layernorm_forward(ctx, &x, &h, &y->ln2_w, &y->ln2_b, m->eps, err));
    TRY(nn_linear_forward(ctx, &f, &x, &y->fc1_w, &y->fc1_b, err));
    TRY(m->quick_gelu ? nn_quick_gelu_forward(ctx, &f, &f, err) : nn_gelu_forward(ctx, &f, &f, err));
    TRY(nn_linear_forward(ctx, &x, &f, &y->fc2_w, &y->fc2_b, err));
    TRY(nn_add_forward(ctx, &h, &h, &x, err));
  }
  TRY(nn_layernorm_forward(ctx, out, &h, &m->fin_w, &m->fin_b, m->eps, err));
done:
  nn_arena_rewind(A, mark);
  if (rc) cmds_error_wrap(err, "CLIP text encoder (%s)", m->path);
  return rc;
}

int clip_encode_prompt_ex(const char *root, const char *prompt, int pad, float **emb, int64_t *S, int64_t *hidden,
                          cmds_error *err) {
  *emb = NULL;
  clip_tokenizer t;
  int rc = clip_tokenizer_load(&t, root, "tokenizer", err);
  if (rc) return rc;
  int L = clip_tokenizer_max_length(&t), n = 0;
  int32_t *ids = cmds_xmalloc((size_t)L * sizeof *ids);
  rc = clip_tokenize_ex(&t, prompt, ids, L, pad, &n, err);
  clip_tokenizer_free(&t);
  if (rc) {
    free(ids);
    return rc;
  }
  int64_t s = pad ? L : n;
  clip_text_model m;
  if ((rc = clip_text_load(&m, root, "text_encoder", NN_CPU, err))) {
    free(ids);
    return rc;
  }
  nn_arena scratch;
  nn_ctx ctx;
  memset(&scratch, 0, sizeof scratch);
  if (!(rc = nn_arena_init(&scratch, NN_CPU, clip_text_workspace_bytes(&m, 1, s), err)) &&
      !(rc = nn_ctx_init(&ctx, NN_CPU, &scratch, NULL, 0, err))) {
    float *o = cmds_xmalloc((size_t)(s * m.hidden) * sizeof *o);
    nn_tensor out = nn_tensor_view(o, NN_F32, NN_CPU, 1, s, m.hidden, -1);
    rc = clip_text_forward(&m, &ctx, &out, ids, 1, s, err);
    nn_ctx_free(&ctx);
    if (rc) {
      free(o);
    } else {
      *emb = o;
      *S = s;
      *hidden = m.hidden;
    }
  }
  if (scratch.base) nn_arena_free(&scratch);
  clip_text_free(&m);
  free(ids);
  return rc;
}

int clip_encode_prompt(const char *root, const char *prompt, float **emb, int64_t *S, int64_t *hidden,
                       cmds_error *err) {
  return clip_encode_prompt_ex(root, prompt, 0, emb, S, hidden, err);
}
