/* config: what every diffusion module needs from a checkpoint in diffusers layout:
 *
 *   <root>/model_index.json                    pipeline class, components, Marigold defaults
 *   <root>/<component>/config.json              model configuration (scheduler: scheduler_config.json)
 *   <root>/<component>/diffusion_pytorch_model.safetensors   diffusers models (vae, unet)
 *   <root>/<component>/model.safetensors                     transformers models (text_encoder)
 *   and the variants <stem>.fp16.safetensors (chosen when asked for, or when the plain file
 *   is absent).
 *
 * Loading by name with shape checks: a dfs_loader goes through every tensor a module asks
 * for, converts fp16 / bf16 / fp32 storage to fp32 on the arena's device, and keeps going
 * after a missing or mis-shaped tensor, so that one error names all of them (and, when
 * asked, every tensor of the file nobody used, which is how a wrong configuration shows).
 *
 *   dfs_component c;
 *   if (dfs_component_open(&c, root, "vae", NULL, 1, &err)) ...;
 *   nn_arena a; nn_arena_init(&a, NN_CPU, dfs_component_param_bytes(&c), &err);
 *   dfs_loader L; dfs_loader_init(&L, &c, &a);
 *   dfs_load(&L, &conv_in_w, 4, (int64_t[]){128, 3, 3, 3}, "encoder.conv_in.weight");
 *   ...
 *   if (dfs_loader_finish(&L, 1, &err)) ...;   // every problem in one message
 */
#ifndef CMDS_DIFFUSION_CONFIG_H
#define CMDS_DIFFUSION_CONFIG_H

#include <stdint.h>

#include "cmds_error.h"
#include "jsonread.h"
#include "nn/tensor.h"
#include "safetensors.h"

typedef struct dfs_component {
  char *dir;          /* <root>/<name> */
  char *config_path;  /* its config.json (or scheduler_config.json) */
  char *weights_path; /* NULL when opened without weights */
  cmds_jv config;
  cmds_st_file st;    /* open when weights_path != NULL */
  unsigned char *used; /* per tensor of st: asked for by a loader */
} dfs_component;

/* Opens <root>/<name>: reads its config (config.json, else scheduler_config.json) and, when
 * need_weights, maps its weights: variant NULL = the plain file, else <stem>.<variant>.
 * safetensors; with variant NULL and no plain file, the fp16 variant is taken. A missing
 * folder / config / weight file is CMDS_EINPUT naming the path and what was looked for. */
int dfs_component_open(dfs_component *c, const char *root, const char *name, const char *variant,
                       int need_weights, cmds_error *err);
void dfs_component_close(dfs_component *c);
/* Bytes an fp32 copy of every tensor of the file needs in an arena (with alignment). */
size_t dfs_component_param_bytes(const dfs_component *c);

/* <root>/model_index.json parsed (CMDS_EINPUT naming the path when absent or broken). */
int dfs_model_index(const char *root, cmds_jv *out, cmds_error *err);

typedef struct dfs_loader {
  dfs_component *c;
  nn_arena *arena;
  int n_bad;           /* missing or mis-shaped tensors so far */
  int first_code;      /* error code of the first failure (arena full, ...) other than those */
  char report[1024];   /* "missing: a, b; wrong shape: c (1,2) expected (2,1); ..." as many as fit */
  size_t report_len;
  int n_unreported;
  int64_t n_loaded, n_params;
  cmds_error first;    /* the first non-name failure */
} dfs_loader;

/* Starts a pass over the component's tensors (clears which were used). */
void dfs_loader_init(dfs_loader *L, dfs_component *c, nn_arena *arena);
/* Loads the tensor named by fmt (printf) with exactly this shape into *out: fp32, allocated
 * in the loader's arena on its device. A missing or mis-shaped tensor is recorded and *out
 * gets an allocated, zero-filled tensor of the expected shape so the caller can go on.
 * Returns 0, or non-zero once the loader has failed (the caller may ignore it and call
 * dfs_loader_finish at the end). */
int dfs_load(dfs_loader *L, nn_tensor *out, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* 1 when the file has a tensor of that name (for optional tensors: biases, conv_shortcut). */
int dfs_has(const dfs_loader *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* 0, or CMDS_EINPUT naming the weight file and every missing / mis-shaped tensor (and, when
 * strict, every tensor of the file that was never asked for). */
int dfs_loader_finish(dfs_loader *L, int strict_unused, cmds_error *err);

#endif
