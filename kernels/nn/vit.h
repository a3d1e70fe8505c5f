/* vit: the frozen DINO ViT backbone (METHOD.md section 3): patch embedding, class token,
 * position embeddings, pre-norm transformer blocks (LayerNorm, multi-head self-attention,
 * LayerNorm, MLP with exact GELU), optional final LayerNorm. Inference only, built from the
 * nn ops, so the same code runs on the CPU and (with CMDS_CUDA) on a GPU.
 *
 * Weights come from safetensors in the names Hugging Face ships:
 *   timm          vit_base_patch8_224.dino: patch_embed.proj.weight, blocks.{i}.attn.qkv.weight, ...
 *   transformers  facebook/dino-vitb8 (as on the Hub): embeddings.patch_embeddings.projection.weight,
 *                 encoder.layer.{i}.attention.attention.query.weight, ...; also the names
 *                 transformers 5 uses in memory (layers.{i}.attention.q_proj.weight, ...),
 *                 and either with a "vit." prefix (ViTFor* heads).
 * The layout is detected from the names, the configuration (width, depth, patch, grid)
 * from the shapes; heads and LayerNorm eps are not in the file and come from the config
 * (defaults: width / 64 heads; eps 1e-6 for timm, 1e-12 for transformers).
 * Every missing tensor and every wrong shape is reported in one error naming the file. */
#ifndef CMDS_NN_VIT_H
#define CMDS_NN_VIT_H

#include <stdint.h>

#include "tensor.h"

typedef enum { VIT_TIMM = 0, VIT_HF = 1, VIT_HF5 = 2 } vit_layout;

typedef struct vit_config {
  int64_t image;   /* input side (224) */
  int64_t patch;   /* 8 */
  int64_t width;   /* 768 */
  int64_t depth;   /* 12 */
  int64_t heads;   /* 12 */
  int64_t mlp;     /* 3072 */
  float eps;       /* LayerNorm eps */
} vit_config;

typedef struct vit_block {
  nn_tensor ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
} vit_block;

typedef struct vit_model {
  vit_config cfg;
  vit_layout layout;
  nn_device device;
  nn_arena weights;            /* every parameter, f32, on `device` */
  nn_tensor cls, pos;          /* (D), (1 + G*G, D) */
  nn_tensor patch_w, patch_b;  /* (D, 3*P*P) (conv weight flattened as (c, ky, kx)), (D) */
  nn_tensor norm_w, norm_b;    /* final LayerNorm */
  vit_block *blocks;           /* depth */
  /* bf16 path (ctx->act_dtype == NN_BF16, CUDA): bf16 copies of qkv_w, qkv_b, proj_w, fc1_w,
   * fc1_b, fc2_w per block (other fields unused), made by the first bf16 forward. */
  nn_arena weights16;
  vit_block *blocks16;
} vit_model;

/* ViT-B/8 at 224: 768 wide, 12 blocks, 12 heads, MLP 3072. */
void vit_config_b8(vit_config *c);
const char *vit_layout_name(vit_layout l);

/* Loads a safetensors file (F32, F16 or BF16 tensors, converted to f32) onto `device`.
 * heads <= 0 and eps <= 0 take the defaults above. */
int vit_load(vit_model *m, const char *path, nn_device device, int64_t heads, float eps, cmds_error *err);
/* A model with random weights (truncated-normal-like, std 0.02, as timm initialises ViTs):
 * the pipeline's stand-in when no weights are given. */
int vit_init_random(vit_model *m, const vit_config *c, uint64_t seed, nn_device device, cmds_error *err);
void vit_free(vit_model *m);

/* images (B, 3, H, W) float, already normalised -> patches (B, G*G, 3*P*P), CPU. */
void vit_patchify_cpu(const float *images, int64_t B, int64_t H, int64_t W, int64_t P, float *patches);

/* Forward on ctx's device. patches: (B, G*G, 3*P*P) from vit_patchify_cpu, on ctx->device.
 * out: (B, nblocks, G*G, D): the patch tokens (no class token) after each listed block
 * (1-based), with the final LayerNorm applied if final_norm; the blocks after the last listed one
 * are not run (the features stage's 4, 7, 11 run 11 of ViT-B/8's 12). Activations come from
 * ctx->scratch and are handed back before returning.
 * Precision: f32 by default (CPU: the reference; CUDA: fp32 GEMMs, or TF32 with
 * ctx->allow_tf32). ctx->act_dtype = NN_BF16 on CUDA: bf16 weights (converted once, kept in
 * m->weights16) and activations, fp32 accumulation, LayerNorm and softmax statistics in f32,
 * the residual stream and the outputs in f32; our flash-attention kernel (head dim a multiple
 * of 16 up to 128). Within about 1e-2 (relative L2) of the f32 path. */
int vit_forward(vit_model *m, nn_ctx *ctx, const nn_tensor *patches, const int *blocks, int nblocks,
                int final_norm, nn_tensor *out, cmds_error *err);
/* Scratch bytes vit_forward needs for a batch of B. */
size_t vit_scratch_bytes(const vit_config *c, int64_t B);

#endif
