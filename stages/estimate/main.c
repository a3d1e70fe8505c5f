/* cmds-estimate: the `estimate` stage. Marigold surface normals of every sample of a
 * category's sample cache (METHOD.md section 8), written into the cache beside the real
 * normals as `normals_est` (schemas/sample_cache_v1.md), for `features` to encode as the
 * estimated 3D stream.
 *
 *   mpiexec -n R cmds-estimate --cache DIR --dataset mvtec3d|eyecandies --marigold ROOT
 *       [--category C[,C..]] [--data ROOT] [--device auto|cpu|cuda] [--steps N]
 *       [--processing-res R] [--ensemble E] [--seed S] [--zstd-level L] [--force]
 *
 * Rows are spread over ranks in contiguous blocks; each rank runs its own copy of the
 * model (one GPU per rank: local rank modulo the GPUs it sees). A sample's noise is keyed by
 * the seed and its sample id, so the result does not depend on the rank count.
 *
 * Files: the cache `<cat>.h5` is never modified in place. The stage copies it to
 * `<cat>.h5.estimate.partial`, adds normals_est with per-row done flags there, writes each
 * round of rows collectively (rows, flush, flags, flush), and renames the copy over
 * `<cat>.h5` when every row is done: a cache at its final name is always whole, with or
 * without complete normals_est. A killed run resumes from the copy (only rows without a done
 * flag are computed); a rerun with other settings (checkpoint, steps, resolution, ensemble,
 * seed, image source) is refused unless --force.
 *
 * Augmented samples (cmds-augment's group `augmented`) get normals_est from their cached RGB
 * (there is no original). Their estimates are tied to the cache's augmented_id: a new
 * augmented group makes the next run compute that group only. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmds_mpi.h"
#include "fsutil.h"
#include "h5io.h"
#include "hash.h"
#include "marigold.h"
#include "progress.h"
#include "record.h"
#include "sample_cache.h"
#include "source.h"
#include "tasks_file.h"
#include "tensor.h"

typedef struct est_args {
  const char *cache, *dataset, *categories, *marigold, *data, *device;
  int steps, processing_res, ensemble, zstd_level, force;
  int64_t seed;
} est_args;

static void usage(void) {
  printf("usage: cmds-estimate --cache DIR --dataset mvtec3d|eyecandies --marigold ROOT [options]\n"
         "  --marigold ROOT        Marigold normals checkpoint in diffusers layout (unet/, vae/, scheduler/, ...)\n"
         "  --category C[,C..]     categories (default: every <cat>.h5 sample cache in DIR/<dataset>)\n"
         "  --data ROOT            the dataset's folder: Marigold sees the original images on prep's padded\n"
         "                         square (checked against the cache); without it, the cached S x S RGB\n"
         "  --device auto|cpu|cuda (default auto: a GPU per rank when there are GPUs)\n"
         "  --steps N              denoising steps (default: the checkpoint's)\n"
         "  --processing-res R     processing resolution (default: the checkpoint's; 0 = the image's own)\n"
         "  --ensemble E           predictions averaged per image (default 1)\n"
         "  --seed S               noise seed (default 0; each sample's noise is keyed by S and its id)\n"
         "  --zstd-level L         (default 3)\n"
         "  --force                recompute every row, also over normals_est made with other settings\n"
         "Writes normals_est into DIR/<dataset>/<cat>.h5 and a record <cat>.estimate.json.\n");
}

static int parse_args(int argc, char **argv, est_args *a, cmds_error *err) {
  memset(a, 0, sizeof *a);
  a->device = "auto";
  a->steps = -1;
  a->processing_res = -1;
  a->ensemble = 1;
  a->zstd_level = 3;
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(o, "-h") || !strcmp(o, "--help")) return -1;
    if (!strcmp(o, "--force")) { a->force = 1; continue; }
    if (!v) return CMDS_FAIL(err, CMDS_EINPUT, "%s needs a value (see --help)", o);
    i++;
    char *end = NULL;
    long long n = strtoll(v, &end, 10);
    int num_ok = end && end != v && !*end && n >= 0;
    if (!strcmp(o, "--cache")) a->cache = v;
    else if (!strcmp(o, "--dataset")) a->dataset = v;
    else if (!strcmp(o, "--category")) a->categories = v;
    else if (!strcmp(o, "--marigold")) a->marigold = v;
    else if (!strcmp(o, "--data")) a->data = v;
    else if (!strcmp(o, "--device")) a->device = v;
    else if (!strcmp(o, "--steps") && num_ok && n >= 1 && n <= 1000) a->steps = (int)n;
    else if (!strcmp(o, "--processing-res") && num_ok && n <= 8192) a->processing_res = (int)n;
    else if (!strcmp(o, "--ensemble") && num_ok && n >= 1 && n <= 64) a->ensemble = (int)n;
    else if (!strcmp(o, "--seed") && num_ok) a->seed = (int64_t)n;
    else if (!strcmp(o, "--zstd-level") && num_ok && n <= 22) a->zstd_level = (int)n;
    else return CMDS_FAIL(err, CMDS_EINPUT, "bad option or value: %s %s (see --help)", o, v);
  }
  if (!a->cache || !a->dataset || !a->marigold)
    return CMDS_FAIL(err, CMDS_EINPUT, "--cache, --dataset and --marigold are required (see --help)");
  if (strcmp(a->device, "auto") && strcmp(a->device, "cpu") && strcmp(a->device, "cuda"))
    return CMDS_FAIL(err, CMDS_EINPUT, "--device: expected auto, cpu or cuda, got '%s'", a->device);
  if (a->data && !cmds_is_dir(a->data))
    return CMDS_FAIL(err, CMDS_EINPUT, "--data %s: not a folder (the dataset's root, as given to cmds-prep --root)", a->data);
  return CMDS_OK;
}

/* Per-sample noise seed: the run's seed and the sample id (FNV-1a), mixed (splitmix64). */
static uint64_t sample_seed(int64_t seed, const char *id) {
  uint64_t h = cmds_fnv64(CMDS_FNV64_INIT, id, strlen(id));
  uint64_t z = h ^ ((uint64_t)seed * 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

typedef struct run_ctx {
  const cmds_mpi *mpi;
  const est_args *a;
  marigold_model *m;
  nn_device dev;
  nn_ctx nn;
  nn_arena scratch;         /* grown when an image needs more (marigold_workspace_bytes) */
  size_t scratch_bytes;
  cmds_sc_est_info want; /* resolved settings and checkpoint identity */
  int64_t computed;
  int64_t computed_aug; /* of which augmented rows */
} run_ctx;

/* One row: source image -> Marigold -> our convention -> S x S. */
static int estimate_row(run_ctx *r, const est_source *src, const cmds_sample_batch *sb, float *out,
                        cmds_error *err) {
  float *rgb = NULL;
  int side = 0;
  int rc = est_source_image(src, sb, &rgb, &side, err);
  if (rc) return rc;
  char id[CMDS_SC_ID_LEN + 1];
  memcpy(id, sb->sample_id, CMDS_SC_ID_LEN);
  id[CMDS_SC_ID_LEN] = 0;
  marigold_opts o = marigold_opts_default();
  o.steps = (int)r->want.steps;
  o.processing_res = (int)r->want.processing_res;
  o.ensemble_size = (int)r->want.ensemble;
  o.match_input_res = 1;
  o.seed = sample_seed(r->a->seed, id);
  size_t need = marigold_workspace_bytes(r->m, side, side, &o);
  if (need > r->scratch_bytes) {
    if (r->scratch_bytes) nn_arena_free(&r->scratch);
    r->scratch_bytes = 0;
    rc = nn_arena_init(&r->scratch, r->dev, need, err);
    if (!rc) r->scratch_bytes = need;
  }
  float *n = cmds_xmalloc(sizeof(float) * 3 * (size_t)side * (size_t)side);
  if (!rc) rc = marigold_normals(r->m, &r->nn, rgb, side, side, &o, n, err);
  if (rc) rc = cmds_error_wrap(err, "sample %s (%d x %d)", id, side, side);
  if (!rc) marigold_normals_to_pointcloud_frame(n, (int64_t)side * side);
  if (!rc) est_normals_to_cache(n, side, sb->size, out);
  free(n);
  free(rgb);
  return rc;
}

/* One group: rows without a done flag, spread over ranks in contiguous blocks; each round
 * every rank computes one row (or none) and all write collectively. */
static int run_group(run_ctx *r, hid_t in, hid_t out, int g, const est_source *src, cmds_error *err) {
  const char *gname = cmds_sc_group_name(g);
  cmds_sc_group grp;
  memset(&grp, 0, sizeof grp);
  int rc = cmds_mpi_agree(r->mpi, err, cmds_sc_group_open(in, gname, "sample cache", &grp, err));
  if (rc) return rc;
  int64_t n = grp.n;
  uint8_t *done = cmds_xcalloc((size_t)(n ? n : 1), 1);
  rc = cmds_mpi_agree(r->mpi, err, cmds_sc_est_read_done(out, g, done, err));
  int64_t *todo = cmds_xmalloc(sizeof(int64_t) * (size_t)(n ? n : 1)), nt = 0;
  for (int64_t i = 0; i < n; i++)
    if (!done[i]) todo[nt++] = i;
  int64_t b, e, most = 0;
  cmds_block_range(nt, r->mpi->rank, r->mpi->size, &b, &e);
  int64_t mine = e - b;
  MPI_CHECK(MPI_Allreduce(&mine, &most, 1, MPI_INT64_T, MPI_MAX, r->mpi->comm));
  cmds_sample_batch sb;
  cmds_sample_batch_alloc(&sb, 1, grp.size);
  float *normals = cmds_xmalloc(sizeof(float) * 3 * (size_t)grp.size * (size_t)grp.size);
  cmds_progress prog;
  cmds_progress_begin(&prog, r->mpi, "estimate", gname, mine);
  const char *kill_after = getenv("CMDS_TEST_KILL_AFTER_ROWS"); /* fault injection for tests */
  for (int64_t i = 0; i < most && !rc; i++) {
    int has = i < mine;
    int64_t row = has ? todo[b + i] : 0;
    int lrc = has ? cmds_sc_group_read(&grp, row, 1, &sb, err) : CMDS_OK;
    if (!lrc && has) lrc = estimate_row(r, src, &sb, normals, err);
    rc = cmds_mpi_agree(r->mpi, err, lrc);
    if (!rc && cmds_stop_requested_any(r->mpi))
      rc = CMDS_FAIL(err, CMDS_EINTERRUPTED, "%s: stopped by a signal; finished rows are kept, rerun to resume", gname);
    if (!rc) rc = cmds_mpi_agree(r->mpi, err, cmds_sc_est_write_rows(out, g, row, has, normals, err));
    if (!rc && has) {
      r->computed++;
      if (g == CMDS_SC_AUGMENTED) r->computed_aug++;
      cmds_progress_step(&prog, 1);
    }
    if (kill_after && r->computed >= atoll(kill_after)) raise(SIGKILL);
  }
  if (!rc) cmds_progress_end(&prog);
  free(normals);
  cmds_sample_batch_free(&sb);
  cmds_sc_group_close(&grp);
  free(todo);
  free(done);
  return rc;
}

enum { PLAN_SKIP = 0, PLAN_FRESH = 1, PLAN_RESUME = 2 };

/* Rank 0: what to do with a category (skip, start from a fresh copy, resume the copy).
 * Support and test are done when their normals_est are complete with these settings; the
 * augmented group (cmds-augment) when it is absent or its normals_est are complete and made
 * for its current augmented_id. A copy is resumable when made from this very cache (same
 * prep inputs and the same augmented_id) with these settings. */
static int plan_category(const run_ctx *r, const char *final, const char *work, int *plan, cmds_error *err) {
  hid_t f;
  int rc = cmds_h5_open_read(&f, final, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, err);
  if (rc) return rc;
  cmds_sc_info si;
  int present = 0, complete = 0;
  cmds_sc_est_info got;
  int64_t aug_n = 0;
  char aug_id[CMDS_SC_AUG_ID_LEN];
  cmds_sc_aug_est_state aug_state = CMDS_SC_AUG_EST_ABSENT;
  rc = cmds_sc_read_info(f, final, &si, err);
  if (!rc) rc = cmds_sc_est_status(f, final, &present, &complete, &got, err);
  if (!rc) rc = cmds_sc_aug_status(f, final, &aug_n, aug_id, sizeof aug_id, err);
  if (!rc) rc = cmds_sc_est_aug_state(f, final, &aug_state, err);
  H5Fclose(f);
  if (rc) {
    cmds_sc_info_free(&si);
    return rc;
  }
  char want_id[512], got_id[512];
  cmds_sc_est_identity(&r->want, want_id, sizeof want_id);
  cmds_sc_est_identity(&got, got_id, sizeof got_id);
  if (present && !r->a->force && strcmp(want_id, got_id)) {
    cmds_sc_info_free(&si);
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: normals_est was made with other settings:\n  cache:    %s\n  this run: %s\n"
                     "rerun with --force to replace it (then rerun cmds-features)", final, got_id, want_id);
  }
  int aug_done = aug_n == 0 || aug_state == CMDS_SC_AUG_EST_COMPLETE;
  if (present && complete && aug_done && !r->a->force) {
    cmds_sc_info_free(&si);
    *plan = PLAN_SKIP;
    return CMDS_OK;
  }
  *plan = PLAN_FRESH;
  if (!r->a->force && cmds_is_file(work)) {
    /* A copy left by a stopped run: resumable when made from this very cache and with these
     * settings; from an older cache (prep ran again) or unreadable (killed mid-write): discarded. */
    hid_t w;
    cmds_error e;
    if (!cmds_h5_open_read(&w, work, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, &e)) {
      cmds_sc_info wi;
      cmds_sc_est_info wg;
      int wp = 0, wc = 0;
      if (!cmds_sc_read_info(w, work, &wi, &e)) {
        int64_t wn = 0;
        char wid_aug[CMDS_SC_AUG_ID_LEN];
        int same_cache = !strcmp(wi.sample_list_hash, si.sample_list_hash) && !strcmp(wi.prep_config, si.prep_config) &&
                         !cmds_sc_aug_status(w, work, &wn, wid_aug, sizeof wid_aug, &e) && wn == aug_n &&
                         !strcmp(wid_aug, aug_id);
        if (same_cache && !cmds_sc_est_status(w, work, &wp, &wc, &wg, &e) && wp) {
          char wid[512];
          cmds_sc_est_identity(&wg, wid, sizeof wid);
          if (strcmp(wid, want_id)) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: a stopped run with other settings:\n  partial:  %s\n"
                                                   "  this run: %s\nrerun with --force to discard it", work, wid, want_id);
          else *plan = PLAN_RESUME;
        }
        cmds_sc_info_free(&wi);
      }
      H5Fclose(w);
    }
  }
  cmds_sc_info_free(&si);
  if (!rc && *plan == PLAN_FRESH) {
    /* A compact copy without the normals_est this run computes again (all of them with
     * --force or when support/test are not complete; else those of a stale augmented group):
     * rewriting them in place would leave the old chunks' space in the file at every rerun. */
    static const char *const est_all[] = {"support/normals_est", "support/normals_est_done", "test/normals_est",
                                          "test/normals_est_done", "augmented/normals_est", "augmented/normals_est_done",
                                          "augmented@normals_est_augmented_id", "@normals_est_id",
                                          "@normals_est_checkpoint", "@normals_est_source", "@normals_est_steps",
                                          "@normals_est_processing_res", "@normals_est_ensemble", "@normals_est_seed",
                                          "@normals_est_code_version"};
    const char *const *skip = est_all + 4; /* the augmented group's only */
    int nskip = 3;
    if (r->a->force || !present || !complete) skip = est_all, nskip = (int)(sizeof est_all / sizeof est_all[0]);
    else if (aug_n == 0 || aug_state == CMDS_SC_AUG_EST_COMPLETE) nskip = 0;
    rc = cmds_h5_copy_compact(final, work, skip, nskip, err);
  }
  return rc;
}

static int estimate_category(run_ctx *r, const char *cat, int argc, char **argv, cmds_error *err) {
  const cmds_mpi *mpi = r->mpi;
  const est_args *a = r->a;
  char final[4064], work[4112], rec_path[4200];
  if (strlen(a->cache) + strlen(a->dataset) + strlen(cat) + 8 >= sizeof final)
    return cmds_mpi_agree(mpi, err, CMDS_FAIL(err, CMDS_EINPUT, "%s/%s/%s.h5: path too long", a->cache, a->dataset, cat));
  snprintf(final, sizeof final, "%s/%s/%s.h5", a->cache, a->dataset, cat);
  snprintf(work, sizeof work, "%s.estimate.partial", final);
  snprintf(rec_path, sizeof rec_path, "%s/%s/%s.estimate.json", a->cache, a->dataset, cat);
  int plan = PLAN_SKIP;
  int rc = CMDS_OK;
  if (mpi->rank == 0) rc = plan_category(r, final, work, &plan, err);
  rc = cmds_mpi_agree(mpi, err, rc);
  MPI_CHECK(MPI_Bcast(&plan, 1, MPI_INT, 0, mpi->comm));
  if (rc) return rc;
  if (plan == PLAN_SKIP) {
    if (mpi->rank == 0) printf("estimate %s/%s: normals_est up to date, skipped\n", a->dataset, cat);
    return CMDS_OK;
  }
  cmds_record rec;
  cmds_record_begin(&rec, "estimate", argc, argv, mpi);
  hid_t in = H5I_INVALID_HID, out = H5I_INVALID_HID;
  cmds_sc_info si;
  memset(&si, 0, sizeof si);
  rc = cmds_mpi_agree(mpi, err, cmds_h5_open_read(&in, final, mpi->comm, CMDS_SAMPLE_CACHE_SCHEMA,
                                                  CMDS_SAMPLE_CACHE_VERSION, err));
  if (!rc) rc = cmds_mpi_agree(mpi, err, cmds_sc_read_info(in, final, &si, err));
  if (!rc) rc = cmds_mpi_agree(mpi, err, cmds_sc_open_rw(&out, work, mpi->comm, err));
  /* The augmented group (cmds-augment) of the cache as it is now; the copy holds the same. */
  int64_t aug_n = 0;
  char aug_id[CMDS_SC_AUG_ID_LEN] = "";
  if (!rc) rc = cmds_mpi_agree(mpi, err, cmds_sc_aug_status(in, final, &aug_n, aug_id, sizeof aug_id, err));
  /* What the copy still needs set up: support/test on a fresh copy unless they are complete
   * with these settings (a copy made only for new augmented rows); the augmented group when
   * its normals_est are absent or were made for other augmented rows. */
  int present = 0, complete = 0;
  cmds_sc_est_info got;
  cmds_sc_aug_est_state aug_state = CMDS_SC_AUG_EST_ABSENT;
  if (!rc) rc = cmds_mpi_agree(mpi, err, cmds_sc_est_status(out, work, &present, &complete, &got, err));
  if (!rc && aug_n > 0) rc = cmds_mpi_agree(mpi, err, cmds_sc_est_aug_state(out, work, &aug_state, err));
  if (!rc && plan == PLAN_FRESH && (a->force || !present || !complete))
    rc = cmds_mpi_agree(mpi, err, cmds_sc_est_prepare(out, work, &r->want, a->zstd_level, err));
  if (!rc && aug_n > 0 &&
      ((plan == PLAN_FRESH && a->force) || aug_state == CMDS_SC_AUG_EST_ABSENT || aug_state == CMDS_SC_AUG_EST_STALE))
    rc = cmds_mpi_agree(mpi, err, cmds_sc_est_aug_prepare(out, work, a->zstd_level, err));
  est_source src = {.data_root = a->data, .dataset = si.dataset, .category = si.category};
  est_source src_aug = {.data_root = NULL, .dataset = si.dataset, .category = si.category}; /* no originals */
  r->computed = r->computed_aug = 0;
  for (int g = 0; g < 2 && !rc; g++) rc = run_group(r, in, out, g, &src, err);
  if (!rc && aug_n > 0) rc = run_group(r, in, out, CMDS_SC_AUGMENTED, &src_aug, err);
  if (in >= 0) H5Fclose(in);
  if (!rc) {
    /* Publish: close the copy and rename it over the cache, unless prep rebuilt the cache
     * meanwhile (then the copy is stale and the next run starts again). */
    cmds_h5file f;
    memset(&f, 0, sizeof f);
    f.id = out;
    f.comm = mpi->comm;
    snprintf(f.path, sizeof f.path, "%s", final);
    snprintf(f.partial, sizeof f.partial, "%s", work);
    int same = 1;
    if (mpi->rank == 0) {
      hid_t t;
      cmds_error e;
      cmds_sc_info now;
      same = 0;
      if (!cmds_h5_open_read(&t, final, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, &e)) {
        int64_t now_n = 0;
        char now_id[CMDS_SC_AUG_ID_LEN];
        if (!cmds_sc_read_info(t, final, &now, &e)) {
          same = !strcmp(now.sample_list_hash, si.sample_list_hash) && !strcmp(now.prep_config, si.prep_config) &&
                 !cmds_sc_aug_status(t, final, &now_n, now_id, sizeof now_id, &e) && now_n == aug_n &&
                 !strcmp(now_id, aug_id);
          cmds_sc_info_free(&now);
        }
        H5Fclose(t);
      }
    }
    MPI_CHECK(MPI_Bcast(&same, 1, MPI_INT, 0, mpi->comm));
    if (same) rc = cmds_mpi_agree(mpi, err, cmds_h5_commit(&f, err));
    else {
      cmds_h5_abandon(&f);
      rc = CMDS_FAIL(err, CMDS_EINPUT, "%s changed while cmds-estimate ran (cmds-prep or cmds-augment again?): the "
                     "estimates were discarded, rerun cmds-estimate", final);
    }
    out = H5I_INVALID_HID;
  } else if (out >= 0) {
    H5Fclose(out); /* keep the copy: its finished rows are reused by the next run */
  }
  int64_t total = 0, total_aug = 0;
  MPI_CHECK(MPI_Allreduce(&r->computed, &total, 1, MPI_INT64_T, MPI_SUM, mpi->comm));
  MPI_CHECK(MPI_Allreduce(&r->computed_aug, &total_aug, 1, MPI_INT64_T, MPI_SUM, mpi->comm));
  double el = cmds_now() - rec.t0;
  if (!rc) {
    char id[512], aug_note[64] = "";
    cmds_sc_est_identity(&r->want, id, sizeof id);
    if (aug_n > 0) snprintf(aug_note, sizeof aug_note, " (%lld of them augmented)", (long long)total_aug);
    cmds_json *j = &rec.json;
    cmds_json_kv_str(j, "dataset", a->dataset);
    cmds_json_kv_str(j, "category", cat);
    cmds_json_kv_str(j, "output", final);
    cmds_json_kv_str(j, "marigold", a->marigold);
    cmds_json_kv_str(j, "checkpoint_id", r->want.checkpoint);
    cmds_json_kv_str(j, "normals_est_id", id);
    cmds_json_kv_str(j, "source", r->want.source);
    cmds_json_kv_str(j, "data", a->data ? a->data : "");
    cmds_json_kv_int(j, "steps", r->want.steps);
    cmds_json_kv_int(j, "processing_res", r->want.processing_res);
    cmds_json_kv_int(j, "ensemble", r->want.ensemble);
    cmds_json_kv_int(j, "seed", r->want.seed);
    cmds_json_kv_str(j, "device", nn_device_name(r->nn.device));
    cmds_json_kv_int(j, "images_computed", total);
    cmds_json_kv_int(j, "augmented_rows", aug_n);
    cmds_json_kv_int(j, "augmented_images_computed", total_aug);
    cmds_json_kv_str(j, "augmented_id", aug_id);
    cmds_json_kv_bool(j, "resumed", plan == PLAN_RESUME);
    cmds_json_kv_num(j, "images_per_s", (double)total / (el > 0 ? el : 1e-9));
    cmds_record_finish(&rec, rec_path, "ok", err);
    if (mpi->rank == 0)
      printf("estimate %s/%s: %lld images through Marigold%s%s -> normals_est in %s (%.1f s, %.3f images/s, %d ranks, %s)\n",
             a->dataset, cat, (long long)total, plan == PLAN_RESUME ? " (resumed)" : "", aug_note, final, el,
             (double)total / (el > 0 ? el : 1e-9), mpi->size, nn_device_name(r->nn.device));
  } else {
    cmds_json_free(&rec.json);
  }
  cmds_sc_info_free(&si);
  return rc;
}

/* Categories: given, or every sample cache in DIR/<dataset> (not the feature caches). */
static int list_categories(const cmds_mpi *mpi, const est_args *a, char ***cats, int *ncats, cmds_error *err) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/%s", a->cache, a->dataset);
  int n = cmds_categories(a->categories, dir, ".h5", ".features.h5", "sample caches (*.h5; run cmds-prep first)", cats,
                          err);
  *ncats = n > 0 ? n : 0;
  return cmds_mpi_agree(mpi, err, n > 0 ? CMDS_OK : err->code);
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_h5_quiet();
  cmds_error err = {0};
  est_args a;
  int rc = parse_args(argc, argv, &a, &err);
  if (rc) return cmds_mpi_finish_args(&mpi, rc, &err, "cmds-estimate", usage);
  /* No checkpoint: say so before anything else, and how to run without the E stream. */
  char why[1024];
  if (!marigold_have_weights(a.marigold, why, sizeof why))
    rc = CMDS_FAIL(&err, CMDS_EINPUT, "no Marigold checkpoint at %s: %s; run with the estimated stream off: "
                   "score.l1=0 score.l2=0 train.streams=real", a.marigold, why);
  rc = cmds_mpi_agree(&mpi, &err, rc);
  nn_device dev = NN_CPU;
  if (!rc) rc = cmds_mpi_agree(&mpi, &err, nn_device_pick(a.device, mpi.local_rank, mpi.rank, &dev, &err));
  run_ctx r;
  memset(&r, 0, sizeof r);
  r.mpi = &mpi;
  r.a = &a;
  marigold_model m;
  memset(&m, 0, sizeof m);
  int loaded = 0;
  if (!rc) {
    rc = marigold_load(&m, a.marigold, dev, &err);
    loaded = !rc;
    rc = cmds_mpi_agree(&mpi, &err, rc);
  }
  if (!rc) {
    r.m = &m;
    r.dev = dev;
    /* Settings as resolved: the checkpoint's defaults where not given. */
    r.want.steps = a.steps > 0 ? a.steps : m.default_steps;
    r.want.processing_res = a.processing_res >= 0 ? a.processing_res : m.default_res;
    if (r.want.steps <= 0 || r.want.processing_res < 0)
      rc = CMDS_FAIL(&err, CMDS_EINPUT, "%s/model_index.json has no default_%s: give %s", a.marigold,
                     r.want.steps <= 0 ? "denoising_steps" : "processing_resolution",
                     r.want.steps <= 0 ? "--steps N" : "--processing-res R");
    r.want.ensemble = a.ensemble;
    r.want.seed = a.seed;
    snprintf(r.want.source, sizeof r.want.source, "%s", a.data ? "dataset" : "cache");
    snprintf(r.want.code_version, sizeof r.want.code_version, "%s", cmds_code_version());
    /* Checkpoint identity: a hash of the UNet weights (rank 0; the file is large). */
    if (mpi.rank == 0) {
      char unet[4400];
      snprintf(unet, sizeof unet, "%s/unet/diffusion_pytorch_model.safetensors", a.marigold);
      if (!cmds_is_file(unet)) snprintf(unet, sizeof unet, "%s/unet/diffusion_pytorch_model.fp16.safetensors", a.marigold);
      if (!rc) rc = cmds_file_identity(unet, r.want.checkpoint, sizeof r.want.checkpoint, &err);
    }
    rc = cmds_mpi_agree(&mpi, &err, rc);
    MPI_CHECK(MPI_Bcast(r.want.checkpoint, sizeof r.want.checkpoint, MPI_CHAR, 0, mpi.comm));
  }
  if (!rc) { /* the scratch arena is sized at the first image (its size decides the need) */
    rc = nn_ctx_init(&r.nn, dev, &r.scratch, NULL, 0, &err);
    rc = cmds_mpi_agree(&mpi, &err, rc);
  }
  char **cats = NULL;
  int ncats = 0;
  if (!rc) rc = list_categories(&mpi, &a, &cats, &ncats, &err);
  for (int i = 0; i < ncats && !rc; i++) rc = estimate_category(&r, cats[i], argc, argv, &err);
  if (r.nn.scratch) nn_ctx_free(&r.nn);
  if (r.scratch_bytes) nn_arena_free(&r.scratch);
  if (loaded) marigold_free(&m);
  if (cats) cmds_free_list(cats, ncats);
  return cmds_mpi_finalize(&mpi, rc);
}
