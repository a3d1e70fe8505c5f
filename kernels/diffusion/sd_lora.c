/* sd_lora: SD checkpoint loading, LoRA fine-tuning of the UNet, LoRA files; see sd_lora.h. */
#include "sd_lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clip.h"
#include "config.h"
#include "jsonread.h"

/* ---- the checkpoint ------------------------------------------------------------------------ */

static int sd_file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int sd_component_has_weights(const char *root, const char *name, const char *stem) {
  char p[1400];
  snprintf(p, sizeof(p), "%s/%s/%s.safetensors", root, name, stem);
  if (sd_file_exists(p)) return 1;
  snprintf(p, sizeof(p), "%s/%s/%s.fp16.safetensors", root, name, stem);
  return sd_file_exists(p);
}

static const char *sd_comps[][3] = {{"unet", "config.json", "diffusion_pytorch_model"},
                                    {"vae", "config.json", "diffusion_pytorch_model"},
                                    {"text_encoder", "config.json", "model"},
                                    {"scheduler", "scheduler_config.json", NULL},
                                    {"tokenizer", "vocab.json", NULL},
                                    {"tokenizer", "merges.txt", NULL}};

/* 0 when the checkpoint is complete, else CMDS_EINPUT naming the missing piece. */
static int sd_check_layout(const char *root, cmds_error *err) {
  char p[1400];
  cmds_jv idx;
  if (!root || !*root) return CMDS_FAIL(err, CMDS_EINPUT, "no Stable Diffusion checkpoint given");
  int rc = dfs_model_index(root, &idx, err);
  if (rc) return rc;
  const char *cls = NULL, *pt = NULL;
  snprintf(p, sizeof(p), "%s/model_index.json", root);
  rc = cmds_jv_get_str(&idx, p, "_class_name", 1, NULL, &cls, err);
  if (!rc && !strstr(cls, "StableDiffusion"))
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key '_class_name': a Stable Diffusion pipeline expected "
                   "(StableDiffusionPipeline, StableDiffusionImg2ImgPipeline), got '%s'", p, cls);
  if (!rc && !cmds_jv_get_str(&idx, p, "prediction_type", 0, "", &pt, err) && *pt)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'prediction_type' = '%s': a Marigold checkpoint, not Stable Diffusion",
                   p, pt);
  cmds_jv_free(&idx);
  if (rc) return rc;
  for (size_t i = 0; i < sizeof(sd_comps) / sizeof(sd_comps[0]); i++) {
    snprintf(p, sizeof(p), "%s/%s/%s", root, sd_comps[i][0], sd_comps[i][1]);
    if (!sd_file_exists(p)) return CMDS_FAIL(err, CMDS_EINPUT, "%s missing (the %s of the SD checkpoint)", p, sd_comps[i][0]);
    if (sd_comps[i][2] && !sd_component_has_weights(root, sd_comps[i][0], sd_comps[i][2]))
      return CMDS_FAIL(err, CMDS_EINPUT, "%s/%s: no %s.safetensors (or .fp16.safetensors)", root, sd_comps[i][0],
                       sd_comps[i][2]);
  }
  return CMDS_OK;
}

int sd_have_weights(const char *root, char *why, size_t n) {
  cmds_error err = {0};
  if (sd_check_layout(root, &err)) {
    if (n) snprintf(why, n, "%s", err.msg);
    return 0;
  }
  if (n) why[0] = 0;
  return 1;
}

void sd_models_free(sd_models *M) {
  if (!M) return;
  unet_free(&M->unet);
  vae_free(&M->vae);
  ddim_free(&M->sched);
  free(M->prompt_emb);
  free(M->uncond_emb);
  memset(M, 0, sizeof(*M));
}

int sd_models_load(sd_models *M, const char *root, nn_device dev, cmds_error *err) {
  memset(M, 0, sizeof(*M));
  int rc = sd_check_layout(root, err);
  if (rc) return rc;
  snprintf(M->root, sizeof(M->root), "%s", root);
  M->device = dev;
  if ((rc = ddim_load(&M->sched, root, "scheduler", err))) goto fail;
  if ((rc = vae_load(&M->vae, root, "vae", dev, err))) goto fail;
  M->vae_scale = vae_scale_factor(&M->vae);
  if ((rc = unet_load(&M->unet, root, "unet", dev, err))) goto fail;
  if (unet_in_channels(&M->unet) != M->vae.latent_channels) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s/unet/config.json: key 'in_channels': %lld expected (the VAE's "
                   "latent_channels), got %d", root, (long long)M->vae.latent_channels, unet_in_channels(&M->unet));
    goto fail;
  }
  if (M->unet.cfg.out_channels != M->vae.latent_channels) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s/unet/config.json: key 'out_channels': %lld expected (the VAE's "
                   "latent_channels), got %lld", root, (long long)M->vae.latent_channels,
                   (long long)M->unet.cfg.out_channels);
    goto fail;
  }
  {
    char p[1400];
    cmds_jv tc;
    int64_t hidden = 0;
    snprintf(p, sizeof(p), "%s/text_encoder/config.json", root);
    if ((rc = cmds_jv_read_file(p, &tc, err))) goto fail;
    rc = cmds_jv_get_int(&tc, p, "hidden_size", 1, 0, &hidden, err);
    cmds_jv_free(&tc);
    if (rc) goto fail;
    if (hidden != M->unet.cfg.cross_attention_dim) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'hidden_size': %lld, but the UNet's cross_attention_dim is %lld", p,
                     (long long)hidden, (long long)M->unet.cfg.cross_attention_dim);
      goto fail;
    }
  }
  return CMDS_OK;
fail:
  sd_models_free(M);
  return rc;
}

int sd_models_set_prompt(sd_models *M, const char *prompt, const char *negative, cmds_error *err) {
  float *e = NULL, *u = NULL;
  int64_t S = 0, D = 0, S2 = 0, D2 = 0;
  int rc = clip_encode_prompt_ex(M->root, prompt ? prompt : "", 1, &e, &S, &D, err);
  if (rc) return cmds_error_wrap(err, "sd: encoding the prompt '%s'", prompt ? prompt : "");
  if ((rc = clip_encode_prompt_ex(M->root, negative ? negative : "", 1, &u, &S2, &D2, err))) {
    free(e);
    return cmds_error_wrap(err, "sd: encoding the negative prompt '%s'", negative ? negative : "");
  }
  if (D != M->unet.cfg.cross_attention_dim || S2 != S || D2 != D) {
    free(e);
    free(u);
    return CMDS_FAIL(err, CMDS_EINPUT, "sd: %s: the text encoder gives (%lld, %lld) embeddings, the UNet's "
                     "cross_attention_dim is %lld", M->root, (long long)S, (long long)D,
                     (long long)M->unet.cfg.cross_attention_dim);
  }
  free(M->prompt_emb);
  free(M->uncond_emb);
  M->prompt_emb = e;
  M->uncond_emb = u;
  M->S = S;
  M->hidden = D;
  return CMDS_OK;
}
