/* trainer: see trainer.h. */
#define _GNU_SOURCE
#include "trainer.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "feature_cache.h"
#include "fsutil.h"
#include "h5io.h"
#include "image/normalize.h"
#include "image/resize.h"
#include "mapper/mapper.h"
#include "progress.h"
#include "record.h"
#include "rng.h"
#include "sample_cache.h"

#define TRAIN_SCHEMA "cmds.train_output"
#define TRAIN_SCHEMA_VERSION 1
#define CKPT_SCHEMA "cmds.train_checkpoint"

static const char *const prefixes[2] = {"rgb_to_3d.", "3d_to_rgb."};

enum { STREAM_R = 0, STREAM_E = 1 };

static uint64_t mix3(uint64_t a, uint64_t b, uint64_t c) {
  uint64_t x = a, h = cmds_splitmix64(&x);
  x = h ^ b;
  h = cmds_splitmix64(&x);
  x = h ^ c;
  return cmds_splitmix64(&x);
}

/* The task seed: train.seed and the task's identity (never the rank or the tag). */
static uint64_t task_seed(const cmds_task *t, uint64_t seed) {
  char id[200];
  snprintf(id, sizeof id, "%s/%s", t->dataset, t->category);
  return mix3(seed, cmds_hash_str(id), (uint64_t)t->k);
}

/* The support row at position pos of a stream's sample sequence: epoch pos / k is a seeded
 * permutation of 0..k-1. */
static int sample_at(uint64_t seed, int stream, int64_t pos, int k, int *perm) {
  int64_t epoch = pos / k;
  cmds_rng r;
  cmds_rng_seed(&r, mix3(seed, 0x53414d50ull + (uint64_t)stream, (uint64_t)epoch));
  for (int i = 0; i < k; i++) perm[i] = i;
  for (int i = k - 1; i > 0; i--) {
    int j = (int)cmds_rng_below(&r, (uint64_t)i + 1);
    int tmp = perm[i];
    perm[i] = perm[j];
    perm[j] = tmp;
  }
  return perm[pos % k];
}

void train_task_dir(const train_env *env, const cmds_task *t, char *out, size_t cap) {
  snprintf(out, cap, "%s/models/%s/%s/k%d/%s", env->run, t->dataset, t->category, t->k, t->tag);
}


void train_env_free(train_env *env) {
  if (env->vit_loaded) vit_free(&env->vit);
  env->vit_loaded = 0;
}

/* The backbone that made the feature cache: --weights must hash to the cache's weights_id
 * (or --random-backbone S give "random:S"). Loaded once and kept. */
static int ensure_backbone(train_env *env, const cmds_fc_info *fi, const char *fc_path, cmds_error *err) {
  char id[160];
  if (env->weights) {
    if (!env->weights_id[0]) { /* hashing a 350 MB file once per process is enough */
      int rc = cmds_file_identity(env->weights, env->weights_id, sizeof env->weights_id, err);
      if (rc) return rc;
    }
    snprintf(id, sizeof id, "%s", env->weights_id);
  } else {
    snprintf(id, sizeof id, "random:%llu", (unsigned long long)env->random_seed);
  }
  if (strcmp(id, fi->weights_id))
    return CMDS_FAIL(err, CMDS_EINPUT,
                     "%s: the features were made with weights '%s', but %s%s has identity '%s' "
                     "(train.noise_sigma > 0 runs the backbone online: give the same --weights / --random-backbone "
                     "as cmds-features, or set train.noise_sigma=0)",
                     fc_path, fi->weights_id, env->weights ? "--weights " : "--random-backbone ",
                     env->weights ? env->weights : id + 7, id);
  char key[200];
  snprintf(key, sizeof key, "%s@%lld", id, (long long)fi->image_size);
  if (env->vit_loaded && !strcmp(key, env->vit_id)) return CMDS_OK;
  if (env->vit_loaded) vit_free(&env->vit);
  env->vit_loaded = 0;
  int rc;
  memset(&env->vit, 0, sizeof env->vit);
  if (env->weights) {
    rc = vit_load(&env->vit, env->weights, env->device, env->heads, -1, err);
  } else {
    /* the stand-in cmds-features builds (stages/features/main.c) at the cache's resolution */
    vit_config c = {.image = fi->image_size, .patch = 8, .width = 96, .depth = 12,
                    .heads = env->heads ? env->heads : 2, .mlp = 384, .eps = 1e-6f};
    rc = vit_init_random(&env->vit, &c, env->random_seed, env->device, err);
  }
  if (rc) return rc;
  env->vit_loaded = 1;
  snprintf(env->vit_id, sizeof env->vit_id, "%s", key);
  if (env->vit.cfg.width != fi->width || env->vit.cfg.image != fi->image_size ||
      env->vit.cfg.image / env->vit.cfg.patch != fi->grid)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: the backbone (width %lld, image %lld, patch %lld) does not match the features "
                     "(width %lld, image %lld, grid %lld)", fc_path, (long long)env->vit.cfg.width,
                     (long long)env->vit.cfg.image, (long long)env->vit.cfg.patch, (long long)fi->width,
                     (long long)fi->image_size, (long long)fi->grid);
  for (int i = 0; i < fi->nblocks; i++)
    if (fi->blocks[i] < 1 || fi->blocks[i] > env->vit.cfg.depth)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: block %lld is not in the backbone (depth %lld)", fc_path,
                       (long long)fi->blocks[i], (long long)env->vit.cfg.depth);
  return CMDS_OK;
}

/* Everything one task holds. */
typedef struct task_state {
  cmds_fc_info fi;
  int k, S, L, D, G, H, W;
  /* The E stream's pool: the k support rows, then n_aug augmented rows (cmds-augment) whose
   * source is one of those k (rows aug_rows[] of the augmented group); P = k + n_aug. The R
   * stream draws from the first k only. */
  int P, n_aug;
  int64_t *aug_rows;
  char aug_note[256];          /* why the E stream has no augmented rows although the cache has some */
  int est_on, real_on, online;
  int aug_on;                  /* train.augmented: the E stream may draw from augmented rows */
  size_t row_f16; /* L*G*G*D */
  uint16_t *f16[CMDS_FC_NMOD]; /* (P, L, G, G, D) for rgb and normals_est, (k, ...) for normals */
  uint8_t *rgb;                /* (P, S, S, 3) when online */
  float *masks;                /* (k, H, W) */
  double mask_sum[64];
  int64_t b0, b1;              /* this rank's slots [b0, b1) of a batch */
  mapper_model model[2];
  mapper_adamw opt[2];
  int nmodels, nopts;
  mapper_tape *tape;
  nn_arena scratch, io;
  nn_ctx ctx;
  int ctx_ok;
  nn_tensor xa, xb, p, dp, mask, flat;
  uint16_t *in_f16;            /* (Bm, L, G, G, D) staging */
  /* online backbone */
  float *images, *host_patches, *host_out;
  nn_tensor patches, vout;
  int *perm;
} task_state;

static void task_state_free(task_state *s) {
  for (int m = 0; m < CMDS_FC_NMOD; m++) free(s->f16[m]);
  free(s->rgb);
  free(s->masks);
  for (int i = 0; i < s->nopts; i++) mapper_adamw_free(&s->opt[i]);
  for (int i = 0; i < s->nmodels; i++) mapper_free(&s->model[i]);
  if (s->tape) mapper_tape_free(s->tape);
  if (s->ctx_ok) nn_ctx_free(&s->ctx);
  nn_arena_free(&s->io);
  nn_arena_free(&s->scratch);
  free(s->in_f16);
  free(s->images);
  free(s->host_patches);
  free(s->host_out);
  free(s->perm);
  free(s->aug_rows);
  memset(s, 0, sizeof *s);
}

/* METHOD.md section 5: the E stream also draws from the augmented samples. Only the rows
 * cmds-augment made for this k are taken ("augmented/k<k>/<support id>/<j>": generated by a
 * LoRA fine-tuned on the first k support samples, from one of them), so a k-shot task sees
 * nothing derived from support sample k or later. The sample cache must hold the augmented
 * group the features were made from (the same augmented_id). Sets s->aug_rows, s->n_aug and,
 * when the cache has augmented rows but none for this k, s->aug_note. */
static int select_augmented(const char *sc_path, const char *fc_path, task_state *s, cmds_error *err) {
  s->n_aug = 0;
  s->aug_note[0] = 0;
  if (!s->est_on || s->fi.n[2] <= 0) return CMDS_OK;
  if (!s->aug_on) { /* the ablation: the augmented rows stay out of the E stream */
    snprintf(s->aug_note, sizeof s->aug_note, "train.augmented=0: the %lld augmented rows of the feature cache are "
             "left out", (long long)s->fi.n[2]);
    return CMDS_OK;
  }
  hid_t sc;
  int rc = cmds_h5_open_read(&sc, sc_path, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, err);
  if (rc) return rc;
  int64_t n = 0;
  char id[CMDS_SC_AUG_ID_LEN];
  rc = cmds_sc_aug_status(sc, sc_path, &n, id, sizeof id, err);
  if (!rc && (n != s->fi.n[2] || strcmp(id, s->fi.augmented_id)))
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s has %lld augmented rows (augmented_id '%s'), %s was made from %lld ('%s'): rerun "
                   "cmds-estimate and cmds-features", sc_path, (long long)n, id, fc_path, (long long)s->fi.n[2],
                   s->fi.augmented_id);
  cmds_sc_group sup, aug;
  memset(&sup, 0, sizeof sup);
  memset(&aug, 0, sizeof aug);
  if (!rc) rc = cmds_sc_group_open(sc, "support", sc_path, &sup, err);
  if (!rc) rc = cmds_sc_group_open(sc, "augmented", sc_path, &aug, err);
  if (!rc && sup.n < s->k)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: k = %d but the sample cache has %lld support samples", sc_path, s->k, (long long)sup.n);
  char(*sup_ids)[CMDS_SC_ID_LEN + 1] = cmds_xcalloc((size_t)s->k, sizeof *sup_ids);
  s->aug_rows = cmds_xmalloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
  cmds_sample_batch b;
  cmds_sample_batch_alloc(&b, 1, sup.size > 0 ? sup.size : 1);
  for (int i = 0; i < s->k && !rc; i++) {
    rc = cmds_sc_group_read(&sup, i, 1, &b, err);
    if (!rc) memcpy(sup_ids[i], b.sample_id, CMDS_SC_ID_LEN);
  }
  char others[120] = ""; /* the k's the cache has rows for, when not this one */
  int last_k = 0;
  for (int64_t r = 0; r < n && !rc; r++) {
    rc = cmds_sc_group_read(&aug, r, 1, &b, err);
    char full[CMDS_SC_ID_LEN + 1], src[CMDS_SC_ID_LEN + 1];
    memcpy(full, b.sample_id, CMDS_SC_ID_LEN);
    full[CMDS_SC_ID_LEN] = 0;
    int rk = 0;
    if (!rc && !cmds_sc_aug_parse_id(full, &rk, src, sizeof src, NULL))
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: /augmented row %lld: sample_id '%s' is not augmented/k<k>/<support id>/<j> "
                     "(made by an older cmds-augment? rerun cmds-augment --force, cmds-estimate and cmds-features)",
                     sc_path, (long long)r, full);
    if (rc) break;
    if (rk != s->k) {
      if (rk != last_k && !strstr(others, "...")) {
        size_t u = strlen(others);
        if (u + 16 < sizeof others) snprintf(others + u, sizeof others - u, "%s%d", u ? "," : "", rk);
        else snprintf(others + u, sizeof others - u, ",...");
      }
      last_k = rk;
      continue;
    }
    int from_task = 0;
    for (int i = 0; i < s->k && !from_task; i++) from_task = !strcmp(src, sup_ids[i]);
    if (!from_task)
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: /augmented row %lld ('%s') is for k = %d but its source is not one of the "
                     "first %d support samples", sc_path, (long long)r, full, s->k, s->k);
    else s->aug_rows[s->n_aug++] = r;
  }
  if (!rc && n > 0 && s->n_aug == 0)
    snprintf(s->aug_note, sizeof s->aug_note, "the sample cache has augmented rows for k = %s only, none for k = %d "
             "(cmds-augment --shots)", others, s->k);
  cmds_sample_batch_free(&b);
  free(sup_ids);
  if (sup.group > 0) cmds_sc_group_close(&sup);
  if (aug.group > 0) cmds_sc_group_close(&aug);
  H5Fclose(sc);
  return rc;
}

/* Reads the support rows and masks (every rank reads all k: they are few), and the
 * augmented rows of the E stream's pool. */
static int load_inputs(train_env *env, const cmds_task *t, const train_params *tp, task_state *s, char *fc_path,
                       char *sc_path, cmds_error *err) {
  snprintf(fc_path, 4200, "%s/%s/%s.features.h5", env->cache, t->dataset, t->category);
  snprintf(sc_path, 4200, "%s/%s/%s.h5", env->cache, t->dataset, t->category);
  if (!cmds_is_file(fc_path))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: no feature cache for %s/%s (run cmds-features first)", fc_path, t->dataset,
                     t->category);
  hid_t fc;
  int rc = cmds_h5_open_read(&fc, fc_path, MPI_COMM_SELF, CMDS_FEATURE_CACHE_SCHEMA, CMDS_FEATURE_CACHE_VERSION, err);
  if (rc) return rc;
  rc = cmds_fc_read_info(fc, fc_path, &s->fi, err);
  s->k = t->k;
  if (!rc && s->fi.n[0] < t->k)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: k = %d but the feature cache has %lld support samples (cmds-prep --shots)",
                   fc_path, t->k, (long long)s->fi.n[0]);
  if (!rc && s->fi.nblocks != tp->n_layer_weights)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "loss.layer_weights has %d values, the features have %lld blocks (%s)",
                   tp->n_layer_weights, (long long)s->fi.nblocks, fc_path);
  if (!rc && s->fi.final_norm != tp->final_norm)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "backbone.final_norm=%d, but %s was made with final_norm %lld", tp->final_norm,
                   fc_path, (long long)s->fi.final_norm);
  for (int m = 0; m < 2 && !rc; m++)
    if (!(s->fi.modalities & (1 << m)))
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: the feature cache has no '%s' features (needed by the R stream and both mappers)",
                     fc_path, cmds_fc_modality_name((cmds_fc_modality)m));
  s->real_on = tp->stream_real;
  s->est_on = tp->stream_est && (s->fi.modalities & (1 << CMDS_FC_NORMALS_EST));
  s->aug_on = tp->augmented;
  if (!rc && !s->real_on && !s->est_on)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "train.streams=est but %s has no normals_est features (run cmds-estimate before cmds-features)",
                   fc_path);
  s->L = (int)s->fi.nblocks;
  s->D = (int)s->fi.width;
  s->G = (int)s->fi.grid;
  s->S = (int)s->fi.image_size;
  s->row_f16 = (size_t)s->L * (size_t)s->G * (size_t)s->G * (size_t)s->D;
  if (!rc) rc = select_augmented(sc_path, fc_path, s, err);
  s->P = s->k + s->n_aug;
  for (int m = 0; m < CMDS_FC_NMOD && !rc; m++) {
    if (m == CMDS_FC_NORMALS_EST && !s->est_on) continue;
    int rows = m == CMDS_FC_NORMALS ? s->k : s->P;
    s->f16[m] = cmds_xmalloc(sizeof(uint16_t) * s->row_f16 * (size_t)rows);
    rc = cmds_fc_read_rows(fc, 0, (cmds_fc_modality)m, 0, s->k, s->f16[m], err);
    for (int i = 0; i < s->n_aug && m != CMDS_FC_NORMALS && !rc; i++)
      rc = cmds_fc_read_rows(fc, 2, (cmds_fc_modality)m, s->aug_rows[i], 1, s->f16[m] + (size_t)(s->k + i) * s->row_f16, err);
  }
  H5Fclose(fc);
  if (rc) return rc;

  hid_t sc;
  rc = cmds_h5_open_read(&sc, sc_path, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, err);
  if (rc) return rc;
  cmds_sc_info si;
  memset(&si, 0, sizeof si);
  rc = cmds_sc_read_info(sc, sc_path, &si, err);
  if (!rc && strcmp(si.sample_list_hash, s->fi.sample_list_hash))
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s was made from another sample cache than %s (sample lists differ): rerun cmds-features",
                   fc_path, sc_path);
  char sc_id[CMDS_SC_IDENTITY_LEN];
  if (!rc) cmds_sc_identity(&si, sc_id, sizeof sc_id);
  /* feature caches older than the attribute carry none: nothing to compare */
  if (!rc && s->fi.sample_cache_id[0] && strcmp(sc_id, s->fi.sample_cache_id))
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s was made from another sample cache than %s (cmds-prep rebuilt it with other "
                   "settings: sample_cache_id %s, the features have %s): rerun cmds-features", fc_path, sc_path, sc_id,
                   s->fi.sample_cache_id);
  if (!rc && si.resolution != s->S)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: images are %lld px, the features were computed at %d px", sc_path,
                   (long long)si.resolution, s->S);
  cmds_sc_info_free(&si);
  cmds_sc_group g;
  memset(&g, 0, sizeof g);
  if (!rc) rc = cmds_sc_group_open(sc, "support", sc_path, &g, err);
  if (!rc && g.n < s->k)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: k = %d but the sample cache has %lld support samples", sc_path, s->k, (long long)g.n);
  s->H = s->W = (int)tp->resolution;
  size_t hw = (size_t)s->H * (size_t)s->W, px = (size_t)s->S * (size_t)s->S;
  s->masks = cmds_xmalloc(sizeof(float) * hw * (size_t)s->k);
  if (s->online) s->rgb = cmds_xmalloc(px * 3 * (size_t)s->P);
  cmds_sample_batch b;
  cmds_sample_batch_alloc(&b, 1, s->S);
  uint8_t *m8 = cmds_xmalloc(hw);
  for (int i = 0; i < s->k && !rc; i++) {
    rc = cmds_sc_group_read(&g, i, 1, &b, err);
    if (rc) break;
    cmds_resize_nearest_torch(b.fg_mask, s->S, s->S, 1, m8, s->H, s->W);
    double sum = 0;
    for (size_t p = 0; p < hw; p++) {
      s->masks[(size_t)i * hw + p] = m8[p] ? 1.0f : 0.0f;
      sum += m8[p] ? 1.0 : 0.0;
    }
    if (i < 64) s->mask_sum[i] = sum;
    if (s->online) memcpy(s->rgb + (size_t)i * px * 3, b.rgb, px * 3);
  }
  free(m8);
  if (g.group > 0) cmds_sc_group_close(&g);
  if (!rc && s->online && s->n_aug > 0) { /* the augmented RGB images the noise goes onto */
    rc = cmds_sc_group_open(sc, "augmented", sc_path, &g, err);
    for (int i = 0; i < s->n_aug && !rc; i++) {
      rc = cmds_sc_group_read(&g, s->aug_rows[i], 1, &b, err);
      if (!rc) memcpy(s->rgb + (size_t)(s->k + i) * px * 3, b.rgb, px * 3);
    }
    if (g.group > 0) cmds_sc_group_close(&g);
  }
  cmds_sample_batch_free(&b);
  H5Fclose(sc);
  if (!rc && s->k > 64) rc = CMDS_FAIL(err, CMDS_EINPUT, "k = %d: at most 64 support samples per task", s->k);
  return rc;
}

/* RGB features of `cnt` slots through the backbone: normalised image + sigma * N(0, 1),
 * noise of slot j seeded from (seed, step, stream, j). Output f16 rows (cnt, L, G, G, D). */
static int online_rgb(train_env *env, task_state *s, const int *rows, const int64_t *slots, int cnt, uint64_t seed,
                      int64_t step, int stream, double sigma, uint16_t *out, cmds_error *err) {
  size_t px = (size_t)s->S * (size_t)s->S;
  for (int i = 0; i < cnt; i++) {
    const uint8_t *src = s->rgb + (size_t)rows[i] * px * 3;
    float *dst = s->images + (size_t)i * 3 * px;
    cmds_rng r;
    cmds_rng_seed(&r, mix3(seed ^ 0x4e4f495345ull, (uint64_t)step, ((uint64_t)stream << 32) | (uint64_t)slots[i]));
    cmds_backbone_input_rgb8(src, s->S, dst);
    for (size_t p = 0; p < 3 * px; p++) dst[p] += (float)(sigma * cmds_rng_normal(&r));
  }
  vit_model *m = &env->vit;
  int64_t P = m->cfg.patch, NP = (int64_t)s->G * s->G, in = 3 * P * P;
  vit_patchify_cpu(s->images, cnt, s->S, s->S, P, s->host_patches);
  nn_tensor pv = nn_tensor_view(s->patches.data, NN_F32, s->ctx.device, cnt, NP, in, -1);
  nn_tensor ov = nn_tensor_view(s->vout.data, NN_F32, s->ctx.device, cnt, s->L, NP, s->D);
  nn_tensor hp = nn_tensor_view(s->host_patches, NN_F32, NN_CPU, cnt, NP, in, -1);
  nn_tensor ho = nn_tensor_view(s->host_out, NN_F32, NN_CPU, cnt, s->L, NP, s->D);
  int blocks[CMDS_FC_MAX_BLOCKS];
  for (int i = 0; i < s->L; i++) blocks[i] = (int)s->fi.blocks[i];
  int rc = nn_tensor_copy(&pv, &hp, err);
  /* One image per forward: a GEMM's rounding can depend on its row count, and a slot's
   * features must not depend on how many slots share its rank (the group size). */
  for (int i = 0; i < cnt && !rc; i++) {
    nn_tensor p1 = nn_tensor_view((float *)s->patches.data + (size_t)i * (size_t)(NP * in), NN_F32, s->ctx.device, 1, NP, in, -1);
    nn_tensor o1 = nn_tensor_view((float *)s->vout.data + (size_t)i * s->row_f16, NN_F32, s->ctx.device, 1, s->L, NP, s->D);
    rc = vit_forward(m, &s->ctx, &p1, blocks, s->L, (int)s->fi.final_norm, &o1, err);
  }
  if (!rc) rc = nn_ctx_sync(&s->ctx, err);
  if (!rc) rc = nn_tensor_copy(&ho, &ov, err);
  if (!rc)
    for (size_t i = 0; i < (size_t)cnt * s->row_f16; i++) out[i] = nn_f32_to_f16(s->host_out[i]);
  return rc;
}

static int stage_rows(task_state *s, int mod, const int *rows, int cnt, nn_tensor *x, cmds_error *err) {
  for (int i = 0; i < cnt; i++)
    memcpy(s->in_f16 + (size_t)i * s->row_f16, s->f16[mod] + (size_t)rows[i] * s->row_f16, sizeof(uint16_t) * s->row_f16);
  return mapper_input_from_f16(&s->ctx, x, s->in_f16, cnt, s->L, s->G, s->D, err);
}

/* One stream of one step on this rank's slots: both directions, forward, loss, backward.
 * loss[0]: rgb_to_3d, loss[1]: 3d_to_rgb (this rank's share of the batch-global means). */
static int step_stream(train_env *env, task_state *s, const train_params *tp, uint64_t seed, int64_t step, int stream,
                       double loss[2], cmds_error *err) {
  int64_t B = tp->batch;
  int *rows = cmds_xmalloc(sizeof(int) * (size_t)B);
  /* R: the k support rows; E: the k support rows and the task's augmented rows (P = k without) */
  int pool = stream == STREAM_E ? s->P : s->k;
  for (int64_t j = 0; j < B; j++) rows[j] = sample_at(seed, stream, step * B + j, pool, s->perm);
  size_t hw = (size_t)s->H * (size_t)s->W;
  double denom;
  if (stream == STREAM_R) {
    denom = 1e-8;
    for (int64_t j = 0; j < B; j++) denom += s->mask_sum[rows[j]];
  } else {
    denom = (double)B * (double)hw;
  }
  int cnt = (int)(s->b1 - s->b0), rc = CMDS_OK;
  loss[0] = loss[1] = 0;
  if (cnt == 0) {
    free(rows);
    return CMDS_OK;
  }
  const int *mine = rows + s->b0;
  int64_t *slots = cmds_xmalloc(sizeof(int64_t) * (size_t)cnt);
  for (int i = 0; i < cnt; i++) slots[i] = s->b0 + i;
  nn_tensor xa = s->xa, xb = s->xb, p = s->p, dp = s->dp;
  /* xa: RGB features, xb: the 3D modality's (real normals for R, estimated for E) */
  if (s->online) {
    rc = online_rgb(env, s, mine, slots, cnt, seed, step, stream, tp->noise_sigma, s->in_f16, err);
    if (!rc) rc = mapper_input_from_f16(&s->ctx, &xa, s->in_f16, cnt, s->L, s->G, s->D, err);
  } else {
    rc = stage_rows(s, CMDS_FC_RGB, mine, cnt, &xa, err);
  }
  if (!rc) rc = stage_rows(s, stream == STREAM_R ? CMDS_FC_NORMALS : CMDS_FC_NORMALS_EST, mine, cnt, &xb, err);
  nn_tensor *mask = NULL;
  if (!rc && stream == STREAM_R) {
    float *hm = cmds_xmalloc(sizeof(float) * hw * (size_t)cnt);
    for (int i = 0; i < cnt; i++) memcpy(hm + (size_t)i * hw, s->masks + (size_t)mine[i] * hw, sizeof(float) * hw);
    nn_tensor hv = nn_tensor_view(hm, NN_F32, NN_CPU, cnt, s->H, s->W, -1);
    rc = nn_tensor_copy(&s->mask, &hv, err);
    free(hm);
    mask = &s->mask;
  }
  for (int dir = 0; dir < 2 && !rc; dir++) {
    const nn_tensor *in = dir == 0 ? &xa : &xb, *target = dir == 0 ? &xb : &xa;
    rc = mapper_forward(&s->model[dir], &s->ctx, in, &p, s->tape, err);
    if (!rc) rc = mapper_loss(&s->ctx, &p, target, mask, s->L, tp->layer_weights, denom, &loss[dir], &dp, err);
    if (!rc) rc = mapper_backward(&s->model[dir], &s->ctx, in, &dp, s->tape, err);
  }
  free(slots);
  free(rows);
  return rc;
}

/* Sums both models' gradients over the group (one flat buffer, one all-reduce). */
static int allreduce_grads(train_env *env, task_state *s, cmds_error *err) {
  if (env->group.size <= 1) return CMDS_OK;
  char *base = s->flat.data;
  size_t off = 0;
  int rc = CMDS_OK;
  for (int pass = 0; pass < 2 && !rc; pass++) {
    off = 0;
    for (int m = 0; m < 2 && !rc; m++)
      for (int i = 0; i < s->model[m].nparams && !rc; i++) {
        nn_tensor *g = &s->model[m].params[i].grad;
        int64_t n = nn_tensor_numel(g);
        nn_tensor fv = nn_tensor_view(base + off * sizeof(float), NN_F32, s->ctx.device, n, -1, -1, -1);
        nn_tensor gv = nn_tensor_view(g->data, NN_F32, g->device, n, -1, -1, -1);
        rc = pass == 0 ? nn_tensor_copy(&fv, &gv, err) : nn_tensor_copy(&gv, &fv, err);
        off += (size_t)n;
      }
    if (!rc && pass == 0) rc = cmds_allreduce_sum_f32(&env->coll, (float *)base, off, err);
  }
  return rc;
}

static int setup_compute(train_env *env, task_state *s, const train_params *tp, uint64_t seed, cmds_error *err) {
  mapper_config mc;
  mapper_config_default(&mc, s->D, s->L);
  mc.kind = tp->mlp ? MAPPER_MLP : MAPPER_CMDS;
  mc.adapt_groups = tp->adapt_groups;
  mc.ca_reduction = tp->ca_reduction;
  mc.ca_groups = tp->ca_groups;
  mc.sel_hidden = tp->sel_hidden;
  mc.proj_hidden = tp->proj_hidden ? tp->proj_hidden : 2 * (int64_t)s->D;
  mc.mlp_hidden = tp->mlp_hidden ? tp->mlp_hidden : (int64_t)s->L * s->D;
  int rc = mapper_config_check(&mc, err);
  for (int m = 0; m < 2 && !rc; m++) {
    rc = mapper_init(&s->model[m], &mc, mix3(seed, 0x4d4150ull, (uint64_t)m), env->device, err);
    if (!rc) s->nmodels++;
  }
  for (int m = 0; m < 2 && !rc; m++) {
    rc = mapper_adamw_init(&s->opt[m], &s->model[m], (float)tp->weight_decay, err);
    if (!rc) s->nopts++;
  }
  if (rc) return rc;
  cmds_block_range(tp->batch, env->group.rank, env->group.size, &s->b0, &s->b1);
  int64_t Bm = s->b1 - s->b0 > 0 ? s->b1 - s->b0 : 1, LD = (int64_t)s->L * s->D, H = s->H, W = s->W;
  int64_t NP = (int64_t)s->G * s->G, numel = mapper_numel(&s->model[0]) + mapper_numel(&s->model[1]);
  size_t x_bytes = sizeof(float) * (size_t)(Bm * LD * H * W);
  size_t scratch = mapper_scratch_bytes(&mc, Bm, H, W) + sizeof(float) * (size_t)(Bm * LD * NP) * 2 + ((size_t)16 << 20);
  size_t in_px = 0;
  if (s->online) {
    in_px = (size_t)(3 * env->vit.cfg.patch * env->vit.cfg.patch);
    size_t vs = vit_scratch_bytes(&env->vit.cfg, Bm);
    if (vs > scratch) scratch = vs;
  }
  size_t io = 4 * x_bytes + sizeof(float) * (size_t)(Bm * H * W) + sizeof(float) * (size_t)numel +
              sizeof(float) * (size_t)Bm * (size_t)NP * (in_px + (size_t)(s->L * s->D)) + ((size_t)8 << 10);
  rc = nn_arena_init(&s->scratch, env->device, scratch, err);
  if (!rc) rc = nn_arena_init(&s->io, env->device, io, err);
  if (!rc) rc = nn_ctx_init(&s->ctx, env->device, &s->scratch, NULL, 0, err);
  if (!rc) s->ctx_ok = 1;
  int64_t xs[4] = {Bm, LD, H, W}, ms[3] = {Bm, H, W}, fs[1] = {numel};
  if (!rc) rc = nn_tensor_alloc(&s->xa, &s->io, NN_F32, 4, xs, err);
  if (!rc) rc = nn_tensor_alloc(&s->xb, &s->io, NN_F32, 4, xs, err);
  if (!rc) rc = nn_tensor_alloc(&s->p, &s->io, NN_F32, 4, xs, err);
  if (!rc) rc = nn_tensor_alloc(&s->dp, &s->io, NN_F32, 4, xs, err);
  if (!rc) rc = nn_tensor_alloc(&s->mask, &s->io, NN_F32, 3, ms, err);
  if (!rc) rc = nn_tensor_alloc(&s->flat, &s->io, NN_F32, 1, fs, err);
  if (!rc && s->online) {
    int64_t ps[3] = {Bm, NP, (int64_t)in_px}, os[4] = {Bm, s->L, NP, s->D};
    rc = nn_tensor_alloc(&s->patches, &s->io, NN_F32, 3, ps, err);
    if (!rc) rc = nn_tensor_alloc(&s->vout, &s->io, NN_F32, 4, os, err);
    s->images = cmds_xmalloc(sizeof(float) * (size_t)Bm * 3 * (size_t)s->S * (size_t)s->S);
    s->host_patches = cmds_xmalloc(sizeof(float) * (size_t)Bm * (size_t)NP * in_px);
    s->host_out = cmds_xmalloc(sizeof(float) * (size_t)Bm * s->row_f16);
  }
  if (!rc) {
    s->tape = mapper_tape_new(&mc, Bm, H, W, env->device, err);
    if (!s->tape) rc = err->code ? err->code : CMDS_ENOMEM;
  }
  s->in_f16 = cmds_xmalloc(sizeof(uint16_t) * (size_t)Bm * s->row_f16);
  s->perm = cmds_xmalloc(sizeof(int) * (size_t)(s->P > s->k ? s->P : s->k));
  /* the tensors of a rank with fewer slots than Bm are views of the first cnt rows */
  if (!rc && s->b1 - s->b0 != Bm) rc = CMDS_FAIL(err, CMDS_EINTERNAL, "slot count");
  return rc;
}

/* Which estimated normals a model learnt from (metadata cmds.normals_est_id): the feature
 * cache's normals_est_id when the E stream is on, "none" when it is off. A model or checkpoint
 * whose value differs from what this task would use now (cmds-estimate ran, or ran again with
 * other settings, after it was trained) is not reused. Files without the key count as "none". */
static const char *est_identity(int est_on, const cmds_fc_info *fi) {
  return !est_on ? "none" : fi->normals_est_id[0] ? fi->normals_est_id : "unnamed";
}

/* Which augmented group the E stream could draw from (metadata cmds.augmented_id): the
 * feature cache's augmented_id when the E stream is on and the file has augmented rows,
 * "none" otherwise (also for files without the key). A new cmds-augment run retrains. */
static const char *aug_identity(int est_on, const cmds_fc_info *fi) {
  return est_on && fi->n[2] > 0 && fi->augmented_id[0] ? fi->augmented_id : "none";
}

/* 1 when a model's or checkpoint's cmds.config_key names the configuration cfg: every key it
 * names has cfg's value and every model key it does not name (files older than the key) is at
 * its default, the behaviour of the code that wrote it. An unknown key: 0. */
static int same_model_config(const char *have, const cmds_config *cfg) {
  cmds_config got;
  cmds_config_default(&got);
  for (const char *p = have; *p;) {
    const char *semi = strchr(p, ';'), *end = semi ? semi : p + strlen(p), *eq = memchr(p, '=', (size_t)(end - p));
    char kv[CMDS_CFG_VALUE_MAX + 128];
    if (!eq || (size_t)(end - p) >= sizeof kv) return 0;
    memcpy(kv, p, (size_t)(end - p));
    kv[end - p] = 0;
    cmds_error e = {0};
    if (cmds_config_set_arg(&got, kv, "config_key", CMDS_KEYS_MODEL, &e)) return 0;
    p = semi ? semi + 1 : end;
  }
  return cmds_config_equal(&got, cfg, CMDS_KEYS_MODEL);
}

/* The sample cache a model's features came from (metadata cmds.sample_cache_id): "" when the
 * feature cache is older than the attribute. */
static int sample_cache_matches(const char *path, const cmds_fc_info *fi) {
  char have[64];
  cmds_error e = {0};
  if (train_ckpt_meta(path, "cmds.sample_cache_id", have, sizeof have, &e) != CMDS_OK) have[0] = 0;
  return !strcmp(have, fi->sample_cache_id);
}

static int est_matches(const char *path, const char *want, const char *want_aug) {
  char have[300], have_aug[CMDS_SC_AUG_ID_LEN];
  cmds_error e = {0};
  if (train_ckpt_meta(path, "cmds.normals_est_id", have, sizeof have, &e) != CMDS_OK) snprintf(have, sizeof have, "none");
  if (train_ckpt_meta(path, "cmds.augmented_id", have_aug, sizeof have_aug, &e) != CMDS_OK)
    snprintf(have_aug, sizeof have_aug, "none");
  return !strcmp(have, want) && !strcmp(have_aug, want_aug);
}

/* Metadata both the checkpoint and the final file carry. */
typedef struct meta_kv {
  char step[32], seed[32], k[16], version[160], streams[64], blocks[64], steps[32];
  const char *kv[40];
  int n;
} meta_kv;

static void meta_fill(meta_kv *mk, const cmds_task *t, const task_state *s, const char *schema, const char *key,
                      uint64_t seed, int64_t step, int64_t steps) {
  snprintf(mk->step, sizeof mk->step, "%lld", (long long)step);
  snprintf(mk->steps, sizeof mk->steps, "%lld", (long long)steps);
  snprintf(mk->seed, sizeof mk->seed, "%llu", (unsigned long long)seed);
  snprintf(mk->k, sizeof mk->k, "%d", t->k);
  snprintf(mk->version, sizeof mk->version, "%s", cmds_code_version());
  snprintf(mk->streams, sizeof mk->streams, "%s%s%s", s->real_on ? "real" : "", s->real_on && s->est_on ? "," : "",
           s->est_on ? "est" : "");
  size_t used = 0;
  mk->blocks[0] = 0;
  for (int i = 0; i < s->L; i++)
    used += (size_t)snprintf(mk->blocks + used, sizeof mk->blocks - used, "%s%lld", i ? "," : "", (long long)s->fi.blocks[i]);
  const char *pairs[] = {"cmds.schema", schema, "cmds.schema_version", "1", "cmds.config_key", key,
                         "cmds.dataset", t->dataset, "cmds.category", t->category, "cmds.k", mk->k,
                         "cmds.tag", t->tag, "cmds.code_version", mk->version, "cmds.task_seed", mk->seed,
                         "cmds.step", mk->step, "cmds.steps", mk->steps, "cmds.streams", mk->streams,
                         "cmds.weights_id", s->fi.weights_id, "cmds.feature_blocks", mk->blocks,
                         "cmds.sample_list_hash", s->fi.sample_list_hash,
                         "cmds.sample_cache_id", s->fi.sample_cache_id,
                         "cmds.normals_est_id", est_identity(s->est_on, &s->fi),
                         "cmds.augmented_id", aug_identity(s->est_on && s->aug_on, &s->fi)};
  mk->n = (int)(sizeof pairs / sizeof pairs[0]) / 2;
  for (int i = 0; i < 2 * mk->n; i++) mk->kv[i] = pairs[i];
}

static void write_sidecar_json(cmds_json *j, const cmds_task *t, const task_state *s, const train_params *tp,
                               const char *key, uint64_t seed, int64_t steps_done, const double *last_loss,
                               const char *fc_path, const train_env *env) {
  cmds_json_object_begin(j);
  cmds_json_kv_str(j, "schema", TRAIN_SCHEMA);
  cmds_json_kv_int(j, "schema_version", TRAIN_SCHEMA_VERSION);
  cmds_json_key(j, "task");
  cmds_json_object_begin(j);
  cmds_json_kv_str(j, "dataset", t->dataset);
  cmds_json_kv_str(j, "category", t->category);
  cmds_json_kv_int(j, "k", t->k);
  cmds_json_kv_str(j, "tag", t->tag);
  cmds_json_kv_str(j, "origin", t->origin);
  cmds_json_object_end(j);
  cmds_json_key(j, "config");
  cmds_config_json(&t->cfg, j, CMDS_KEYS_ALL);
  cmds_json_kv_str(j, "config_key", key);
  cmds_json_kv_str(j, "code_version", cmds_code_version());
  char sd[32];
  snprintf(sd, sizeof sd, "%llu", (unsigned long long)seed);
  cmds_json_kv_str(j, "task_seed", sd);
  cmds_json_kv_int(j, "steps", steps_done);
  cmds_json_key(j, "final_loss");
  cmds_json_object_begin(j);
  cmds_json_kv_num(j, "total", last_loss[0] + last_loss[1] + last_loss[2] + last_loss[3]);
  cmds_json_kv_num(j, "real.rgb_to_3d", last_loss[0]);
  cmds_json_kv_num(j, "real.3d_to_rgb", last_loss[1]);
  cmds_json_kv_num(j, "est.rgb_to_3d", last_loss[2]);
  cmds_json_kv_num(j, "est.3d_to_rgb", last_loss[3]);
  cmds_json_object_end(j);
  cmds_json_key(j, "streams");
  cmds_json_object_begin(j);
  cmds_json_kv_bool(j, "real", s->real_on);
  cmds_json_kv_bool(j, "est", s->est_on);
  cmds_json_kv_str(j, "est_off_reason",
                   s->est_on ? "" : !tp->stream_est ? "train.streams=real" : "no normals_est in the feature cache");
  cmds_json_kv_int(j, "est_support_rows", s->est_on ? s->k : 0);
  cmds_json_kv_bool(j, "augmented", s->aug_on);
  cmds_json_kv_int(j, "est_augmented_rows", s->n_aug);
  cmds_json_kv_str(j, "est_augmented_note", s->aug_note);
  cmds_json_kv_str(j, "augmented_id", aug_identity(s->est_on && s->aug_on, &s->fi));
  cmds_json_object_end(j);
  cmds_json_kv_bool(j, "backbone_online", s->online);
  cmds_json_key(j, "input");
  cmds_json_object_begin(j);
  cmds_json_kv_str(j, "feature_cache", fc_path);
  cmds_json_kv_str(j, "backbone", s->fi.backbone);
  cmds_json_kv_str(j, "weights_id", s->fi.weights_id);
  cmds_json_kv_str(j, "sample_list_hash", s->fi.sample_list_hash);
  cmds_json_kv_str(j, "sample_cache_id", s->fi.sample_cache_id);
  cmds_json_key(j, "blocks");
  cmds_json_array_begin(j);
  for (int i = 0; i < s->L; i++) cmds_json_int(j, s->fi.blocks[i]);
  cmds_json_array_end(j);
  cmds_json_kv_int(j, "grid", s->fi.grid);
  cmds_json_kv_int(j, "width", s->fi.width);
  cmds_json_kv_int(j, "image_size", s->fi.image_size);
  cmds_json_object_end(j);
  cmds_json_key(j, "mapper");
  cmds_json_object_begin(j);
  cmds_json_kv_str(j, "file", "mapper.safetensors");
  cmds_json_kv_int(j, "resolution", s->H);
  cmds_json_kv_int(j, "params_per_mapper", mapper_numel(&s->model[0]));
  cmds_json_object_end(j);
  cmds_json_kv_int(j, "ranks_per_task", env->group.size);
  cmds_json_kv_str(j, "device", nn_device_name(env->device));
  cmds_json_object_end(j);
}

/* 1 when the safetensors file `path` was made from the feature cache as it is now (same backbone
 * weights and sample list), or when that cannot be told (no feature cache: the run reports it). */
static int inputs_match(const train_env *env, const cmds_task *t, const char *path) {
  char fc_path[4200], have_w[160], have_h[64];
  snprintf(fc_path, sizeof fc_path, "%s/%s/%s.features.h5", env->cache, t->dataset, t->category);
  cmds_error e = {0};
  hid_t fc;
  cmds_fc_info fi;
  if (!cmds_is_file(fc_path) ||
      cmds_h5_open_read(&fc, fc_path, MPI_COMM_SELF, CMDS_FEATURE_CACHE_SCHEMA, CMDS_FEATURE_CACHE_VERSION, &e))
    return 1;
  int rc = cmds_fc_read_info(fc, fc_path, &fi, &e);
  H5Fclose(fc);
  if (rc) return 1;
  if (train_ckpt_meta(path, "cmds.weights_id", have_w, sizeof have_w, &e) ||
      train_ckpt_meta(path, "cmds.sample_list_hash", have_h, sizeof have_h, &e))
    return 0;
  train_params tp;
  train_config_params(&t->cfg, &tp);
  int est_on = tp.stream_est && (fi.modalities & (1 << CMDS_FC_NORMALS_EST));
  return !strcmp(have_w, fi.weights_id) && !strcmp(have_h, fi.sample_list_hash) && sample_cache_matches(path, &fi) &&
         est_matches(path, est_identity(est_on, &fi), aug_identity(est_on && tp.augmented, &fi));
}

/* Test hook (tests/jobs/test_e2e.sh): CMDS_TEST_HOLD_AT_STEP=N holds a task after its step N
 * until a stop is requested (a signal on any rank; at most 120 s, then it goes on), in the tasks
 * whose label (dataset/category/k<k>/tag) contains CMDS_TEST_HOLD_TASK (every task when unset).
 * The group's rank 0 prints "held after step N" first, so a test can kill cmds-run while the
 * task is known to be running. Collective over the group (the stop test is an all-reduce). */
static void test_hold(const cmds_mpi *g, const char *label, int64_t done) {
  const char *at = getenv("CMDS_TEST_HOLD_AT_STEP"), *task = getenv("CMDS_TEST_HOLD_TASK");
  if (!at || done != atoll(at) || (task && !strstr(label, task))) return;
  if (g->rank == 0) fprintf(stderr, "[train] %s: held after step %lld until a stop is requested (CMDS_TEST_HOLD_AT_STEP)\n", label, (long long)done);
  for (int i = 0; i < 6000 && !cmds_stop_requested_any(g); i++) usleep(20000);
}

int train_task_run(train_env *env, const cmds_task *t, train_result *res, cmds_error *err) {
  memset(res, 0, sizeof *res);
  const cmds_mpi *g = &env->group;
  double t0 = cmds_now();
  train_params tp;
  train_config_params(&t->cfg, &tp);
  res->steps_total = tp.steps;
  char key[2048], dir[4096], final[4200], sidecar[4200], rec_path[4200], ckpt[4200], ckpt_json[4200];
  cmds_config_join(&t->cfg, CMDS_KEYS_MODEL, key, sizeof key);
  train_task_dir(env, t, dir, sizeof dir);
  snprintf(final, sizeof final, "%s/mapper.safetensors", dir);
  snprintf(sidecar, sizeof sidecar, "%s/mapper.json", dir);
  snprintf(rec_path, sizeof rec_path, "%s/train.record.json", dir);
  snprintf(ckpt, sizeof ckpt, "%s/ckpt.safetensors", dir);
  snprintf(ckpt_json, sizeof ckpt_json, "%s/ckpt.json", dir);

  /* Finished with the same configuration: skip. Another configuration in the folder: refuse
   * (a score run may rest on it), unless --force. */
  int skip = 0, rc = CMDS_OK;
  if (g->rank == 0 && !env->force && cmds_is_file(final) && cmds_is_file(sidecar)) {
    char have[2048];
    cmds_error e = {0};
    if (train_ckpt_meta(final, "cmds.config_key", have, sizeof have, &e) == CMDS_OK) {
      if (same_model_config(have, &t->cfg)) {
        skip = inputs_match(env, t, final);
        if (!skip) fprintf(stderr, "[train] %s: made from other features (weights, sample cache, estimated normals or augmented samples changed): retraining\n", final);
      } else
        rc = CMDS_FAIL(err, CMDS_EINPUT,
                       "%s: a mapper trained with another configuration is already here (%s; this task: %s); "
                       "use another tag or --force",
                       final, have, key);
    }
  }
  MPI_CHECK(MPI_Bcast(&skip, 1, MPI_INT, 0, g->comm));
  rc = cmds_mpi_agree(g, err, rc);
  if (rc || skip) {
    res->status = rc ? TRAIN_FAILED : TRAIN_SKIPPED;
    res->elapsed_s = cmds_now() - t0;
    return rc;
  }

  task_state s;
  memset(&s, 0, sizeof s);
  s.online = tp.noise_sigma > 0;
  char fc_path[4200], sc_path[4200];
  rc = load_inputs(env, t, &tp, &s, fc_path, sc_path, err);
  if (!rc && s.online) rc = ensure_backbone(env, &s.fi, fc_path, err);
  uint64_t seed = task_seed(t, tp.seed);
  if (!rc) rc = setup_compute(env, &s, &tp, seed, err);
  if (!rc && g->rank == 0) rc = cmds_mkdir_p(dir, err);
  rc = cmds_mpi_agree(g, err, rc);
  res->est_stream = s.est_on;
  res->backbone_online = s.online;

  /* Resume: a checkpoint of the same configuration. */
  int64_t start = 0;
  if (!rc && !env->force && cmds_is_file(ckpt)) {
    char have[2048], step_s[32];
    cmds_error e = {0};
    char have_w[160], have_h[64];
    int ok = train_ckpt_meta(ckpt, "cmds.config_key", have, sizeof have, &e) == CMDS_OK && same_model_config(have, &t->cfg) &&
             train_ckpt_meta(ckpt, "cmds.step", step_s, sizeof step_s, &e) == CMDS_OK &&
             train_ckpt_meta(ckpt, "cmds.weights_id", have_w, sizeof have_w, &e) == CMDS_OK &&
             train_ckpt_meta(ckpt, "cmds.sample_list_hash", have_h, sizeof have_h, &e) == CMDS_OK &&
             !strcmp(have_w, s.fi.weights_id) && !strcmp(have_h, s.fi.sample_list_hash) && sample_cache_matches(ckpt, &s.fi) &&
             est_matches(ckpt, est_identity(s.est_on, &s.fi), aug_identity(s.est_on && s.aug_on, &s.fi));
    int ok_all = 0;
    MPI_CHECK(MPI_Allreduce(&ok, &ok_all, 1, MPI_INT, MPI_MIN, g->comm));
    if (ok_all) {
      mapper_model *ms[2] = {&s.model[0], &s.model[1]};
      mapper_adamw *os[2] = {&s.opt[0], &s.opt[1]};
      start = strtoll(step_s, NULL, 10);
      rc = cmds_mpi_agree(g, err, train_ckpt_load(ckpt, ms, os, prefixes, 2, err));
      s.opt[0].step = s.opt[1].step = start;
      if (!rc && g->rank == 0) fprintf(stderr, "[train] %s: resuming from the checkpoint at step %lld\n", dir, (long long)start);
    } else if (g->rank == 0) {
      fprintf(stderr, "[train] %s: ignoring a checkpoint of another configuration or other features, or an unreadable one (%s)\n",
              dir, e.code ? e.msg : "configuration or input features differ");
    }
  }
  res->start_step = start;

  cmds_record rec;
  cmds_record_begin(&rec, "train", env->argc, env->argv, g);
  char label[400];
  snprintf(label, sizeof label, "%s/%s/k%d/%s", t->dataset, t->category, t->k, t->tag);
  cmds_progress prog;
  cmds_progress_begin(&prog, g, "train", label, tp.steps - start);
  double last[4] = {0, 0, 0, 0}, first_total = -1, t_steps = cmds_now();
  const char *kill_at = getenv("CMDS_TEST_KILL_AT_STEP"), *sig_at = getenv("CMDS_TEST_SIGNAL_AT_STEP");
  int stopped = 0;
  int64_t step = start;
  for (; step < tp.steps && !rc; step++) {
    for (int m = 0; m < 2; m++) mapper_zero_grad(&s.model[m]);
    double loss[4] = {0, 0, 0, 0};
    int lrc = CMDS_OK;
    if (s.real_on) lrc = step_stream(env, &s, &tp, seed, step, STREAM_R, loss, err);
    if (!lrc && s.est_on) lrc = step_stream(env, &s, &tp, seed, step, STREAM_E, loss + 2, err);
    if (!lrc) lrc = allreduce_grads(env, &s, err);
    rc = cmds_mpi_agree(g, err, lrc);
    if (rc) break;
    MPI_CHECK(MPI_Allreduce(loss, last, 4, MPI_DOUBLE, MPI_SUM, g->comm));
    if (first_total < 0) first_total = last[0] + last[1] + last[2] + last[3];
    float lr = (float)mapper_cosine_lr(step, tp.steps, tp.lr, tp.lr_min);
    for (int m = 0; m < 2 && !lrc; m++) lrc = mapper_adamw_step(&s.opt[m], &s.model[m], &s.ctx, lr, err);
    if (!lrc) lrc = nn_ctx_sync(&s.ctx, err);
    rc = cmds_mpi_agree(g, err, lrc);
    if (rc) break;
    cmds_progress_step(&prog, 1);
    int64_t done = step + 1;
    if (sig_at && g->rank == 0 && done == atoll(sig_at)) raise(SIGTERM); /* test: one rank gets the signal */
    test_hold(g, label, done);
    stopped = cmds_stop_requested_any(g);
    if (done < tp.steps && (stopped || (env->checkpoint_every > 0 && done % env->checkpoint_every == 0))) {
      int crc = CMDS_OK;
      if (g->rank == 0) {
        meta_kv mk;
        meta_fill(&mk, t, &s, CKPT_SCHEMA, key, seed, done, tp.steps);
        mapper_model *ms[2] = {&s.model[0], &s.model[1]};
        mapper_adamw *os[2] = {&s.opt[0], &s.opt[1]};
        crc = train_ckpt_save(ckpt, ms, os, prefixes, 2, mk.kv, mk.n, err);
        if (!crc) {
          cmds_json j;
          cmds_json_init(&j, 2);
          cmds_json_object_begin(&j);
          cmds_json_kv_str(&j, "schema", CKPT_SCHEMA);
          cmds_json_kv_int(&j, "schema_version", 1);
          cmds_json_kv_str(&j, "config_key", key);
          cmds_json_kv_int(&j, "step", done);
          cmds_json_kv_int(&j, "steps", tp.steps);
          cmds_json_kv_str(&j, "task_seed", mk.seed);
          cmds_json_kv_num(&j, "loss", last[0] + last[1] + last[2] + last[3]);
          cmds_json_kv_str(&j, "reason", stopped ? "signal" : "interval");
          cmds_json_object_end(&j);
          cmds_json_raw(&j, "\n");
          crc = cmds_write_file_atomic(ckpt_json, j.buf, j.len, err);
          cmds_json_free(&j);
        }
      }
      rc = cmds_mpi_agree(g, err, crc);
    }
    if (!rc && kill_at && g->rank == 0 && done == atoll(kill_at)) raise(SIGKILL); /* test: a hard kill */
    if (!rc && stopped && done < tp.steps) {
      step++;
      rc = CMDS_FAIL(err, CMDS_EINTERRUPTED, "%s: stopped by a signal at step %lld of %lld; checkpoint written, rerun to resume",
                     label, (long long)done, (long long)tp.steps);
      break;
    }
  }
  double step_time = cmds_now() - t_steps;
  res->steps_run = step - start;
  res->final_loss = last[0] + last[1] + last[2] + last[3];
  if (!rc) {
    cmds_progress_end(&prog);
    int wrc = CMDS_OK;
    if (g->rank == 0) {
      meta_kv mk;
      meta_fill(&mk, t, &s, TRAIN_SCHEMA, key, seed, tp.steps, tp.steps);
      const mapper_model *ms[2] = {&s.model[0], &s.model[1]};
      wrc = mapper_save(ms, prefixes, 2, mk.kv, mk.n, final, err);
      if (!wrc) {
        cmds_json j;
        cmds_json_init(&j, 2);
        write_sidecar_json(&j, t, &s, &tp, key, seed, tp.steps, last, fc_path, env);
        cmds_json_raw(&j, "\n");
        wrc = cmds_write_file_atomic(sidecar, j.buf, j.len, err);
        cmds_json_free(&j);
      }
      if (!wrc) {
        remove(ckpt);
        remove(ckpt_json);
      }
    }
    rc = cmds_mpi_agree(g, err, wrc);
  }
  res->elapsed_s = cmds_now() - t0;
  if (!rc) {
    cmds_json *j = &rec.json;
    cmds_json_kv_str(j, "dataset", t->dataset);
    cmds_json_kv_str(j, "category", t->category);
    cmds_json_kv_int(j, "k", t->k);
    cmds_json_kv_str(j, "tag", t->tag);
    cmds_json_kv_str(j, "task_origin", t->origin);
    cmds_json_kv_str(j, "output", final);
    cmds_json_kv_str(j, "feature_cache", fc_path);
    cmds_json_kv_str(j, "sample_cache", sc_path);
    cmds_json_key(j, "config");
    cmds_config_json(&t->cfg, j, CMDS_KEYS_ALL);
    cmds_json_kv_int(j, "steps", tp.steps);
    cmds_json_kv_int(j, "resumed_from_step", start);
    cmds_json_kv_int(j, "steps_run", res->steps_run);
    cmds_json_kv_num(j, "first_loss", first_total);
    cmds_json_kv_num(j, "final_loss", res->final_loss);
    cmds_json_kv_bool(j, "real_stream", s.real_on);
    cmds_json_kv_bool(j, "est_stream", s.est_on);
    cmds_json_kv_str(j, "est_stream_note",
                     s.est_on ? "" : !tp.stream_est ? "off: train.streams=real"
                                                    : "off: the feature cache has no normals_est (no cmds-estimate run)");
    cmds_json_kv_int(j, "est_support_rows", s.est_on ? s.k : 0);
    cmds_json_kv_int(j, "est_augmented_rows", s.n_aug);
    cmds_json_kv_str(j, "est_augmented_note", s.aug_note);
    cmds_json_kv_int(j, "augmented_rows_in_cache", s.est_on ? s.fi.n[2] : 0);
    cmds_json_kv_bool(j, "augmented", s.aug_on);
    cmds_json_kv_str(j, "augmented_id", aug_identity(s.est_on && s.aug_on, &s.fi));
    cmds_json_kv_str(j, "sample_cache_id", s.fi.sample_cache_id);
    cmds_json_kv_bool(j, "backbone_online", s.online);
    cmds_json_kv_str(j, "backbone_note", s.online ? "RGB features recomputed every step with input noise (train.noise_sigma > 0)"
                                                  : "cached RGB features (train.noise_sigma = 0)");
    cmds_json_kv_str(j, "weights_id", s.fi.weights_id);
    cmds_json_kv_int(j, "ranks_per_task", g->size);
    cmds_json_kv_str(j, "collective", cmds_collective_backend(&env->coll));
    cmds_json_kv_str(j, "device", nn_device_name(env->device));
    cmds_json_kv_num(j, "seconds_per_step", res->steps_run ? step_time / (double)res->steps_run : 0);
    cmds_record_finish(&rec, rec_path, "ok", err);
    res->status = TRAIN_DONE;
  } else {
    cmds_json_free(&rec.json);
    res->status = rc == CMDS_EINTERRUPTED ? TRAIN_INTERRUPTED : TRAIN_FAILED;
  }
  task_state_free(&s);
  return rc;
}
