/* sd_lora: the Stable Diffusion 2.x side of the augment stage (METHOD.md section 7): the
 * models of an SD checkpoint in diffusers layout (sd_models: UNet, VAE, DDIM scheduler, the
 * prompt embeddings), LoRA fine-tuning of the UNet's attention projections with the
 * diffusion loss (sd_lora_trainer, the semantics of diffusers'
 * examples/text_to_image/train_text_to_image_lora.py), and LoRA files in the names
 * diffusers / peft use (sd_lora_save / sd_lora_load). Image-to-image generation is img2img.h.
 *
 * Checkpoint (diffusers layout, what StableDiffusionPipeline.save_pretrained writes):
 *   model_index.json, unet/ (UNet2DConditionModel, in_channels = the VAE's latent channels),
 *   vae/ (AutoencoderKL), scheduler/ (DDIMScheduler config; SD 2.1: v_prediction, scaled_linear,
 *   steps_offset 1, leading), text_encoder/ + tokenizer/ (CLIP; run once per prompt on the CPU).
 *
 * One training step (batch 1; draws from the trainer's rng, or injected by tests):
 *   image i (k support images, host (3, R, R) in [-1, 1]); the VAE posterior of every image is
 *   computed once when the trainer is made (it does not change): moments (2C, R/f, R/f);
 *   latents = (mean + exp(0.5 clamp(logvar, -30, 20)) eps_vae) * scaling_factor   (1, C, h, w)
 *   t uniform in {0 .. T-1}, noise ~ N(0, 1)   (1, C, h, w)
 *   noisy = sqrt(a_t) latents + sqrt(1 - a_t) noise; target = noise (epsilon) or
 *     sqrt(a_t) noise - sqrt(1 - a_t) latents (v_prediction), from the scheduler config
 *   pred = unet(noisy, t, enc) with LoRA (enc: the prompt, padded to 77 tokens)
 *   loss = mean((pred - target)^2); backward to the LoRA factors only;
 *   clip_grad_norm_(every lora_A / lora_B, max_grad_norm) (torch's: coefficient
 *     max_norm / (norm + 1e-6), clamped to 1); AdamW (torch.optim.AdamW) per factor.
 * LoRA (peft, init_lora_weights="gaussian"): every to_q, to_k, to_v, to_out.0 of attn1 and attn2
 *   of every BasicTransformerBlock: y = W x + b + (alpha / r) B (A x), A (r, in) ~ N(0, 1/r^2)
 *   (std 1/r) from kernels/rng.h, B (out, r) = 0.
 *
 * LoRA file (sd_lora_save): what StableDiffusionPipeline.save_lora_weights writes from
 * convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)): safetensors, fp32,
 *   "unet.<module path>.lora.down.weight" (r, in) and "unet.<module path>.lora.up.weight" (out, r),
 *   __metadata__ {"format": "pt", "lora_adapter_metadata": JSON of the LoraConfig (r, lora_alpha,
 *   target_modules, ...) under "unet.<key>"} plus the caller's key/value pairs.
 * sd_lora_load reads that, peft's own names (lora_A / lora_B, "base_model.model." or "unet." or no
 * prefix), and the kohya-free diffusers forms; alpha from the metadata, else from ".alpha" tensors,
 * else alpha = r (diffusers' default).
 *
 * Trainer state (sd_lora_trainer_save_state): one safetensors file, written atomically: every
 * adapter's A, B and AdamW moments m, v (fp32), __metadata__ with the step count, the rng state,
 * rank / alpha / the options, so that a resumed run continues bit for bit as an uninterrupted one. */
#ifndef CMDS_DIFFUSION_SD_LORA_H
#define CMDS_DIFFUSION_SD_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "cmds_error.h"
#include "ddim.h"
#include "nn/tensor.h"
#include "unet.h"
#include "vae.h"

typedef struct sd_models {
  unet_model unet;
  vae_model vae;
  ddim_scheduler sched;
  float *prompt_emb;  /* host (S, hidden): the prompt, padded to the tokenizer's max length */
  int64_t S, hidden;
  float *uncond_emb;  /* host (S, hidden): the negative prompt ("" padded), for guidance */
  char root[1024];
  /* additions (after the fixed fields) */
  nn_device device;
  int vae_scale;      /* f */
} sd_models;

/* Reads model_index.json, unet/, vae/, scheduler/ onto dev (text_encoder/ + tokenizer/ are only
 * checked here; they run in sd_models_set_prompt). An error names the missing piece. */
int sd_models_load(sd_models *M, const char *root, nn_device dev, cmds_error *err);
/* Encodes prompt and negative ("" for none) with the checkpoint's CLIP on the CPU, padded to
 * model_max_length as the SD pipelines do, into M->prompt_emb / M->uncond_emb. */
int sd_models_set_prompt(sd_models *M, const char *prompt, const char *negative /* "" */, cmds_error *err);
void sd_models_free(sd_models *M);
/* 1 when root looks like a complete SD checkpoint (model_index.json and every component folder
 * with its config and weights; reads only small files), else 0 and the reason in why[0..n). */
int sd_have_weights(const char *root, char *why, size_t n);

typedef struct sd_lora_opts {
  int rank;
  float alpha;
  int steps;
  float lr, beta1, beta2, adam_eps, weight_decay, max_grad_norm;
  uint64_t seed;
} sd_lora_opts;
/* METHOD.md defaults: rank 16, alpha 16, 1000 steps, lr 1e-4, betas 0.9 / 0.999, eps 1e-8,
 * weight decay 1e-2, max_grad_norm 1.0, seed 0. */
sd_lora_opts sd_lora_opts_default(void);

/* The random choices of one step, injected (tests: diffusers' draws). eps_vae and noise are host
 * (C, h, w) arrays; image in [0, k); 0 <= t < T. */
typedef struct sd_step_draws {
  int image;
  const float *eps_vae;
  const float *noise;
  int64_t t;
} sd_step_draws;

typedef struct sd_lora_trainer sd_lora_trainer;

/* Attaches a fresh LoRA (o->rank, o->alpha, A drawn from o->seed; replacing any attached one) to
 * M->unet, encodes the k images (host (k, 3, R, R) in [-1, 1]; R / f must halve evenly at every
 * UNet level, f the VAE scale factor) once and sizes every buffer. M->prompt_emb must be set.
 * ctx: on M's device; its scratch is used when it has sd_lora_trainer_workspace_bytes free,
 * else the trainer makes its own arena of that size. The trainer's rng (image, eps_vae, noise,
 * t per step) is seeded from o->seed too (another stream than A's).
 * Tests start from given factors by sd_lora_load-ing a file of the same rank after this call: it
 * overwrites the attached factors in place. */
int sd_lora_trainer_new(sd_lora_trainer **T, sd_models *M, nn_ctx *ctx, const sd_lora_opts *o,
                        const float *images /* host (k,3,R,R) in [-1,1] */, int k, int R, cmds_error *err);
/* Scratch bytes the trainer takes from ctx->scratch (VAE encode at R, UNet training at R / f) with
 * the attached LoRA, or, when none is attached, with adapters of rank SD_LORA_SIZING_RANK (an upper
 * bound for ranks up to it: the adapters' temporaries grow with the rank). */
size_t sd_lora_trainer_workspace_bytes(const sd_models *M, int R);
#define SD_LORA_SIZING_RANK 64
/* For the sizing functions (img2img.h too): attaches rank SD_LORA_SIZING_RANK adapters when M has
 * none (returns 1: detach with sd_lora_sizing_end), else returns 0 and changes nothing. */
int sd_lora_sizing_begin(const sd_models *M);
void sd_lora_sizing_end(const sd_models *M, int attached);
/* One step (draws NULL: the trainer's own rng); *loss = the step's loss (before the update). */
int sd_lora_trainer_step(sd_lora_trainer *T, const sd_step_draws *draws /* NULL: own rng */, double *loss,
                         cmds_error *err);
int64_t sd_lora_trainer_done(const sd_lora_trainer *T); /* steps taken */
/* The gradient norm of the last step, before clipping (torch's clip_grad_norm_ return value). */
double sd_lora_trainer_grad_norm(const sd_lora_trainer *T);
/* Atomic (tmp + rename): LoRA, AdamW m / v, step, rng state; resuming gives the result of no stop. */
int sd_lora_trainer_save_state(const sd_lora_trainer *T, const char *path, cmds_error *err);
/* Must match the trainer's rank, adapters and shapes (else CMDS_EINPUT naming the file and what). */
int sd_lora_trainer_load_state(sd_lora_trainer *T, const char *path, cmds_error *err);
void sd_lora_trainer_free(sd_lora_trainer *T); /* leaves the LoRA attached to M->unet */

/* diffusers / peft names, atomic (tmp + rename). meta_kv: NULL-terminated key, value pairs added
 * to __metadata__ (or NULL). */
int sd_lora_save(const unet_model *m, const char *path, const char *const *meta_kv, cmds_error *err);
/* Attaches (replacing any LoRA) the adapters of a diffusers / peft LoRA file; every unknown or
 * mis-shaped tensor and every adapter of the UNet absent from the file is named in the error. */
int sd_lora_load(unet_model *m, const char *path, cmds_error *err);

#endif
