/* checkpoint: the training state of a task in one safetensors file (schemas/train_output_v1.md):
 * both mappers' weights ("rgb_to_3d.<param>", "3d_to_rgb.<param>") and their AdamW moments
 * ("<prefix>.<param>.adam_m" / ".adam_v"), all F32, plus string metadata (the step, the
 * configuration key, the task). The random state needs no tensor: every draw of step s is
 * seeded from (task seed, s) (trainer.h), so the step is the RNG state.
 * Written to `<path>.tmp`, fsynced and renamed: a checkpoint is whole or absent. */
#ifndef CMDS_TRAIN_CHECKPOINT_H
#define CMDS_TRAIN_CHECKPOINT_H

#include <stdint.h>

#include "cmds_error.h"
#include "mapper/mapper.h"

/* n models with their optimisers (opts may be NULL: weights only) and metadata pairs
 * kv[2i] = key, kv[2i+1] = value. */
int train_ckpt_save(const char *path, mapper_model *const *models, mapper_adamw *const *opts,
                    const char *const *prefixes, int n, const char *const *kv, int nkv, cmds_error *err);
/* Reads the metadata value `key` of a safetensors file into out; CMDS_ESCHEMA when absent. */
int train_ckpt_meta(const char *path, const char *key, char *out, size_t cap, cmds_error *err);
/* Loads weights and moments into models / opts made with the same configuration (every
 * tensor's shape checked; the message names the file and the tensor). */
int train_ckpt_load(const char *path, mapper_model *const *models, mapper_adamw *const *opts,
                    const char *const *prefixes, int n, cmds_error *err);

#endif
