/* mapper: the Coordinate-Aware Hierarchical Feature Mapper (METHOD.md section 4), its
 * hand-written backward, the decoupled multi-scale mask-aware loss and AdamW with cosine
 * annealing (section 5). CPU (the reference) and CUDA behind one interface: every call
 * runs on the device of ctx, and the tensors must live there.
 *
 * Layout: one input modality's features are x (B, L*D, H, W): the L chosen blocks' D-wide
 * feature maps stacked along channels (block order as in the feature cache), already
 * up-sampled to the working resolution H x W. The prediction P has the same shape: one
 * D-channel sub-space per target block.
 *
 * Architecture (kind MAPPER_CMDS), PyTorch semantics (nn.Conv2d weight layout
 * (Cout, Cin, k, k), GroupNorm eps 1e-5, exact-erf GELU), parameter names as the
 * PyTorch reference module (tests/mapper/mapper_ref.py) names them:
 *   adapt.{l}.conv  Conv1x1 D->D,   adapt.{l}.norm GroupNorm(adapt_groups, D), GELU   (l = 0..L-1)
 *   F = concat_l adapt_l                                   (L*D channels)
 *   coord.conv1 Conv1x1 L*D->M on [mean over W | mean over H] (M = max(8, L*D / ca_reduction)),
 *   coord.norm GroupNorm(ca_groups, M), h-swish, coord.conv_h / coord.conv_w Conv1x1 M->L*D,
 *   sigmoid; Ft = F * a_h * a_w
 *   selector.conv1 Conv3x3 L*D->sel_hidden (padding 1), ReLU, selector.conv2 Conv1x1 sel_hidden->L,
 *   softmax over the L channels per pixel -> w_l
 *   S = sum_l w_l * adapt_l                                (D channels)
 *   proj.0 Conv1x1 D->proj_hidden, GELU, proj.2 Conv1x1 proj_hidden->L*D -> P
 * Kind MAPPER_MLP (the ablation "w/o Feature Mapper"): P = mlp.2(GELU(mlp.0(x))), both
 * Conv1x1 (L*D -> mlp_hidden -> L*D), on the raw concatenated features.
 * Every conv has a bias; every GroupNorm is affine.
 *
 * Initialisation is PyTorch's default (Conv2d: kaiming-uniform a = sqrt(5), i.e. weights and
 * biases uniform in +-1/sqrt(fan_in); GroupNorm: weight 1, bias 0), drawn from our own
 * seeded generator (kernels/rng.h), so a seed gives the same model on every machine. */
#ifndef CMDS_MAPPER_H
#define CMDS_MAPPER_H

#include <stdint.h>

#include "nn/tensor.h"

typedef enum { MAPPER_CMDS = 0, MAPPER_MLP = 1 } mapper_kind;

typedef struct mapper_config {
  mapper_kind kind;
  int64_t width;        /* D: channels of one backbone block (768) */
  int64_t layers;       /* L: blocks used (3: blocks 4, 7, 11) */
  int64_t adapt_groups; /* GroupNorm groups of the local adaptation (32) */
  int64_t ca_reduction; /* coordinate attention reduction (32 -> M = 72 for L*D = 2304) */
  int64_t ca_groups;    /* GroupNorm groups in the coordinate attention (8); must divide M */
  int64_t sel_hidden;   /* h of the spatial selector (128) */
  int64_t proj_hidden;  /* hidden width of the projection Pi (2*D = 1536) */
  int64_t mlp_hidden;   /* hidden width of the MLP ablation (L*D = 2304) */
} mapper_config;

#define MAPPER_MAX_PARAMS 64
#define MAPPER_NAME_MAX 64

typedef struct mapper_param {
  char name[MAPPER_NAME_MAX]; /* "adapt.0.conv.weight", ... */
  nn_tensor value, grad;      /* f32, same shape, on the model's device */
} mapper_param;

typedef struct mapper_model {
  mapper_config cfg;
  nn_device device;
  nn_arena store; /* every value and grad */
  int nparams;
  mapper_param params[MAPPER_MAX_PARAMS]; /* in a fixed order (the order of the reference module) */
} mapper_model;

/* METHOD.md's defaults for `width` and `layers` (kind MAPPER_CMDS). */
void mapper_config_default(mapper_config *c, int64_t width, int64_t layers);
/* Checks every divisibility and size rule; the message names the key (mapper.ca_groups, ...). */
int mapper_config_check(const mapper_config *c, cmds_error *err);

int mapper_init(mapper_model *m, const mapper_config *c, uint64_t seed, nn_device device,
                cmds_error *err);
void mapper_free(mapper_model *m);
mapper_param *mapper_find(mapper_model *m, const char *name);
int64_t mapper_numel(const mapper_model *m); /* number of trainable scalars */
/* Clears every grad. It takes no context, so on CUDA it synchronises the device around the
 * memsets (ordered with work on any stream). */
void mapper_zero_grad(mapper_model *m);
/* Copies values (not grads) between models of the same configuration, any devices. */
int mapper_copy(mapper_model *dst, const mapper_model *src, cmds_error *err);

/* The activations a training forward keeps for its backward. One tape per (B, H, W) and
 * device, allocated once; reused by every step. */
typedef struct mapper_tape mapper_tape;
mapper_tape *mapper_tape_new(const mapper_config *c, int64_t B, int64_t H, int64_t W,
                             nn_device device, cmds_error *err);
void mapper_tape_free(mapper_tape *t);
/* Bytes the tape needs, and the scratch (ctx->scratch) the calls need, for planning (same
 * figures on both devices). mapper_scratch_bytes covers every call: an inference forward
 * (tape NULL), which keeps its activations in the scratch, as well as training;
 * mapper_scratch_bytes_train covers a training step only (forward with a tape, backward,
 * loss), which is smaller because the tape holds the activations. */
size_t mapper_tape_bytes(const mapper_config *c, int64_t B, int64_t H, int64_t W);
size_t mapper_scratch_bytes(const mapper_config *c, int64_t B, int64_t H, int64_t W);
size_t mapper_scratch_bytes_train(const mapper_config *c, int64_t B, int64_t H, int64_t W);

/* P = mapper(x). tape NULL: inference; otherwise the tape records what backward needs. */
int mapper_forward(mapper_model *m, nn_ctx *ctx, const nn_tensor *x, nn_tensor *p,
                   mapper_tape *tape, cmds_error *err);
/* Given dL/dP, ADDS dL/dparam into every param's grad (so micro-batches accumulate).
 * x must be the input of the forward that filled the tape. */
int mapper_backward(mapper_model *m, nn_ctx *ctx, const nn_tensor *x, const nn_tensor *dp,
                    mapper_tape *tape, cmds_error *err);

/* The decoupled multi-scale mask-aware loss of one direction and one stream (METHOD.md 5):
 *   d_l(b, p) = 1 - cos(P_l(b, :, p), T_l(b, :, p))   (F.cosine_similarity, eps 1e-8)
 *   loss      = sum_l layer_w[l] * sum_{b,p} m(b, p) d_l(b, p) / denom
 * mask (B, H, W) of 0/1 floats, or NULL for m = 1. denom is passed in so that the mean can
 * be global over a data-parallel batch: R stream sum over the whole batch of m + 1e-8,
 * E stream the whole batch's B*H*W. *loss gets the value (double); dp (NULL: not wanted)
 * is SET to dloss/dP. P, T, dp (B, L*D, H, W). */
int mapper_loss(nn_ctx *ctx, const nn_tensor *P, const nn_tensor *T, const nn_tensor *mask,
                int64_t layers, const float *layer_w, double denom, double *loss, nn_tensor *dp,
                cmds_error *err);

/* AdamW exactly as torch.optim.AdamW (amsgrad off): p -= lr*wd*p; m = b1 m + (1-b1) g;
 * v = b2 v + (1-b2) g^2; p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps), t = step >= 1.
 * m and v are per-param tensors of the same shapes (state the checkpoint saves). */
typedef struct mapper_adamw {
  float beta1, beta2, eps, weight_decay; /* 0.9, 0.999, 1e-8, 1e-4 */
  nn_arena store;
  nn_tensor m[MAPPER_MAX_PARAMS], v[MAPPER_MAX_PARAMS];
  int64_t step; /* steps taken */
} mapper_adamw;
int mapper_adamw_init(mapper_adamw *o, const mapper_model *m, float weight_decay, cmds_error *err);
void mapper_adamw_free(mapper_adamw *o);
int mapper_adamw_step(mapper_adamw *o, mapper_model *m, nn_ctx *ctx, float lr, cmds_error *err);
/* torch.optim.lr_scheduler.CosineAnnealingLR's closed form at `step` of `total`
 * (lr_max at 0, lr_min at total). */
double mapper_cosine_lr(int64_t step, int64_t total, double lr_max, double lr_min);

/* Feature-cache rows to mapper input: f16 (B, L, G, G, D) as the feature cache stores them
 * (host memory) -> x (B, L*D, H, W) f32 on ctx's device: channels first, then bicubic
 * up-sampling (F.interpolate(mode="bicubic", align_corners=False); a copy when H = W = G).
 * Scratch: B*L*D*G*G f32 values when resizing, plus the f16 rows on CUDA (not included in
 * mapper_scratch_bytes*, but far below them at the pipeline's sizes). */
int mapper_input_from_f16(nn_ctx *ctx, nn_tensor *x, const uint16_t *f16, int64_t B, int64_t L,
                          int64_t G, int64_t D, cmds_error *err);

/* safetensors (F32), every tensor named prefix + param name ("rgb_to_3d." + "adapt.0.conv.weight");
 * schemas/mapper_weights_v1.md (metadata cmds_schema = cmds.mapper_weights, version 1);
 * metadata: the config keys as strings (mapper.kind, mapper.width, ...) plus `extra` pairs.
 * Written to path.tmp and renamed, so the file appears whole or not at all. */
int mapper_save(const mapper_model *const *models, const char *const *prefixes, int n,
                const char *const *extra_kv, int n_extra, const char *path, cmds_error *err);
/* Loads the model stored under prefix (configuration from the file's metadata, every shape
 * checked; the error names the file and the missing or mis-shaped tensor). */
int mapper_load(mapper_model *m, const char *path, const char *prefix, nn_device device,
                cmds_error *err);

#endif
