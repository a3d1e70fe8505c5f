/* cmds-prep: the `prep` stage. Reads one or all categories of MVTec 3D-AD or EyeCandies
 * from their real layouts, preprocesses the point clouds (METHOD.md section 2), computes
 * surface normals and the foreground mask, resizes to the working resolution and writes
 * the sample cache (schemas/sample_cache_v1.md): one parallel-HDF5 file per category,
 * written collectively, each rank processing a contiguous share of the samples.
 *
 *   mpiexec -n R cmds-prep --dataset mvtec3d|eyecandies --root DIR --out DIR
 *                          [--category C[,C...]] [--shots K] [--size S] [--seed N]
 *                          [--zstd-level L] [--batch B] [--force]
 *
 * Re-runs skip categories whose cache is complete and was made from the same
 * configuration and sample list; a killed run leaves only `<category>.h5.partial`. A new
 * cache is renamed in only after the records of what augment and estimate added to the old
 * one (`<category>.augment.json`, `.estimate.json`, their work copies) are removed. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmds_mpi.h"
#include "dataset.h"
#include "fsutil.h"
#include "hash.h"
#include "h5io.h"
#include "process.h"
#include "progress.h"
#include "record.h"
#include "sample_cache.h"

typedef struct prep_args {
  prep_format format;
  const char *root, *out, *categories;
  int shots, batch, force;
  prep_params params;
} prep_args;

static void usage(FILE *f) {
  fprintf(f,
          "usage: cmds-prep --dataset mvtec3d|eyecandies --root DIR --out DIR [options]\n"
          "  --category C[,C...]  categories to prepare (default: every folder under --root)\n"
          "  --shots K            support samples kept: first K of the training split (default 4)\n"
          "  --size S             working resolution (default 224)\n"
          "  --seed N             seed of RANSAC (default 0)\n"
          "  --zstd-level L       zstd level of the image datasets (default 3)\n"
          "  --batch B            samples per rank per collective write (default 8)\n"
          "  --force              rebuild caches even when up to date\n"
          "Writes DIR/<dataset>/<category>.h5 and <category>.prep.json.\n");
}

static int parse_int(const char *opt, const char *v, int lo, int hi, int *out, cmds_error *err) {
  char *end = NULL;
  long x = v ? strtol(v, &end, 10) : 0;
  if (!v || *end || x < lo || x > hi)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: expected an integer in [%d, %d], got '%s'", opt, lo, hi,
                     v ? v : "(nothing)");
  *out = (int)x;
  return CMDS_OK;
}

static int parse_args(int argc, char **argv, prep_args *a, cmds_error *err) {
  memset(a, 0, sizeof *a);
  a->shots = 4;
  a->batch = 8;
  prep_params_default(&a->params);
  const char *dataset = NULL;
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int rc = CMDS_OK, seed = 0;
    if (!strcmp(o, "--help") || !strcmp(o, "-h")) return -1;
    if (!strcmp(o, "--force")) {
      a->force = 1;
      continue;
    }
    if (!v) return CMDS_FAIL(err, CMDS_EINPUT, "%s needs a value (see --help)", o);
    i++;
    if (!strcmp(o, "--dataset")) dataset = v;
    else if (!strcmp(o, "--root")) a->root = v;
    else if (!strcmp(o, "--out")) a->out = v;
    else if (!strcmp(o, "--category")) a->categories = v;
    else if (!strcmp(o, "--shots")) rc = parse_int(o, v, 1, 64, &a->shots, err);
    else if (!strcmp(o, "--size")) rc = parse_int(o, v, 8, 4096, &a->params.size, err);
    else if (!strcmp(o, "--batch")) rc = parse_int(o, v, 1, 1024, &a->batch, err);
    else if (!strcmp(o, "--zstd-level")) rc = parse_int(o, v, -1, 22, &a->params.zstd_level, err);
    else if (!strcmp(o, "--seed")) {
      rc = parse_int(o, v, 0, 2147483647, &seed, err);
      a->params.seed = (uint64_t)seed;
    } else return CMDS_FAIL(err, CMDS_EINPUT, "unknown option '%s' (see --help)", o);
    if (rc) return rc;
  }
  if (!dataset || !a->root || !a->out)
    return CMDS_FAIL(err, CMDS_EINPUT, "--dataset, --root and --out are required (see --help)");
  if (prep_format_parse(dataset, &a->format))
    return CMDS_FAIL(err, CMDS_EINPUT, "--dataset: expected mvtec3d or eyecandies, got '%s'", dataset);
  return CMDS_OK;
}

/* Rank 0 lists, everyone receives the same list. */
static int share_list(const cmds_mpi *mpi, const prep_args *a, const char *cat, prep_list *l,
                      cmds_error *err) {
  int rc = CMDS_OK;
  if (mpi->rank == 0) rc = prep_list_samples(a->format, a->root, cat, a->shots, l, err);
  rc = cmds_mpi_agree(mpi, err, rc);
  if (rc) return rc;
  int counts[2] = {l->n_support, l->n_test};
  MPI_CHECK(MPI_Bcast(counts, 2, MPI_INT, 0, mpi->comm));
  if (mpi->rank != 0) {
    l->n_support = counts[0];
    l->n_test = counts[1];
    l->v = cmds_xcalloc((size_t)(counts[0] + counts[1]), sizeof *l->v);
  }
  MPI_CHECK(MPI_Bcast(l->v, (int)((size_t)(counts[0] + counts[1]) * sizeof *l->v), MPI_BYTE, 0,
                      mpi->comm));
  return CMDS_OK;
}

/* Rank 0: a hash of the sample list and of its source files' sizes and times. */
static void list_hash(const prep_args *a, const char *cat, const prep_list *l, char *out, size_t cap) {
  uint64_t h = CMDS_FNV64_INIT;
  for (int i = 0; i < l->n_support + l->n_test; i++) {
    char id[CMDS_SC_ID_LEN];
    prep_sample_id(a->format, &l->v[i], id, sizeof id);
    h = cmds_fnv64(h, id, strlen(id));
    h = (h ^ (uint64_t)(l->v[i].group + 1)) * 0x100000001b3ull;
    h = prep_sample_fingerprint(a->format, a->root, cat, &l->v[i], h);
  }
  snprintf(out, cap, "%016llx", (unsigned long long)h);
}

/* 1 if `path` holds a complete cache made with the same config and sample list. */
static int up_to_date(const char *path, const char *config, const char *hash) {
  if (!cmds_is_file(path)) return 0;
  hid_t f;
  cmds_error e;
  if (cmds_h5_open_read(&f, path, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION,
                        &e))
    return 0;
  cmds_sc_info info;
  int same = 0;
  if (!cmds_sc_read_info(f, path, &info, &e)) {
    same = !strcmp(info.prep_config, config) && !strcmp(info.sample_list_hash, hash);
    cmds_sc_info_free(&info);
  }
  cmds_sc_group g;
  for (int k = 0; same && k < 2; k++) {
    same = !cmds_sc_group_open(f, k ? "test" : "support", path, &g, &e);
    cmds_sc_group_close(&g);
  }
  H5Fclose(f);
  return same;
}

/* Rank 0, before a new <cat>.h5 is renamed in: the records and work copies that describe the
 * cache being replaced go first. `<cat>.augment.json` and `<cat>.estimate.json` say that the
 * cache holds augmented rows and estimated normals (cmds-run takes them as those stages'
 * outputs), the `.augment.partial` / `.estimate.partial` copies are of the old cache: none of
 * it holds for the fresh cache, and a kill between the removal and the rename leaves the old
 * cache without its records, which only makes those stages check it again. */
static int forget_old_cache(const char *dir, const char *cat, cmds_error *err) {
  static const char *const suffix[] = {".augment.json", ".estimate.json", ".h5.augment.partial",
                                       ".h5.estimate.partial"};
  char p[4400];
  for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
    snprintf(p, sizeof p, "%s/%s%s", dir, cat, suffix[i]);
    if (unlink(p) != 0 && errno != ENOENT)
      return CMDS_FAIL(err, CMDS_EIO, "%s: cannot remove it (it describes the cache being replaced): %s", p,
                       strerror(errno));
  }
  int fd = open(dir, O_RDONLY | O_DIRECTORY); /* the removals reach the disk before the rename */
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  return CMDS_OK;
}

/* Processes and writes one group (support or test) in rounds: every rank takes part in
 * every collective write, with an empty selection when it has nothing left. */
static int write_group(const cmds_mpi *mpi, const prep_args *a, const char *cat, const prep_list *l,
                       int group, cmds_sc_group *g, cmds_sample_batch *batch, int *rounds_done,
                       cmds_error *err) {
  int64_t n = group ? l->n_test : l->n_support, base = group ? l->n_support : 0, b, e;
  cmds_block_range(n, mpi->rank, mpi->size, &b, &e);
  int64_t mine = e - b, most = 0;
  MPI_CHECK(MPI_Allreduce(&mine, &most, 1, MPI_INT64_T, MPI_MAX, mpi->comm));
  int64_t rounds = (most + a->batch - 1) / a->batch;
  char label[192];
  snprintf(label, sizeof label, "%s/%s", cat, group ? "test" : "support");
  cmds_progress prog;
  cmds_progress_begin(&prog, mpi, "prep", label, mine);
  const char *kill_after = getenv("CMDS_TEST_KILL_AFTER_ROUNDS"); /* fault injection for tests */
  for (int64_t r = 0; r < rounds; r++) {
    int64_t row0 = b + r * a->batch, cnt = e - row0;
    if (cnt > a->batch) cnt = a->batch;
    if (cnt < 0) cnt = 0;
    int rc = CMDS_OK;
    for (int64_t i = 0; i < cnt && !rc; i++) {
      rc = prep_process_sample(a->format, a->root, cat, &l->v[base + row0 + i], &a->params, batch, i,
                               err);
      cmds_progress_step(&prog, 1);
    }
    rc = cmds_mpi_agree(mpi, err, rc);
    if (rc) return rc;
    if (cmds_stop_requested_any(mpi))
      return CMDS_FAIL(err, CMDS_EINTERRUPTED, "%s: stopped by a signal; the next run redoes it", label);
    rc = cmds_mpi_agree(mpi, err, cmds_sc_group_write(g, row0 < e ? row0 : 0, cnt, batch, err));
    if (rc) return rc;
    ++*rounds_done;
    if (kill_after && *rounds_done >= atoi(kill_after)) raise(SIGKILL);
  }
  cmds_progress_end(&prog);
  return CMDS_OK;
}

static int prep_category(const cmds_mpi *mpi, const prep_args *a, const char *cat, int argc,
                         char **argv, cmds_error *err) {
  char dir[4096], path[4200], rec_path[4200], hash[32];
  cmds_path_join(dir, sizeof dir, a->out, prep_format_name(a->format), NULL, NULL);
  snprintf(path, sizeof path, "%s/%s.h5", dir, cat);
  snprintf(rec_path, sizeof rec_path, "%s/%s.prep.json", dir, cat);
  prep_list l = {0};
  int rc = share_list(mpi, a, cat, &l, err);
  if (rc) return rc;
  memset(hash, 0, sizeof hash);
  if (mpi->rank == 0) list_hash(a, cat, &l, hash, sizeof hash);
  MPI_CHECK(MPI_Bcast(hash, sizeof hash, MPI_CHAR, 0, mpi->comm));
  char *config = prep_params_json(&a->params, prep_format_name(a->format), a->root, a->shots);

  int skip = 0;
  if (mpi->rank == 0 && !a->force) skip = up_to_date(path, config, hash);
  MPI_CHECK(MPI_Bcast(&skip, 1, MPI_INT, 0, mpi->comm));
  if (skip) {
    if (mpi->rank == 0)
      printf("prep %s/%s: up to date (%d support, %d test), skipped\n", prep_format_name(a->format),
             cat, l.n_support, l.n_test);
    free(config);
    prep_list_free(&l);
    return CMDS_OK;
  }

  cmds_record rec;
  cmds_record_begin(&rec, "prep", argc, argv, mpi);
  rc = mpi->rank == 0 ? cmds_mkdir_p(dir, err) : CMDS_OK;
  rc = cmds_mpi_agree(mpi, err, rc);
  cmds_h5file file = {.id = H5I_INVALID_HID};
  if (!rc) rc = cmds_mpi_agree(mpi, err, cmds_h5_create(&file, path, mpi->comm, err));
  cmds_sc_group groups[2];
  memset(groups, 0, sizeof groups);
  int rounds = 0;
  cmds_sample_batch batch;
  cmds_sample_batch_alloc(&batch, a->batch, a->params.size);
  if (!rc) {
    cmds_sc_info info = {.resolution = a->params.size, .shots = a->shots, .prep_config = config};
    snprintf(info.dataset, sizeof info.dataset, "%s", prep_format_name(a->format));
    snprintf(info.category, sizeof info.category, "%s", cat);
    snprintf(info.sample_list_hash, sizeof info.sample_list_hash, "%s", hash);
    snprintf(info.code_version, sizeof info.code_version, "%s", cmds_code_version());
    int lrc = cmds_sc_write_info(file.id, &info) ? CMDS_FAIL(err, CMDS_EIO, "%s: writing attributes", path) : 0;
    if (!lrc) lrc = cmds_sc_group_create(file.id, "support", l.n_support, a->params.size, a->params.zstd_level, &groups[0], err);
    if (!lrc) lrc = cmds_sc_group_create(file.id, "test", l.n_test, a->params.size, a->params.zstd_level, &groups[1], err);
    rc = cmds_mpi_agree(mpi, err, lrc);
  }
  for (int g = 0; g < 2 && !rc; g++)
    rc = write_group(mpi, a, cat, &l, g, &groups[g], &batch, &rounds, err);
  cmds_sc_group_close(&groups[0]);
  cmds_sc_group_close(&groups[1]);
  cmds_sample_batch_free(&batch);
  if (!rc) rc = cmds_mpi_agree(mpi, err, mpi->rank == 0 ? forget_old_cache(dir, cat, err) : CMDS_OK);
  if (!rc) rc = cmds_mpi_agree(mpi, err, cmds_h5_commit(&file, err));
  else if (file.id >= 0) cmds_h5_abandon(&file);

  cmds_json *j = &rec.json;
  cmds_json_kv_str(j, "dataset", prep_format_name(a->format));
  cmds_json_kv_str(j, "category", cat);
  cmds_json_kv_str(j, "root", a->root);
  cmds_json_kv_str(j, "output", path);
  cmds_json_kv_int(j, "support_samples", l.n_support);
  cmds_json_kv_int(j, "test_samples", l.n_test);
  cmds_json_kv_str(j, "sample_list_hash", hash);
  cmds_json_key(j, "config");
  cmds_json_raw(j, config);
  double elapsed = cmds_now() - rec.t0;
  cmds_json_kv_num(j, "samples_per_s", (l.n_support + l.n_test) / (elapsed > 0 ? elapsed : 1e-9));
  if (!rc) {
    int wrc = cmds_record_finish(&rec, rec_path, "ok", err);
    if (wrc && mpi->rank == 0) fprintf(stderr, "prep: %s\n", err->msg);
    if (mpi->rank == 0)
      printf("prep %s/%s: %d support + %d test samples -> %s (%.1f s, %.2f samples/s, %d ranks)\n",
             prep_format_name(a->format), cat, l.n_support, l.n_test, path, elapsed,
             (l.n_support + l.n_test) / (elapsed > 0 ? elapsed : 1e-9), mpi->size);
  } else {
    cmds_json_free(&rec.json); /* a failed category leaves no record and no cache */
  }
  free(config);
  prep_list_free(&l);
  return rc;
}

static void usage_stdout(void) { usage(stdout); }

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_h5_quiet();
  cmds_error err = {0};
  prep_args a;
  int rc = parse_args(argc, argv, &a, &err);
  if (rc) return cmds_mpi_finish_args(&mpi, rc, &err, "cmds-prep", usage_stdout);
  /* Categories: the given list, or every folder of the root (listed by rank 0). */
  char **cats = NULL;
  int ncats = a.categories || mpi.rank == 0 ? prep_list_categories(a.categories, a.root, &cats, &err) : 0;
  rc = cmds_mpi_agree(&mpi, &err, ncats < 0 ? err.code : CMDS_OK);
  if (rc) return cmds_mpi_finalize(&mpi, rc);
  if (!a.categories) {
    MPI_CHECK(MPI_Bcast(&ncats, 1, MPI_INT, 0, mpi.comm));
    for (int i = 0; i < ncats; i++) {
      char name[256] = "";
      if (mpi.rank == 0) snprintf(name, sizeof name, "%s", cats[i]);
      MPI_CHECK(MPI_Bcast(name, sizeof name, MPI_CHAR, 0, mpi.comm));
      if (mpi.rank != 0) {
        cats = cmds_xrealloc(cats, (size_t)(i + 1) * sizeof *cats);
        cats[i] = cmds_xstrdup(name);
      }
    }
  }
  for (int i = 0; i < ncats && !rc; i++) rc = prep_category(&mpi, &a, cats[i], argc, argv, &err);
  cmds_free_list(cats, ncats);
  return cmds_mpi_finalize(&mpi, rc);
}
