/* category: one category of cmds-augment (METHOD.md section 7) on one rank.
 *
 *   support images (the originals on prep's padded square with --data, else the cached S x S
 *   RGB) -> Pillow-bicubic to R x R (augment.resolution) -> [-1, 1]; then for each k of the
 *   shots list (the few-shot protocol: k sees support images [0, k) only):
 *   -> LoRA fine-tune of the bare SD UNet on the first k images (augment.steps,
 *      kernels/diffusion/sd_lora.h), checkpointed every N steps and on SIGTERM / SIGUSR1
 *      -> lora.safetensors (diffusers names) + lora.json
 *   -> augment.images img2img generations (image j from support image j mod k, seed from
 *      (augment.seed, dataset, category, k, j)) -> images/<j>.png (R x R, 8-bit)
 *   -> Pillow-bicubic to S x S (as prep resizes) -> rows augmented/k<k>/<support id>/<j>;
 *   the rows of every k go into the `augmented` group of a copy of the sample cache, renamed
 *   over it (once per category).
 *
 * Files (schemas/augment_output_v1.md), OUT = RUN (--run) or CACHE, D = OUT/augment/<dataset>/<category>/k<k>:
 *   D/lora.ckpt.safetensors (+ .json)           while training
 *   D/lora.safetensors, lora.json               the fine-tuned LoRA of k
 *   D/images/<j>.png, images/images.json        the generations of k
 *   CACHE/<dataset>/<category>.h5 (group `augmented`, attribute augmented_id)
 *   CACHE/<dataset>/<category>.augment.json                             the stage record
 * Every intermediate carries the identity of the settings that made it; a rerun reuses what
 * matches (checkpoint, LoRA, each finished image) and replaces what does not. Only the
 * cache's augmented group is protected: made with other settings it is replaced only with
 * --force. */
#ifndef CMDS_AUGMENT_CATEGORY_H
#define CMDS_AUGMENT_CATEGORY_H

#include <stdint.h>

#include "cmds_mpi.h"
#include "config_keys.h"
#include "img2img.h"
#include "sd_lora.h"
#include "taskfarm.h"

#define CMDS_AUG_MAX_SHOTS 16

typedef struct aug_env {
  const char *cache, *dataset, *sd, *data, *out_root; /* out_root: --run, else --cache */
  int64_t shots[CMDS_AUG_MAX_SHOTS]; /* --shots, ascending, distinct; nshots 0: the cache's support count */
  int nshots;
  cmds_config cfg;      /* augment.* keys */
  int64_t checkpoint_every;
  int zstd_level, force;
  int argc;
  char **argv;
  cmds_mpi self;        /* this rank alone (a category is one rank's) */
  int world_rank, world_size;
  nn_device device;
  char checkpoint_id[160]; /* identity of the SD UNet weights */
  /* the models, loaded by the first category that needs them and kept */
  sd_models M;
  int loaded;
  nn_arena scratch;
  size_t scratch_bytes;
  nn_ctx ctx;
  int ctx_ok;
} aug_env;

enum { AUG_DONE = CMDS_TASK_DONE, AUG_SKIPPED = CMDS_TASK_SKIPPED, AUG_INTERRUPTED = CMDS_TASK_INTERRUPTED,
       AUG_FAILED = CMDS_TASK_FAILED };

typedef struct aug_result {
  int status;
  int64_t start_step, steps_run, images_made, images_reused;
  int lora_reused;
  double final_loss, elapsed_s;
} aug_result;

/* One category on this rank alone. Returns CMDS_EINTERRUPTED after a stop signal (the state
 * is saved), another code on failure; *res says what happened. */
int aug_category_run(aug_env *env, const char *category, aug_result *res, cmds_error *err);
void aug_env_free(aug_env *env);

/* The prompt of a category: augment.prompt with every "{category}" replaced by the
 * category's name, '_' read as ' ' ("cable_gland" -> "a photo of a cable gland"). */
void aug_prompt(const char *templ, const char *category, char *out, size_t cap);

#endif
