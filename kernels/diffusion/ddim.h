/* ddim: diffusers' DDIMScheduler, deterministic (eta = 0), configured from a checkpoint's
 * scheduler/scheduler_config.json, for Marigold's denoising loop and for the augment stage's
 * noising (add_noise, velocity targets).
 *
 * The noise schedule is computed as diffusers computes it in float32, so the tables agree bit
 * for bit with DDIMScheduler's:
 *   betas: linear = torch.linspace(beta_start, beta_end, T) in float32 (the step in float,
 *     each value start + step*i, or end - step*(T-1-i) in the upper half, with one rounding);
 *     scaled_linear = the same over the square roots, squared in float32; squaredcos_cap_v2 =
 *     the cosine alpha-bar in double, then float32; or the checkpoint's trained_betas;
 *   rescale_betas_zero_snr: diffusers' Algorithm 1 of "Common Diffusion Noise Schedules and
 *     Sample Steps are Flawed" in float32 (the last alpha_cumprod becomes 0);
 *   alphas_cumprod = cumprod(1 - betas), accumulated in double and stored as float32 (what
 *     torch.cumprod does on the CPU).
 * Bit for bit except after the zero-SNR rescale: it takes square roots, which torch computes on
 * the CPU through MKL's vector math, 1 ulp off the correctly rounded sqrtf for about a fifth of
 * the inputs (build- and CPU-dependent); there the tables agree to a few ulps (1e-5 relative
 * near t = T - 1, where the last root is subtracted).
 * set_timesteps mirrors numpy: linspace (round half to even), leading (+ steps_offset),
 * trailing (np.arange with a float step, whose length can exceed n for step counts that do
 * not divide num_train_timesteps: s->n_steps says how many timesteps there are).
 * step: with a = alpha_cumprod[t], prev = t - T / n (integer division, for every spacing),
 * a_prev = alpha_cumprod[prev] or final_alpha_cumprod (1 with set_alpha_to_one, else
 * alpha_cumprod[0]) when prev < 0; coefficients sqrt(a), sqrt(1 - a), ... in float32:
 *   epsilon: x0 = (x - sqrt(1-a) e) / sqrt(a), eps = e
 *   v_prediction: x0 = sqrt(a) x - sqrt(1-a) v, eps = sqrt(a) v + sqrt(1-a) x
 *   sample: x0 = m, eps = (x - sqrt(a) x0) / sqrt(1-a)
 *   x0 clamped to +-clip_sample_range when clip_sample; prev = sqrt(a_prev) x0 + sqrt(1-a_prev) eps.
 * Dynamic thresholding is refused at load (a pixel-space option, unused by latent models), as
 * are schedulers of another family (LCMScheduler): their steps differ.
 *
 * The elementwise work goes through nn ops (nn_axpby_forward), so the tensors live on the
 * device of ctx; step takes two sample-sized temporaries from ctx->scratch (rewound). */
#ifndef CMDS_DIFFUSION_DDIM_H
#define CMDS_DIFFUSION_DDIM_H

#include <stdint.h>

#include "cmds_error.h"
#include "nn/tensor.h"

typedef enum { DDIM_PRED_EPSILON = 0, DDIM_PRED_V = 1, DDIM_PRED_SAMPLE = 2 } ddim_prediction;
typedef enum { DDIM_SPACING_LEADING = 0, DDIM_SPACING_TRAILING = 1, DDIM_SPACING_LINSPACE = 2 } ddim_spacing;

typedef struct ddim_scheduler {
  int num_train_timesteps;     /* T */
  ddim_prediction prediction;
  ddim_spacing spacing;
  int64_t steps_offset;
  int clip_sample;
  float clip_sample_range;
  int set_alpha_to_one;
  int rescale_zero_snr;
  float *betas;                /* (T) */
  float *alphas_cumprod;       /* (T) */
  float final_alpha_cumprod;
  /* after ddim_set_timesteps */
  int n_inference;             /* the n asked for (decides prev = t - T / n) */
  int n_steps;                 /* timesteps in the list (n, or n + 1 for some trailing n) */
  int64_t *timesteps;          /* (n_steps), descending */
  char what[512];              /* the config file, for messages */
} ddim_scheduler;

/* Reads <root>/<subfolder>/scheduler_config.json (absent keys take DDIMScheduler's defaults;
 * a wrong type, an unknown beta_schedule / timestep_spacing / prediction_type, thresholding
 * true or another scheduler class is CMDS_EINPUT naming the file and key). */
int ddim_load(ddim_scheduler *s, const char *root, const char *subfolder, cmds_error *err);
void ddim_free(ddim_scheduler *s);

/* 1 <= n <= num_train_timesteps; fills s->timesteps[0..s->n_steps). */
int ddim_set_timesteps(ddim_scheduler *s, int n, cmds_error *err);

/* One DDIM step (eta = 0) at timestep t (0 <= t < T) after ddim_set_timesteps:
 * model_out, sample (any shape, same numel) -> prev. prev may alias sample or model_out.
 * Scratch: 2 * numel floats from ctx->scratch (ddim_step_workspace_bytes), rewound. */
int ddim_step(const ddim_scheduler *s, nn_ctx *ctx, nn_tensor *prev, const nn_tensor *model_out,
              int64_t t, const nn_tensor *sample, cmds_error *err);
size_t ddim_step_workspace_bytes(int64_t numel);

/* The forward process and the v-prediction target, per batch item b (dim 0) at timestep t[b]:
 *   add_noise: noisy = sqrt(a) x0 + sqrt(1 - a) noise
 *   velocity:  v     = sqrt(a) noise - sqrt(1 - a) x0
 * x0, noise, out: the same shape (B, ...); out may alias x0 or noise. No scratch. */
int ddim_add_noise(const ddim_scheduler *s, nn_ctx *ctx, nn_tensor *noisy, const nn_tensor *x0,
                   const nn_tensor *noise, const int64_t *t, cmds_error *err);
int ddim_velocity(const ddim_scheduler *s, nn_ctx *ctx, nn_tensor *v, const nn_tensor *x0,
                  const nn_tensor *noise, const int64_t *t, cmds_error *err);

#endif
