/* category: see category.h. */
#define _GNU_SOURCE
#include "category.h"

#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats.h"
#include "fsutil.h"
#include "h5io.h"
#include "image/resize.h"
#include "json.h"
#include "jsonread.h"
#include "progress.h"
#include "record.h"
#include "rng.h"
#include "sample_cache.h"
#include "source.h"

#define LORA_SCHEMA "cmds.augment_lora"
#define CKPT_SCHEMA "cmds.augment_checkpoint"
#define IMAGES_SCHEMA "cmds.augment_images"

void aug_prompt(const char *templ, const char *category, char *out, size_t cap) {
  char name[160];
  snprintf(name, sizeof name, "%s", category);
  for (char *p = name; *p; p++)
    if (*p == '_') *p = ' ';
  size_t used = 0;
  out[0] = 0;
  for (const char *p = templ; *p && used + 1 < cap;) {
    if (!strncmp(p, "{category}", 10)) {
      used += (size_t)snprintf(out + used, cap - used, "%s", name);
      p += 10;
    } else {
      out[used++] = *p++;
      out[used] = 0;
    }
  }
  if (used >= cap) out[cap - 1] = 0;
}

static uint64_t mix3(uint64_t a, uint64_t b, uint64_t c) {
  uint64_t x = a, h = cmds_splitmix64(&x);
  x = h ^ b;
  h = cmds_splitmix64(&x);
  x = h ^ c;
  return cmds_splitmix64(&x);
}

/* Seeds keyed by (augment.seed, dataset, category, k) and a purpose, never by the rank. */
static uint64_t category_seed(const aug_env *env, const char *category, int64_t k, uint64_t purpose) {
  char id[200];
  snprintf(id, sizeof id, "%s/%s/k%lld", env->dataset, category, (long long)k);
  return mix3((uint64_t)strtoull(env->cfg.value[CK_AUG_SEED], NULL, 10), cmds_hash_str(id), purpose);
}
#define SEED_LORA 0x4c4f5241ull           /* the trainer (LoRA init, image order, noise, t) */
#define SEED_IMAGE(j) (0x494d4700000000ull + (uint64_t)(j)) /* generated image j */

/* Identities: what shapes each output, as one line. The LoRA of one k depends on the
 * checkpoint, the support images (the cache's sample list, k, where the pixels came from) and
 * the training keys; the generations also on the img2img keys (image j is the same whatever
 * the image count); the cache's augmented_id names the shots list instead of one k and adds
 * the count and the cache resolution. */
static const int train_keys[] = {CK_AUG_PROMPT, CK_AUG_RANK,          CK_AUG_ALPHA,         CK_AUG_STEPS,
                                 CK_AUG_LR,     CK_AUG_WEIGHT_DECAY,  CK_AUG_MAX_GRAD_NORM, CK_AUG_BATCH,
                                 CK_AUG_RESOLUTION, CK_AUG_SEED};
static const int gen_keys[] = {CK_AUG_STRENGTH, CK_AUG_INFERENCE_STEPS, CK_AUG_GUIDANCE};

static void add_keys(const cmds_config *c, const int *keys, int n, char *out, size_t cap) {
  size_t used = strlen(out);
  for (int i = 0; i < n && used < cap; i++)
    used += (size_t)snprintf(out + used, cap - used, "%s%s=%s", used ? ";" : "", cmds_keys[keys[i]].name + 8,
                             c->value[keys[i]]);
}

typedef struct idents {
  char train[CMDS_SC_AUG_ID_LEN], gen[CMDS_SC_AUG_ID_LEN], aug[CMDS_SC_AUG_ID_LEN];
} idents;

static int make_idents(const aug_env *env, const cmds_sc_info *si, int64_t k, const char *shots, idents *id,
                       cmds_error *err) {
  char head[400], support[CMDS_SC_IDENTITY_LEN];
  /* The support images: the originals (--data) are named by the sample list; the cached RGB
   * also depends on prep's settings (its resolution above all), so the whole cache identity. */
  if (env->data) snprintf(support, sizeof support, "%s", si->sample_list_hash);
  else cmds_sc_identity(si, support, sizeof support);
  if (shots) /* the cache's identity: every k of the shots list */
    snprintf(head, sizeof head, "sd=%s;source=%s;support=%s;shots=%s", env->checkpoint_id, env->data ? "dataset" : "cache",
             support, shots);
  else
    snprintf(head, sizeof head, "sd=%s;source=%s;support=%s:%lld", env->checkpoint_id, env->data ? "dataset" : "cache",
             support, (long long)k);
  snprintf(id->train, sizeof id->train, "%s", head);
  add_keys(&env->cfg, train_keys, (int)(sizeof train_keys / sizeof train_keys[0]), id->train, sizeof id->train);
  snprintf(id->gen, sizeof id->gen, "%s", id->train);
  add_keys(&env->cfg, gen_keys, (int)(sizeof gen_keys / sizeof gen_keys[0]), id->gen, sizeof id->gen);
  int n = snprintf(id->aug, sizeof id->aug, "%s;images=%s;size=%lld", id->gen, env->cfg.value[CK_AUG_IMAGES],
                   (long long)si->resolution);
  if (n < 0 || (size_t)n >= sizeof id->aug - 1)
    return CMDS_FAIL(err, CMDS_EINPUT, "the augmented samples' identity is longer than %d characters (a shorter "
                     "augment.prompt?)", CMDS_SC_AUG_ID_LEN - 1);
  return CMDS_OK;
}

/* The string member `key` of a small JSON file; 0 when the file or the member is missing. */
static int json_file_str(const char *path, const char *key, char *out, size_t cap) {
  if (!cmds_is_file(path)) return 0;
  cmds_jv v;
  cmds_error e = {0};
  if (cmds_jv_read_file(path, &v, &e)) return 0;
  const char *s = NULL;
  int ok = !cmds_jv_get_str(&v, path, key, 1, NULL, &s, &e) && s;
  if (ok) snprintf(out, cap, "%s", s);
  cmds_jv_free(&v);
  return ok;
}

static int write_json(const char *path, cmds_json *j, cmds_error *err) {
  cmds_json_raw(j, "\n");
  int rc = cmds_write_file_atomic(path, j->buf, j->len, err);
  cmds_json_free(j);
  return rc;
}

/* Removes every <j>.png (and stray .partial) of an images folder. */
static void clear_images(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char p[4400];
  while ((e = readdir(d))) {
    size_t l = strlen(e->d_name);
    if ((l > 4 && !strcmp(e->d_name + l - 4, ".png")) || (l > 8 && !strcmp(e->d_name + l - 8, ".partial"))) {
      snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
      unlink(p);
    }
  }
  closedir(d);
}

/* Everything one category holds. */
typedef struct cat_state {
  char final[4096], work[4200], rec_path[4200], dir[4400], images_dir[4500];
  char lora[4600], lora_json[4600], ckpt[4600], ckpt_json[4600], images_json[4600];
  char base[4200];      /* OUT/augment/<dataset>/<category>; dir = base/k<k> */
  cmds_sc_info si;
  int64_t nsup;        /* support rows of the cache */
  int64_t nload;       /* support rows read: the largest k of the shots list */
  int64_t k;           /* the k in work: the LoRA sees support rows [0, k) */
  int S, R;
  char (*ids)[CMDS_SC_ID_LEN + 1]; /* (nsup) support sample ids (the first nload read) */
  int32_t *native_hw, *pad;        /* (nsup, 2), (nsup, 3) */
  float *images;       /* (nload, 3, R, R) in [-1, 1] */
  idents id;
  char prompt[256];
  double *losses;      /* (steps) */
} cat_state;

static void cat_state_free(cat_state *s) {
  cmds_sc_info_free(&s->si);
  free(s->ids);
  free(s->native_hw);
  free(s->pad);
  free(s->images);
  free(s->losses);
}

/* The cache as it is now: info, support rows, the augmented group's status. */
static int read_cache(const aug_env *env, cat_state *s, int64_t *aug_n, char *aug_id, size_t cap, cmds_error *err) {
  hid_t f;
  int rc = cmds_h5_open_read(&f, s->final, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, err);
  if (rc) return rc;
  rc = cmds_sc_read_info(f, s->final, &s->si, err);
  if (!rc) rc = cmds_sc_aug_status(f, s->final, aug_n, aug_id, cap, err);
  cmds_sc_group g;
  memset(&g, 0, sizeof g);
  if (!rc) rc = cmds_sc_group_open(f, "support", s->final, &g, err);
  if (!rc && g.n < 1) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: no support samples to fine-tune on", s->final);
  if (!rc) {
    s->nsup = g.n;
    s->S = g.size;
    s->ids = cmds_xcalloc((size_t)s->nsup, sizeof *s->ids);
    s->native_hw = cmds_xcalloc((size_t)s->nsup * 2, sizeof(int32_t));
    s->pad = cmds_xcalloc((size_t)s->nsup * 3, sizeof(int32_t));
  }
  (void)env;
  if (g.group > 0) cmds_sc_group_close(&g);
  H5Fclose(f);
  return rc;
}

/* Support row i -> the R x R image the LoRA sees, (3, R, R) in [-1, 1]: the original on prep's
 * padded square (--data) or the cached RGB, Pillow-bicubic-resized to R (est_source.h checks
 * the original against the cache). */
static int load_support(const aug_env *env, cat_state *s, cmds_error *err) {
  hid_t f;
  int rc = cmds_h5_open_read(&f, s->final, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, err);
  if (rc) return rc;
  cmds_sc_group g;
  memset(&g, 0, sizeof g);
  rc = cmds_sc_group_open(f, "support", s->final, &g, err);
  cmds_sample_batch b;
  cmds_sample_batch_alloc(&b, 1, s->S);
  est_source src = {.data_root = env->data, .dataset = s->si.dataset, .category = s->si.category};
  const size_t rpx = (size_t)s->R * (size_t)s->R;
  s->images = cmds_xmalloc(sizeof(float) * 3 * rpx * (size_t)s->nload);
  uint8_t *small = cmds_xmalloc(3 * rpx);
  for (int64_t i = 0; i < s->nload && !rc; i++) {
    rc = cmds_sc_group_read(&g, i, 1, &b, err);
    if (rc) break;
    memcpy(s->ids[i], b.sample_id, CMDS_SC_ID_LEN);
    s->ids[i][CMDS_SC_ID_LEN] = 0;
    memcpy(s->native_hw + 2 * i, b.native_hw, 2 * sizeof(int32_t));
    memcpy(s->pad + 3 * i, b.pad, 3 * sizeof(int32_t));
    float *rgb = NULL;
    int side = 0;
    rc = est_source_image(&src, &b, &rgb, &side, err);
    if (rc) break;
    /* back to the 8-bit pixels est_source read (v = u / 255 exactly), then Pillow's bicubic */
    size_t px = (size_t)side * (size_t)side;
    uint8_t *u8 = cmds_xmalloc(3 * px);
    for (size_t p = 0; p < 3 * px; p++) u8[p] = (uint8_t)lrintf(rgb[p] * 255.0f);
    free(rgb);
    if (side == s->R) memcpy(small, u8, 3 * rpx);
    else cmds_resize_bicubic_aa_u8(u8, side, side, 3, small, s->R, s->R);
    free(u8);
    /* (R, R, 3) u8 -> (3, R, R), x / 255 * 2 - 1 (diffusers' VaeImageProcessor) */
    float *dst = s->images + (size_t)i * 3 * rpx;
    for (size_t p = 0; p < rpx; p++)
      for (int c = 0; c < 3; c++) dst[(size_t)c * rpx + p] = (float)small[p * 3 + (size_t)c] / 255.0f * 2.0f - 1.0f;
  }
  free(small);
  cmds_sample_batch_free(&b);
  if (g.group > 0) cmds_sc_group_close(&g);
  H5Fclose(f);
  return rc;
}

/* The scratch arena of env->ctx, grown to `need` bytes (the context is made again then). */
static int ensure_scratch(aug_env *env, size_t need, cmds_error *err) {
  int rc = CMDS_OK;
  if (need > env->scratch_bytes) {
    if (env->ctx_ok) nn_ctx_free(&env->ctx);
    env->ctx_ok = 0;
    if (env->scratch_bytes) nn_arena_free(&env->scratch);
    env->scratch_bytes = 0;
    rc = nn_arena_init(&env->scratch, env->device, need, err);
    if (rc) return rc;
    env->scratch_bytes = need;
  }
  if (!env->ctx_ok) {
    rc = nn_ctx_init(&env->ctx, env->device, &env->scratch, NULL, 0, err);
    if (!rc) env->ctx_ok = 1;
  }
  return rc;
}

/* The models, loaded on first use and kept for the rank's next categories. */
static int ensure_models(aug_env *env, int R, cmds_error *err) {
  int rc = CMDS_OK;
  if (!env->loaded) {
    rc = sd_models_load(&env->M, env->sd, env->device, err);
    if (rc) return rc;
    env->loaded = 1;
  }
  if (R % env->M.vae_scale)
    return CMDS_FAIL(err, CMDS_EINPUT, "augment.resolution=%d: not a multiple of the VAE's scale factor %d (%s/vae)", R,
                     env->M.vae_scale, env->sd);
  int64_t down = (int64_t)1 << (env->M.unet.cfg.n_blocks > 0 ? env->M.unet.cfg.n_blocks - 1 : 0);
  if ((R / env->M.vae_scale) % down)
    return CMDS_FAIL(err, CMDS_EINPUT, "augment.resolution=%d: the latent side %d must be a multiple of %lld (the UNet "
                     "halves it %lld times; use a multiple of %lld)", R, R / env->M.vae_scale, (long long)down,
                     (long long)(env->M.unet.cfg.n_blocks - 1), (long long)(down * env->M.vae_scale));
  return rc;
}

void aug_env_free(aug_env *env) {
  if (env->ctx_ok) nn_ctx_free(&env->ctx);
  if (env->scratch_bytes) nn_arena_free(&env->scratch);
  if (env->loaded) sd_models_free(&env->M);
  env->ctx_ok = env->loaded = 0;
  env->scratch_bytes = 0;
}

static int save_checkpoint(const aug_env *env, const cat_state *s, sd_lora_trainer *T, int64_t done, int64_t steps,
                           int stopped, cmds_error *err) {
  (void)env;
  /* the sidecar first: a checkpoint on disk is always described by the sidecar beside it */
  cmds_json j;
  cmds_json_init(&j, 2);
  cmds_json_object_begin(&j);
  cmds_json_kv_str(&j, "schema", CKPT_SCHEMA);
  cmds_json_kv_int(&j, "schema_version", 1);
  cmds_json_kv_str(&j, "train_id", s->id.train);
  cmds_json_kv_int(&j, "step", done);
  cmds_json_kv_int(&j, "steps", steps);
  cmds_json_kv_str(&j, "reason", stopped ? "signal" : "interval");
  cmds_json_key(&j, "losses");
  cmds_json_array_begin(&j);
  for (int64_t i = 0; i < done; i++) cmds_json_num(&j, s->losses[i]);
  cmds_json_array_end(&j);
  cmds_json_object_end(&j);
  int rc = write_json(s->ckpt_json, &j, err);
  if (!rc) rc = sd_lora_trainer_save_state(T, s->ckpt, err);
  return rc;
}

/* Fine-tunes the LoRA (resuming a checkpoint of the same settings) and saves it. */
static int train_lora(aug_env *env, cat_state *s, const char *category, aug_result *res, cmds_error *err) {
  const cmds_config *c = &env->cfg;
  sd_lora_opts o = sd_lora_opts_default();
  o.rank = (int)strtol(c->value[CK_AUG_RANK], NULL, 10);
  o.alpha = (float)strtod(c->value[CK_AUG_ALPHA], NULL);
  o.steps = (int)strtol(c->value[CK_AUG_STEPS], NULL, 10);
  o.lr = (float)strtod(c->value[CK_AUG_LR], NULL);
  o.weight_decay = (float)strtod(c->value[CK_AUG_WEIGHT_DECAY], NULL);
  o.max_grad_norm = (float)strtod(c->value[CK_AUG_MAX_GRAD_NORM], NULL);
  o.seed = category_seed(env, category, s->k, SEED_LORA);
  free(s->losses);
  s->losses = cmds_xcalloc((size_t)o.steps, sizeof(double));
  sd_lora_trainer *T = NULL;
  int rc = ensure_scratch(env, sd_lora_trainer_workspace_bytes(&env->M, s->R), err);
  if (rc) return rc;
  rc = sd_lora_trainer_new(&T, &env->M, &env->ctx, &o, s->images, (int)s->k, s->R, err);
  if (rc) return rc;
  /* Resume: a checkpoint whose sidecar names these settings. */
  int64_t start = 0;
  char have[CMDS_SC_AUG_ID_LEN];
  if (cmds_is_file(s->ckpt) && json_file_str(s->ckpt_json, "train_id", have, sizeof have) && !strcmp(have, s->id.train)) {
    rc = sd_lora_trainer_load_state(T, s->ckpt, err);
    if (rc) {
      rc = cmds_error_wrap(err, "resuming %s (remove it, or rerun with --force)", s->ckpt);
    } else {
      start = sd_lora_trainer_done(T);
      cmds_jv v;
      cmds_error e = {0};
      int nl = 0;
      if (!cmds_jv_read_file(s->ckpt_json, &v, &e)) {
        cmds_jv_get_nums(&v, s->ckpt_json, "losses", 0, o.steps, s->losses, &nl, &e);
        cmds_jv_free(&v);
      }
      fprintf(stderr, "[augment] %s/%s k%lld: resuming the LoRA fine-tune from its checkpoint at step %lld\n",
              env->dataset, category, (long long)s->k, (long long)start);
    }
  } else if (cmds_is_file(s->ckpt)) {
    fprintf(stderr, "[augment] %s/%s: a checkpoint of other settings or inputs is replaced (%s)\n", env->dataset,
            category, s->ckpt);
    unlink(s->ckpt);
    unlink(s->ckpt_json);
  }
  res->start_step = start;
  char label[300];
  snprintf(label, sizeof label, "%s/%s k%lld lora", env->dataset, category, (long long)s->k);
  cmds_progress prog;
  cmds_progress_begin(&prog, &env->self, "augment", label, o.steps - start);
  const char *kill_at = getenv("CMDS_TEST_KILL_AT_STEP"), *sig_at = getenv("CMDS_TEST_SIGNAL_AT_STEP");
  double t0 = cmds_now();
  int64_t step = start;
  for (; step < o.steps && !rc; step++) {
    double loss = 0;
    rc = sd_lora_trainer_step(T, NULL, &loss, err);
    if (rc) break;
    s->losses[step] = loss;
    cmds_progress_step(&prog, 1);
    int64_t done = step + 1;
    if (sig_at && done == atoll(sig_at)) raise(SIGTERM); /* test: a stop signal */
    int stopped = cmds_stop_requested();
    if (done < o.steps && (stopped || (env->checkpoint_every > 0 && done % env->checkpoint_every == 0)))
      rc = save_checkpoint(env, s, T, done, o.steps, stopped, err);
    if (!rc && kill_at && done == atoll(kill_at)) raise(SIGKILL); /* test: a hard kill */
    if (!rc && stopped && done < o.steps) {
      step++;
      rc = CMDS_FAIL(err, CMDS_EINTERRUPTED, "%s: stopped by a signal at step %lld of %d; checkpoint written, rerun to "
                     "resume", label, (long long)done, o.steps);
      break;
    }
  }
  res->steps_run = step - start;
  res->final_loss = step > 0 ? s->losses[step - 1] : NAN;
  double train_s = cmds_now() - t0;
  if (!rc) {
    cmds_progress_end(&prog);
    char steps_s[32], rank_s[32];
    snprintf(steps_s, sizeof steps_s, "%d", o.steps);
    snprintf(rank_s, sizeof rank_s, "%d", o.rank);
    const char *meta[] = {"cmds.schema", LORA_SCHEMA, "cmds.train_id", s->id.train, "cmds.dataset", env->dataset,
                          "cmds.category", category, "cmds.prompt", s->prompt, "cmds.steps", steps_s,
                          "cmds.rank", rank_s, "cmds.code_version", cmds_code_version(), NULL};
    rc = sd_lora_save(&env->M.unet, s->lora, meta, err);
    if (!rc) {
      cmds_json j;
      cmds_json_init(&j, 2);
      cmds_json_object_begin(&j);
      cmds_json_kv_str(&j, "schema", LORA_SCHEMA);
      cmds_json_kv_int(&j, "schema_version", 1);
      cmds_json_kv_str(&j, "train_id", s->id.train);
      cmds_json_kv_str(&j, "file", "lora.safetensors");
      cmds_json_kv_str(&j, "dataset", env->dataset);
      cmds_json_kv_str(&j, "category", category);
      cmds_json_kv_int(&j, "k", s->k);
      cmds_json_kv_str(&j, "prompt", s->prompt);
      cmds_json_kv_str(&j, "sd", env->sd);
      cmds_json_kv_str(&j, "checkpoint_id", env->checkpoint_id);
      cmds_json_kv_str(&j, "source", env->data ? "dataset" : "cache");
      cmds_json_key(&j, "support");
      cmds_json_array_begin(&j);
      for (int64_t i = 0; i < s->k; i++) cmds_json_str(&j, s->ids[i]);
      cmds_json_array_end(&j);
      cmds_json_key(&j, "config");
      cmds_config_json(&env->cfg, &j, CMDS_KEY_AUGMENT);
      char sd[32];
      snprintf(sd, sizeof sd, "%llu", (unsigned long long)o.seed);
      cmds_json_kv_str(&j, "trainer_seed", sd);
      cmds_json_kv_int(&j, "steps", o.steps);
      cmds_json_kv_int(&j, "resumed_from_step", start);
      cmds_json_kv_num(&j, "first_loss", o.steps > 0 ? s->losses[0] : NAN);
      cmds_json_kv_num(&j, "final_loss", res->final_loss);
      cmds_json_key(&j, "losses");
      cmds_json_array_begin(&j);
      for (int i = 0; i < o.steps; i++) cmds_json_num(&j, s->losses[i]);
      cmds_json_array_end(&j);
      cmds_json_kv_num(&j, "seconds_per_step", res->steps_run ? train_s / (double)res->steps_run : 0);
      cmds_json_kv_str(&j, "device", nn_device_name(env->device));
      cmds_json_kv_str(&j, "code_version", cmds_code_version());
      cmds_json_object_end(&j);
      rc = write_json(s->lora_json, &j, err);
    }
    if (!rc) {
      unlink(s->ckpt);
      unlink(s->ckpt_json);
    }
  }
  sd_lora_trainer_free(T);
  return rc;
}

/* Image j: the PNG of an earlier run with these settings, or generated now and written. */
static int generate_image(aug_env *env, cat_state *s, const char *category, int64_t j, uint8_t *rgb_r, int *reused,
                          cmds_error *err) {
  char png[4700];
  snprintf(png, sizeof png, "%s/%06lld.png", s->images_dir, (long long)j);
  *reused = 0;
  if (cmds_is_file(png)) {
    cmds_image img;
    cmds_error e = {0};
    if (!cmds_png_read(png, &img, &e)) {
      int ok = img.width == s->R && img.height == s->R && img.channels == 3 && img.bit_depth == 8;
      if (ok) memcpy(rgb_r, img.data, 3 * (size_t)s->R * (size_t)s->R);
      cmds_image_free(&img);
      if (ok) {
        *reused = 1;
        return CMDS_OK;
      }
    }
  }
  const size_t rpx = (size_t)s->R * (size_t)s->R;
  sd_img2img_opts o = sd_img2img_opts_default();
  o.strength = (float)strtod(env->cfg.value[CK_AUG_STRENGTH], NULL);
  o.steps = (int)strtol(env->cfg.value[CK_AUG_INFERENCE_STEPS], NULL, 10);
  o.guidance = (float)strtod(env->cfg.value[CK_AUG_GUIDANCE], NULL);
  o.seed = category_seed(env, category, s->k, SEED_IMAGE(j));
  float *out = cmds_xmalloc(sizeof(float) * 3 * rpx);
  int64_t src = j % s->k;
  int rc = sd_img2img(&env->M, &env->ctx, s->images + (size_t)src * 3 * rpx, s->R, s->R, &o, out, err);
  if (rc) rc = cmds_error_wrap(err, "image %lld of %s/%s k = %lld (from support sample %s)", (long long)j, env->dataset,
                               category, (long long)s->k, s->ids[src]);
  /* 8-bit as diffusers' numpy_to_pil: round(x * 255) */
  for (size_t p = 0; p < 3 * rpx && !rc; p++) {
    float v = out[p] * 255.0f;
    rgb_r[p] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : lrintf(v));
  }
  free(out);
  if (!rc) {
    cmds_image img = {.width = s->R, .height = s->R, .channels = 3, .bit_depth = 8, .data = rgb_r};
    rc = cmds_png_write(png, &img, err);
  }
  return rc;
}

/* Publishes the augmented rows: a copy of the cache takes the group and is renamed over the
 * cache, unless prep rebuilt the cache meanwhile. The copy is a compact one without the old
 * group (and its normals_est) or its augmented_id: HDF5 never gives back the space of a
 * deleted group, so a byte copy would grow by the old group at every replacement. */
static int publish(const aug_env *env, cat_state *s, const cmds_sample_batch *b, int64_t n, const char *aug_id,
                   cmds_error *err) {
  static const char *const old_group[] = {"augmented", "@augmented_id"};
  int rc = cmds_h5_copy_compact(s->final, s->work, old_group, 2, err);
  if (rc) return rc;
  hid_t f;
  rc = cmds_sc_open_rw(&f, s->work, MPI_COMM_SELF, err);
  if (!rc) {
    rc = cmds_sc_aug_write(f, s->work, n, s->S, b, aug_id, env->zstd_level, err);
    if (H5Fclose(f) < 0 && !rc) rc = CMDS_FAIL(err, CMDS_EIO, "%s: closing failed", s->work);
  }
  if (!rc) {
    hid_t t;
    cmds_error e = {0};
    cmds_sc_info now;
    int same = 0;
    if (!cmds_h5_open_read(&t, s->final, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, &e)) {
      if (!cmds_sc_read_info(t, s->final, &now, &e)) {
        same = !strcmp(now.sample_list_hash, s->si.sample_list_hash) && !strcmp(now.prep_config, s->si.prep_config);
        cmds_sc_info_free(&now);
      }
      H5Fclose(t);
    }
    if (!same)
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s changed while cmds-augment ran (cmds-prep again?): the augmented samples were "
                     "not added, rerun cmds-augment (the LoRA and the images are kept)", s->final);
  }
  if (!rc && rename(s->work, s->final) != 0) rc = CMDS_FAIL(err, CMDS_EIO, "%s: cannot rename to %s", s->work, s->final);
  if (rc) unlink(s->work);
  return rc;
}

/* The files of k in s->base/k<k>. */
static void set_k(cat_state *s, int64_t k) {
  s->k = k;
  snprintf(s->dir, sizeof s->dir, "%s/k%lld", s->base, (long long)k);
  snprintf(s->images_dir, sizeof s->images_dir, "%s/images", s->dir);
  snprintf(s->lora, sizeof s->lora, "%s/lora.safetensors", s->dir);
  snprintf(s->lora_json, sizeof s->lora_json, "%s/lora.json", s->dir);
  snprintf(s->ckpt, sizeof s->ckpt, "%s/lora.ckpt.safetensors", s->dir);
  snprintf(s->ckpt_json, sizeof s->ckpt_json, "%s/lora.ckpt.json", s->dir);
  snprintf(s->images_json, sizeof s->images_json, "%s/images.json", s->images_dir);
}

/* What one k did, for the record. */
typedef struct k_result {
  int64_t start_step, steps_run, images_made, images_reused;
  int lora_reused;
  double final_loss;
} k_result;

/* One k: its LoRA (reused or fine-tuned on support rows [0, k)) and its nimg generations,
 * written into rows [row0, row0 + nimg) of b. */
static int run_k(aug_env *env, cat_state *s, const char *category, int64_t nimg, cmds_sample_batch *b, int64_t row0,
                 k_result *kr, cmds_error *err) {
  memset(kr, 0, sizeof *kr);
  kr->final_loss = NAN;
  int rc = make_idents(env, &s->si, s->k, NULL, &s->id, err);
  if (!rc) rc = cmds_mkdir_p(s->images_dir, err);
  if (!rc && env->force) { /* nothing of an earlier run is reused */
    unlink(s->ckpt);
    unlink(s->ckpt_json);
    unlink(s->lora);
    unlink(s->lora_json);
    unlink(s->images_json);
    clear_images(s->images_dir);
  }
  if (rc) return rc;
  /* each k starts from the bare UNet */
  unet_lora_detach(&env->M.unet);

  /* The LoRA: the finished one of these settings, or fine-tuned now. */
  aug_result tr;
  memset(&tr, 0, sizeof tr);
  char have_train[CMDS_SC_AUG_ID_LEN];
  if (cmds_is_file(s->lora) && json_file_str(s->lora_json, "train_id", have_train, sizeof have_train) &&
      !strcmp(have_train, s->id.train)) {
    rc = sd_lora_load(&env->M.unet, s->lora, err);
    if (!rc) kr->lora_reused = 1;
    cmds_jv v;
    cmds_error e = {0};
    if (!rc && !cmds_jv_read_file(s->lora_json, &v, &e)) {
      double fl = NAN;
      cmds_jv_get_num(&v, s->lora_json, "final_loss", 0, NAN, &fl, &e);
      kr->final_loss = fl;
      cmds_jv_free(&v);
    }
  } else {
    unlink(s->lora_json); /* a LoRA of other settings: replaced (the sidecar goes first) */
    unlink(s->lora);
    rc = train_lora(env, s, category, &tr, err);
    kr->start_step = tr.start_step;
    kr->steps_run = tr.steps_run;
    kr->final_loss = tr.final_loss;
  }

  /* The generations: PNGs of these settings are kept, others replaced. */
  char have_gen[CMDS_SC_AUG_ID_LEN];
  if (!rc && !(json_file_str(s->images_json, "gen_id", have_gen, sizeof have_gen) && !strcmp(have_gen, s->id.gen))) {
    unlink(s->images_json);
    clear_images(s->images_dir);
    cmds_json j;
    cmds_json_init(&j, 2);
    cmds_json_object_begin(&j);
    cmds_json_kv_str(&j, "schema", IMAGES_SCHEMA);
    cmds_json_kv_int(&j, "schema_version", 1);
    cmds_json_kv_str(&j, "gen_id", s->id.gen);
    cmds_json_kv_int(&j, "k", s->k);
    cmds_json_kv_str(&j, "prompt", s->prompt);
    cmds_json_kv_int(&j, "resolution", s->R);
    cmds_json_object_end(&j);
    rc = write_json(s->images_json, &j, err);
  }
  /* with the LoRA attached, as the generation runs */
  if (!rc)
    rc = ensure_scratch(env, sd_img2img_workspace_bytes(&env->M, s->R, s->R, (float)strtod(env->cfg.value[CK_AUG_GUIDANCE], NULL)),
                        err);
  if (rc) return rc;
  char label[300];
  snprintf(label, sizeof label, "%s/%s k%lld images", env->dataset, category, (long long)s->k);
  cmds_progress prog;
  cmds_progress_begin(&prog, &env->self, "augment", label, nimg);
  const char *kill_after = getenv("CMDS_TEST_KILL_AFTER_IMAGES");
  uint8_t *rgb_r = cmds_xmalloc(3 * (size_t)s->R * (size_t)s->R);
  const size_t spx = (size_t)s->S * (size_t)s->S;
  for (int64_t j = 0; j < nimg && !rc; j++) {
    int reused = 0;
    rc = generate_image(env, s, category, j, rgb_r, &reused, err);
    if (rc) break;
    if (reused) kr->images_reused++;
    else kr->images_made++;
    /* to the cache's S x S as prep resizes its padded square */
    int64_t r = row0 + j;
    if (s->R == s->S) memcpy(b->rgb + (size_t)r * spx * 3, rgb_r, spx * 3);
    else cmds_resize_bicubic_aa_u8(rgb_r, s->R, s->R, 3, b->rgb + (size_t)r * spx * 3, s->S, s->S);
    int64_t src = j % s->k;
    char id[CMDS_SC_ID_LEN + 48];
    int n = snprintf(id, sizeof id, "augmented/k%lld/%s/%lld", (long long)s->k, s->ids[src], (long long)j);
    if (n >= CMDS_SC_ID_LEN) {
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: the augmented sample id '%s' is longer than %d characters", s->final, id,
                     CMDS_SC_ID_LEN - 1);
      break;
    }
    memcpy(b->sample_id + (size_t)r * CMDS_SC_ID_LEN, id, (size_t)n);
    memcpy(b->defect_type + (size_t)r * CMDS_SC_DEFECT_LEN, CMDS_SC_AUG_DEFECT, strlen(CMDS_SC_AUG_DEFECT));
    memcpy(b->native_hw + 2 * r, s->native_hw + 2 * src, 2 * sizeof(int32_t));
    memcpy(b->pad + 3 * r, s->pad + 3 * src, 3 * sizeof(int32_t));
    cmds_progress_step(&prog, 1);
    if (kill_after && kr->images_made >= atoll(kill_after)) raise(SIGKILL); /* test: a hard kill */
    if (j + 1 < nimg && cmds_stop_requested())
      rc = CMDS_FAIL(err, CMDS_EINTERRUPTED, "%s/%s k%lld: stopped by a signal after %lld of %lld images; they are kept, "
                     "rerun to resume", env->dataset, category, (long long)s->k, (long long)(j + 1), (long long)nimg);
  }
  free(rgb_r);
  if (!rc) cmds_progress_end(&prog);
  return rc;
}

int aug_category_run(aug_env *env, const char *category, aug_result *res, cmds_error *err) {
  memset(res, 0, sizeof *res);
  res->final_loss = NAN;
  double t0 = cmds_now();
  cat_state s;
  memset(&s, 0, sizeof s);
  s.R = (int)strtol(env->cfg.value[CK_AUG_RESOLUTION], NULL, 10);
  int64_t nimg = strtoll(env->cfg.value[CK_AUG_IMAGES], NULL, 10);
  snprintf(s.final, sizeof s.final, "%s/%s/%s.h5", env->cache, env->dataset, category);
  snprintf(s.work, sizeof s.work, "%s.augment.partial", s.final);
  snprintf(s.rec_path, sizeof s.rec_path, "%s/%s/%s.augment.json", env->cache, env->dataset, category);
  snprintf(s.base, sizeof s.base, "%s/augment/%s/%s", env->out_root, env->dataset, category);
  aug_prompt(env->cfg.value[CK_AUG_PROMPT], category, s.prompt, sizeof s.prompt);

  int64_t have_n = 0;
  char have_id[CMDS_SC_AUG_ID_LEN] = "";
  int rc = read_cache(env, &s, &have_n, have_id, sizeof have_id, err);
  /* The shots list: --shots, else the cache's support count alone; every k <= the support rows. */
  int64_t shots[CMDS_AUG_MAX_SHOTS];
  int nshots = 0;
  char shots_s[CMDS_AUG_MAX_SHOTS * 8] = "";
  if (!rc) {
    if (env->nshots > 0)
      for (int i = 0; i < env->nshots; i++) shots[nshots++] = env->shots[i];
    else shots[nshots++] = s.nsup;
    for (int i = 0; i < nshots && !rc; i++) {
      if (shots[i] > s.nsup)
        rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: --shots asks for k = %lld but the cache has %lld support samples (cmds-prep "
                       "--shots %lld or more)", s.final, (long long)shots[i], (long long)s.nsup, (long long)shots[i]);
      if (shots[i] > s.nload) s.nload = shots[i];
      size_t u = strlen(shots_s);
      snprintf(shots_s + u, sizeof shots_s - u, "%s%lld", u ? "," : "", (long long)shots[i]);
    }
  }
  idents agg;
  memset(&agg, 0, sizeof agg);
  if (!rc) rc = make_idents(env, &s.si, 0, shots_s, &agg, err);
  /* Finished with these settings: skip. Other settings in the cache: refuse unless --force. */
  if (!rc && have_n > 0 && !env->force) {
    if (!strcmp(have_id, agg.aug)) {
      res->status = AUG_SKIPPED;
      res->elapsed_s = cmds_now() - t0;
      cat_state_free(&s);
      return CMDS_OK;
    }
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: its %lld augmented samples were made with other settings:\n  cache:    %s\n"
                   "  this run: %s\nrerun with --force to replace them (then rerun cmds-estimate and cmds-features)",
                   s.final, (long long)have_n, have_id, agg.aug);
  }
  if (!rc) rc = load_support(env, &s, err);
  if (!rc) rc = ensure_models(env, s.R, err);
  if (!rc) rc = sd_models_set_prompt(&env->M, s.prompt, "", err);
  cmds_record rec;
  cmds_record_begin(&rec, "augment", env->argc, env->argv, &env->self);

  /* Every k in turn on this rank; the rows of k number i are [i * nimg, (i + 1) * nimg). */
  cmds_sample_batch b;
  cmds_sample_batch_alloc(&b, nimg * nshots > 0 ? nimg * nshots : 1, s.S);
  k_result kr[CMDS_AUG_MAX_SHOTS];
  memset(kr, 0, sizeof kr);
  double tg = cmds_now();
  res->lora_reused = 1;
  for (int i = 0; i < nshots && !rc; i++) {
    set_k(&s, shots[i]);
    rc = run_k(env, &s, category, nimg, &b, (int64_t)i * nimg, &kr[i], err);
    if (kr[i].start_step > res->start_step) res->start_step = kr[i].start_step;
    res->steps_run += kr[i].steps_run;
    res->images_made += kr[i].images_made;
    res->images_reused += kr[i].images_reused;
    res->lora_reused = res->lora_reused && kr[i].lora_reused;
    res->final_loss = kr[i].final_loss;
    if (!rc && i + 1 < nshots && cmds_stop_requested())
      rc = CMDS_FAIL(err, CMDS_EINTERRUPTED, "%s/%s: stopped by a signal after k = %lld; its LoRA and images are kept, "
                     "rerun to resume", env->dataset, category, (long long)shots[i]);
  }
  double gen_s = cmds_now() - tg;
  if (!rc) rc = publish(env, &s, &b, nimg * nshots, agg.aug, err);
  cmds_sample_batch_free(&b);
  res->elapsed_s = cmds_now() - t0;
  if (!rc) {
    cmds_json *j = &rec.json;
    cmds_json_kv_str(j, "dataset", env->dataset);
    cmds_json_kv_str(j, "category", category);
    cmds_json_kv_str(j, "output", s.final);
    cmds_json_kv_str(j, "augmented_id", agg.aug);
    cmds_json_key(j, "shots");
    cmds_json_array_begin(j);
    for (int i = 0; i < nshots; i++) cmds_json_int(j, shots[i]);
    cmds_json_array_end(j);
    cmds_json_kv_int(j, "images", nimg);
    cmds_json_kv_int(j, "rows", nimg * nshots);
    cmds_json_kv_int(j, "images_generated", res->images_made);
    cmds_json_kv_int(j, "images_reused", res->images_reused);
    cmds_json_kv_str(j, "augment_dir", s.base);
    cmds_json_kv_bool(j, "lora_reused", res->lora_reused);
    cmds_json_kv_int(j, "resumed_from_step", res->start_step);
    cmds_json_kv_int(j, "steps_run", res->steps_run);
    cmds_json_key(j, "per_k");
    cmds_json_array_begin(j);
    for (int i = 0; i < nshots; i++) {
      set_k(&s, shots[i]);
      cmds_json_object_begin(j);
      cmds_json_kv_int(j, "k", shots[i]);
      cmds_json_kv_str(j, "lora", s.lora);
      cmds_json_kv_str(j, "images_dir", s.images_dir);
      cmds_json_kv_bool(j, "lora_reused", kr[i].lora_reused);
      cmds_json_kv_int(j, "resumed_from_step", kr[i].start_step);
      cmds_json_kv_int(j, "steps_run", kr[i].steps_run);
      cmds_json_kv_num(j, "final_loss", kr[i].final_loss);
      cmds_json_kv_int(j, "images_generated", kr[i].images_made);
      cmds_json_kv_int(j, "images_reused", kr[i].images_reused);
      cmds_json_object_end(j);
    }
    cmds_json_array_end(j);
    cmds_json_kv_str(j, "prompt", s.prompt);
    cmds_json_kv_str(j, "sd", env->sd);
    cmds_json_kv_str(j, "checkpoint_id", env->checkpoint_id);
    cmds_json_kv_str(j, "source", env->data ? "dataset" : "cache");
    cmds_json_kv_str(j, "data", env->data ? env->data : "");
    cmds_json_kv_int(j, "support_images", s.nsup);
    cmds_json_kv_int(j, "resolution", s.R);
    cmds_json_kv_int(j, "cache_resolution", s.S);
    cmds_json_key(j, "config");
    cmds_config_json(&env->cfg, j, CMDS_KEY_AUGMENT);
    cmds_json_kv_str(j, "device", nn_device_name(env->device));
    cmds_json_kv_int(j, "rank", env->world_rank);
    cmds_json_kv_int(j, "world_ranks", env->world_size);
    cmds_json_kv_num(j, "seconds_per_image", res->images_made ? gen_s / (double)res->images_made : 0);
    cmds_record_finish(&rec, s.rec_path, "ok", err);
    res->status = AUG_DONE;
  } else {
    cmds_json_free(&rec.json);
    res->status = rc == CMDS_EINTERRUPTED ? AUG_INTERRUPTED : AUG_FAILED;
  }
  /* the next category on this rank starts from the bare UNet */
  if (env->loaded) unet_lora_detach(&env->M.unet);
  cat_state_free(&s);
  return rc;
}
