/* clip: the CLIP text encoder of a Stable Diffusion / Marigold checkpoint (transformers'
 * CLIPTextModel, <root>/text_encoder/config.json + model.safetensors), inference only:
 *
 *   h = token_embedding[ids] + position_embedding[0..S)                 (B, S, D)
 *   per layer (pre-LN):  h += out_proj(causal_attention(q, k, v of layer_norm1(h)))
 *                        h += fc2(act(fc1(layer_norm2(h))))    act: hidden_act "gelu" (erf;
 *                        SD 2 / OpenCLIP-H) or "quick_gelu" (x sigmoid(1.702 x); SD 1)
 *   out = final_layer_norm(h)                                  last_hidden_state (B, S, D)
 *
 * Configured from config.json (hidden_size, intermediate_size, num_hidden_layers,
 * num_attention_heads, max_position_embeddings, vocab_size, hidden_act, layer_norm_eps), so
 * SD 2's 23-layer OpenCLIP-H and SD 1's 12-layer ViT-L encoders are the same code. Tensor
 * names as checkpoints have them ("text_model.embeddings.token_embedding.weight", ...) or
 * without the "text_model." prefix (how transformers 5 saves a CLIPTextModel); fp32 / fp16 /
 * bf16 storage, held as fp32 on the model's device; every missing or mis-shaped tensor (and
 * any tensor no layer uses, apart from the position_ids buffer) named in one error.
 * Intermediates come from ctx->scratch (clip_text_workspace_bytes); nothing is allocated in
 * a forward.
 *
 * Causal attention makes row i of the output depend on ids [0..i] only, so the first n rows of
 * a padded encoding equal the encoding of the first n ids: Marigold's unpadded empty prompt
 * (S = 2) is the first two rows of the padded one. */
#ifndef CMDS_DIFFUSION_CLIP_H
#define CMDS_DIFFUSION_CLIP_H

#include <stdint.h>

#include "cmds_error.h"
#include "nn/tensor.h"
#include "tokenizer.h"

typedef struct clip_layer {
  nn_tensor ln1_w, ln1_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
} clip_layer;

typedef struct clip_text_model {
  int64_t vocab, hidden, intermediate, layers, heads, max_pos;
  int quick_gelu;      /* hidden_act: 0 "gelu", 1 "quick_gelu" */
  float eps;           /* layer_norm_eps */
  nn_device device;
  nn_arena params;
  nn_tensor tok_emb;   /* (vocab, D) */
  nn_tensor pos_emb;   /* (max_pos, D) */
  clip_layer *layer;   /* [layers] */
  nn_tensor fin_w, fin_b;
  char path[1024];     /* the weight file (messages) */
} clip_text_model;

int clip_text_load(clip_text_model *m, const char *root, const char *subfolder /* "text_encoder" */,
                   nn_device dev, cmds_error *err);
void clip_text_free(clip_text_model *m);
/* Bytes of ctx->scratch one clip_text_forward of (B, S) takes. */
size_t clip_text_workspace_bytes(const clip_text_model *m, int64_t B, int64_t S);
/* ids (B, S) on the host, 0 <= id < vocab_size, S <= max_position_embeddings -> out (B, S, hidden)
 * on the model's device: last_hidden_state after final_layer_norm (what SD / Marigold use). */
int clip_text_forward(clip_text_model *m, nn_ctx *ctx, nn_tensor *out, const int32_t *ids, int64_t B,
                      int64_t S, cmds_error *err);

/* Convenience: tokenizer (<root>/tokenizer) + text encoder (<root>/text_encoder) on the CPU for
 * one prompt into a malloc'd (S, hidden) array (free() it).
 * clip_encode_prompt is Marigold's call: padding="do_not_pad", truncation to model_max_length,
 * so the empty prompt gives S = 2 ([bos, eos]) as diffusers' MarigoldNormalsPipeline encodes it.
 * clip_encode_prompt_ex with pad = 1 is the SD pipelines' call (padding="max_length": S =
 * model_max_length, 77). */
int clip_encode_prompt(const char *root, const char *prompt, float **emb, int64_t *S, int64_t *hidden,
                       cmds_error *err);
int clip_encode_prompt_ex(const char *root, const char *prompt, int pad, float **emb, int64_t *S, int64_t *hidden,
                          cmds_error *err);

#endif
