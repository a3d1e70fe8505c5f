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
#include "safetensors.h"
#include "safetensors_write.h"

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
  unet_lora_detach(&M->unet); /* before unet_free: it walks the transformer blocks */
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

/* ---- LoRA files ------------------------------------------------------------------------------ */

#define SD_LORA_TARGETS "\"to_k\",\n    \"to_out.0\",\n    \"to_q\",\n    \"to_v\""

/* A float as Python's json writes an int-valued LoraConfig field (4) or a float (8.5). */
static void fmt_num(char *b, size_t n, double v) {
  if (v == floor(v) && fabs(v) < 1e15)
    snprintf(b, n, "%lld", (long long)v);
  else
    snprintf(b, n, "%.17g", v);
}

int sd_lora_save(const unet_model *m, const char *path, const char *const *meta_kv, cmds_error *err) {
  const unet_lora_set *L = m->lora;
  if (!L || L->n < 1) return CMDS_FAIL(err, CMDS_EINPUT, "sd_lora_save %s: the UNet has no LoRA attached", path);
  int nmeta = 0;
  if (meta_kv)
    for (; meta_kv[2 * nmeta]; nmeta++) {
      if (!meta_kv[2 * nmeta + 1])
        return CMDS_FAIL(err, CMDS_EINPUT, "sd_lora_save %s: metadata key '%s' has no value", path, meta_kv[2 * nmeta]);
      if (!strcmp(meta_kv[2 * nmeta], "format") || !strcmp(meta_kv[2 * nmeta], "lora_adapter_metadata"))
        return CMDS_FAIL(err, CMDS_EINPUT, "sd_lora_save %s: metadata key '%s' is reserved", path, meta_kv[2 * nmeta]);
    }
  /* diffusers' adapter metadata: the LoraConfig kwargs under "unet.", json.dumps(indent=2, sort_keys=True) */
  char alpha[64], adapter[1024];
  fmt_num(alpha, sizeof alpha, (double)L->alpha);
  snprintf(adapter, sizeof adapter,
           "{\n  \"unet.bias\": \"none\",\n  \"unet.init_lora_weights\": \"gaussian\",\n  \"unet.lora_alpha\": %s,\n"
           "  \"unet.lora_dropout\": 0.0,\n  \"unet.r\": %d,\n  \"unet.target_modules\": [\n    " SD_LORA_TARGETS
           "\n  ],\n  \"unet.use_dora\": false,\n  \"unet.use_rslora\": false\n}",
           alpha, L->rank);
  const char **kv = cmds_xcalloc((size_t)(2 * (nmeta + 2)), sizeof *kv);
  kv[0] = "format", kv[1] = "pt", kv[2] = "lora_adapter_metadata", kv[3] = adapter;
  for (int i = 0; i < 2 * nmeta; i++) kv[4 + i] = meta_kv[i];

  int n = 2 * L->n, rc = CMDS_OK;
  cmds_st_out *t = cmds_xcalloc((size_t)n, sizeof *t);
  char (*names)[200] = cmds_xcalloc((size_t)n, sizeof *names);
  float **host = cmds_xcalloc((size_t)n, sizeof *host);
  for (int i = 0; i < L->n && !rc; i++)
    for (int j = 0; j < 2 && !rc; j++) {
      const nn_tensor *src = j ? &L->items[i].B : &L->items[i].A;
      int q = 2 * i + j;
      snprintf(names[q], sizeof names[q], "unet.%s.lora.%s.weight", L->names[i], j ? "up" : "down");
      host[q] = cmds_xmalloc(nn_tensor_bytes(src));
      nn_tensor hv = nn_tensor_view(host[q], NN_F32, NN_CPU, src->shape[0], src->shape[1], -1, -1);
      rc = nn_tensor_copy(&hv, src, err);
      t[q].name = names[q];
      t[q].dtype = CMDS_ST_F32;
      t[q].ndim = 2;
      t[q].shape[0] = src->shape[0];
      t[q].shape[1] = src->shape[1];
      t[q].data = host[q];
    }
  if (!rc) rc = cmds_st_write(path, t, n, kv, nmeta + 2, err);
  for (int i = 0; i < n; i++) free(host[i]);
  free(host);
  free(names);
  free(t);
  free(kv);
  return rc;
}

/* The adapter name and factor of a LoRA tensor name in any of the accepted forms:
 * [unet. | base_model.model.]<path>.(lora.down | lora.up | lora_A | lora_B[.default]).weight, or
 * <path>.alpha. *which: 0 A, 1 B, 2 alpha; -1 not a LoRA tensor of the UNet. */
static int parse_lora_name(const char *name, char *path, size_t n, int *which) {
  static const char *pre[] = {"unet.", "base_model.model."};
  static const struct { const char *suf; int w; } suf[] = {
      {".lora.down.weight", 0}, {".lora.up.weight", 1}, {".lora_A.weight", 0}, {".lora_B.weight", 1},
      {".lora_A.default.weight", 0}, {".lora_B.default.weight", 1}, {".alpha", 2}};
  const char *s = name;
  for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++)
    if (!strncmp(s, pre[i], strlen(pre[i]))) {
      s += strlen(pre[i]);
      break;
    }
  *which = -1;
  size_t ls = strlen(s);
  for (size_t i = 0; i < sizeof suf / sizeof suf[0]; i++) {
    size_t l = strlen(suf[i].suf);
    if (ls > l && !strcmp(s + ls - l, suf[i].suf) && ls - l < n) {
      memcpy(path, s, ls - l);
      path[ls - l] = 0;
      *which = suf[i].w;
      return 0;
    }
  }
  return -1;
}

/* appends to a bounded report ("a, b, c (+N more)") */
static void report_add(char *rep, size_t cap, int *count, const char *item) {
  size_t len = strlen(rep);
  if (*count < 12 && len + strlen(item) + 3 < cap) snprintf(rep + len, cap - len, "%s%s", len ? ", " : "", item);
  (*count)++;
}

static int read_float_tensor(const cmds_st_tensor *t, float *dst) {
  int64_t n = 1;
  for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
  if (t->dtype == CMDS_ST_F32)
    memcpy(dst, t->data, sizeof(float) * (size_t)n);
  else if (t->dtype == CMDS_ST_F16)
    nn_half_to_f32_n(dst, t->data, n, NN_F16);
  else if (t->dtype == CMDS_ST_BF16)
    nn_half_to_f32_n(dst, t->data, n, NN_BF16);
  else
    return -1;
  return 0;
}

/* rank / alpha / rslora / dora from diffusers' lora_adapter_metadata (0 when absent). */
static int lora_file_meta(const cmds_st_file *f, const char *path, int *have, double *r, double *alpha,
                          cmds_error *err) {
  *have = 0;
  const char *js = cmds_st_meta(f, "lora_adapter_metadata");
  if (!js) return CMDS_OK;
  char what[1200];
  snprintf(what, sizeof what, "%s: __metadata__ 'lora_adapter_metadata'", path);
  cmds_jv j;
  int rc = cmds_jv_parse(js, strlen(js), what, &j, err);
  if (rc) return rc;
  int dora = 0, rs = 0;
  if (!(rc = cmds_jv_get_num(&j, what, "unet.r", 0, 0, r, err)) &&
      !(rc = cmds_jv_get_num(&j, what, "unet.lora_alpha", 0, 0, alpha, err)) &&
      !(rc = cmds_jv_get_bool(&j, what, "unet.use_dora", 0, 0, &dora, err)) &&
      !(rc = cmds_jv_get_bool(&j, what, "unet.use_rslora", 0, 0, &rs, err))) {
    if (dora || rs)
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key '%s' is true: only plain LoRA is supported", what,
                     dora ? "unet.use_dora" : "unet.use_rslora");
    else if (cmds_jv_member(&j, "unet.rank_pattern") && cmds_jv_member(&j, "unet.rank_pattern")->type == CMDS_JV_OBJ &&
             cmds_jv_member(&j, "unet.rank_pattern")->n > 0)
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'unet.rank_pattern': per-module ranks are not supported", what);
    else if (cmds_jv_member(&j, "unet.alpha_pattern") && cmds_jv_member(&j, "unet.alpha_pattern")->type == CMDS_JV_OBJ &&
             cmds_jv_member(&j, "unet.alpha_pattern")->n > 0)
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: key 'unet.alpha_pattern': per-module alphas are not supported", what);
    else
      *have = *r > 0 || *alpha > 0;
  }
  cmds_jv_free(&j);
  return rc;
}

int sd_lora_load(unet_model *m, const char *path, cmds_error *err) {
  cmds_st_file f;
  int rc = cmds_st_open(&f, path, err);
  if (rc) return rc;
  char unknown[700] = "", badshape[700] = "", missing[700] = "", item[400], p[300];
  int n_unknown = 0, n_bad = 0, n_missing = 0, which;
  /* the rank: every A's first dimension */
  int rank = 0;
  double alpha_t = 0;
  int have_alpha_t = 0, n_lora = 0;
  for (int i = 0; i < f.n_tensors && !rc; i++) {
    const cmds_st_tensor *t = &f.tensors[i];
    if (parse_lora_name(t->name, p, sizeof p, &which) || !strncmp(t->name, "text_encoder", 12)) {
      report_add(unknown, sizeof unknown, &n_unknown, t->name);
      continue;
    }
    n_lora++;
    if (which == 2) {
      float a;
      if (t->ndim > 1 || (t->ndim == 1 && t->shape[0] != 1) || read_float_tensor(t, &a)) {
        snprintf(item, sizeof item, "%s (an alpha must be one float)", t->name);
        report_add(badshape, sizeof badshape, &n_bad, item);
      } else if (have_alpha_t && a != alpha_t) {
        rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: tensor '%s': alpha %g differs from another adapter's %g (per-module "
                       "alphas are not supported)", path, t->name, (double)a, alpha_t);
      } else {
        alpha_t = a, have_alpha_t = 1;
      }
      continue;
    }
    if (t->ndim != 2) {
      snprintf(item, sizeof item, "%s (%d dims, 2 expected)", t->name, t->ndim);
      report_add(badshape, sizeof badshape, &n_bad, item);
      continue;
    }
    if (t->dtype != CMDS_ST_F32 && t->dtype != CMDS_ST_F16 && t->dtype != CMDS_ST_BF16) {
      snprintf(item, sizeof item, "%s (dtype %s, F32/F16/BF16 expected)", t->name, cmds_st_dtype_name(t->dtype));
      report_add(badshape, sizeof badshape, &n_bad, item);
      continue;
    }
    int r = (int)(which == 0 ? t->shape[0] : t->shape[1]);
    if (rank == 0) rank = r;
    else if (r != rank)
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: tensor '%s': rank %d differs from another adapter's %d (per-module ranks "
                     "are not supported)", path, t->name, r, rank);
  }
  if (!rc && n_lora == 0) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: no LoRA tensor of the UNet in the file", path);
  int have_meta = 0;
  double r_meta = 0, alpha_meta = 0;
  if (!rc) rc = lora_file_meta(&f, path, &have_meta, &r_meta, &alpha_meta, err);
  if (!rc && have_meta && r_meta > 0 && (int)r_meta != rank)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: the metadata says r = %g, the tensors have rank %d", path, r_meta, rank);
  if (rc) {
    cmds_st_close(&f);
    return rc;
  }
  /* alpha: the metadata's lora_alpha, else the alpha tensors, else r (diffusers' default) */
  float alpha = have_meta && alpha_meta > 0 ? (float)alpha_meta : have_alpha_t ? (float)alpha_t : (float)rank;
  /* the same rank attached already: overwrite in place (a trainer built on the set keeps working) */
  if (!m->lora || m->lora->rank != rank) {
    if ((rc = unet_lora_attach(m, rank, alpha, 0, err))) {
      cmds_st_close(&f);
      return cmds_error_wrap(err, "%s", path);
    }
  }
  unet_lora_set *L = m->lora;
  L->alpha = alpha;
  for (int i = 0; i < L->n; i++) L->items[i].scale = alpha / (float)rank;
  unsigned char *seen = cmds_xcalloc((size_t)L->n, 2);
  float *host = NULL;
  size_t host_cap = 0;
  for (int i = 0; i < f.n_tensors && !rc; i++) {
    const cmds_st_tensor *t = &f.tensors[i];
    if (parse_lora_name(t->name, p, sizeof p, &which) || which == 2 || t->ndim != 2 || !strncmp(t->name, "text_encoder", 12))
      continue;
    int a = unet_lora_find(m, p);
    if (a < 0) {
      report_add(unknown, sizeof unknown, &n_unknown, t->name);
      continue;
    }
    nn_tensor *dst = which ? &L->items[a].B : &L->items[a].A;
    if (t->shape[0] != dst->shape[0] || t->shape[1] != dst->shape[1]) {
      snprintf(item, sizeof item, "%s (%lld, %lld), expected (%lld, %lld)", t->name, (long long)t->shape[0],
               (long long)t->shape[1], (long long)dst->shape[0], (long long)dst->shape[1]);
      report_add(badshape, sizeof badshape, &n_bad, item);
      continue;
    }
    if (seen[2 * a + which]) {
      snprintf(item, sizeof item, "%s (a second copy of %s.%s)", t->name, p, which ? "B" : "A");
      report_add(badshape, sizeof badshape, &n_bad, item);
      continue;
    }
    seen[2 * a + which] = 1;
    size_t need = (size_t)(t->shape[0] * t->shape[1]);
    if (need > host_cap) host = cmds_xrealloc(host, (host_cap = need) * sizeof(float));
    read_float_tensor(t, host);
    nn_tensor hv = nn_tensor_view(host, NN_F32, NN_CPU, t->shape[0], t->shape[1], -1, -1);
    rc = nn_tensor_copy(dst, &hv, err);
  }
  for (int i = 0; i < L->n && !rc; i++)
    for (int j = 0; j < 2; j++)
      if (!seen[2 * i + j]) {
        snprintf(item, sizeof item, "%s.%s", L->names[i], j ? "lora_B (lora.up)" : "lora_A (lora.down)");
        report_add(missing, sizeof missing, &n_missing, item);
      }
  if (!rc && (n_unknown || n_bad || n_missing)) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: not a LoRA of this UNet (rank %d):%s%s%s%s%s%s%s%s%s", path, rank,
                   n_missing ? " missing: " : "", missing, n_missing > 12 ? " ..." : "",
                   n_bad ? "; wrong: " : "", badshape, n_bad > 12 ? " ..." : "",
                   n_unknown ? "; unknown tensors: " : "", unknown, n_unknown > 12 ? " ..." : "");
  }
  free(seen);
  free(host);
  cmds_st_close(&f);
  if (rc) unet_lora_detach(m);
  else unet_lora_zero_grad(m);
  return rc;
}
