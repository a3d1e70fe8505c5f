/* vae: inference of diffusers' AutoencoderKL (the Stable Diffusion / Marigold VAE), encoder
 * and decoder, configured from <root>/<subfolder>/config.json, weights by diffusers' names.
 *
 * Encoder:  x (B, in, H, W)
 *   conv_in 3x3 -> block_out_channels[0]
 *   down_blocks.i (DownEncoderBlock2D): layers_per_block ResnetBlock2D (C_{i-1} -> C_i, then
 *     C_i -> C_i), then, except for the last block, downsamplers.0.conv: pad (0, 1, 0, 1),
 *     3x3 stride 2 (H -> (H - 1) / 2 + 1 for the padded floor)
 *   mid_block: resnets.0, attentions.0 (when mid_block_add_attention), resnets.1
 *   conv_norm_out (group norm), SiLU, conv_out 3x3 -> 2 * latent_channels
 *   quant_conv 1x1 (when use_quant_conv)   ->   moments (B, 2 * latent, h, w): mean, logvar
 * Decoder:  z (B, latent, h, w)
 *   post_quant_conv 1x1 (when use_post_quant_conv), conv_in 3x3 -> block_out_channels[-1]
 *   mid_block as above
 *   up_blocks.i (UpDecoderBlock2D) over reversed(block_out_channels): layers_per_block + 1
 *     ResnetBlock2D, then, except for the last block, upsamplers.0.conv after nearest 2x
 *   conv_norm_out, SiLU, conv_out 3x3 -> out_channels   ->   y (B, out, h * f, w * f)
 * ResnetBlock2D: h = conv1(silu(norm1(x))); h = conv2(silu(norm2(h))); y = shortcut(x) + h
 *   (shortcut: conv_shortcut 1x1 when Cin != Cout, else identity). Every group norm has
 *   norm_num_groups groups and eps 1e-6.
 * Mid attention (one head of C channels): t = group_norm(x) as tokens (B, HW, C);
 *   y = x + to_out.0(softmax(to_q(t) to_k(t)^T / sqrt(C)) to_v(t)).
 * Attention weights stored under the names of diffusers < 0.14 (query, key, value,
 * proj_attn) are read as well (diffusers converts them the same way when it loads).
 *
 * Configuration keys read: in_channels, out_channels, down_block_types (DownEncoderBlock2D
 * only), up_block_types (UpDecoderBlock2D only), block_out_channels, layers_per_block,
 * act_fn (silu only), latent_channels, norm_num_groups, scaling_factor,
 * mid_block_add_attention, use_quant_conv, use_post_quant_conv (all three default true).
 * force_upcast, sample_size, shift_factor, latents_mean / latents_std are not used (Marigold
 * and SD 2 scale by scaling_factor only). Anything else unsupported is CMDS_EINPUT naming
 * the file and the key.
 *
 * Memory: parameters live in the model's own arena on its device (fp16 / bf16 storage is
 * converted to fp32 when loading); every activation of a forward comes from ctx->scratch
 * (mark / rewind, nothing allocated inside), vae_workspace_bytes(B, H, W) bytes at most,
 * computed by replaying the forward's allocations for that size. Ping-pong buffers hold
 * the largest activation (at SD's 768 x 768: decoder 256 channels at full resolution, about
 * 0.6 GB per image each) and a ResNet block takes two more.
 *
 *   vae_model m;
 *   if (vae_load(&m, "ckpt", "vae", NN_CPU, &err)) ...;
 *   nn_arena s; nn_arena_init(&s, NN_CPU, vae_workspace_bytes(&m, 1, 768, 768), &err);
 *   nn_ctx ctx; nn_ctx_init(&ctx, NN_CPU, &s, NULL, 0, &err);
 *   vae_encode_mean_scaled(&m, &ctx, &latent, &rgb, &err);      // (1, 4, 96, 96)
 *   vae_decode_scaled(&m, &ctx, &img, &latent, &err);            // (1, 3, 768, 768)
 */
#ifndef CMDS_DIFFUSION_VAE_H
#define CMDS_DIFFUSION_VAE_H

#include <stddef.h>
#include <stdint.h>

#include "cmds_error.h"
#include "nn/tensor.h"

#define VAE_MAX_BLOCKS 8

typedef struct vae_resnet {
  int64_t cin, cout;
  nn_tensor norm1_w, norm1_b, conv1_w, conv1_b, norm2_w, norm2_b, conv2_w, conv2_b;
  int has_shortcut;
  nn_tensor short_w, short_b; /* conv_shortcut (cout, cin, 1, 1), when cin != cout */
} vae_resnet;

typedef struct vae_attn {
  int64_t c;
  nn_tensor norm_w, norm_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b; /* linears (c, c) */
} vae_attn;

typedef struct vae_mid {
  vae_resnet res0, res1;
  int has_attn;
  vae_attn attn;
} vae_mid;

typedef struct vae_level {
  int n_resnets;
  vae_resnet *resnets;
  int has_resample;        /* downsampler (encoder) / upsampler (decoder) */
  nn_tensor resample_w, resample_b;
} vae_level;

typedef struct vae_model {
  /* configuration */
  int64_t in_channels, out_channels, latent_channels, groups;
  int n_blocks, layers_per_block;
  int64_t block_out[VAE_MAX_BLOCKS];
  double scaling_factor;
  int mid_attention, use_quant_conv, use_post_quant_conv;
  nn_device device;
  /* parameters (in `params`) */
  nn_arena params;
  nn_tensor enc_conv_in_w, enc_conv_in_b;
  vae_level enc[VAE_MAX_BLOCKS];
  vae_mid enc_mid;
  nn_tensor enc_norm_w, enc_norm_b, enc_conv_out_w, enc_conv_out_b;
  nn_tensor quant_w, quant_b;      /* (2L, 2L, 1, 1) */
  nn_tensor post_quant_w, post_quant_b; /* (L, L, 1, 1) */
  nn_tensor dec_conv_in_w, dec_conv_in_b;
  vae_mid dec_mid;
  vae_level dec[VAE_MAX_BLOCKS];   /* in forward order: dec[0] works at the lowest resolution */
  nn_tensor dec_norm_w, dec_norm_b, dec_conv_out_w, dec_conv_out_b;
  int64_t n_params;
} vae_model;

/* Reads <root>/<subfolder>/config.json and its weights (diffusion_pytorch_model.safetensors,
 * or the .fp16 variant when that is the only one) onto `dev`. Every missing or mis-shaped
 * tensor, and every tensor of the file the configuration does not use, is named in one
 * CMDS_EINPUT error; an unsupported configuration names the key. */
int vae_load(vae_model *m, const char *root, const char *subfolder, nn_device dev, cmds_error *err);
void vae_free(vae_model *m);

/* Bytes of ctx->scratch the largest of encode / encode_mean_scaled / decode_scaled takes
 * for a batch of B images of H x W pixels (decode: latents of H/f x W/f), on the model's
 * device, including the ops' own scratch. Depends on the OpenMP thread count on the CPU
 * (attention blocks per thread): call it with the threads the forward will run with. */
size_t vae_workspace_bytes(const vae_model *m, int64_t B, int64_t H, int64_t W);

/* x (B, in_channels, H, W) in [-1, 1] -> moments (B, 2 * latent_channels, h, w) after
 * quant_conv (mean channels first, then logvar; not clamped). h = H after one padded
 * stride-2 step per downsampler: H / f when f divides H. */
int vae_encode(vae_model *m, nn_ctx *ctx, nn_tensor *moments, const nn_tensor *x, cmds_error *err);
/* latent (B, latent_channels, h, w) = mean * scaling_factor (what Marigold uses). */
int vae_encode_mean_scaled(vae_model *m, nn_ctx *ctx, nn_tensor *latent, const nn_tensor *x, cmds_error *err);
/* latent (B, latent_channels, h, w) in the scaled space: divided by scaling_factor,
 * post_quant_conv, decoder -> y (B, out_channels, h * f, w * f). */
int vae_decode_scaled(vae_model *m, nn_ctx *ctx, nn_tensor *y, const nn_tensor *latent, cmds_error *err);
/* f = 2^(len(block_out_channels) - 1). */
int vae_scale_factor(const vae_model *m);
/* The latent size an image of H x W pixels encodes to (the encoder's padded floors). */
void vae_latent_size(const vae_model *m, int64_t H, int64_t W, int64_t *h, int64_t *w);

#endif
