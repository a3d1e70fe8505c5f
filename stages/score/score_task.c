/* score_task: see score_task.h.
 *
 * Maps (METHOD.md section 6; D-wide sub-space l of a (1, L*D, R, R) tensor = block l):
 *   x_rgb, x_n, x_e   features of RGB, real normals, estimated normals (feature cache rows,
 *                     bicubic to R = mapper.resolution: mapper_input_from_f16)
 *   Psi_3D^R = mean_l [1 - cos(rgb_to_3d(x_rgb)_l, x_n_l)]   the 3D prediction vs real normals
 *   Psi_3D^E = mean_l [1 - cos(rgb_to_3d(x_rgb)_l, x_e_l)]   ... vs estimated normals
 *   Psi_2D^R = mean_l [1 - cos(3d_to_rgb(x_n)_l, x_rgb_l)]   the RGB prediction from real normals
 *   Psi_2D^E = mean_l [1 - cos(3d_to_rgb(x_e)_l, x_rgb_l)]   ... from estimated normals
 * i.e. Psi_2D measures how well the 2D (RGB) features are predicted from the 3D ones, Psi_3D
 * how well the 3D features are predicted from RGB. Three mapper forwards per sample (two
 * without normals_est). The mean over layers is (d_0 + ... + d_{L-1}) / L in float32. */
#include "score_task.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "feature_cache.h"
#include "fsutil.h"
#include "fuse.h"
#include "h5io.h"
#include "mapper.h"
#include "nn/nn.h"
#include "progress.h"
#include "record.h"
#include "safetensors.h"
#include "sample_cache.h"
#include "score_files.h"

#define MAPS_ROUND_ROWS 32 /* rows per collective write of a maps file */

/* What the mapper file says about itself (rank 0 reads, every rank gets a copy). */
typedef struct model_meta {
  char id[96], kind[16];
  int64_t width, layers, resolution;
  int resolution_from_task; /* the file names no resolution: the task's mapper.resolution */
  char weights_id[96], sample_list_hash[32], blocks[64], streams[64];
  char sample_cache_id[32]; /* cmds.sample_cache_id ("" in models older than it) */
  char differ[1024]; /* task keys that differ from the model's cmds.config_key */
} model_meta;

static int read_model_meta(const char *path, const cmds_config *task_cfg, model_meta *m, cmds_error *err) {
  memset(m, 0, sizeof *m);
  if (!cmds_is_file(path))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: no trained mapper (run cmds-train for this task first)", path);
  int rc = cmds_file_identity(path, m->id, sizeof m->id, err);
  if (rc) return rc;
  cmds_st_file f;
  if ((rc = cmds_st_open(&f, path, err))) return rc;
  const char *kind = cmds_st_meta(&f, "mapper.kind"), *w = cmds_st_meta(&f, "mapper.width"),
             *l = cmds_st_meta(&f, "mapper.layers"), *schema = cmds_st_meta(&f, "cmds_schema");
  if (!schema || strcmp(schema, "cmds.mapper_weights")) {
    rc = CMDS_FAIL(err, CMDS_ESCHEMA, "%s: metadata cmds_schema = '%s', expected cmds.mapper_weights (not a mapper file?)",
                   path, schema ? schema : "(missing)");
  } else if (!kind || !w || !l) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: metadata mapper.kind / mapper.width / mapper.layers missing (not a mapper file?)",
                   path);
  } else {
    snprintf(m->kind, sizeof m->kind, "%s", kind);
    m->width = strtoll(w, NULL, 10);
    m->layers = strtoll(l, NULL, 10);
  }
  const char *s;
  if ((s = cmds_st_meta(&f, "cmds.weights_id"))) snprintf(m->weights_id, sizeof m->weights_id, "%s", s);
  if ((s = cmds_st_meta(&f, "cmds.sample_list_hash"))) snprintf(m->sample_list_hash, sizeof m->sample_list_hash, "%s", s);
  if ((s = cmds_st_meta(&f, "cmds.sample_cache_id"))) snprintf(m->sample_cache_id, sizeof m->sample_cache_id, "%s", s);
  if ((s = cmds_st_meta(&f, "cmds.feature_blocks"))) snprintf(m->blocks, sizeof m->blocks, "%s", s);
  if ((s = cmds_st_meta(&f, "cmds.streams"))) snprintf(m->streams, sizeof m->streams, "%s", s);
  /* resolution: mapper.resolution, else inside cmds.config_key (cmds-train), else the task's */
  const char *res = cmds_st_meta(&f, "mapper.resolution");
  char buf[64] = {0};
  const char *ck = cmds_st_meta(&f, "cmds.config_key");
  size_t used = 0;
  if (ck) {
    /* "k=v;k=v": compare every training key with the task's, pick mapper.resolution */
    const char *p = ck;
    while (*p) {
      const char *semi = strchr(p, ';'), *end = semi ? semi : p + strlen(p), *eq = memchr(p, '=', (size_t)(end - p));
      if (eq) {
        int k = cmds_key_find(p, (size_t)(eq - p));
        char v[CMDS_CFG_VALUE_MAX], canon[CMDS_CFG_VALUE_MAX];
        size_t vl = (size_t)(end - eq - 1);
        if (vl < sizeof v) {
          memcpy(v, eq + 1, vl);
          v[vl] = 0;
          if (k == CK_RESOLUTION && !res) snprintf(buf, sizeof buf, "%s", v);
          if (k >= 0 && cmds_keys[k].stage != CMDS_KEY_SCORE && cmds_key_canon(k, v, canon, sizeof canon, NULL, 0) &&
              strcmp(canon, task_cfg->value[k]) && used < sizeof m->differ)
            used += (size_t)snprintf(m->differ + used, sizeof m->differ - used, "%s%s=%s (task: %s)", used ? ", " : "",
                                     cmds_keys[k].name, canon, task_cfg->value[k]);
        }
      }
      p = semi ? semi + 1 : end;
    }
  }
  if (!res && buf[0]) res = buf;
  if (!rc) {
    char *end = NULL;
    const char *txt = res ? res : task_cfg->value[CK_RESOLUTION];
    m->resolution = strtoll(txt, &end, 10);
    m->resolution_from_task = !res;
    if (!*txt || *end || m->resolution < 1)
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: mapper.resolution '%s' is not a positive integer", path, txt);
  }
  cmds_st_close(&f);
  return rc;
}

/* Per-rank working state of the mapper pass. */
typedef struct mapper_pass {
  mapper_model to3d, to2d; /* rgb_to_3d, 3d_to_rgb */
  nn_arena scratch, io;
  nn_ctx ctx;
  nn_tensor x_rgb, x_3d, p3, p2, d;
  float *dhost;
  uint16_t *f16;
  int64_t L, D, G, R;
  int64_t forwards;
} mapper_pass;

static void pass_free(mapper_pass *p) {
  if (p->ctx.scratch) nn_ctx_free(&p->ctx);
  nn_arena_free(&p->io);
  nn_arena_free(&p->scratch);
  mapper_free(&p->to3d);
  mapper_free(&p->to2d);
  free(p->dhost);
  free(p->f16);
}

static int pass_init(mapper_pass *p, const char *model, nn_device dev, int64_t L, int64_t D, int64_t G, int64_t R,
                     cmds_error *err) {
  memset(p, 0, sizeof *p);
  p->L = L, p->D = D, p->G = G, p->R = R;
  int rc = mapper_load(&p->to3d, model, "rgb_to_3d.", dev, err);
  if (!rc && (rc = mapper_load(&p->to2d, model, "3d_to_rgb.", dev, err))) mapper_free(&p->to3d);
  if (rc) return rc;
  size_t scr = mapper_scratch_bytes(&p->to3d.cfg, 1, R, R), s2 = mapper_scratch_bytes(&p->to2d.cfg, 1, R, R);
  if (s2 > scr) scr = s2;
  scr += (size_t)(L * D * G * G) * 6 + (size_t)(R * R) * 4 + (1 << 16); /* input staging, cosine */
  size_t big = (size_t)(L * D * R * R) * sizeof(float);
  rc = nn_arena_init(&p->scratch, dev, scr, err);
  if (!rc) rc = nn_arena_init(&p->io, dev, 4 * (big + 512) + (size_t)(R * R) * 4 + 4096, err);
  if (!rc) rc = nn_ctx_init(&p->ctx, dev, &p->scratch, NULL, 0, err);
  int64_t xs[4] = {1, L * D, R, R}, ds[3] = {1, R, R};
  if (!rc) rc = nn_tensor_alloc(&p->x_rgb, &p->io, NN_F32, 4, xs, err);
  if (!rc) rc = nn_tensor_alloc(&p->x_3d, &p->io, NN_F32, 4, xs, err);
  if (!rc) rc = nn_tensor_alloc(&p->p3, &p->io, NN_F32, 4, xs, err);
  if (!rc) rc = nn_tensor_alloc(&p->p2, &p->io, NN_F32, 4, xs, err);
  if (!rc) rc = nn_tensor_alloc(&p->d, &p->io, NN_F32, 3, ds, err);
  p->dhost = cmds_xmalloc(sizeof(float) * (size_t)(R * R));
  p->f16 = cmds_xmalloc(sizeof(uint16_t) * (size_t)(L * G * G * D));
  if (rc) pass_free(p);
  return rc;
}

/* out (R*R, host) = mean over blocks of 1 - cos(P_l, T_l). */
static int mean_cosine(mapper_pass *p, const nn_tensor *P, const nn_tensor *T, float *out, cmds_error *err) {
  int64_t R2 = p->R * p->R, n = R2;
  for (int64_t l = 0; l < p->L; l++) {
    nn_tensor a = nn_tensor_view((float *)P->data + l * p->D * R2, NN_F32, p->ctx.device, 1, p->D, p->R, p->R);
    nn_tensor b = nn_tensor_view((float *)T->data + l * p->D * R2, NN_F32, p->ctx.device, 1, p->D, p->R, p->R);
    nn_tensor h = nn_tensor_view(p->dhost, NN_F32, NN_CPU, 1, p->R, p->R, -1);
    int rc = nn_cosine_distance_forward(&p->ctx, &p->d, &a, &b, err);
    if (!rc) rc = nn_tensor_copy(&h, &p->d, err);
    if (rc) return rc;
    for (int64_t i = 0; i < n; i++) out[i] = l ? out[i] + p->dhost[i] : p->dhost[i];
  }
  const float L = (float)p->L;
  for (int64_t i = 0; i < n; i++) out[i] /= L;
  return CMDS_OK;
}

static int load_input(mapper_pass *p, hid_t fc, cmds_fc_modality m, int64_t row, nn_tensor *x, cmds_error *err) {
  int rc = cmds_fc_read_rows(fc, 1, m, row, 1, p->f16, err);
  if (rc) return cmds_error_wrap(err, "feature cache test/%s row %lld: ", cmds_fc_modality_name(m), (long long)row);
  return mapper_input_from_f16(&p->ctx, x, p->f16, 1, p->L, p->G, p->D, err);
}

/* The four maps of test row `row` into maps[PSI_*] (R*R each; est ones when est). */
static int sample_maps(mapper_pass *p, hid_t fc, int64_t row, int est, float *maps[PSI_N], cmds_error *err) {
  int rc = load_input(p, fc, CMDS_FC_RGB, row, &p->x_rgb, err);
  if (!rc) rc = mapper_forward(&p->to3d, &p->ctx, &p->x_rgb, &p->p3, NULL, err);
  if (!rc) rc = load_input(p, fc, CMDS_FC_NORMALS, row, &p->x_3d, err);
  if (!rc) rc = mapper_forward(&p->to2d, &p->ctx, &p->x_3d, &p->p2, NULL, err);
  if (!rc) rc = mean_cosine(p, &p->p3, &p->x_3d, maps[PSI_3D_REAL], err);
  if (!rc) rc = mean_cosine(p, &p->p2, &p->x_rgb, maps[PSI_2D_REAL], err);
  p->forwards += 2;
  if (est && !rc) {
    rc = load_input(p, fc, CMDS_FC_NORMALS_EST, row, &p->x_3d, err);
    if (!rc) rc = mapper_forward(&p->to2d, &p->ctx, &p->x_3d, &p->p2, NULL, err);
    if (!rc) rc = mean_cosine(p, &p->p3, &p->x_3d, maps[PSI_3D_EST], err);
    if (!rc) rc = mean_cosine(p, &p->p2, &p->x_rgb, maps[PSI_2D_EST], err);
    p->forwards++;
  }
  return rc;
}

/* Everything a task needs to know before it computes. */
typedef struct task_io {
  char model[4200], dir[4200], streams[4300], record[4300], fc[4200], sc[4200];
  cmds_fc_info fi;
  model_meta mm;
  score_streams_info want;
  char est_off_reason[160];
} task_io;

static int check_inputs(const score_env *env, const score_task *t, task_io *io, cmds_error *err) {
  const cmds_mpi *mpi = env->mpi;
  snprintf(io->model, sizeof io->model, "%s/models/%s/%s/k%d/%s/mapper.safetensors", env->run, t->task.dataset, t->task.category,
           t->task.k, t->task.tag);
  snprintf(io->dir, sizeof io->dir, "%s/maps/%s/%s/k%d/%s", env->run, t->task.dataset, t->task.category, t->task.k, t->task.tag);
  snprintf(io->streams, sizeof io->streams, "%s/streams.h5", io->dir);
  snprintf(io->record, sizeof io->record, "%s/score.record.json", io->dir);
  snprintf(io->fc, sizeof io->fc, "%s/%s/%s.features.h5", env->cache, t->task.dataset, t->task.category);
  snprintf(io->sc, sizeof io->sc, "%s/%s/%s.h5", env->cache, t->task.dataset, t->task.category);
  int rc = CMDS_OK;
  int64_t S = 0, n_sc = 0;
  char sc_hash[32] = {0}, sc_id[CMDS_SC_IDENTITY_LEN] = {0};
  /* rank 0 reads the metadata of the three inputs; the others get copies */
  if (mpi->rank == 0) {
    hid_t f;
    rc = cmds_h5_open_read(&f, io->fc, MPI_COMM_SELF, CMDS_FEATURE_CACHE_SCHEMA, CMDS_FEATURE_CACHE_VERSION, err);
    if (rc && !cmds_is_file(io->fc))
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: no feature cache for %s/%s (run cmds-features first)", io->fc, t->task.dataset,
                     t->task.category);
    if (!rc) {
      rc = cmds_fc_read_info(f, io->fc, &io->fi, err);
      H5Fclose(f);
    }
    if (!rc) rc = cmds_h5_open_read(&f, io->sc, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, err);
    if (!rc) {
      cmds_sc_info si;
      rc = cmds_sc_read_info(f, io->sc, &si, err);
      if (!rc) {
        S = si.resolution;
        snprintf(sc_hash, sizeof sc_hash, "%s", si.sample_list_hash);
        cmds_sc_identity(&si, sc_id, sizeof sc_id);
        cmds_sc_info_free(&si);
      }
      hsize_t dims[4];
      if (!rc && cmds_h5_dataset_shape(f, "test/gt_mask", dims, 4) == 3) n_sc = (int64_t)dims[0];
      else if (!rc) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: no test/gt_mask (N, S, S)", io->sc);
      H5Fclose(f);
    }
    if (!rc) rc = read_model_meta(io->model, &t->task.cfg, &io->mm, err);
  }
  rc = cmds_mpi_agree(mpi, err, rc);
  if (rc) return rc;
  MPI_CHECK(MPI_Bcast(&io->fi, sizeof io->fi, MPI_BYTE, 0, mpi->comm));
  MPI_CHECK(MPI_Bcast(&io->mm, sizeof io->mm, MPI_BYTE, 0, mpi->comm));
  MPI_CHECK(MPI_Bcast(&S, 1, MPI_INT64_T, 0, mpi->comm));
  MPI_CHECK(MPI_Bcast(&n_sc, 1, MPI_INT64_T, 0, mpi->comm));
  MPI_CHECK(MPI_Bcast(sc_hash, sizeof sc_hash, MPI_CHAR, 0, mpi->comm));
  MPI_CHECK(MPI_Bcast(sc_id, sizeof sc_id, MPI_CHAR, 0, mpi->comm));
  const cmds_fc_info *fi = &io->fi;
  const model_meta *mm = &io->mm;
  char blocks[64];
  size_t used = 0;
  blocks[0] = 0;
  for (int i = 0; i < fi->nblocks; i++)
    used += (size_t)snprintf(blocks + used, sizeof blocks - used, "%s%lld", i ? "," : "", (long long)fi->blocks[i]);
  /* the same checks on every rank (same data): no agreement needed */
  if (strcmp(sc_hash, fi->sample_list_hash))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s was made from another sample cache than %s (sample lists differ): rerun "
                     "cmds-features", io->fc, io->sc);
  /* prep rebuilt the sample cache with other settings (feature caches older than the attribute have none) */
  if (fi->sample_cache_id[0] && strcmp(sc_id, fi->sample_cache_id))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s was made from another sample cache than %s (sample_cache_id %s, the cache's is "
                     "%s: cmds-prep rebuilt it): rerun cmds-features and cmds-train", io->fc, io->sc, fi->sample_cache_id, sc_id);
  if (fi->n[1] != n_sc)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s has %lld test rows, %s has %lld", io->fc, (long long)fi->n[1], io->sc,
                     (long long)n_sc);
  if (!(fi->modalities & (1 << CMDS_FC_RGB)) || !(fi->modalities & (1 << CMDS_FC_NORMALS)))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: rgb and normals features are both needed", io->fc);
  if (mm->width != fi->width)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: mapper.width = %lld but the features in %s are %lld wide (the model was "
                     "trained on other features)", io->model, (long long)mm->width, io->fc, (long long)fi->width);
  if (mm->layers != fi->nblocks)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: mapper.layers = %lld but %s holds %lld blocks (%s)", io->model,
                     (long long)mm->layers, io->fc, (long long)fi->nblocks, blocks);
  if (mm->weights_id[0] && strcmp(mm->weights_id, fi->weights_id))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: trained on features of backbone weights '%s', but %s has '%s' (rerun "
                     "cmds-train, or use the matching feature cache)", io->model, mm->weights_id, io->fc, fi->weights_id);
  if (mm->sample_list_hash[0] && strcmp(mm->sample_list_hash, fi->sample_list_hash))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: trained on the sample list %s, but %s has %s (rerun cmds-train)", io->model,
                     mm->sample_list_hash, io->fc, fi->sample_list_hash);
  if (fi->sample_cache_id[0] && strcmp(mm->sample_cache_id, fi->sample_cache_id))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: trained on features of the sample cache '%s', but %s is of '%s' (rerun "
                     "cmds-train)", io->model, mm->sample_cache_id[0] ? mm->sample_cache_id : "(not recorded)", io->fc,
                     fi->sample_cache_id);
  if (mm->blocks[0] && strcmp(mm->blocks, blocks))
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: trained on blocks %s, but %s holds blocks %s", io->model, mm->blocks, io->fc,
                     blocks);
  if (S < 1 || mm->resolution > 4096)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: mapper.resolution %lld (from %s) is not usable", io->model,
                     (long long)mm->resolution, mm->resolution_from_task ? "the task" : "the file");
  int est = (fi->modalities & (1 << CMDS_FC_NORMALS_EST)) != 0;
  io->est_off_reason[0] = 0;
  if (!est) snprintf(io->est_off_reason, sizeof io->est_off_reason, "no normals_est features in %s", io->fc);
  /* settings that need the E maps cannot be scored without them */
  for (int s = 0; s < t->nsettings; s++) {
    score_params sp;
    score_params_from_cfg(&t->settings[s].cfg, &sp);
    unsigned u = score_params_uses(&sp);
    if (!est && (u & (1u << PSI_2D_EST | 1u << PSI_3D_EST))) {
      const cmds_config *c = &t->settings[s].cfg;
      if (sp.streams == STREAMS_EST)
        return CMDS_FAIL(err, CMDS_EINPUT, "%s: setting '%s': score.streams=est needs the estimated normals, but %s has "
                         "no normals_est features (run cmds-estimate, then cmds-features)", t->settings[s].origin,
                         t->settings[s].name, io->fc);
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: setting '%s': score.l1=%s, score.l2=%s weight the estimated stream, but %s "
                       "has no normals_est features: set score.l1=0 score.l2=0 or score.streams=real",
                       t->settings[s].origin, t->settings[s].name, c->value[CK_SCORE_L1], c->value[CK_SCORE_L2], io->fc);
    }
    if (sp.sigma * (double)S / 224.0 * 4.0 + 0.5 > NN_BLUR_MAX_RADIUS)
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: setting '%s': score.sigma=%g is %g px at %lld px, more than the blur "
                       "supports", t->settings[s].origin, t->settings[s].name, sp.sigma, sp.sigma * (double)S / 224.0,
                       (long long)S);
  }
  score_streams_info *w = &io->want;
  memset(w, 0, sizeof *w);
  snprintf(w->dataset, sizeof w->dataset, "%s", t->task.dataset);
  snprintf(w->category, sizeof w->category, "%s", t->task.category);
  snprintf(w->tag, sizeof w->tag, "%s", t->task.tag);
  w->k = t->task.k;
  snprintf(w->mapper_id, sizeof w->mapper_id, "%s", mm->id);
  snprintf(w->mapper_kind, sizeof w->mapper_kind, "%s", mm->kind);
  snprintf(w->weights_id, sizeof w->weights_id, "%s", fi->weights_id);
  snprintf(w->sample_list_hash, sizeof w->sample_list_hash, "%s", fi->sample_list_hash);
  snprintf(w->backbone, sizeof w->backbone, "%s", fi->backbone);
  snprintf(w->blocks, sizeof w->blocks, "%s", blocks);
  w->final_norm = fi->final_norm;
  w->width = fi->width;
  w->layers = fi->nblocks;
  w->grid = fi->grid;
  w->resolution = mm->resolution;
  w->eval_size = S;
  w->n = n_sc;
  w->est = est;
  snprintf(w->est_id, sizeof w->est_id, "%s", est ? fi->normals_est_id : "");
  return CMDS_OK;
}

/* Test hook (tests/jobs/test_e2e.sh): CMDS_TEST_HOLD_SCORE_TASK=TEXT holds each task whose label
 * (dataset/category/k<k>/tag) contains TEXT right after its first round of streams rows is
 * written, flushed and flagged done (one row per rank, kept in streams.h5.partial), until a stop
 * is requested (a signal on any rank; at most 120 s, then it goes on). Rank 0 prints "held after
 * streams round 1" first, so a test can kill cmds-run while this task is known to be running with
 * finished rows and no maps, however loaded the machine. Collective (the stop test is an
 * all-reduce). Only where the streams are computed (not when a complete streams.h5 is reused). */
static void test_hold(const cmds_mpi *mpi, const char *label) {
  const char *task = getenv("CMDS_TEST_HOLD_SCORE_TASK");
  if (!task || !strstr(label, task)) return;
  if (mpi->rank == 0)
    fprintf(stderr, "[score] %s: held after streams round 1 until a stop is requested (CMDS_TEST_HOLD_SCORE_TASK)\n",
            label);
  for (int i = 0; i < 6000 && !cmds_stop_requested_any(mpi); i++) usleep(20000);
}

/* The mapper pass: rows not yet done, spread over ranks in contiguous blocks, one row per
 * rank per collective round. *status: 0 computed, 1 resumed, 2 reused. */
static int run_streams(const score_env *env, const score_task *t, task_io *io, int *status, int64_t *forwards,
                       int64_t *computed, cmds_error *err) {
  const cmds_mpi *mpi = env->mpi;
  const score_streams_info *w = &io->want;
  int reuse = 0;
  if (mpi->rank == 0 && !env->force && cmds_is_file(io->streams)) {
    hid_t f;
    cmds_error e;
    score_streams_info got;
    if (!cmds_h5_open_read(&f, io->streams, MPI_COMM_SELF, SCORE_STREAMS_SCHEMA, SCORE_STREAMS_VERSION, &e)) {
      /* (files of early builds lack fg_masks: recomputed) */
      reuse = !score_streams_read_info(f, io->streams, &got, &e) && score_streams_same(&got, w) &&
              cmds_h5_exists(f, "fg_masks");
      H5Fclose(f);
    }
  }
  MPI_CHECK(MPI_Bcast(&reuse, 1, MPI_INT, 0, mpi->comm));
  *forwards = *computed = 0;
  if (reuse) {
    *status = 2;
    return CMDS_OK;
  }
  int rc = cmds_mpi_agree(mpi, err, cmds_mkdir_p(io->dir, err));
  if (rc) return rc;
  cmds_h5file out;
  int resumed = !env->force && score_streams_reopen(&out, io->streams, mpi->comm, w, err) == CMDS_OK;
  if (!resumed) rc = cmds_mpi_agree(mpi, err, score_streams_create(&out, io->streams, mpi->comm, w, err));
  if (rc) return rc;
  *status = resumed ? 1 : 0;
  int64_t n = w->n, R = w->resolution, S = w->eval_size;
  uint8_t *done = cmds_xcalloc((size_t)(n ? n : 1), 1);
  rc = cmds_mpi_agree(mpi, err, score_streams_read_done(out.id, n, done, err));
  int64_t *missing = cmds_xmalloc(sizeof(int64_t) * (size_t)(n ? n : 1)), nt = 0;
  for (int64_t i = 0; i < n; i++)
    if (!done[i]) missing[nt++] = i;
  int64_t b, e, most = 0;
  cmds_block_range(nt, mpi->rank, mpi->size, &b, &e);
  int64_t mine = e - b;
  MPI_CHECK(MPI_Allreduce(&mine, &most, 1, MPI_INT64_T, MPI_MAX, mpi->comm));
  /* inputs: features and sample cache, each rank reads its own rows */
  hid_t fc = H5I_INVALID_HID, sc = H5I_INVALID_HID;
  cmds_sc_group grp;
  memset(&grp, 0, sizeof grp);
  int have_grp = 0;
  mapper_pass p;
  memset(&p, 0, sizeof p);
  int have_pass = 0;
  if (!rc) rc = cmds_mpi_agree(mpi, err, cmds_h5_open_read(&fc, io->fc, mpi->comm, CMDS_FEATURE_CACHE_SCHEMA,
                                                             CMDS_FEATURE_CACHE_VERSION, err));
  if (!rc) rc = cmds_mpi_agree(mpi, err, cmds_h5_open_read(&sc, io->sc, mpi->comm, CMDS_SAMPLE_CACHE_SCHEMA,
                                                             CMDS_SAMPLE_CACHE_VERSION, err));
  if (!rc) {
    int lrc = cmds_sc_group_open(sc, "test", io->sc, &grp, err);
    have_grp = !lrc;
    rc = cmds_mpi_agree(mpi, err, lrc);
  }
  if (!rc && mine > 0) {
    rc = pass_init(&p, io->model, env->device, w->layers, w->width, w->grid, R, err);
    have_pass = !rc;
    if (!rc && (p.to3d.cfg.width != w->width || p.to2d.cfg.layers != w->layers))
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: the two mappers differ in width or layers", io->model);
  }
  rc = cmds_mpi_agree(mpi, err, rc);
  cmds_sample_batch sb;
  cmds_sample_batch_alloc(&sb, 1, (int)S);
  float *maps[PSI_N];
  for (int i = 0; i < PSI_N; i++) maps[i] = cmds_xcalloc((size_t)(R * R), sizeof(float));
  char label[300];
  snprintf(label, sizeof label, "%s/%s/k%d/%s streams", t->task.dataset, t->task.category, t->task.k, t->task.tag);
  cmds_progress prog;
  cmds_progress_begin(&prog, mpi, "score", label, mine);
  const char *kill_after = getenv("CMDS_TEST_KILL_AFTER_ROWS"); /* fault injection for tests */
  for (int64_t r0 = 0; r0 < most && !rc; r0++) {
    int has = r0 < mine, lrc = CMDS_OK;
    int64_t row = has ? missing[b + r0] : 0;
    if (has) {
      lrc = cmds_sc_group_read(&grp, row, 1, &sb, err);
      if (!lrc && sb.size != S) lrc = CMDS_FAIL(err, CMDS_EINPUT, "%s: test images are not %lld px", io->sc, (long long)S);
      if (!lrc) lrc = sample_maps(&p, fc, row, (int)w->est, maps, err);
      if (lrc) cmds_error_wrap(err, "test sample %lld: ", (long long)row);
    }
    rc = cmds_mpi_agree(mpi, err, lrc);
    if (!rc && cmds_stop_requested_any(mpi))
      rc = CMDS_FAIL(err, CMDS_EINTERRUPTED, "%s: stopped by a signal; finished rows are kept in %s.partial, rerun to "
                     "resume", label, io->streams);
    if (rc) break;
    score_row sr = {.mask = sb.gt_mask, .fg = sb.fg_mask, .label = sb.label[0], .sample_id = sb.sample_id, .defect_type = sb.defect_type};
    for (int i = 0; i < PSI_N; i++) sr.maps[i] = maps[i];
    rc = cmds_mpi_agree(mpi, err, score_streams_write_row(out.id, w, has, row, &sr, err));
    if (has && !rc) {
      (*computed)++;
      cmds_progress_step(&prog, 1);
      if (kill_after && *computed >= atoll(kill_after)) raise(SIGKILL);
    }
    if (!rc && r0 == 0) test_hold(mpi, label);
  }
  if (!rc) cmds_progress_end(&prog);
  *forwards = p.forwards;
  for (int i = 0; i < PSI_N; i++) free(maps[i]);
  cmds_sample_batch_free(&sb);
  if (have_grp) cmds_sc_group_close(&grp);
  if (sc >= 0) H5Fclose(sc);
  if (fc >= 0) H5Fclose(fc);
  if (have_pass) pass_free(&p);
  free(missing);
  free(done);
  if (!rc) {
    rc = cmds_mpi_agree(mpi, err, cmds_h5_commit(&out, err));
  } else if (out.id >= 0) {
    H5Fclose(out.id); /* keep the partial file: finished rows are reused by the next run */
    out.id = H5I_INVALID_HID;
  }
  return rc;
}

/* One setting's maps file from this rank's rows (already in memory). */
typedef struct rank_rows {
  int64_t b, e;
  float *maps[PSI_N]; /* (e - b, R, R) */
  uint8_t *masks, *fg, *labels; /* (e - b, S, S), (e - b, S, S), (e - b) */
  char *ids;
} rank_rows;

static int write_setting(const score_env *env, const task_io *io, const score_setting *s, const rank_rows *rr,
                         const char *path, const score_maps_info *mi, char *maps_id, size_t id_cap,
                         cmds_error *err) {
  const cmds_mpi *mpi = env->mpi;
  int64_t R = io->want.resolution, S = io->want.eval_size, mine = rr->e - rr->b, most = 0;
  MPI_CHECK(MPI_Allreduce(&mine, &most, 1, MPI_INT64_T, MPI_MAX, mpi->comm));
  score_params sp;
  score_params_from_cfg(&s->cfg, &sp);
  cmds_h5file out;
  int rc = cmds_mpi_agree(mpi, err, score_maps_create(&out, path, mpi->comm, mi, err));
  if (rc) return rc;
  score_finisher fin;
  rc = score_finisher_init(&fin, (int)R, (int)S, err);
  int64_t cap = MAPS_ROUND_ROWS;
  score_maps_hash hash;
  score_maps_hash_init(&hash);
  float *psi = cmds_xmalloc(sizeof(float) * (size_t)(R * R));
  float *scores = cmds_xmalloc(sizeof(float) * (size_t)(cap * S * S));
  float *img = cmds_xmalloc(sizeof(float) * (size_t)cap);
  rc = cmds_mpi_agree(mpi, err, rc);
  for (int64_t r0 = 0; r0 < most && !rc; r0 += cap) {
    int64_t cnt = mine - r0 < cap ? mine - r0 : cap;
    if (cnt < 0) cnt = 0;
    int lrc = CMDS_OK;
    for (int64_t i = 0; i < cnt && !lrc; i++) {
      size_t off = (size_t)((r0 + i) * R * R);
      score_fuse(&sp, rr->maps[PSI_2D_REAL] + off, rr->maps[PSI_2D_EST] ? rr->maps[PSI_2D_EST] + off : NULL,
                 rr->maps[PSI_3D_REAL] + off, rr->maps[PSI_3D_EST] ? rr->maps[PSI_3D_EST] + off : NULL, R * R, psi);
      const uint8_t *fg = sp.fg_mask ? rr->fg + (size_t)((r0 + i) * S * S) : NULL;
      lrc = score_finish(&fin, psi, fg, sp.sigma, scores + (size_t)(i * S * S), &img[i], err);
    }
    rc = cmds_mpi_agree(mpi, err, lrc);
    if (rc) break;
    size_t mo = (size_t)(r0 * S * S);
    if (cnt)
      score_maps_hash_rows(&hash, rr->b + r0, cnt, S, scores, rr->masks + mo, rr->labels + r0, img,
                           rr->ids + (size_t)r0 * SCORE_ID_LEN);
    rc = cmds_mpi_agree(mpi, err,
                        score_maps_write_rows(out.id, rr->b + (cnt ? r0 : 0), cnt, scores, rr->masks + (cnt ? mo : 0),
                                              rr->labels + (cnt ? r0 : 0), img,
                                              rr->ids + (cnt ? (size_t)r0 * SCORE_ID_LEN : 0), err));
  }
  free(psi);
  free(scores);
  free(img);
  score_finisher_free(&fin);
  if (!rc) rc = cmds_mpi_agree(mpi, err, score_maps_write_id(out.id, mpi->comm, &hash, mi, maps_id, id_cap, err));
  if (!rc) return cmds_mpi_agree(mpi, err, cmds_h5_commit(&out, err));
  cmds_h5_abandon(&out);
  return rc;
}

static const char *streams_word(int status) {
  return status == 3 ? "not needed" : status == 2 ? "reused" : status == 1 ? "resumed" : "computed";
}

int score_task_run(const score_env *env, const score_task *t, score_task_result *res, cmds_error *err) {
  const cmds_mpi *mpi = env->mpi;
  memset(res, 0, sizeof *res);
  task_io *io = cmds_xcalloc(1, sizeof *io);
  cmds_record rec;
  cmds_record_begin(&rec, "score", env->argc, env->argv, mpi);
  int rc = cmds_mpi_agree(mpi, err, check_inputs(env, t, io, err));
  if (rc) {
    cmds_error_wrap(err, "task %s/%s/k%d/%s (%s): ", t->task.dataset, t->task.category, t->task.k, t->task.tag, t->task.origin);
    cmds_json_free(&rec.json);
    free(io);
    return rc;
  }
  if (mpi->rank == 0 && io->mm.differ[0])
    fprintf(stderr, "score %s/%s/k%d/%s: note: the model was trained with %s; the model's configuration is used\n",
            t->task.dataset, t->task.category, t->task.k, t->task.tag, io->mm.differ);
  /* settings: which are up to date */
  int ns = t->nsettings;
  int *needs_write = cmds_xcalloc((size_t)ns, sizeof(int)); /* stale, missing or --force */
  score_maps_info *mi = cmds_xcalloc((size_t)ns, sizeof *mi);
  char (*paths)[4400] = cmds_xcalloc((size_t)ns, sizeof *paths);
  char (*ids)[SCORE_MAPS_ID_LEN] = cmds_xcalloc((size_t)ns, sizeof *ids); /* maps_id of each maps file, written or kept */
  char identity[2048];
  score_streams_identity(&io->want, identity, sizeof identity);
  for (int s = 0; s < ns && !rc; s++) {
    snprintf(paths[s], sizeof paths[s], "%s/maps.%s.h5", io->dir, t->settings[s].name);
    score_maps_info *m = &mi[s];
    snprintf(m->dataset, sizeof m->dataset, "%s", t->task.dataset);
    snprintf(m->category, sizeof m->category, "%s", t->task.category);
    snprintf(m->tag, sizeof m->tag, "%s", t->task.tag);
    snprintf(m->setting, sizeof m->setting, "%s", t->settings[s].name);
    m->k = t->task.k;
    cmds_config_join(&t->settings[s].cfg, CMDS_KEY_SCORE, m->score_key, sizeof m->score_key);
    snprintf(m->streams_identity, sizeof m->streams_identity, "%s", identity);
    m->n = io->want.n;
    m->size = io->want.eval_size;
    int other = 0, lrc = CMDS_OK;
    if (mpi->rank == 0) {
      needs_write[s] = !score_maps_up_to_date(paths[s], m, &other, ids[s]) || env->force;
      for (int q = 0; q < s; q++)
        if (!strcmp(t->settings[q].name, t->settings[s].name)) needs_write[s] = 0; /* listed twice */
      if (other && !env->force)
        lrc = CMDS_FAIL(err, CMDS_EINPUT, "%s exists with another setting (its score keys differ from %s of %s): give "
                        "this setting another name, or --force", paths[s], m->score_key, t->settings[s].origin);
    }
    rc = cmds_mpi_agree(mpi, err, lrc);
  }
  if (!rc) MPI_CHECK(MPI_Bcast(needs_write, ns, MPI_INT, 0, mpi->comm));
  int any = 0;
  for (int s = 0; s < ns; s++) any |= needs_write[s];
  /* streams: reused, resumed or computed (only when a setting needs writing) */
  int status = 3; /* 3: not needed (every maps file up to date) */
  int64_t fw = 0, comp = 0;
  if (!rc && (any || env->force)) rc = run_streams(env, t, io, &status, &fw, &comp, err);
  /* settings */
  rank_rows rr;
  memset(&rr, 0, sizeof rr);
  hid_t sf = H5I_INVALID_HID;
  int64_t R = io->want.resolution, S = io->want.eval_size;
  if (!rc && any) {
    cmds_block_range(io->want.n, mpi->rank, mpi->size, &rr.b, &rr.e);
    int64_t m = rr.e - rr.b, m1 = m ? m : 1;
    for (int i = 0; i < PSI_N; i++)
      if (io->want.est || (i != PSI_2D_EST && i != PSI_3D_EST))
        rr.maps[i] = cmds_xmalloc(sizeof(float) * (size_t)(m1 * R * R));
    rr.masks = cmds_xmalloc((size_t)(m1 * S * S));
    rr.fg = cmds_xmalloc((size_t)(m1 * S * S));
    rr.labels = cmds_xmalloc((size_t)m1);
    rr.ids = cmds_xcalloc((size_t)m1, SCORE_ID_LEN);
    rc = cmds_mpi_agree(mpi, err, cmds_h5_open_read(&sf, io->streams, mpi->comm, SCORE_STREAMS_SCHEMA,
                                                      SCORE_STREAMS_VERSION, err));
    if (!rc) {
      score_streams_info got;
      int lrc = score_streams_read_info(sf, io->streams, &got, err);
      if (!lrc && !score_streams_same(&got, &io->want))
        lrc = CMDS_FAIL(err, CMDS_EINTERNAL, "%s: changed while scoring", io->streams);
      if (!lrc) lrc = score_streams_read_rows(sf, &io->want, rr.b, m, rr.maps, rr.masks, rr.fg, rr.labels, rr.ids, err);
      rc = cmds_mpi_agree(mpi, err, lrc);
    }
  }
  char label[300];
  snprintf(label, sizeof label, "%s/%s/k%d/%s settings", t->task.dataset, t->task.category, t->task.k, t->task.tag);
  cmds_progress prog;
  cmds_progress_begin(&prog, mpi, "score", label, ns);
  for (int s = 0; s < ns && !rc; s++) {
    if (needs_write[s]) {
      rc = write_setting(env, io, &t->settings[s], &rr, paths[s], &mi[s], ids[s], sizeof ids[s], err);
      if (rc) cmds_error_wrap(err, "setting '%s' (%s): ", t->settings[s].name, t->settings[s].origin);
      else res->maps_written++;
    } else {
      res->maps_skipped++;
    }
    cmds_progress_step(&prog, 1);
    if (!rc && cmds_stop_requested_any(mpi))
      rc = CMDS_FAIL(err, CMDS_EINTERRUPTED, "%s: stopped by a signal after %d settings; rerun to resume", label, s + 1);
  }
  if (!rc) cmds_progress_end(&prog);
  if (sf >= 0) H5Fclose(sf);
  for (int i = 0; i < PSI_N; i++) free(rr.maps[i]);
  free(rr.masks);
  free(rr.fg);
  free(rr.labels);
  free(rr.ids);
  int64_t tot[2] = {fw, comp}, sum[2];
  MPI_CHECK(MPI_Allreduce(tot, sum, 2, MPI_INT64_T, MPI_SUM, mpi->comm));
  res->mapper_forwards = sum[0];
  res->samples_computed = sum[1];
  res->streams_reused = status >= 2;
  if (!rc) {
    /* A task that wrote nothing (every maps file up to date) keeps the record of the run that
     * wrote them, as the other stages keep theirs when they skip. */
    if (any || env->force) {
      cmds_json *j = &rec.json;
      cmds_json_kv_str(j, "dataset", t->task.dataset);
      cmds_json_kv_str(j, "category", t->task.category);
      cmds_json_kv_int(j, "k", t->task.k);
      cmds_json_kv_str(j, "tag", t->task.tag);
      cmds_json_kv_str(j, "origin", t->task.origin);
      cmds_json_kv_str(j, "model", io->model);
      cmds_json_kv_str(j, "mapper_id", io->mm.id);
      cmds_json_kv_str(j, "mapper_kind", io->mm.kind);
      cmds_json_kv_str(j, "model_keys_differ", io->mm.differ);
      cmds_json_kv_str(j, "feature_cache", io->fc);
      cmds_json_kv_str(j, "sample_cache", io->sc);
      cmds_json_kv_str(j, "streams_file", io->streams);
      cmds_json_kv_str(j, "streams", streams_word(status));
      cmds_json_kv_int(j, "mapper_forwards", res->mapper_forwards);
      cmds_json_kv_int(j, "samples_computed", res->samples_computed);
      cmds_json_kv_int(j, "test_samples", io->want.n);
      cmds_json_kv_int(j, "resolution", R);
      cmds_json_kv_str(j, "resolution_from", io->mm.resolution_from_task ? "task" : "model");
      cmds_json_kv_int(j, "eval_size", S);
      cmds_json_kv_bool(j, "est_available", (int)io->want.est);
      cmds_json_kv_str(j, "est_off_reason", io->est_off_reason);
      cmds_json_kv_str(j, "device", nn_device_name(env->device));
      cmds_json_key(j, "settings");
      cmds_json_array_begin(j);
      for (int s = 0; s < ns; s++) {
        score_params sp;
        score_params_from_cfg(&t->settings[s].cfg, &sp);
        cmds_json_object_begin(j);
        cmds_json_kv_str(j, "name", t->settings[s].name);
        cmds_json_kv_str(j, "origin", t->settings[s].origin);
        cmds_json_kv_str(j, "output", paths[s]);
        cmds_json_kv_str(j, "status", needs_write[s] ? "written" : "skipped");
        /* a setting listed twice: the file its first listing wrote */
        const char *id = ids[s];
        for (int q = 0; q < s; q++)
          if (!strcmp(t->settings[q].name, t->settings[s].name)) {
            id = ids[q];
            break;
          }
        cmds_json_key(j, "maps_id"); /* null: a kept file written before the attribute */
        if (id[0]) cmds_json_str(j, id);
        else cmds_json_null(j);
        cmds_json_kv_num(j, "sigma_px", sp.sigma * (double)S / 224.0);
        cmds_json_key(j, "config");
        cmds_config_json(&t->settings[s].cfg, j, CMDS_KEY_SCORE);
        cmds_json_object_end(j);
      }
      cmds_json_array_end(j);
      rc = cmds_mpi_agree(mpi, err, cmds_record_finish(&rec, io->record, "ok", err));
    } else {
      cmds_json_free(&rec.json);
    }
    if (mpi->rank == 0)
      printf("score %s/%s/k%d/%s: streams %s (%lld samples, %lld mapper forwards), %lld maps written, %lld up to date "
             "-> %s (%.1f s, %d ranks, %s)\n",
             t->task.dataset, t->task.category, t->task.k, t->task.tag, streams_word(status),
             (long long)res->samples_computed, (long long)res->mapper_forwards, (long long)res->maps_written,
             (long long)res->maps_skipped, io->dir, cmds_now() - rec.t0, mpi->size, nn_device_name(env->device));
  } else {
    cmds_json_free(&rec.json);
    cmds_error_wrap(err, "task %s/%s/k%d/%s (%s): ", t->task.dataset, t->task.category, t->task.k, t->task.tag, t->task.origin);
  }
  free(needs_write);
  free(mi);
  free(paths);
  free(ids);
  free(io);
  return rc;
}
