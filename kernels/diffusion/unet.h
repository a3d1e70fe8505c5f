/* unet: diffusers' UNet2DConditionModel, inference, as Stable Diffusion 2 / 2.1 and Marigold
 * configure it, read from the checkpoint's own unet/config.json and weights in diffusers'
 * names (down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight, ...).
 *
 *   x (B, in_channels, h, w), timestep t, enc (B, S, cross_attention_dim) -> out (B, out_channels, h, w)
 *
 *   t -> sinusoid (block_out_channels[0], flip_sin_to_cos, freq_shift) -> time_embedding.linear_1
 *     -> SiLU -> linear_2 = emb (B, 4 * C0)
 *   conv_in 3x3 -> down blocks (ResnetBlock2D [+ Transformer2DModel] per layer, stride-2 conv
 *   downsampler but in the last block; every state pushed as a skip) -> mid block (resnet,
 *   transformer, resnet) -> up blocks (layers_per_block + 1 layers: concat the popped skip,
 *   resnet [+ transformer]; nearest upsampler to the next skip's size + 3x3 conv but in the
 *   last block) -> GroupNorm -> SiLU -> conv_out 3x3.
 *   ResnetBlock2D: GN, SiLU, conv1 3x3, + time_emb_proj(SiLU(emb)), GN, SiLU, conv2 3x3, + x
 *     (1x1 conv_shortcut when the channel count changes).
 *   Transformer2DModel: GN (eps 1e-6), proj_in (linear on tokens, or 1x1 conv when
 *     use_linear_projection is false), transformer_layers_per_block BasicTransformerBlocks
 *     (LN, self-attention, LN, cross-attention to enc, LN, GEGLU feed-forward, each residual),
 *     proj_out, + x.
 *   Heads: diffusers' attention_head_dim is, for this model, the number of heads per block
 *   (num_attention_heads = attention_head_dim; head size = channels / heads), and the up blocks
 *   take the list reversed.
 *
 * Anything else in the config (class / addition embeddings, scale-shift time norm, other
 * block types, only_cross_attention, ...) is refused with an error naming the key and value.
 * upcast_attention is accepted: it only changes half-precision arithmetic, and this path is
 * fp32.
 *
 * Every layer keeps its own weights in a struct (one per projection: unet_proj) so that
 * the augment stage can hang LoRA factors and gradients on them.
 *
 * Memory: weights (fp32) in the model's own arena on its device; every activation comes
 * from ctx->scratch (mark / rewind, nothing allocated in a forward), unet_workspace_bytes
 * bytes for one call. */
#ifndef CMDS_DIFFUSION_UNET_H
#define CMDS_DIFFUSION_UNET_H

#include <stddef.h>
#include <stdint.h>

#include "cmds_error.h"
#include "nn/tensor.h"

#define UNET_MAX_BLOCKS 8

/* A LoRA adapter on one linear projection (peft's LoraLayer): y = W x + b + scale * B (A x).
 * A, B, dA, dB live in the set's arena on the model's device. */
typedef struct unet_lora {
  nn_tensor A, B, dA, dB; /* lora_A (r, in), lora_B (out, r), gradients of the same shapes */
  float scale;            /* alpha / r */
} unet_lora;

/* A linear layer or a convolution (k x k), PyTorch layout: w (out, in) or (out, in, k, k). */
typedef struct unet_proj {
  nn_tensor w, b; /* b.data == NULL when the layer has no bias */
  int64_t in, out, k; /* k = 0: linear */
  unet_lora *lora;    /* NULL: none (linear layers only) */
} unet_proj;

/* Every adapter of the model: to_q, to_k, to_v, to_out.0 of attn1 and attn2 of every
 * BasicTransformerBlock (peft's target_modules for the SD LoRA), in the order of diffusers'
 * named_modules(): down_blocks, then up_blocks, then mid_block (UNet2DConditionModel
 * registers the up_blocks list before the mid block), and within a block attn1.to_q, to_k,
 * to_v, to_out.0, attn2.(same). */
typedef struct unet_lora_set {
  int rank;
  float alpha;
  int n;
  unet_lora *items;
  char (*names)[160]; /* names[i]: the diffusers module path,
                         "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q" */
  nn_arena store;     /* A, B, dA, dB of every item */
} unet_lora_set;

typedef struct unet_norm {
  nn_tensor w, b; /* (C) */
} unet_norm;

typedef struct unet_attention {
  unet_proj to_q, to_k, to_v, to_out; /* to_out = to_out.0 */
  int64_t heads, dim_head;            /* inner = heads * dim_head */
} unet_attention;

typedef struct unet_transformer_block {
  unet_norm norm1, norm2, norm3;
  unet_attention attn1, attn2; /* self, cross */
  unet_proj ff_in, ff_out;     /* ff.net.0.proj (dim -> 2 * 4 dim, GEGLU), ff.net.2 */
} unet_transformer_block;

typedef struct unet_transformer {
  int64_t channels, inner, heads;
  unet_norm norm; /* GroupNorm(groups, channels, eps 1e-6) */
  unet_proj proj_in, proj_out; /* linear or 1x1 conv */
  int n_layers;
  unet_transformer_block *blocks;
} unet_transformer;

typedef struct unet_resnet {
  int64_t cin, cout;
  unet_norm norm1, norm2;
  unet_proj conv1, conv2, time_emb_proj;
  int has_shortcut;
  unet_proj conv_shortcut; /* 1x1 when cin != cout */
} unet_resnet;

/* A down or up block: n_layers resnets, each followed by a transformer when has_attn, then
 * the sampler (downsamplers.0.conv stride 2 / upsamplers.0.conv after nearest upsampling). */
typedef struct unet_block {
  int n_layers;
  int has_attn;
  unet_resnet *resnets;
  unet_transformer *attns; /* n_layers, or NULL */
  int has_sampler;
  unet_proj sampler;
} unet_block;

typedef struct unet_config {
  int64_t in_channels, out_channels, n_blocks;
  int64_t block_out_channels[UNET_MAX_BLOCKS];
  int64_t layers_per_block[UNET_MAX_BLOCKS];
  int64_t transformer_layers[UNET_MAX_BLOCKS];
  int64_t heads[UNET_MAX_BLOCKS];              /* per down block (attention_head_dim) */
  int64_t cross_attention_dim; /* a list must hold one value: every block sees the same enc */
  int down_attn[UNET_MAX_BLOCKS], up_attn[UNET_MAX_BLOCKS]; /* CrossAttn* block or not */
  int use_linear_projection, flip_sin_to_cos;
  double freq_shift, norm_eps;
  int64_t norm_num_groups;
  int64_t time_embed_dim; /* 4 * block_out_channels[0] */
} unet_config;

typedef struct unet_model {
  unet_config cfg;
  nn_device device;
  nn_arena params;
  unet_proj conv_in, time_linear_1, time_linear_2, conv_out;
  unet_block down[UNET_MAX_BLOCKS], up[UNET_MAX_BLOCKS];
  unet_resnet mid_resnets[2];
  unet_transformer mid_attn;
  unet_norm conv_norm_out;
  int64_t n_params;
  char *source; /* the weight file, for messages */
  unet_lora_set *lora; /* NULL until unet_lora_attach */
} unet_model;

/* Reads <root>/<subfolder>/config.json and its weights (the plain file, else the fp16
 * variant) onto dev. Errors name the file and the key, or every missing / mis-shaped /
 * unexpected tensor. */
int unet_load(unet_model *m, const char *root, const char *subfolder /* "unet" */, nn_device dev,
              cmds_error *err);
void unet_free(unet_model *m);
/* Bytes of ctx->scratch one unet_forward call takes for these sizes (S = encoder tokens). */
size_t unet_workspace_bytes(const unet_model *m, int64_t B, int64_t h, int64_t w, int64_t S);
/* x (B,in_channels,h,w), timestep t (as diffusers' float timestep; the same for the whole
 * batch), enc (B,S,cross_attention_dim) -> out (B,out_channels,h,w). All on the model's
 * device; any h, w (sizes that do not halve evenly take diffusers' forward_upsample_size path). */
int unet_forward(unet_model *m, nn_ctx *ctx, nn_tensor *out, const nn_tensor *x, double t,
                 const nn_tensor *enc, cmds_error *err);
int unet_in_channels(const unet_model *m);

/* ---- LoRA (the augment stage's fine-tune) ----
 * unet_lora_attach: an adapter of rank `rank` on every attention projection (see
 * unet_lora_set), A ~ N(0, (1/rank)^2) (peft's init_lora_weights="gaussian": std 1/rank) drawn
 * from kernels/rng.h seeded with `seed` in the set's order, B = 0, gradients 0; scale =
 * alpha / rank. Replaces an attached set. unet_forward applies the adapters from then on (its
 * workspace grows by the adapter temporaries: size the scratch after attaching). */
int unet_lora_attach(unet_model *m, int rank, float alpha, uint64_t seed, cmds_error *err);
void unet_lora_detach(unet_model *m);
/* dA = dB = 0 for every adapter. */
void unet_lora_zero_grad(unet_model *m);
/* The adapter of a diffusers module path (names[i]), or -1. */
int unet_lora_find(const unet_model *m, const char *name);

/* ---- training forward + backward (gradients of the LoRA factors only) ----
 * The tape keeps each unit's (resnet, transformer, sampler) output state of one training
 * forward (its input is the previous state), the SiLU'd time embedding, a view of the
 * encoder states and, for the units the backward goes through, the internals whose
 * recomputation would cost a GEMM (resnet: conv1's output; transformer block: the residual
 * states, q / k / v / attention output of both attentions, the GEGLU input); unet_backward
 * walks the units in reverse, recomputing only the norms into ctx->scratch, and
 * back-propagates through each (every unit's forward runs once per step; the tape is about
 * 0.9 GiB at SD 2.1's 64 x 64 latent, batch 1). Gradients flow back to the first transformer only (nothing before it has an
 * adapter). The caller keeps enc's memory unchanged from unet_forward_train to
 * unet_backward (x is not needed after the forward).
 * Sizes must halve evenly at every level (the 2x nearest upsampler's backward); the
 * workspace includes the adapters' temporaries, so size it after unet_lora_attach.
 *
 *   tape = unet_tape_new(m, B, h, w, S, err);            once per size
 *   scratch of unet_train_workspace_bytes(m, B, h, w, S)
 *   per step: unet_lora_zero_grad(m); unet_forward_train(m, ctx, tape, out, x, t, enc, err);
 *             dout = dL/dout; unet_backward(m, ctx, tape, dout, err); optimiser on A, B */
typedef struct unet_tape unet_tape;
unet_tape *unet_tape_new(const unet_model *m, int64_t B, int64_t h, int64_t w, int64_t S, cmds_error *err);
void unet_tape_free(unet_tape *t);
/* Bytes of the tape's own arena for these sizes. */
size_t unet_tape_bytes(const unet_model *m, int64_t B, int64_t h, int64_t w, int64_t S);
/* Bytes of ctx->scratch unet_forward_train and unet_backward take (the larger of the two). */
size_t unet_train_workspace_bytes(const unet_model *m, int64_t B, int64_t h, int64_t w, int64_t S);
/* As unet_forward with one timestep per item, t (B) on the host, keeping the tape. */
int unet_forward_train(unet_model *m, nn_ctx *ctx, unet_tape *tape, nn_tensor *out, const nn_tensor *x,
                       const double *t, const nn_tensor *enc, cmds_error *err);
/* dout (B, out_channels, h, w) = dL/dout of the last unet_forward_train on this tape: ADDS
 * dL/dA, dL/dB into every adapter's dA, dB; no other gradient is kept. */
int unet_backward(unet_model *m, nn_ctx *ctx, unet_tape *tape, const nn_tensor *dout, cmds_error *err);

#endif
