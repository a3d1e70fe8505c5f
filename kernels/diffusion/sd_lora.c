/* sd_lora: SD checkpoint loading, LoRA fine-tuning of the UNet, LoRA files; see sd_lora.h. */
#include "sd_lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <inttypes.h>

#include "clip.h"
#include "config.h"
#include "jsonread.h"
#include "nn/elementwise.h"
#include "nn/optim.h"
#include "rng.h"
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

/* ---- the fine-tune --------------------------------------------------------------------------- */

#define ALIGN256(x) (((size_t)(x) + 255) / 256 * 256)

sd_lora_opts sd_lora_opts_default(void) {
  sd_lora_opts o;
  memset(&o, 0, sizeof o);
  o.rank = 16;
  o.alpha = 16.0f;
  o.steps = 1000;
  o.lr = 1e-4f;
  o.beta1 = 0.9f;
  o.beta2 = 0.999f;
  o.adam_eps = 1e-8f;
  o.weight_decay = 1e-2f;
  o.max_grad_norm = 1.0f;
  o.seed = 0;
  return o;
}

struct sd_lora_trainer {
  sd_models *M;
  nn_ctx *ctx;        /* the caller's, or own_ctx */
  nn_ctx own_ctx;
  nn_arena own_scratch;
  int own;
  sd_lora_opts o;
  int k, R;
  int64_t C, h, w, lat;
  float *moments;     /* host (k, 2C, h, w) */
  float *host;        /* host (3 lat): latents, eps, noise */
  unet_tape *tape;
  nn_arena store;     /* enc, lat, noise, noisy, target, pred, dpred; AdamW moments */
  nn_tensor enc, x0, noise, noisy, target, pred, dpred;
  nn_tensor *mA, *vA, *mB, *vB; /* per adapter */
  const nn_tensor **grads;      /* dA, dB of every adapter, in order: the clipped global norm */
  cmds_rng rng;
  int64_t step;
  double grad_norm;
};

/* The trainer's own random stream: another key than the adapters' initial A. */
static uint64_t draw_seed(uint64_t seed) { return seed ^ 0x5d1a7e5eed000001ull; }

static size_t trainer_scratch(const sd_models *M, int R) {
  int f = M->vae_scale > 0 ? M->vae_scale : 8;
  int64_t h = R / f, S = M->S > 0 ? M->S : 77;
  size_t v = vae_workspace_bytes(&M->vae, 1, R, R) + ALIGN256(sizeof(float) * (size_t)(3 * (int64_t)R * R)) +
             ALIGN256(sizeof(float) * (size_t)(2 * M->vae.latent_channels * h * h));
  size_t u = unet_train_workspace_bytes(&M->unet, 1, h, h, S) + (64 << 10);
  return (v > u ? v : u) + (1 << 20);
}

int sd_lora_sizing_begin(const sd_models *M) {
  if (M->unet.lora) return 0;
  cmds_error err;
  /* the model itself is left as it was: the adapters are detached again by sd_lora_sizing_end */
  unet_model *u = (unet_model *)&M->unet;
  return unet_lora_attach(u, SD_LORA_SIZING_RANK, (float)SD_LORA_SIZING_RANK, 0, &err) == 0;
}

void sd_lora_sizing_end(const sd_models *M, int attached) {
  if (attached) unet_lora_detach((unet_model *)&M->unet);
}

size_t sd_lora_trainer_workspace_bytes(const sd_models *M, int R) {
  int a = sd_lora_sizing_begin(M);
  size_t b = trainer_scratch(M, R);
  sd_lora_sizing_end(M, a);
  return b;
}

void sd_lora_trainer_free(sd_lora_trainer *T) {
  if (!T) return;
  unet_tape_free(T->tape);
  nn_arena_free(&T->store);
  if (T->own) {
    nn_ctx_free(&T->own_ctx);
    nn_arena_free(&T->own_scratch);
  }
  free(T->moments);
  free(T->host);
  free(T->mA);
  free(T->vA);
  free(T->mB);
  free(T->vB);
  free(T->grads);
  free(T);
}

static int check_opts(const sd_lora_opts *o, cmds_error *err) {
  if (o->rank < 1 || !(o->alpha > 0) || !isfinite(o->alpha))
    return CMDS_FAIL(err, CMDS_EINPUT, "sd_lora: rank %d must be >= 1 and alpha %g positive", o->rank, (double)o->alpha);
  if (!(o->lr > 0) || !isfinite(o->lr) || !(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1) ||
      !(o->adam_eps > 0) || !(o->weight_decay >= 0) || !isfinite(o->weight_decay) || !(o->max_grad_norm >= 0))
    return CMDS_FAIL(err, CMDS_EINPUT, "sd_lora: bad optimiser settings (lr %g > 0, betas %g %g in [0, 1), eps %g > 0, "
                     "weight decay %g >= 0, max_grad_norm %g >= 0 (0: no clipping))", (double)o->lr, (double)o->beta1,
                     (double)o->beta2, (double)o->adam_eps, (double)o->weight_decay, (double)o->max_grad_norm);
  return CMDS_OK;
}

int sd_lora_trainer_new(sd_lora_trainer **Tp, sd_models *M, nn_ctx *ctx, const sd_lora_opts *o, const float *images,
                        int k, int R, cmds_error *err) {
  *Tp = NULL;
  int rc = check_opts(o, err);
  if (rc) return rc;
  const int f = M->vae_scale;
  if (!M->prompt_emb) return CMDS_FAIL(err, CMDS_EINPUT, "sd_lora_trainer_new: no prompt set (sd_models_set_prompt)");
  if (k < 1) return CMDS_FAIL(err, CMDS_EINPUT, "sd_lora_trainer_new: no training image (k = %d)", k);
  if (R < f || R % f)
    return CMDS_FAIL(err, CMDS_EINPUT, "sd_lora_trainer_new: resolution %d is not a positive multiple of the VAE scale "
                     "factor %d", R, f);
  if (ctx->device != M->device)
    return CMDS_FAIL(err, CMDS_EINPUT, "sd_lora_trainer_new: the models are on %s, the context on %s",
                     nn_device_name(M->device), nn_device_name(ctx->device));
  const int64_t npx = 3 * (int64_t)R * R;
  for (int64_t i = 0; i < (int64_t)k * npx; i++)
    if (!(images[i] >= -1.0f && images[i] <= 1.0f))
      return CMDS_FAIL(err, CMDS_EINPUT, "sd_lora_trainer_new: image %lld value %lld is %g, outside [-1, 1]",
                       (long long)(i / npx), (long long)(i % npx), (double)images[i]);
  if ((rc = unet_lora_attach(&M->unet, o->rank, o->alpha, o->seed, err))) return rc;

  sd_lora_trainer *T = cmds_xcalloc(1, sizeof *T);
  T->M = M, T->o = *o, T->k = k, T->R = R;
  T->C = M->vae.latent_channels, T->h = R / f, T->w = R / f, T->lat = T->C * T->h * T->w;
  cmds_rng_seed(&T->rng, draw_seed(o->seed));
  const int64_t C = T->C, h = T->h, w = T->w, lat = T->lat, S = M->S, D = M->hidden;
  const nn_device dev = M->device;
  if (!(T->tape = unet_tape_new(&M->unet, 1, h, w, S, err))) {
    rc = err->code ? err->code : CMDS_EINPUT;
    cmds_error_wrap(err, "sd_lora_trainer_new (resolution %d)", R);
    goto fail;
  }
  /* scratch: the caller's when it has room, else our own */
  size_t need = trainer_scratch(M, R);
  size_t used = ALIGN256(ctx->scratch ? ctx->scratch->used_bytes : 0);
  if (ctx->scratch && used + need <= ctx->scratch->size_bytes) {
    T->ctx = ctx;
  } else {
    if ((rc = nn_arena_init(&T->own_scratch, dev, need, err))) goto fail;
    if ((rc = nn_ctx_init(&T->own_ctx, dev, &T->own_scratch, ctx->stream, ctx->allow_tf32, err))) {
      nn_arena_free(&T->own_scratch);
      goto fail;
    }
    T->own = 1;
    T->ctx = &T->own_ctx;
  }
  /* persistent buffers */
  const unet_lora_set *L = M->unet.lora;
  size_t bytes = ALIGN256(sizeof(float) * (size_t)(S * D)) + 6 * ALIGN256(sizeof(float) * (size_t)lat) + 4096;
  for (int i = 0; i < L->n; i++)
    bytes += 2 * (ALIGN256(nn_tensor_bytes(&L->items[i].A)) + ALIGN256(nn_tensor_bytes(&L->items[i].B)));
  if ((rc = nn_arena_init(&T->store, dev, bytes, err))) goto fail;
  int64_t se[3] = {1, S, D}, sl[4] = {1, C, h, w};
  if ((rc = nn_tensor_alloc(&T->enc, &T->store, NN_F32, 3, se, err)) ||
      (rc = nn_tensor_alloc(&T->x0, &T->store, NN_F32, 4, sl, err)) ||
      (rc = nn_tensor_alloc(&T->noise, &T->store, NN_F32, 4, sl, err)) ||
      (rc = nn_tensor_alloc(&T->noisy, &T->store, NN_F32, 4, sl, err)) ||
      (rc = nn_tensor_alloc(&T->target, &T->store, NN_F32, 4, sl, err)) ||
      (rc = nn_tensor_alloc(&T->pred, &T->store, NN_F32, 4, sl, err)) ||
      (rc = nn_tensor_alloc(&T->dpred, &T->store, NN_F32, 4, sl, err)))
    goto fail;
  T->mA = cmds_xcalloc((size_t)L->n, sizeof(nn_tensor));
  T->vA = cmds_xcalloc((size_t)L->n, sizeof(nn_tensor));
  T->mB = cmds_xcalloc((size_t)L->n, sizeof(nn_tensor));
  T->vB = cmds_xcalloc((size_t)L->n, sizeof(nn_tensor));
  T->grads = cmds_xcalloc((size_t)L->n * 2, sizeof *T->grads);
  for (int i = 0; i < L->n; i++) T->grads[2 * i] = &L->items[i].dA, T->grads[2 * i + 1] = &L->items[i].dB;
  {
    size_t lo = T->store.used_bytes;
    for (int i = 0; i < L->n && !rc; i++) {
      const nn_tensor *A = &L->items[i].A, *B = &L->items[i].B;
      if ((rc = nn_tensor_alloc(&T->mA[i], &T->store, NN_F32, 2, A->shape, err)) ||
          (rc = nn_tensor_alloc(&T->vA[i], &T->store, NN_F32, 2, A->shape, err)) ||
          (rc = nn_tensor_alloc(&T->mB[i], &T->store, NN_F32, 2, B->shape, err)) ||
          (rc = nn_tensor_alloc(&T->vB[i], &T->store, NN_F32, 2, B->shape, err)))
        goto fail;
    }
    /* zero the moments: one host buffer of zeros copied over the block */
    size_t hi = T->store.used_bytes;
    void *z = cmds_xcalloc(1, hi - lo);
    nn_tensor hz = nn_tensor_view(z, NN_F32, NN_CPU, (int64_t)((hi - lo) / sizeof(float)), -1, -1, -1);
    nn_tensor dz = nn_tensor_view(T->store.base + lo, NN_F32, dev, (int64_t)((hi - lo) / sizeof(float)), -1, -1, -1);
    rc = nn_tensor_copy(&dz, &hz, err);
    free(z);
    if (rc) goto fail;
  }
  {
    nn_tensor he = nn_tensor_view(M->prompt_emb, NN_F32, NN_CPU, 1, S, D, -1);
    if ((rc = nn_tensor_copy(&T->enc, &he, err))) goto fail;
  }
  /* the posterior of every image, once */
  T->moments = cmds_xmalloc(sizeof(float) * (size_t)(k * 2 * lat));
  T->host = cmds_xmalloc(sizeof(float) * (size_t)(3 * lat));
  {
    nn_ctx *c = T->ctx;
    size_t mk = nn_arena_mark(c->scratch);
    nn_tensor x, mom;
    int64_t sx[4] = {1, 3, R, R}, sm[4] = {1, 2 * C, h, w};
    if (!(rc = nn_tensor_alloc(&x, c->scratch, NN_F32, 4, sx, err)) &&
        !(rc = nn_tensor_alloc(&mom, c->scratch, NN_F32, 4, sm, err)))
      for (int i = 0; i < k && !rc; i++) {
        nn_tensor hx = nn_tensor_view((void *)(images + i * npx), NN_F32, NN_CPU, 1, 3, R, R);
        nn_tensor hm = nn_tensor_view(T->moments + i * 2 * lat, NN_F32, NN_CPU, 1, 2 * C, h, w);
        if (!(rc = nn_tensor_copy(&x, &hx, err)) && !(rc = vae_encode(&M->vae, c, &mom, &x, err)))
          rc = nn_tensor_copy(&hm, &mom, err);
        if (rc) cmds_error_wrap(err, "sd_lora_trainer_new: encoding image %d", i);
      }
    nn_arena_rewind(c->scratch, mk);
    if (rc) goto fail;
  }
  *Tp = T;
  return CMDS_OK;
fail:
  sd_lora_trainer_free(T);
  unet_lora_detach(&M->unet);
  return rc;
}

int64_t sd_lora_trainer_done(const sd_lora_trainer *T) { return T->step; }
double sd_lora_trainer_grad_norm(const sd_lora_trainer *T) { return T->grad_norm; }

int sd_lora_trainer_step(sd_lora_trainer *T, const sd_step_draws *draws, double *loss, cmds_error *err) {
  sd_models *M = T->M;
  nn_ctx *ctx = T->ctx;
  unet_model *u = &M->unet;
  const int64_t lat = T->lat;
  const int64_t Tn = M->sched.num_train_timesteps;
  if (!u->lora || u->lora->n < 1 || !T->mA)
    return CMDS_FAIL(err, CMDS_EINPUT, "sd_lora_trainer_step: the UNet's LoRA was detached");
  float *x0 = T->host, *eps = T->host + lat, *noise = T->host + 2 * lat;
  int img;
  int64_t t;
  if (draws) {
    if (draws->image < 0 || draws->image >= T->k || !draws->eps_vae || !draws->noise || draws->t < 0 || draws->t >= Tn)
      return CMDS_FAIL(err, CMDS_EINPUT, "sd_lora_trainer_step: bad draws (image %d of %d, t %lld of %lld, eps_vae %s, "
                       "noise %s)", draws->image, T->k, (long long)draws->t, (long long)Tn,
                       draws->eps_vae ? "set" : "NULL", draws->noise ? "set" : "NULL");
    img = draws->image;
    t = draws->t;
    memcpy(eps, draws->eps_vae, sizeof(float) * (size_t)lat);
    memcpy(noise, draws->noise, sizeof(float) * (size_t)lat);
  } else { /* the script's order: the image, the posterior sample, the noise, the timestep */
    img = (int)cmds_rng_below(&T->rng, (uint64_t)T->k);
    for (int64_t i = 0; i < lat; i++) eps[i] = (float)cmds_rng_normal(&T->rng);
    for (int64_t i = 0; i < lat; i++) noise[i] = (float)cmds_rng_normal(&T->rng);
    t = (int64_t)cmds_rng_below(&T->rng, (uint64_t)Tn);
  }
  /* latents = (mean + exp(0.5 clamp(logvar, -30, 20)) eps) * scaling_factor */
  const float *mom = T->moments + (int64_t)img * 2 * lat;
  const float sf = (float)M->vae.scaling_factor;
  for (int64_t i = 0; i < lat; i++) {
    float lv = mom[lat + i];
    lv = lv < -30.0f ? -30.0f : lv > 20.0f ? 20.0f : lv;
    x0[i] = (mom[i] + expf(0.5f * lv) * eps[i]) * sf;
  }
  int rc;
  nn_tensor hx = nn_tensor_view(x0, NN_F32, NN_CPU, 1, T->C, T->h, T->w);
  nn_tensor hn = nn_tensor_view(noise, NN_F32, NN_CPU, 1, T->C, T->h, T->w);
  if ((rc = nn_tensor_copy(&T->x0, &hx, err)) || (rc = nn_tensor_copy(&T->noise, &hn, err)) ||
      (rc = ddim_add_noise(&M->sched, ctx, &T->noisy, &T->x0, &T->noise, &t, err)))
    goto fail;
  switch (M->sched.prediction) {
    case DDIM_PRED_EPSILON: rc = nn_tensor_copy(&T->target, &T->noise, err); break;
    case DDIM_PRED_V: rc = ddim_velocity(&M->sched, ctx, &T->target, &T->x0, &T->noise, &t, err); break;
    case DDIM_PRED_SAMPLE: rc = nn_tensor_copy(&T->target, &T->x0, err); break;
  }
  if (rc) goto fail;
  double tt = (double)t, l = 0;
  unet_lora_zero_grad(u); /* (a stopped step may have left some) */
  if ((rc = unet_forward_train(u, ctx, T->tape, &T->pred, &T->noisy, &tt, &T->enc, err)) ||
      (rc = nn_mse_forward(ctx, &l, &T->dpred, &T->pred, &T->target, err)))
    goto fail;
  if (!isfinite(l)) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "sd_lora: the loss is %g at step %lld (t = %lld): the fine-tune diverged "
                   "(lower augment.lr)", l, (long long)(T->step + 1), (long long)t);
    goto fail;
  }
  if ((rc = unet_backward(u, ctx, T->tape, &T->dpred, err))) goto fail;
  /* clip_grad_norm_ over every factor: one pass (on a GPU one wait, not one per tensor) */
  unet_lora_set *L = u->lora;
  double ss = 0;
  if ((rc = nn_sumsq_many_forward(ctx, &ss, T->grads, 2 * L->n, err))) goto fail;
  T->grad_norm = sqrt(ss);
  if (!isfinite(T->grad_norm)) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "sd_lora: the gradient norm is %g at step %lld: the fine-tune diverged",
                   T->grad_norm, (long long)(T->step + 1));
    goto fail;
  }
  if (T->o.max_grad_norm > 0) {
    float coef = T->o.max_grad_norm / ((float)T->grad_norm + 1e-6f);
    if (coef < 1.0f)
      for (int i = 0; i < L->n; i++)
        if ((rc = nn_scale_forward(ctx, &L->items[i].dA, &L->items[i].dA, coef, err)) ||
            (rc = nn_scale_forward(ctx, &L->items[i].dB, &L->items[i].dB, coef, err)))
          goto fail;
  }
  /* AdamW on every factor */
  const sd_lora_opts *o = &T->o;
  for (int i = 0; i < L->n; i++)
    if ((rc = nn_adamw_update(ctx, &L->items[i].A, &L->items[i].dA, &T->mA[i], &T->vA[i], o->lr, o->beta1, o->beta2,
                              o->adam_eps, o->weight_decay, T->step + 1, err)) ||
        (rc = nn_adamw_update(ctx, &L->items[i].B, &L->items[i].dB, &T->mB[i], &T->vB[i], o->lr, o->beta1, o->beta2,
                              o->adam_eps, o->weight_decay, T->step + 1, err)))
      goto fail;
  unet_lora_zero_grad(u);
  T->step++;
  if (loss) *loss = l;
  return CMDS_OK;
fail:
  return cmds_error_wrap(err, "sd_lora: step %lld (image %d, t = %lld)", (long long)(T->step + 1), img, (long long)t);
}

/* ---- trainer state --------------------------------------------------------------------------- */

#define SD_STATE_KIND "cmds.sd_lora_trainer_state.v1"

/* The options and sizes a state must agree on, as "key value" metadata (%.9g floats). */
static void state_meta(const sd_lora_trainer *T, char vals[][64], const char **keys, int *n) {
  const sd_lora_opts *o = &T->o;
  int i = 0;
#define KV(k, ...) (keys[i] = k, snprintf(vals[i], 64, __VA_ARGS__), i++)
  KV("rank", "%d", o->rank);
  KV("alpha", "%.9g", (double)o->alpha);
  KV("lr", "%.9g", (double)o->lr);
  KV("beta1", "%.9g", (double)o->beta1);
  KV("beta2", "%.9g", (double)o->beta2);
  KV("adam_eps", "%.9g", (double)o->adam_eps);
  KV("weight_decay", "%.9g", (double)o->weight_decay);
  KV("max_grad_norm", "%.9g", (double)o->max_grad_norm);
  KV("seed", "%" PRIu64, o->seed);
  KV("images", "%d", T->k);
  KV("resolution", "%d", T->R);
  KV("adapters", "%d", T->M->unet.lora ? T->M->unet.lora->n : 0);
#undef KV
  *n = i;
}

int sd_lora_trainer_save_state(const sd_lora_trainer *T, const char *path, cmds_error *err) {
  const unet_lora_set *L = T->M->unet.lora;
  if (!L) return CMDS_FAIL(err, CMDS_EINPUT, "sd_lora_trainer_save_state %s: the UNet's LoRA was detached", path);
  char vals[20][64], stepv[32], rngv[80];
  const char *keys[20];
  int nm = 0;
  state_meta(T, vals, keys, &nm);
  const char *kv[2 * 24];
  int q = 0;
  kv[q++] = "kind", kv[q++] = SD_STATE_KIND;
  snprintf(stepv, sizeof stepv, "%lld", (long long)T->step);
  kv[q++] = "step", kv[q++] = stepv;
  snprintf(rngv, sizeof rngv, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64, T->rng.s[0], T->rng.s[1],
           T->rng.s[2], T->rng.s[3]);
  kv[q++] = "rng", kv[q++] = rngv;
  for (int i = 0; i < nm; i++) kv[q++] = keys[i], kv[q++] = vals[i];

  int n = 6 * L->n, rc = CMDS_OK;
  cmds_st_out *t = cmds_xcalloc((size_t)n, sizeof *t);
  char (*names)[200] = cmds_xcalloc((size_t)n, sizeof *names);
  float **host = cmds_xcalloc((size_t)n, sizeof *host);
  static const char *what[6] = {"A", "B", "exp_avg.A", "exp_avg_sq.A", "exp_avg.B", "exp_avg_sq.B"};
  for (int i = 0; i < L->n && !rc; i++)
    for (int j = 0; j < 6 && !rc; j++) {
      const nn_tensor *src = j == 0 ? &L->items[i].A : j == 1 ? &L->items[i].B : j == 2 ? &T->mA[i]
                             : j == 3 ? &T->vA[i] : j == 4 ? &T->mB[i] : &T->vB[i];
      int z = 6 * i + j;
      snprintf(names[z], sizeof names[z], "%s.%s", L->names[i], what[j]);
      host[z] = cmds_xmalloc(nn_tensor_bytes(src));
      nn_tensor hv = nn_tensor_view(host[z], NN_F32, NN_CPU, src->shape[0], src->shape[1], -1, -1);
      rc = nn_tensor_copy(&hv, src, err);
      t[z] = (cmds_st_out){names[z], CMDS_ST_F32, 2, {src->shape[0], src->shape[1]}, host[z]};
    }
  if (!rc) rc = cmds_st_write(path, t, n, kv, q / 2, err);
  for (int i = 0; i < n; i++) free(host[i]);
  free(host);
  free(names);
  free(t);
  return rc;
}

int sd_lora_trainer_load_state(sd_lora_trainer *T, const char *path, cmds_error *err) {
  unet_lora_set *L = T->M->unet.lora;
  if (!L) return CMDS_FAIL(err, CMDS_EINPUT, "sd_lora_trainer_load_state %s: the UNet's LoRA was detached", path);
  cmds_st_file f;
  int rc = cmds_st_open(&f, path, err);
  if (rc) return rc;
  const char *kind = cmds_st_meta(&f, "kind"), *stepv = cmds_st_meta(&f, "step"), *rngv = cmds_st_meta(&f, "rng");
  if (!kind || strcmp(kind, SD_STATE_KIND)) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: __metadata__ 'kind' is '%s', '%s' expected (not a LoRA trainer state)", path,
                   kind ? kind : "(absent)", SD_STATE_KIND);
    goto done;
  }
  char vals[20][64];
  const char *keys[20];
  int nm = 0;
  state_meta(T, vals, keys, &nm);
  for (int i = 0; i < nm && !rc; i++) {
    const char *v = cmds_st_meta(&f, keys[i]);
    if (!v || strcmp(v, vals[i]))
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: __metadata__ '%s' is %s, this run has %s: the state belongs to another "
                     "fine-tune", path, keys[i], v ? v : "(absent)", vals[i]);
  }
  char *end = NULL;
  long long step = stepv ? strtoll(stepv, &end, 10) : -1;
  if (!rc && (!stepv || *end || step < 0))
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: __metadata__ 'step': a count expected, got '%s'", path, stepv ? stepv : "(absent)");
  cmds_rng r;
  if (!rc) {
    int ok = rngv && strlen(rngv) == 64;
    for (int i = 0; ok && i < 4; i++) {
      char part[17];
      memcpy(part, rngv + 16 * i, 16);
      part[16] = 0;
      r.s[i] = strtoull(part, &end, 16);
      ok = !*end;
    }
    if (!ok) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: __metadata__ 'rng': 64 hex digits expected", path);
  }
  static const char *what[6] = {"A", "B", "exp_avg.A", "exp_avg_sq.A", "exp_avg.B", "exp_avg_sq.B"};
  if (!rc && f.n_tensors != 6 * L->n)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: %d tensors, %d expected", path, f.n_tensors, 6 * L->n);
  /* every tensor checked before anything is overwritten (pass 0), then copied (pass 1) */
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < L->n && !rc; i++)
      for (int j = 0; j < 6 && !rc; j++) {
        nn_tensor *dst = j == 0 ? &L->items[i].A : j == 1 ? &L->items[i].B : j == 2 ? &T->mA[i]
                         : j == 3 ? &T->vA[i] : j == 4 ? &T->mB[i] : &T->vB[i];
        char name[220];
        snprintf(name, sizeof name, "%s.%s", L->names[i], what[j]);
        const cmds_st_tensor *t;
        if ((rc = cmds_st_get(&f, name, CMDS_ST_F32, 2, dst->shape, &t, err)) || !pass) continue;
        nn_tensor hv = nn_tensor_view((void *)t->data, NN_F32, NN_CPU, dst->shape[0], dst->shape[1], -1, -1);
        rc = nn_tensor_copy(dst, &hv, err);
      }
  if (!rc) {
    T->step = step;
    T->rng = r;
    unet_lora_zero_grad(&T->M->unet);
  }
done:
  cmds_st_close(&f);
  return rc;
}
