/* img2img: Stable Diffusion image-to-image generation, the procedure of diffusers'
 * StableDiffusionImg2ImgPipeline (eta 0, DDIM), on the models of sd_lora.h (the UNet with
 * whatever LoRA is attached), for the augment stage's generated images (METHOD.md section 7).
 *
 *   image (3, H, W) in [-1, 1], H and W multiples of the VAE scale factor f
 *   set_timesteps(steps); n_init = min(int(steps * strength), steps); the last n_init timesteps
 *     of the schedule are run, starting at t0 = timesteps[steps - n_init]
 *   latents = (mean + exp(0.5 clamp(logvar, -30, 20)) eps_vae) * scaling_factor   (the posterior
 *     sample, retrieve_latents sample_mode "sample")
 *   latents = sqrt(a_t0) latents + sqrt(1 - a_t0) noise          (scheduler.add_noise)
 *   per timestep t: guidance > 1: the UNet on (uncond, prompt) as a batch of 2 at t,
 *     pred = u + guidance (c - u); else pred = unet(latents, t, prompt); latents = ddim_step(pred)
 *   out = clamp(decode(latents) / 2 + 0.5, 0, 1) as (H, W, 3)   (postprocess, output_type "np")
 * Random draws: eps_vae then noise, both (C, H/f, W/f) standard normals, from kernels/rng.h seeded
 * with o->seed, or the caller's (tests pass diffusers' own).
 * n_init = 0 (strength too small for the step count: the pipeline fails on it too) is CMDS_EINPUT.
 * int(steps x strength) is taken on the decimal the float strength was written as (0.7f as 0.7), as
 * Python computes it. The prompt / negative embeddings are M's (sd_models_set_prompt).
 * Device work on ctx (M's device); scratch: sd_img2img_workspace_bytes. */
#ifndef CMDS_DIFFUSION_IMG2IMG_H
#define CMDS_DIFFUSION_IMG2IMG_H

#include <stddef.h>
#include <stdint.h>

#include "cmds_error.h"
#include "nn/tensor.h"
#include "sd_lora.h"

typedef struct sd_img2img_opts {
  float strength;   /* (0, 1] */
  int steps;        /* DDIM steps before strength (>= 1) */
  float guidance;   /* <= 1: no classifier-free guidance */
  uint64_t seed;
  const float *eps_vae, *noise; /* optional host (C, H/f, W/f) each, tests: diffusers' draws */
} sd_img2img_opts;

/* strength 0.3, 50 steps, guidance 7.5, seed 0 (METHOD.md), no injected draws. */
sd_img2img_opts sd_img2img_opts_default(void);

/* Scratch bytes of one sd_img2img call, with the attached LoRA's temporaries, or, when none is
 * attached yet, with those of rank SD_LORA_SIZING_RANK adapters (an upper bound up to that rank). */
size_t sd_img2img_workspace_bytes(const sd_models *M, int H, int W, float guidance);

int sd_img2img(sd_models *M, nn_ctx *ctx, const float *image /* host (3,H,W) [-1,1] */, int H, int W,
               const sd_img2img_opts *o, float *out /* host (H,W,3) in [0,1] */, cmds_error *err);

#endif
