/* marigold: Marigold surface normals from one RGB image, the procedure of diffusers'
 * MarigoldNormalsPipeline (and its MarigoldImageProcessor) on our VAE, UNet, CLIP text encoder
 * and DDIM, for the `estimate` stage (METHOD.md section 8).
 *
 * Checkpoint (diffusers layout): model_index.json (prediction_type "normals",
 * default_denoising_steps, default_processing_resolution, use_full_z_range), unet/ (in_channels
 * = 2 x the VAE's latent channels), vae/, scheduler/ (DDIM), text_encoder/ + tokenizer/ (only for
 * the empty-prompt embedding, computed once at load on the CPU: the tokens of "" unpadded, i.e.
 * BOS, EOS, as the pipeline tokenizes with padding="do_not_pad").
 *
 * marigold_normals, step by step as the pipeline does it (single image, float32):
 *  1. rgb (H, W, 3) in [0, 1] (anything outside is an error, like its range check) -> 2 x - 1,
 *     channels first;
 *  2. processing resolution r > 0: resized so that the longer edge is r, other edge
 *     floor(edge x r / longer), with F.interpolate(bilinear, antialias=True,
 *     align_corners=False) computed as torch's CPU kernel does (marigold_resize_bilinear_aa);
 *     r = 0 keeps the input size; then replicate-padded on the bottom / right to a multiple of
 *     the VAE scale factor f;
 *  3. image latent = VAE posterior mean x scaling_factor, repeated for the E ensemble members;
 *  4. initial normal latents (E, C, h, w): opts->init_latents when given (diffusers'
 *     `latents=`), else standard normals from kernels/rng.h seeded with opts->seed, element
 *     after element (not the same numbers as torch's generator);
 *  5. DDIM over the scheduler's timesteps for the step count: the UNet on cat(image latent,
 *     normal latent) along channels with the empty-prompt embedding, then ddim_step; the members
 *     go through the UNet opts->batch at a time (all of them by default);
 *  6. each member decoded (VAE decoder of latent / scaling_factor), clipped to [-1, 1], z
 *     mapped to z/2 + 1/2 when use_full_z_range is false, normalised (x / max(|x|, 1e-6)),
 *     the padding cut off;
 *  7. E > 1: ensemble_normals: mean over members, normalised; reduction "closest" (the
 *     pipeline's default) keeps per pixel the member with the largest cosine to that mean
 *     (the first on ties), "mean" keeps the mean;
 *  8. match_input_res: F.interpolate(bilinear, no antialias) back to (H, W), normalised again.
 * Steps 1-2 and 6-8 run on the host (they are O(pixels); the networks dominate), 3-5 and the
 * decoder on the device of ctx with intermediates from ctx->scratch (marigold_workspace_bytes).
 *
 * Output frame: Marigold's own camera frame, X to the right, Y up, Z towards the viewer (what
 * diffusers' visualize_normals documents). marigold_normals_to_pointcloud_frame turns such
 * normals into the frame of our point clouds and real normals (METHOD.md section 2). */
#ifndef CMDS_DIFFUSION_MARIGOLD_H
#define CMDS_DIFFUSION_MARIGOLD_H

#include <stddef.h>
#include <stdint.h>

#include "cmds_error.h"
#include "ddim.h"
#include "nn/tensor.h"
#include "unet.h"
#include "vae.h"

typedef enum { MARIGOLD_CLOSEST = 0, MARIGOLD_MEAN = 1 } marigold_reduction;

typedef struct marigold_opts {
  int steps;            /* <= 0: the checkpoint's default_denoising_steps */
  int processing_res;   /* < 0: default_processing_resolution; 0: the input's own size; else a
                           multiple of the VAE scale factor */
  int ensemble_size;    /* E >= 1 (0 is taken as 1) */
  int match_input_res;  /* 1: normals (H, W, 3); 0: at the processing size (marigold_output_size) */
  uint64_t seed;        /* initial latents when init_latents is NULL */
  const float *init_latents; /* optional host (E, C, h, w), h, w = padded processing size / f */
  marigold_reduction reduction; /* E > 1 */
  int batch;            /* ensemble members per UNet batch; <= 0: all E */
} marigold_opts;

/* steps and resolution from the checkpoint, E = 1, match_input_res = 1, seed 0, closest. */
marigold_opts marigold_opts_default(void);

typedef struct marigold_model {
  vae_model vae;
  unet_model unet;
  ddim_scheduler sched;
  nn_device device;
  int default_steps;        /* 0 when model_index.json has none */
  int default_res;          /* -1 when model_index.json has none */
  int use_full_z_range;
  int vae_scale;            /* f */
  int latent_channels;      /* C */
  float *empty_emb;         /* host (emb_S, emb_D): the empty prompt's last_hidden_state */
  int64_t emb_S, emb_D;
  char root[512];
} marigold_model;

/* Loads every component onto `dev` (the text encoder runs once on the CPU and is freed).
 * CMDS_EINPUT names the file and key for a checkpoint that is not a Marigold normals one. */
int marigold_load(marigold_model *m, const char *root, nn_device dev, cmds_error *err);
void marigold_free(marigold_model *m);

/* 1 when root looks like a complete Marigold normals checkpoint (model_index.json with
 * prediction_type "normals", every component folder with its config and weights), else 0 and
 * the reason in why[0..n). Reads only small files. */
int marigold_have_weights(const char *root, char *why, size_t n);

/* The sizes one call works at: (ph, pw) the processing size, (pph, ppw) padded, (h, w) latent,
 * (oh, ow) the output. CMDS_EINPUT for a bad resolution / aspect ratio / step count. */
typedef struct marigold_plan {
  int steps, ensemble, batch;
  int ph, pw, pph, ppw, h, w, oh, ow;
} marigold_plan;
int marigold_plan_for(const marigold_model *m, int H, int W, const marigold_opts *o, marigold_plan *p,
                      cmds_error *err);
/* Scratch bytes marigold_normals takes from ctx->scratch for an (H, W) image with these options. */
size_t marigold_workspace_bytes(const marigold_model *m, int H, int W, const marigold_opts *o);

/* rgb (H, W, 3) in [0, 1] on the host -> unit normals (oh, ow, 3) on the host in Marigold's frame
 * ((H, W) with match_input_res). ctx on the model's device. */
int marigold_normals(marigold_model *m, nn_ctx *ctx, const float *rgb, int H, int W, const marigold_opts *o,
                     float *normals, cmds_error *err);

/* Marigold's frame (X right, Y up, Z towards the viewer) -> the frame of our organised point
 * clouds and of cmds_normals_central (METHOD.md section 2): the camera frame of MVTec 3D-AD's
 * xyz, x along image columns (right), y along rows (down), z along the viewing direction (away
 * from the camera), normals facing the camera (n . p < 0, i.e. mostly n_z < 0). That is a
 * rotation by 180 degrees about X: (x, y, z) -> (x, -y, -z). In place on n normals (n, 3). */
void marigold_normals_to_pointcloud_frame(float *normals, int64_t n);

/* F.interpolate(x, (oh, ow), mode="bilinear", antialias=True, align_corners=False) as torch's
 * CPU kernel computes it in float32 (separable: along W, then along H; triangle filter widened
 * by the downscale factor, weights normalised per output): x (C, ih, iw) -> y (C, oh, ow). */
void marigold_resize_bilinear_aa(const float *x, int C, int ih, int iw, float *y, int oh, int ow);

#endif
