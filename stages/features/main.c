/* cmds-features: the `features` stage. Reads a category's sample cache, runs the frozen
 * ViT backbone on the RGB image, the real normals and (when the cache has them) the
 * estimated normals of every sample, and writes the feature cache
 * (schemas/feature_cache_v1.md): the patch tokens of blocks 4, 7, 11 (1-based) in float16,
 * one parallel-HDF5 file per dataset/category, written collectively. Samples are spread
 * over ranks; with GPUs each rank takes one (local rank modulo the GPUs it sees).
 *
 *   mpiexec -n R cmds-features --cache DIR --dataset mvtec3d|eyecandies
 *       [--category C[,C..]] [--weights FILE.safetensors | --random-backbone SEED]
 *       [--heads H] [--batch B] [--final-norm] [--device auto|cpu|cuda] [--precision fp32|tf32|bf16]
 *       [--zstd-level L] [--force]
 *
 * Inputs (METHOD.md sections 2-3): RGB / 255, normals encoded (n + 1) / 2, both
 * ImageNet-normalised. A cache with an augmented group (cmds-augment, then cmds-estimate)
 * gets its RGB and estimated normals encoded too (feature cache group `augmented`, keyed by
 * the cache's augmented_id); without normals_est those rows are skipped (they only serve the
 * estimated stream). Without --weights a small random ViT (width 96, 12 blocks, patch 8)
 * stands in, as the demo does. Resumable: rows already in `<cat>.features.h5.partial` with
 * the same configuration are not computed again; a complete file is skipped. A complete file
 * of the same backbone and sample cache whose estimated or augmented part is stale (estimate
 * or augment ran since) is extended, not recomputed: its still valid datasets start the
 * partial file (cmds_fc_extend) and only the new rows go through the backbone. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds_mpi.h"
#include "feature_cache.h"
#include "fsutil.h"
#include "h5io.h"
#include "image/normalize.h"
#include "progress.h"
#include "record.h"
#include "sample_cache.h"
#include "tasks_file.h"
#include "vit.h"

typedef struct feat_args {
  const char *cache, *dataset, *categories, *weights;
  uint64_t random_seed;
  int heads, batch, final_norm, tf32, zstd_level, force;
  const char *device, *precision;
} feat_args;

static void usage(void) {
  printf("usage: cmds-features --cache DIR --dataset mvtec3d|eyecandies [options]\n"
         "  --category C[,C..]     categories (default: every <cat>.h5 sample cache in DIR/<dataset>)\n"
         "  --weights FILE         DINO ViT safetensors (timm or transformers names)\n"
         "  --random-backbone S    no weights: a small random ViT from seed S (default 0)\n"
         "  --heads H              attention heads (default width / 64)\n"
         "  --batch B              images per forward (default 8)\n"
         "  --final-norm           apply the final LayerNorm (METHOD.md section 3: off)\n"
         "  --device auto|cpu|cuda (default auto: a GPU per rank when there are GPUs)\n"
         "  --precision P          GPU arithmetic: fp32 (default, matches the CPU to 1e-5), tf32 (TF32\n"
         "                         tensor-core GEMMs) or bf16 (bf16 weights/activations, fp32 accumulation,\n"
         "                         about 1e-2 from fp32, the fastest); the CPU path is always fp32\n"
         "  --tf32                 same as --precision tf32\n"
         "  --zstd-level L         (default 3)    --force   recompute everything\n");
}

static int parse_args(int argc, char **argv, feat_args *a, cmds_error *err) {
  memset(a, 0, sizeof *a);
  a->batch = 8;
  a->zstd_level = 3;
  a->device = "auto";
  a->precision = "fp32";
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(o, "-h") || !strcmp(o, "--help")) return -1;
    if (!strcmp(o, "--final-norm")) { a->final_norm = 1; continue; }
    if (!strcmp(o, "--tf32")) { a->precision = "tf32"; continue; }
    if (!strcmp(o, "--force")) { a->force = 1; continue; }
    if (!v) return CMDS_FAIL(err, CMDS_EINPUT, "%s needs a value (see --help)", o);
    i++;
    char *end = NULL;
    long n = strtol(v, &end, 10);
    int num_ok = end && !*end && n >= 0;
    if (!strcmp(o, "--cache")) a->cache = v;
    else if (!strcmp(o, "--dataset")) a->dataset = v;
    else if (!strcmp(o, "--category")) a->categories = v;
    else if (!strcmp(o, "--weights")) a->weights = v;
    else if (!strcmp(o, "--device")) a->device = v;
    else if (!strcmp(o, "--precision")) a->precision = v;
    else if (!strcmp(o, "--random-backbone") && num_ok) a->random_seed = (uint64_t)n;
    else if (!strcmp(o, "--heads") && num_ok && n > 0) a->heads = (int)n;
    else if (!strcmp(o, "--batch") && num_ok && n > 0 && n <= 4096) a->batch = (int)n;
    else if (!strcmp(o, "--zstd-level") && num_ok && n <= 22) a->zstd_level = (int)n;
    else return CMDS_FAIL(err, CMDS_EINPUT, "bad option or value: %s %s (see --help)", o, v);
  }
  if (!a->cache || !a->dataset) return CMDS_FAIL(err, CMDS_EINPUT, "--cache and --dataset are required (see --help)");
  if (strcmp(a->precision, "fp32") && strcmp(a->precision, "tf32") && strcmp(a->precision, "bf16"))
    return CMDS_FAIL(err, CMDS_EINPUT, "--precision: expected fp32, tf32 or bf16, got '%s'", a->precision);
  a->tf32 = !strcmp(a->precision, "tf32");
  if (strcmp(a->device, "auto") && strcmp(a->device, "cpu") && strcmp(a->device, "cuda"))
    return CMDS_FAIL(err, CMDS_EINPUT, "--device: expected auto, cpu or cuda, got '%s'", a->device);
  return CMDS_OK;
}



typedef struct run_ctx {
  const cmds_mpi *mpi;
  const feat_args *a;
  vit_model *m;
  nn_ctx nn;
  nn_arena scratch, io;
  nn_tensor patches, out;
  float *images, *host_patches, *host_out;
  uint16_t *f16;
  int S, G, D, nblocks;
  int blocks[3];
  int64_t computed;
  int64_t reused[CMDS_FC_NMOD]; /* rows already done when a category started (extended or resumed) */
} run_ctx;

static int forward(run_ctx *r, int n, cmds_error *err) {
  int64_t P = r->m->cfg.patch, in = 3 * P * P, NP = (int64_t)r->G * r->G;
  vit_patchify_cpu(r->images, n, r->S, r->S, P, r->host_patches);
  nn_tensor pv = nn_tensor_view(r->patches.data, NN_F32, r->nn.device, n, NP, in, -1);
  nn_tensor ov = nn_tensor_view(r->out.data, NN_F32, r->nn.device, n, r->nblocks, NP, r->D);
  nn_tensor hp = nn_tensor_view(r->host_patches, NN_F32, NN_CPU, n, NP, in, -1);
  nn_tensor ho = nn_tensor_view(r->host_out, NN_F32, NN_CPU, n, r->nblocks, NP, r->D);
  int rc = nn_tensor_copy(&pv, &hp, err);
  if (!rc) rc = vit_forward(r->m, &r->nn, &pv, r->blocks, r->nblocks, r->a->final_norm, &ov, err);
  if (!rc) rc = nn_ctx_sync(&r->nn, err);
  if (!rc) rc = nn_tensor_copy(&ho, &ov, err);
  if (!rc)
    for (int64_t i = 0; i < (int64_t)n * r->nblocks * NP * r->D; i++) r->f16[i] = nn_f32_to_f16(r->host_out[i]);
  return rc;
}

/* One group and modality: the rows not yet done, spread over ranks in contiguous blocks,
 * computed in batches; each row written by a collective call every rank joins. */
static int run_group(run_ctx *r, hid_t sc, hid_t fc, int g, cmds_fc_modality mod, int64_t n, cmds_error *err) {
  uint8_t *done = cmds_xcalloc((size_t)(n ? n : 1), 1);
  int rc = cmds_fc_read_done(fc, g, mod, done, err);
  int64_t *todo = cmds_xmalloc(sizeof(int64_t) * (size_t)(n ? n : 1)), nt = 0;
  for (int64_t i = 0; i < n; i++)
    if (!done[i]) todo[nt++] = i;
  if (!rc) r->reused[mod] += n - nt; /* the same on every rank: each reads all the flags */
  int64_t b, e;
  cmds_block_range(nt, r->mpi->rank, r->mpi->size, &b, &e);
  int64_t mine = e - b, most = 0;
  MPI_CHECK(MPI_Allreduce(&mine, &most, 1, MPI_INT64_T, MPI_MAX, r->mpi->comm));
  cmds_sc_group grp;
  memset(&grp, 0, sizeof grp);
  const char *gname = cmds_sc_group_name(g);
  if (!rc) rc = cmds_sc_group_open(sc, gname, "sample cache", &grp, err);
  rc = cmds_mpi_agree(r->mpi, err, rc);
  cmds_sample_batch sb;
  cmds_sample_batch_alloc(&sb, 1, r->S);
  float *est = mod == CMDS_FC_NORMALS_EST ? cmds_xmalloc(sizeof(float) * 3 * (size_t)r->S * (size_t)r->S) : NULL;
  char label[64];
  snprintf(label, sizeof label, "%s/%s", gname, cmds_fc_modality_name(mod));
  cmds_progress prog;
  cmds_progress_begin(&prog, r->mpi, "features", label, mine);
  size_t row_f16 = (size_t)r->nblocks * (size_t)r->G * (size_t)r->G * (size_t)r->D;
  const char *kill_after = getenv("CMDS_TEST_KILL_AFTER_ROWS"); /* fault injection for tests */
  for (int64_t r0 = 0; r0 < most && !rc; r0 += r->a->batch) {
    int64_t cnt = mine - r0 < r->a->batch ? mine - r0 : r->a->batch;
    if (cnt < 0) cnt = 0;
    int lrc = CMDS_OK;
    for (int64_t i = 0; i < cnt && !lrc; i++) {
      int64_t row = todo[b + r0 + i];
      lrc = cmds_sc_group_read(&grp, row, 1, &sb, err);
      if (!lrc && mod == CMDS_FC_NORMALS_EST) lrc = cmds_sc_est_read_rows(sc, g, row, 1, est, err);
      if (!lrc)
      {
        float *dst = r->images + (size_t)i * 3 * (size_t)r->S * (size_t)r->S;
        if (mod == CMDS_FC_RGB) cmds_backbone_input_rgb8(sb.rgb, r->S, dst);
        else cmds_backbone_input_normals(mod == CMDS_FC_NORMALS ? sb.normals : est, r->S, dst);
      }
    }
    if (!lrc && cnt) lrc = forward(r, (int)cnt, err);
    rc = cmds_mpi_agree(r->mpi, err, lrc);
    if (!rc && cmds_stop_requested_any(r->mpi))
      rc = CMDS_FAIL(err, CMDS_EINTERRUPTED, "%s: stopped by a signal; finished rows are kept, rerun to resume", label);
    for (int64_t i = 0; i < r->a->batch && !rc; i++) {
      int has = i < cnt;
      rc = cmds_mpi_agree(r->mpi, err,
                          cmds_fc_write_rows(fc, g, mod, has ? todo[b + r0 + i] : 0, has, r->f16 + (size_t)i * row_f16, err));
      if (has) {
        r->computed++;
        cmds_progress_step(&prog, 1);
      }
      if (kill_after && r->computed >= atoll(kill_after)) raise(SIGKILL);
    }
  }
  if (!rc) cmds_progress_end(&prog);
  free(est);
  cmds_sample_batch_free(&sb);
  cmds_sc_group_close(&grp);
  free(todo);
  free(done);
  return rc;
}

static int features_category(const cmds_mpi *mpi, const feat_args *a, run_ctx *r, const char *cat, int argc,
                             char **argv, cmds_error *err) {
  char in[4096], out[4200], rec_path[4200];
  snprintf(in, sizeof in, "%s/%s/%s.h5", a->cache, a->dataset, cat);
  snprintf(out, sizeof out, "%s/%s/%s.features.h5", a->cache, a->dataset, cat);
  snprintf(rec_path, sizeof rec_path, "%s/%s/%s.features.json", a->cache, a->dataset, cat);
  hid_t sc;
  int rc = cmds_mpi_agree(mpi, err, cmds_h5_open_read(&sc, in, mpi->comm, CMDS_SAMPLE_CACHE_SCHEMA,
                                                       CMDS_SAMPLE_CACHE_VERSION, err));
  if (rc) return rc;
  cmds_sc_info si;
  rc = cmds_mpi_agree(mpi, err, cmds_sc_read_info(sc, in, &si, err));
  if (rc) {
    H5Fclose(sc);
    return rc;
  }
  if (si.resolution != r->m->cfg.image) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: images are %lld x %lld, the backbone takes %lld x %lld (prep --size)", in,
                   (long long)si.resolution, (long long)si.resolution, (long long)r->m->cfg.image,
                   (long long)r->m->cfg.image);
    rc = cmds_mpi_agree(mpi, err, rc);
  }
  cmds_fc_info want;
  memset(&want, 0, sizeof want);
  snprintf(want.dataset, sizeof want.dataset, "%s", si.dataset);
  snprintf(want.category, sizeof want.category, "%s", si.category);
  snprintf(want.backbone, sizeof want.backbone, "dino_vit_p%lld_w%lld", (long long)r->m->cfg.patch,
           (long long)r->m->cfg.width);
  snprintf(want.sample_list_hash, sizeof want.sample_list_hash, "%s", si.sample_list_hash);
  cmds_sc_identity(&si, want.sample_cache_id, sizeof want.sample_cache_id);
  want.nblocks = r->nblocks;
  for (int i = 0; i < r->nblocks; i++) want.blocks[i] = r->blocks[i];
  want.grid = r->G;
  want.width = r->D;
  want.image_size = r->S;
  want.final_norm = a->final_norm;
  for (int g = 0; g < 2 && !rc; g++) {
    hsize_t dims[8];
    int nd = cmds_h5_dataset_shape(sc, g ? "test/rgb" : "support/rgb", dims, 8);
    want.n[g] = nd > 0 ? (int64_t)dims[0] : 0;
  }
  want.modalities = (1 << CMDS_FC_RGB) | (1 << CMDS_FC_NORMALS);
  /* Estimated normals (cmds-estimate): encoded when the cache holds them, complete. */
  int est_present = 0, est_complete = 0;
  cmds_sc_est_info est_info;
  if (!rc) rc = cmds_mpi_agree(mpi, err, cmds_sc_est_status(sc, in, &est_present, &est_complete, &est_info, err));
  if (!rc && est_present && !est_complete)
    rc = cmds_mpi_agree(mpi, err, CMDS_FAIL(err, CMDS_ESCHEMA, "%s: normals_est is incomplete (rerun cmds-estimate to finish it)", in));
  if (!rc && est_present) {
    want.modalities |= 1 << CMDS_FC_NORMALS_EST;
    cmds_sc_est_identity(&est_info, want.normals_est_id, sizeof want.normals_est_id);
  }
  /* Augmented rows (cmds-augment): encoded with their estimated normals; they serve only the
   * E stream, so without normals_est they are left out (and said so). */
  int64_t aug_n = 0, aug_skipped = 0;
  char aug_id[CMDS_SC_AUG_ID_LEN] = "";
  cmds_sc_aug_est_state aug_state = CMDS_SC_AUG_EST_ABSENT;
  if (!rc) rc = cmds_mpi_agree(mpi, err, cmds_sc_aug_status(sc, in, &aug_n, aug_id, sizeof aug_id, err));
  if (!rc && aug_n > 0) rc = cmds_mpi_agree(mpi, err, cmds_sc_est_aug_state(sc, in, &aug_state, err));
  if (!rc && aug_n > 0 && est_present && aug_state != CMDS_SC_AUG_EST_COMPLETE)
    rc = cmds_mpi_agree(mpi, err, CMDS_FAIL(err, CMDS_ESCHEMA, "%s: the %lld augmented rows have %s (rerun cmds-estimate)", in,
                                            (long long)aug_n,
                                            aug_state == CMDS_SC_AUG_EST_ABSENT  ? "no estimated normals"
                                            : aug_state == CMDS_SC_AUG_EST_STALE ? "estimated normals of an older augmented group"
                                                                                 : "incomplete estimated normals"));
  if (!rc && aug_n > 0 && est_present) {
    want.n[2] = aug_n;
    snprintf(want.augmented_id, sizeof want.augmented_id, "%s", aug_id);
  } else if (!rc && aug_n > 0) {
    aug_skipped = aug_n;
    if (mpi->rank == 0)
      printf("features %s/%s: %lld augmented rows left out: the cache has no normals_est (run cmds-estimate for the "
             "estimated stream)\n", a->dataset, cat, (long long)aug_n);
  }
  cmds_sc_info_free(&si);
  if (a->weights) rc = rc ? rc : cmds_mpi_agree(mpi, err, cmds_file_identity(a->weights, want.weights_id, sizeof want.weights_id, err));
  else snprintf(want.weights_id, sizeof want.weights_id, "random:%llu", (unsigned long long)a->random_seed);

  /* Up to date? Same configuration in a complete file: skip. */
  int skip = 0;
  if (!rc && mpi->rank == 0 && !a->force && cmds_is_file(out)) {
    hid_t t;
    cmds_error e;
    cmds_fc_info got;
    if (!cmds_h5_open_read(&t, out, MPI_COMM_SELF, CMDS_FEATURE_CACHE_SCHEMA, CMDS_FEATURE_CACHE_VERSION, &e)) {
      skip = !cmds_fc_read_info(t, out, &got, &e) && cmds_fc_same_info(&got, &want);
      H5Fclose(t);
    }
  }
  MPI_CHECK(MPI_Bcast(&skip, 1, MPI_INT, 0, mpi->comm));
  if (skip || rc) {
    if (skip && mpi->rank == 0) printf("features %s/%s: up to date, skipped\n", a->dataset, cat);
    H5Fclose(sc);
    return rc;
  }
  cmds_record rec;
  cmds_record_begin(&rec, "features", argc, argv, mpi);
  cmds_h5file f;
  memset(&f, 0, sizeof f);
  f.id = H5I_INVALID_HID;
  int resumed = !a->force && cmds_fc_reopen(&f, out, mpi->comm, &want, err) == CMDS_OK;
  /* A complete file of the same base whose estimated/augmented part is stale: rank 0 starts
   * the partial file from it (serial HDF5), then every rank reopens it collectively. */
  int extended = 0;
  char how[1700] = "";
  if (!resumed && !a->force) {
    int erc = mpi->rank == 0 ? cmds_fc_extend(out, &want, a->zstd_level, &extended, how, sizeof how, err) : CMDS_OK;
    rc = cmds_mpi_agree(mpi, err, erc);
    MPI_CHECK(MPI_Bcast(&extended, 1, MPI_INT, 0, mpi->comm));
    if (!rc && extended) rc = cmds_mpi_agree(mpi, err, cmds_fc_reopen(&f, out, mpi->comm, &want, err));
    if (!rc && extended && mpi->rank == 0)
      printf("features %s/%s: extending the complete feature cache (%s); only the new rows are computed\n", a->dataset,
             cat, how);
    else if (!rc && mpi->rank == 0 && cmds_is_file(out))
      printf("features %s/%s: the complete feature cache is not reused (%s); computing it again\n", a->dataset, cat, how);
  }
  if (!rc && !resumed && !extended)
    rc = cmds_mpi_agree(mpi, err, cmds_fc_create(&f, out, mpi->comm, &want, a->zstd_level, err));
  r->computed = 0;
  memset(r->reused, 0, sizeof r->reused);
  for (int g = 0; g < CMDS_FC_GROUPS && !rc; g++)
    for (int m = 0; m < CMDS_FC_NMOD && !rc; m++)
      if (cmds_fc_group_has(&want, g, (cmds_fc_modality)m)) rc = run_group(r, sc, f.id, g, (cmds_fc_modality)m, want.n[g], err);
  H5Fclose(sc);
  if (!rc) rc = cmds_mpi_agree(mpi, err, cmds_h5_commit(&f, err));
  else if (f.id >= 0) {
    H5Fclose(f.id); /* keep the partial file: finished rows are reused by the next run */
    f.id = H5I_INVALID_HID;
  }
  int64_t total = 0;
  MPI_CHECK(MPI_Allreduce(&r->computed, &total, 1, MPI_INT64_T, MPI_SUM, mpi->comm));
  double el = cmds_now() - rec.t0;
  if (!rc) {
    cmds_json *j = &rec.json;
    cmds_json_kv_str(j, "dataset", a->dataset);
    cmds_json_kv_str(j, "category", cat);
    cmds_json_kv_str(j, "input", in);
    cmds_json_kv_str(j, "output", out);
    cmds_json_kv_str(j, "backbone", want.backbone);
    cmds_json_kv_str(j, "weights", a->weights ? a->weights : "");
    cmds_json_kv_str(j, "weights_id", want.weights_id);
    cmds_json_kv_str(j, "sample_cache_id", want.sample_cache_id);
    cmds_json_kv_bool(j, "normals_est", (want.modalities & (1 << CMDS_FC_NORMALS_EST)) != 0);
    cmds_json_kv_str(j, "normals_est_id", want.normals_est_id);
    cmds_json_kv_int(j, "augmented_rows", want.n[2]);
    cmds_json_kv_int(j, "augmented_rows_left_out", aug_skipped);
    cmds_json_kv_str(j, "augmented_id", want.augmented_id);
    cmds_json_kv_str(j, "device", nn_device_name(r->nn.device));
    cmds_json_kv_str(j, "precision", r->nn.device == NN_CUDA ? a->precision : "fp32");
    cmds_json_kv_int(j, "images_computed", total);
    cmds_json_kv_bool(j, "resumed", resumed);
    cmds_json_kv_str(j, "extended_from", extended ? out : "");
    int64_t reused_all = 0;
    cmds_json_key(j, "rows_reused");
    cmds_json_object_begin(j);
    for (int m = 0; m < CMDS_FC_NMOD; m++) {
      cmds_json_kv_int(j, cmds_fc_modality_name((cmds_fc_modality)m), r->reused[m]);
      reused_all += r->reused[m];
    }
    cmds_json_object_end(j);
    cmds_json_kv_int(j, "rows_reused_total", reused_all);
    cmds_json_kv_num(j, "images_per_s", (double)total / (el > 0 ? el : 1e-9));
    cmds_record_finish(&rec, rec_path, "ok", err);
    if (mpi->rank == 0)
      printf("features %s/%s: %lld images through the backbone%s%s -> %s (%.1f s, %.2f images/s, %d ranks, %s)\n",
             a->dataset, cat, (long long)total, resumed ? " (resumed)" : "", extended ? " (extended)" : "", out, el,
             (double)total / (el > 0 ? el : 1e-9), mpi->size, nn_device_name(r->nn.device));
  } else {
    cmds_json_free(&rec.json);
  }
  return rc;
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_h5_quiet();
  cmds_error err = {0};
  feat_args a;
  int rc = parse_args(argc, argv, &a, &err);
  if (rc) return cmds_mpi_finish_args(&mpi, rc, &err, "cmds-features", usage);
  nn_device dev;
  rc = nn_device_pick(a.device, mpi.local_rank, mpi.rank, &dev, &err);
  vit_model m;
  memset(&m, 0, sizeof m);
  if (!rc && a.weights) rc = vit_load(&m, a.weights, dev, a.heads, -1, &err);
  else if (!rc) {
    vit_config c = {.image = 224, .patch = 8, .width = 96, .depth = 12, .heads = a.heads ? a.heads : 2, .mlp = 384, .eps = 1e-6f};
    /* the random stand-in takes the sample cache's resolution (a multiple of 8) */
    char first[4096];
    snprintf(first, sizeof first, "%s/%s", a.cache, a.dataset);
    char **names = NULL;
    int n = cmds_list_dir(first, ".h5", 1, &names, &err);
    for (int i = 0; i < n; i++) {
      if (strstr(names[i], ".features.h5")) continue;
      char p[4400];
      snprintf(p, sizeof p, "%s/%s", first, names[i]);
      hid_t t;
      cmds_error e;
      int64_t res = 0;
      if (!cmds_h5_open_read(&t, p, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, &e)) {
        if (!cmds_h5_attr_read_i64(t, "resolution", &res, p, &e) && res % 8 == 0 && res > 0) c.image = res;
        H5Fclose(t);
        break;
      }
    }
    if (n > 0) cmds_free_list(names, n);
    rc = vit_init_random(&m, &c, a.random_seed, dev, &err);
  }
  rc = cmds_mpi_agree(&mpi, &err, rc);
  /* Categories: given, or every sample cache in the folder (rank 0 lists). */
  char **cats = NULL;
  int ncats = 0;
  if (!rc) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", a.cache, a.dataset);
    int n = cmds_categories(a.categories, dir, ".h5", ".features.h5", "sample caches (*.h5; run cmds-prep first)", &cats,
                            &err);
    ncats = n > 0 ? n : 0;
    rc = cmds_mpi_agree(&mpi, &err, n > 0 ? CMDS_OK : err.code);
  }
  run_ctx r;
  memset(&r, 0, sizeof r);
  if (!rc) {
    r.mpi = &mpi;
    r.a = &a;
    r.m = &m;
    r.S = (int)m.cfg.image;
    r.G = (int)(m.cfg.image / m.cfg.patch);
    r.D = (int)m.cfg.width;
    r.nblocks = 3;
    r.blocks[0] = 4;
    r.blocks[1] = 7;
    r.blocks[2] = 11;
    int64_t B = a.batch, NP = (int64_t)r.G * r.G, in = 3 * m.cfg.patch * m.cfg.patch;
    int64_t ps[3] = {B, NP, in}, os[4] = {B, 3, NP, r.D};
    rc = nn_arena_init(&r.scratch, dev, vit_scratch_bytes(&m.cfg, B), &err);
    if (!rc) rc = nn_arena_init(&r.io, dev, sizeof(float) * (size_t)(B * NP * (in + 3 * r.D)) + 4096, &err);
    if (!rc) rc = nn_ctx_init(&r.nn, dev, &r.scratch, NULL, a.tf32, &err);
    if (!rc && !strcmp(a.precision, "bf16")) {
      if (dev == NN_CUDA) r.nn.act_dtype = NN_BF16;
      else rc = CMDS_FAIL(&err, CMDS_EINPUT, "--precision bf16 needs a GPU (rank %d has none; the CPU path is fp32)", mpi.rank);
    }
    if (!rc) rc = nn_tensor_alloc(&r.patches, &r.io, NN_F32, 3, ps, &err);
    if (!rc) rc = nn_tensor_alloc(&r.out, &r.io, NN_F32, 4, os, &err);
    r.images = cmds_xmalloc(sizeof(float) * (size_t)(B * 3 * r.S * r.S));
    r.host_patches = cmds_xmalloc(sizeof(float) * (size_t)(B * NP * in));
    r.host_out = cmds_xmalloc(sizeof(float) * (size_t)(B * 3 * NP * r.D));
    r.f16 = cmds_xmalloc(sizeof(uint16_t) * (size_t)(B * 3 * NP * r.D));
    rc = cmds_mpi_agree(&mpi, &err, rc);
  }
  for (int i = 0; i < ncats && !rc; i++) rc = features_category(&mpi, &a, &r, cats[i], argc, argv, &err);
  free(r.images);
  free(r.host_patches);
  free(r.host_out);
  free(r.f16);
  if (r.nn.scratch) nn_ctx_free(&r.nn);
  nn_arena_free(&r.io);
  nn_arena_free(&r.scratch);
  vit_free(&m);
  if (cats) cmds_free_list(cats, ncats);
  return cmds_mpi_finalize(&mpi, rc);
}
