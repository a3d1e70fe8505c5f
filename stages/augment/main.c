/* cmds-augment: the `augment` stage (METHOD.md section 7). Per category: a LoRA fine-tune of
 * Stable Diffusion 2.x on the category's support images, then img2img generations from them,
 * written into the sample cache as the `augmented` group (RGB only) for cmds-estimate,
 * cmds-features and the E stream of cmds-train.
 *
 *   mpiexec -n R cmds-augment --cache DIR --dataset D --sd ROOT [--category C[,C..]] [--shots K[,K..]]
 *       [--data ROOT] [--run RUN] [--device auto|cpu|cuda] [--set augment.key=value]...
 *       [--checkpoint-every N] [--zstd-level L] [--force]
 *
 * Categories are a dynamic task farm (comm/taskfarm.h): each rank (one GPU per rank: local
 * rank modulo the GPUs it sees) takes one category at a time and does all of its work alone;
 * every k of --shots in turn on the same rank (one LoRA per (category, k), fine-tuned on the
 * first k support samples only: a k-shot task never sees anything made from more); every
 * random draw is keyed by (augment.seed, dataset, category, k), so the results do not
 * depend on the rank count. The fine-tune checkpoints every N steps and on SIGTERM / SIGUSR1;
 * a stopped job exits with CMDS_EINTERRUPTED (7) and the next run resumes every unfinished
 * category (stages/augment/category.h lists the files). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "category.h"
#include "cmds_mpi.h"
#include "fsutil.h"
#include "h5io.h"
#include "taskfarm.h"
#include "tasks_file.h"

typedef struct aug_args {
  const char *cache, *dataset, *categories, *sd, *data, *run, *device;
  int64_t shots[CMDS_AUG_MAX_SHOTS];
  int nshots;
  cmds_config cfg;
  int64_t checkpoint_every;
  int zstd_level, force;
} aug_args;

static void usage(void) {
  printf("usage: cmds-augment --cache DIR --dataset mvtec3d|eyecandies --sd ROOT [options]\n"
         "  --sd ROOT              Stable Diffusion 2.x checkpoint in diffusers layout (model_index.json, unet/,\n"
         "                         vae/, scheduler/, text_encoder/, tokenizer/)\n"
         "  --category C[,C..]     categories (default: every <cat>.h5 sample cache in DIR/<dataset>)\n"
         "  --shots K[,K..]        one LoRA and augment.images images per k, from the first k support samples only\n"
         "                         (the few-shot protocol; default: the cache's support count alone; each k <= it)\n"
         "  --data ROOT            the dataset's folder: the LoRA sees the original support images on prep's padded\n"
         "                         square (checked against the cache); without it, the cached S x S RGB\n"
         "  --run RUN              where the LoRA, its checkpoints and the generated PNGs go\n"
         "                         (RUN/augment/<dataset>/<category>/; default: DIR/augment/...)\n"
         "  --device auto|cpu|cuda (default auto: a GPU per rank when there are GPUs)\n"
         "  --set augment.key=value  METHOD.md's keys (repeatable): augment.prompt ('{category}' is replaced),\n"
         "                         rank, alpha, steps, lr, weight_decay, max_grad_norm, batch, resolution, strength,\n"
         "                         inference_steps, guidance, images, seed\n"
         "  --checkpoint-every N   fine-tune steps between checkpoints (default 100; 0: only on a stop signal)\n"
         "  --zstd-level L         (default 3)\n"
         "  --force                redo every category, also over augmented samples made with other settings\n"
         "Writes the group `augmented` into DIR/<dataset>/<cat>.h5 and a record <cat>.augment.json.\n"
         "exit codes: 0 done, 2 bad input (also: no SD checkpoint), 3 I/O, 4 schema, 7 stopped by a signal after\n"
         "checkpointing (rerun to resume)\n");
}

/* --shots 1,2,4: distinct k >= 1, kept ascending. */
static int parse_shots(const char *v, aug_args *a, cmds_error *err) {
  a->nshots = 0;
  const char *p = v;
  while (*p) {
    char *end = NULL;
    long long k = strtoll(p, &end, 10);
    if (end == p || k < 1 || k > 100000 || (*end && *end != ','))
      return CMDS_FAIL(err, CMDS_EINPUT, "--shots '%s': expected a comma list of k >= 1 (e.g. 1,2,4)", v);
    int dup = 0;
    for (int i = 0; i < a->nshots; i++) dup |= a->shots[i] == k;
    if (!dup) {
      if (a->nshots == CMDS_AUG_MAX_SHOTS)
        return CMDS_FAIL(err, CMDS_EINPUT, "--shots '%s': at most %d values", v, CMDS_AUG_MAX_SHOTS);
      int i = a->nshots++;
      while (i > 0 && a->shots[i - 1] > k) {
        a->shots[i] = a->shots[i - 1];
        i--;
      }
      a->shots[i] = k;
    }
    p = *end ? end + 1 : end;
    if (*end == ',' && !*p) return CMDS_FAIL(err, CMDS_EINPUT, "--shots '%s': expected a comma list of k >= 1 (e.g. 1,2,4)", v);
  }
  if (!a->nshots) return CMDS_FAIL(err, CMDS_EINPUT, "--shots '%s': expected a comma list of k >= 1 (e.g. 1,2,4)", v);
  return CMDS_OK;
}

static int parse_args(int argc, char **argv, aug_args *a, cmds_error *err) {
  memset(a, 0, sizeof *a);
  a->device = "auto";
  a->checkpoint_every = 100;
  a->zstd_level = 3;
  cmds_config_default(&a->cfg);
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(o, "-h") || !strcmp(o, "--help")) return -1;
    if (!strcmp(o, "--force")) { a->force = 1; continue; }
    if (!v) return CMDS_FAIL(err, CMDS_EINPUT, "%s needs a value (see --help)", o);
    i++;
    char *end = NULL;
    long long n = strtoll(v, &end, 10);
    int num_ok = *v && end && !*end && n >= 0;
    if (!strcmp(o, "--cache")) a->cache = v;
    else if (!strcmp(o, "--dataset")) a->dataset = v;
    else if (!strcmp(o, "--category")) a->categories = v;
    else if (!strcmp(o, "--shots")) {
      int rc = parse_shots(v, a, err);
      if (rc) return rc;
    }
    else if (!strcmp(o, "--sd")) a->sd = v;
    else if (!strcmp(o, "--data")) a->data = v;
    else if (!strcmp(o, "--run")) a->run = v;
    else if (!strcmp(o, "--device")) a->device = v;
    else if (!strcmp(o, "--set")) {
      int rc = cmds_config_set_arg(&a->cfg, v, "--set", CMDS_KEY_AUGMENT, err);
      if (rc) return rc;
    } else if (!strcmp(o, "--checkpoint-every") && num_ok) a->checkpoint_every = n;
    else if (!strcmp(o, "--zstd-level") && num_ok && n <= 22) a->zstd_level = (int)n;
    else return CMDS_FAIL(err, CMDS_EINPUT, "bad option or value: %s %s (see --help)", o, v);
  }
  if (!a->cache || !a->dataset || !a->sd)
    return CMDS_FAIL(err, CMDS_EINPUT, "--cache, --dataset and --sd are required (see --help)");
  if (!cmds_name_ok(a->dataset))
    return CMDS_FAIL(err, CMDS_EINPUT, "--dataset '%s': expected a name of [A-Za-z0-9._-]", a->dataset);
  if (strcmp(a->device, "auto") && strcmp(a->device, "cpu") && strcmp(a->device, "cuda"))
    return CMDS_FAIL(err, CMDS_EINPUT, "--device: expected auto, cpu or cuda, got '%s'", a->device);
  if (a->data && !cmds_is_dir(a->data))
    return CMDS_FAIL(err, CMDS_EINPUT, "--data %s: not a folder (the dataset's root, as given to cmds-prep --root)", a->data);
  if (!cmds_is_dir(a->cache)) return CMDS_FAIL(err, CMDS_EINPUT, "--cache %s: not a folder", a->cache);
  if (strtol(a->cfg.value[CK_AUG_RESOLUTION], NULL, 10) % 8)
    return CMDS_FAIL(err, CMDS_EINPUT, "--set augment.resolution=%s: expected a multiple of 8", a->cfg.value[CK_AUG_RESOLUTION]);
  return CMDS_OK;
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_h5_quiet();
  cmds_error err = {0};
  aug_args a;
  int rc = parse_args(argc, argv, &a, &err);
  if (rc) return cmds_mpi_finish_args(&mpi, rc, &err, "cmds-augment", usage);
  /* No checkpoint: say so before anything else, and that the pipeline runs without it. */
  char why[1024];
  if (!sd_have_weights(a.sd, why, sizeof why))
    rc = CMDS_FAIL(&err, CMDS_EINPUT, "no Stable Diffusion checkpoint at %s: %s; the pipeline runs without "
                   "augmentation when the job spec has no augment: block (the demo's default)", a.sd, why);
  rc = cmds_mpi_agree(&mpi, &err, rc);
  aug_env env;
  memset(&env, 0, sizeof env);
  env.device = NN_CPU;
  if (!rc) rc = cmds_mpi_agree(&mpi, &err, nn_device_pick(a.device, mpi.local_rank, mpi.rank, &env.device, &err));
  /* Checkpoint identity: a hash of the UNet weights (rank 0; the file is large). */
  if (!rc) {
    if (mpi.rank == 0) {
      char unet[4400];
      snprintf(unet, sizeof unet, "%s/unet/diffusion_pytorch_model.safetensors", a.sd);
      if (!cmds_is_file(unet)) snprintf(unet, sizeof unet, "%s/unet/diffusion_pytorch_model.fp16.safetensors", a.sd);
      rc = cmds_file_identity(unet, env.checkpoint_id, sizeof env.checkpoint_id, &err);
    }
    rc = cmds_mpi_agree(&mpi, &err, rc);
    MPI_CHECK(MPI_Bcast(env.checkpoint_id, sizeof env.checkpoint_id, MPI_CHAR, 0, mpi.comm));
  }
  char **cats = NULL;
  int ncats = 0;
  if (!rc) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", a.cache, a.dataset);
    int n = cmds_categories(a.categories, dir, ".h5", ".features.h5", "sample caches (*.h5; run cmds-prep first)", &cats,
                            &err);
    ncats = n > 0 ? n : 0;
    for (int i = 0; i < ncats && !rc; i++) {
      char p[4400];
      snprintf(p, sizeof p, "%s/%s.h5", dir, cats[i]);
      if (!cmds_is_file(p)) rc = CMDS_FAIL(&err, CMDS_EINPUT, "%s: no sample cache for category %s (run cmds-prep first)", p, cats[i]);
    }
    rc = cmds_mpi_agree(&mpi, &err, n > 0 ? rc : err.code);
  }
  if (rc) {
    if (cats) cmds_free_list(cats, ncats);
    return cmds_mpi_finalize(&mpi, rc);
  }

  env.cache = a.cache;
  env.dataset = a.dataset;
  env.sd = a.sd;
  memcpy(env.shots, a.shots, sizeof env.shots);
  env.nshots = a.nshots;
  env.data = a.data;
  env.out_root = a.run ? a.run : a.cache;
  env.cfg = a.cfg;
  env.checkpoint_every = a.checkpoint_every;
  env.zstd_level = a.zstd_level;
  env.force = a.force;
  env.argc = argc;
  env.argv = argv;
  env.self.comm = MPI_COMM_SELF;
  env.self.rank = 0;
  env.self.size = 1;
  env.self.local_rank = mpi.local_rank;
  env.self.local_size = mpi.local_size;
  env.world_rank = mpi.rank;
  env.world_size = mpi.size;

  int *status = cmds_xmalloc(sizeof(int) * (size_t)ncats);
  double *num = cmds_xcalloc((size_t)ncats * 4, sizeof(double)); /* steps_run, images made, final loss, elapsed */
  for (int i = 0; i < ncats; i++) status[i] = -1;
  cmds_taskfarm tf;
  cmds_taskfarm_open(&tf, mpi.comm, ncats);
  int worst = CMDS_OK, interrupted = 0;
  for (;;) {
    if (cmds_stop_requested()) { /* stopped between categories: leave the rest for the rerun */
      interrupted = 1;
      break;
    }
    int64_t ci = cmds_taskfarm_next(&tf);
    if (ci < 0) break;
    aug_result res;
    cmds_error cerr = {0};
    int crc = aug_category_run(&env, cats[ci], &res, &cerr);
    status[ci] = res.status;
    num[4 * ci] = (double)res.steps_run;
    num[4 * ci + 1] = (double)res.images_made;
    num[4 * ci + 2] = res.final_loss;
    num[4 * ci + 3] = res.elapsed_s;
    if (res.status == AUG_SKIPPED)
      printf("augment %s/%s: augmented samples up to date, skipped\n", a.dataset, cats[ci]);
    else if (res.status == AUG_DONE)
      printf("augment %s/%s: LoRA %s (%lld steps%s, loss %.5g), %lld images generated, %lld reused -> %s/%s/%s.h5 "
             "(%.1f s, rank %d, %s)\n", a.dataset, cats[ci], res.lora_reused ? "reused" : "fine-tuned",
             (long long)res.steps_run, res.start_step ? ", resumed" : "", res.final_loss, (long long)res.images_made,
             (long long)res.images_reused, a.cache, a.dataset, cats[ci], res.elapsed_s, mpi.rank,
             nn_device_name(env.device));
    else
      fprintf(stderr, "[rank %d] cmds-augment: %s/%s %s: %s\n", mpi.rank, a.dataset, cats[ci],
              res.status == AUG_INTERRUPTED ? "stopped by a signal (state saved)" : "failed", cerr.msg);
    fflush(stdout);
    if (crc == CMDS_EINTERRUPTED) {
      interrupted = 1;
      break;
    }
    if (crc && !worst) worst = crc;
  }
  cmds_taskfarm_close(&tf);

  /* What every rank did, on rank 0 (a category ran on exactly one rank). */
  int *all_status = cmds_xmalloc(sizeof(int) * (size_t)(ncats ? ncats : 1));
  double *all_num = cmds_xcalloc((size_t)ncats * 4 + 1, sizeof(double));
  for (int i = 0; i < ncats; i++)
    if (status[i] < 0) memset(num + 4 * i, 0, 4 * sizeof(double));
  MPI_CHECK(MPI_Reduce(status, all_status, ncats, MPI_INT, MPI_MAX, 0, mpi.comm));
  MPI_CHECK(MPI_Reduce(num, all_num, ncats * 4, MPI_DOUBLE, MPI_SUM, 0, mpi.comm));
  int mine[2] = {worst, interrupted}, any[2] = {0, 0};
  MPI_CHECK(MPI_Allreduce(mine, any, 2, MPI_INT, MPI_MAX, mpi.comm));
  rc = any[0] ? any[0] : any[1] ? CMDS_EINTERRUPTED : CMDS_OK;
  if (mpi.rank == 0) {
    int counts[5] = {0, 0, 0, 0, 0};
    for (int i = 0; i < ncats; i++) counts[all_status[i] >= 0 && all_status[i] <= 3 ? all_status[i] : 4]++;
    printf("augment: %d categor%s: %d done, %d skipped, %d interrupted, %d failed, %d not run (%d rank%s)\n", ncats,
           ncats == 1 ? "y" : "ies", counts[0], counts[1], counts[2], counts[3], counts[4], mpi.size,
           mpi.size == 1 ? "" : "s");
    for (int i = 0; i < ncats && (counts[3] || counts[2] || counts[4]); i++)
      if (all_status[i] != AUG_DONE && all_status[i] != AUG_SKIPPED)
        fprintf(stderr, "cmds-augment: %s/%s: %s\n", a.dataset, cats[i], cmds_task_status_name(all_status[i]));
    if (rc == CMDS_EINTERRUPTED)
      fprintf(stderr, "cmds-augment: stopped by a signal; checkpoints and finished images kept; exit code %d: rerun "
                      "(or requeue) to resume\n", CMDS_EINTERRUPTED);
  }
  free(all_status);
  free(all_num);
  free(status);
  free(num);
  aug_env_free(&env);
  cmds_free_list(cats, ncats);
  return cmds_mpi_finalize(&mpi, rc);
}
