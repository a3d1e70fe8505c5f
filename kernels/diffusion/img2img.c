/* img2img: diffusers' StableDiffusionImg2ImgPipeline on our modules; see img2img.h. */
#include "img2img.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/elementwise.h"
#include "rng.h"

#define ALIGN256(x) (((size_t)(x) + 255) / 256 * 256)

sd_img2img_opts sd_img2img_opts_default(void) {
  sd_img2img_opts o;
  memset(&o, 0, sizeof(o));
  o.strength = 0.3f;
  o.steps = 50;
  o.guidance = 7.5f;
  return o;
}

/* The strength as the user wrote it: the shortest decimal that reads back as this float, as a
 * double, so that int(steps * strength) is the pipeline's (0.7 in Python is the double 0.7, while
 * the float 0.7f times 10 is 6.99999...). */
static double decimal_of(float f) {
  char buf[64];
  for (int p = 1; p <= 9; p++) {
    snprintf(buf, sizeof(buf), "%.*g", p, (double)f);
    if (strtof(buf, NULL) == f) return strtod(buf, NULL);
  }
  return (double)f;
}

/* How many of the schedule's timesteps run (pipeline's get_timesteps), 0 = none. */
static int img2img_init_steps(int steps, float strength) {
  double v = (double)steps * decimal_of(strength);
  int n = (int)v;
  return n < steps ? n : steps;
}

static int img2img_check(const sd_models *M, int H, int W, const sd_img2img_opts *o, cmds_error *err) {
  int f = M->vae_scale > 0 ? M->vae_scale : 8;
  if (H < f || W < f || H % f || W % f)
    return CMDS_FAIL(err, CMDS_EINPUT, "img2img: image %d x %d: both sides must be positive multiples of the VAE "
                     "scale factor %d", W, H, f);
  if (!(o->strength > 0.0f && o->strength <= 1.0f))
    return CMDS_FAIL(err, CMDS_EINPUT, "img2img: strength %g outside (0, 1]", (double)o->strength);
  if (o->steps < 1 || o->steps > M->sched.num_train_timesteps)
    return CMDS_FAIL(err, CMDS_EINPUT, "img2img: %d steps, 1..%d expected", o->steps, M->sched.num_train_timesteps);
  if (img2img_init_steps(o->steps, o->strength) < 1)
    return CMDS_FAIL(err, CMDS_EINPUT, "img2img: strength %g with %d steps runs no denoising step "
                     "(int(steps x strength) = 0): raise the strength or the step count", (double)o->strength,
                     o->steps);
  if (!M->prompt_emb || !M->uncond_emb)
    return CMDS_FAIL(err, CMDS_EINPUT, "img2img: no prompt set (sd_models_set_prompt)");
  return CMDS_OK;
}

/* Scratch: x / dec (1,3,H,W), moments (1,2C,h,w), lat, noise (1,C,h,w), lin, pred (B,C,h,w),
 * enc (B,S,D), then the larger of the VAE's and the UNet's + DDIM's workspace. */
size_t sd_img2img_workspace_bytes(const sd_models *M, int H, int W, float guidance) {
  int f = M->vae_scale > 0 ? M->vae_scale : 8;
  int64_t B = guidance > 1.0f ? 2 : 1, C = M->vae.latent_channels, h = H / f, w = W / f;
  int64_t S = M->S > 0 ? M->S : 77, D = M->unet.cfg.cross_attention_dim;
  size_t b = 0;
  b += ALIGN256(sizeof(float) * (size_t)(3 * (int64_t)H * W)) * 2;
  b += ALIGN256(sizeof(float) * (size_t)(2 * C * h * w));
  b += ALIGN256(sizeof(float) * (size_t)(C * h * w)) * 2;
  b += ALIGN256(sizeof(float) * (size_t)(B * C * h * w)) * 2;
  b += ALIGN256(sizeof(float) * (size_t)(B * S * D));
  size_t v = vae_workspace_bytes(&M->vae, 1, H, W);
  int tmp = sd_lora_sizing_begin(M); /* the adapters' temporaries, when none is attached yet */
  size_t u = unet_workspace_bytes(&M->unet, B, h, w, S) + ddim_step_workspace_bytes(C * h * w);
  sd_lora_sizing_end(M, tmp);
  return b + (v > u ? v : u) + (1 << 20);
}

static nn_tensor view4(void *base, int64_t off, nn_device d, int64_t a, int64_t b, int64_t c, int64_t e) {
  return nn_tensor_view((float *)base + off, NN_F32, d, a, b, c, e);
}

int sd_img2img(sd_models *M, nn_ctx *ctx, const float *image, int H, int W, const sd_img2img_opts *o, float *out,
               cmds_error *err) {
  int rc = img2img_check(M, H, W, o, err);
  if (rc) return rc;
  if (ctx->device != M->device)
    return CMDS_FAIL(err, CMDS_EINPUT, "img2img: the models are on %s, the context on %s", nn_device_name(M->device),
                     nn_device_name(ctx->device));
  const nn_device dev = ctx->device;
  const int f = M->vae_scale;
  const int cfg = o->guidance > 1.0f;
  const int64_t B = cfg ? 2 : 1, C = M->vae.latent_channels, h = H / f, w = W / f, S = M->S, D = M->hidden;
  const int64_t lat = C * h * w, HW = (int64_t)H * W;
  for (int64_t i = 0; i < 3 * HW; i++)
    if (!(image[i] >= -1.0f && image[i] <= 1.0f))
      return CMDS_FAIL(err, CMDS_EINPUT, "img2img: input value %lld (channel %lld) is %g, outside [-1, 1]",
                       (long long)(i % HW), (long long)(i / HW), (double)image[i]);

  float *host = cmds_xmalloc(sizeof(float) * (size_t)(3 * HW > 2 * lat ? 3 * HW : 2 * lat));
  float *eps = cmds_xmalloc(sizeof(float) * (size_t)(2 * lat)), *noise = eps + lat;
  if (o->eps_vae && o->noise) {
    memcpy(eps, o->eps_vae, sizeof(float) * (size_t)lat);
    memcpy(noise, o->noise, sizeof(float) * (size_t)lat);
  } else { /* the pipeline's order: the posterior sample's draws, then the noise */
    cmds_rng r;
    cmds_rng_seed(&r, o->seed);
    for (int64_t i = 0; i < 2 * lat; i++) eps[i] = (float)cmds_rng_normal(&r);
    if (o->eps_vae) memcpy(eps, o->eps_vae, sizeof(float) * (size_t)lat);
    if (o->noise) memcpy(noise, o->noise, sizeof(float) * (size_t)lat);
  }

  size_t mark = nn_arena_mark(ctx->scratch);
  nn_tensor x, dec, mom, lt, nz, lin, pred, enc;
  int64_t sx[4] = {1, 3, H, W}, sm[4] = {1, 2 * C, h, w}, sl[4] = {1, C, h, w}, sb[4] = {B, C, h, w};
  int64_t se[3] = {B, S, D};
  if ((rc = nn_tensor_alloc(&x, ctx->scratch, NN_F32, 4, sx, err)) ||
      (rc = nn_tensor_alloc(&dec, ctx->scratch, NN_F32, 4, sx, err)) ||
      (rc = nn_tensor_alloc(&mom, ctx->scratch, NN_F32, 4, sm, err)) ||
      (rc = nn_tensor_alloc(&lt, ctx->scratch, NN_F32, 4, sl, err)) ||
      (rc = nn_tensor_alloc(&nz, ctx->scratch, NN_F32, 4, sl, err)) ||
      (rc = nn_tensor_alloc(&lin, ctx->scratch, NN_F32, 4, sb, err)) ||
      (rc = nn_tensor_alloc(&pred, ctx->scratch, NN_F32, 4, sb, err)) ||
      (rc = nn_tensor_alloc(&enc, ctx->scratch, NN_F32, 3, se, err)))
    goto done;
  {
    /* embeddings: (uncond, prompt) with guidance, else the prompt */
    nn_tensor hu = nn_tensor_view(M->uncond_emb, NN_F32, NN_CPU, 1, S, D, -1);
    nn_tensor hp = nn_tensor_view(M->prompt_emb, NN_F32, NN_CPU, 1, S, D, -1);
    nn_tensor d0 = nn_tensor_view(enc.data, NN_F32, dev, 1, S, D, -1);
    nn_tensor d1 = nn_tensor_view((float *)enc.data + S * D, NN_F32, dev, 1, S, D, -1);
    if (cfg) {
      if ((rc = nn_tensor_copy(&d0, &hu, err)) || (rc = nn_tensor_copy(&d1, &hp, err))) goto done;
    } else if ((rc = nn_tensor_copy(&d0, &hp, err))) {
      goto done;
    }
  }
  /* the posterior sample, scaled (host: C h w values) */
  {
    nn_tensor hx = nn_tensor_view((void *)image, NN_F32, NN_CPU, 1, 3, H, W);
    if ((rc = nn_tensor_copy(&x, &hx, err))) goto done;
    if ((rc = vae_encode(&M->vae, ctx, &mom, &x, err))) goto done;
    nn_tensor hm = nn_tensor_view(host, NN_F32, NN_CPU, 1, 2 * C, h, w);
    if ((rc = nn_tensor_copy(&hm, &mom, err))) goto done;
    const float sf = (float)M->vae.scaling_factor;
    for (int64_t i = 0; i < lat; i++) {
      float lv = host[lat + i];
      lv = lv < -30.0f ? -30.0f : lv > 20.0f ? 20.0f : lv;
      float sd = expf(0.5f * lv);
      host[i] = (host[i] + sd * eps[i]) * sf;
    }
    nn_tensor hl = nn_tensor_view(host, NN_F32, NN_CPU, 1, C, h, w);
    nn_tensor hn = nn_tensor_view(noise, NN_F32, NN_CPU, 1, C, h, w);
    if ((rc = nn_tensor_copy(&lt, &hl, err)) || (rc = nn_tensor_copy(&nz, &hn, err))) goto done;
  }
  /* schedule, noise at the first timestep run, denoise */
  if ((rc = ddim_set_timesteps(&M->sched, o->steps, err))) goto done;
  {
    int n_init = img2img_init_steps(o->steps, o->strength);
    int k0 = o->steps - n_init;
    if (k0 >= M->sched.n_steps) {
      rc = CMDS_FAIL(err, CMDS_EINTERNAL, "img2img: no timestep left (%d of %d)", k0, M->sched.n_steps);
      goto done;
    }
    int64_t t0 = M->sched.timesteps[k0];
    if ((rc = ddim_add_noise(&M->sched, ctx, &lt, &lt, &nz, &t0, err))) goto done;
    nn_tensor u = view4(pred.data, 0, dev, 1, C, h, w), c = view4(pred.data, lat, dev, 1, C, h, w);
    for (int k = k0; k < M->sched.n_steps; k++) {
      int64_t t = M->sched.timesteps[k];
      for (int64_t b = 0; b < B; b++) {
        nn_tensor dst = view4(lin.data, b * lat, dev, 1, C, h, w);
        if ((rc = nn_tensor_copy(&dst, &lt, err))) goto step_fail;
      }
      if ((rc = unet_forward(&M->unet, ctx, &pred, &lin, (double)t, &enc, err))) goto step_fail;
      if (cfg) { /* u + g (c - u) */
        if ((rc = nn_axpby_forward(ctx, &c, 1.0f, &c, -1.0f, &u, err)) ||
            (rc = nn_axpby_forward(ctx, &u, 1.0f, &u, o->guidance, &c, err)))
          goto step_fail;
      }
      if ((rc = ddim_step(&M->sched, ctx, &lt, &u, t, &lt, err))) goto step_fail;
      continue;
    step_fail:
      cmds_error_wrap(err, "img2img: step %d of %d (t = %lld)", k - k0 + 1, M->sched.n_steps - k0, (long long)t);
      goto done;
    }
  }
  /* decode, to [0, 1], channels last */
  if ((rc = vae_decode_scaled(&M->vae, ctx, &dec, &lt, err))) goto done;
  {
    nn_tensor hd = nn_tensor_view(host, NN_F32, NN_CPU, 1, 3, H, W);
    if ((rc = nn_tensor_copy(&hd, &dec, err))) goto done;
    for (int64_t i = 0; i < HW; i++)
      for (int ch = 0; ch < 3; ch++) {
        float v = host[ch * HW + i] / 2.0f + 0.5f;
        out[3 * i + ch] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
      }
  }
done:
  nn_arena_rewind(ctx->scratch, mark);
  free(host);
  free(eps);
  return rc;
}
