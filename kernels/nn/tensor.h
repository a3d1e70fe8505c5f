/* tensor: the small tensor / arena / context layer the nn ops share.
 *
 * A tensor is a view: an explicit shape of up to 4 dims (row-major, contiguous, so no
 * strides yet), a dtype and a device, over memory that someone else owns, normally an
 * arena. An arena is one allocation on one device with a bump pointer: the ops take
 * their scratch (im2col columns, ...) from the context's scratch arena and hand it back
 * with a mark/rewind pair, so nothing is allocated inside a forward pass. Between
 * batches the caller resets the arena.
 *
 * The context says where ops run (the tensors' device must agree), carries the CUDA
 * stream and cuBLAS handle, the TF32 switch and the bf16 switch (act_dtype): both off by
 * default, so the CUDA path is fp32-exact up to summation order and can be compared with
 * the CPU path at 1e-5. */
#ifndef CMDS_NN_TENSOR_H
#define CMDS_NN_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "cmds_error.h"

#define NN_MAX_DIMS 4

typedef enum { NN_F32 = 0, NN_F16 = 1, NN_BF16 = 2 } nn_dtype;
typedef enum { NN_CPU = 0, NN_CUDA = 1 } nn_device;

typedef struct nn_tensor {
  nn_dtype dtype;
  nn_device device;
  int ndim;
  int64_t shape[NN_MAX_DIMS];
  void *data;
} nn_tensor;

typedef struct nn_arena {
  nn_device device;
  size_t size_bytes;
  size_t used_bytes;
  size_t peak_bytes; /* high-water mark: how big the arena must be for this workload */
  char *base;
} nn_arena;

#define NN_LT_WORKSPACE_BYTES ((size_t)32 << 20)

typedef struct nn_ctx {
  nn_device device;
  nn_arena *scratch; /* on `device`; ops that need workspace take it from here */
  void *stream;      /* cudaStream_t (NULL = default stream) when device is NN_CUDA */
  void *cublas;      /* cublasHandle_t, created by nn_ctx_init for NN_CUDA */
  /* cuBLASLt's workspace, NN_LT_WORKSPACE_BYTES of device memory that nn_ctx_init allocates for
   * NN_CUDA and nn_ctx_free releases: a fixed size owned by the context, so the GEMM algorithm
   * cuBLASLt picks (and the last bits of its results) never depend on how full the scratch arena
   * is, and no op's scratch size has to count it. */
  void *lt_ws;
  int allow_tf32;    /* 0: fp32 GEMMs (default); 1: TF32 tensor cores for GEMMs */
  /* NN_F32 (nn_ctx_init's default) or NN_BF16: forwards that have a bf16 path (vit_forward on
   * CUDA) keep GEMM weights and activations in bf16 and accumulate in fp32; set it after
   * nn_ctx_init. The single ops (nn_*_forward) stay f32 either way. */
  nn_dtype act_dtype;
} nn_ctx;

/* Bytes of one element. */
size_t nn_dtype_size(nn_dtype t);
const char *nn_dtype_name(nn_dtype t);
const char *nn_device_name(nn_device d);

/* 1 when this build has the CUDA backend and a GPU is visible, else 0. */
int nn_cuda_available(void);
/* 1 in the CUDA emulation's build (tests/cuda_emu: the .cu kernels run on the CPU, inline PTX
 * through the emulation's forms of those instructions), else 0. */
int nn_cuda_emulated(void);
/* One GPU per rank: selects GPU local_rank % count (Slurm / Open MPI give each rank of a node
 * its local rank; CUDA_VISIBLE_DEVICES narrows the set). Returns the index, or -1 when
 * there is no GPU or no CUDA backend. */
int nn_cuda_select(int local_rank);
/* A stage's --device: "cpu" gives NN_CPU; "auto" NN_CUDA when nn_cuda_select(local_rank) finds a
 * GPU, else NN_CPU; "cuda" NN_CUDA or CMDS_EINPUT ("--device cuda: no GPU visible to rank
 * <rank>"). *dev is NN_CPU unless a GPU was selected. */
int nn_device_pick(const char *want, int local_rank, int rank, nn_device *dev, cmds_error *err);

/* "NVIDIA H100 80GB HBM3 (132 SMs)" for the current GPU, or the CPU's model name and the
 * OpenMP thread count, into buf (benchmarks name the machine they measured). */
const char *nn_device_describe(nn_device d, char *buf, size_t n);

/* --- arena --- */
/* One allocation of size_bytes on `device` (64-byte aligned on the CPU, 256 on the GPU). */
int nn_arena_init(nn_arena *a, nn_device device, size_t size_bytes, cmds_error *err);
void nn_arena_free(nn_arena *a);
/* Bump allocation, 256-byte aligned; NULL with *err set when the arena is full (the
 * message says how much was asked for and how much is left). */
void *nn_arena_alloc(nn_arena *a, size_t bytes, cmds_error *err);
static inline size_t nn_arena_mark(const nn_arena *a) { return a->used_bytes; }
static inline void nn_arena_rewind(nn_arena *a, size_t mark) { a->used_bytes = mark; }
static inline void nn_arena_reset(nn_arena *a) { a->used_bytes = 0; }

/* --- tensors --- */
int64_t nn_tensor_numel(const nn_tensor *t);
size_t nn_tensor_bytes(const nn_tensor *t);
/* A view over existing memory. dims < 0 end the shape: nn_tensor_view(p, NN_F32, NN_CPU, 2, 3, -1, -1). */
nn_tensor nn_tensor_view(void *data, nn_dtype dtype, nn_device device, int64_t d0, int64_t d1,
                         int64_t d2, int64_t d3);
/* A tensor of the given shape carved from the arena (dtype, device of the arena). */
int nn_tensor_alloc(nn_tensor *t, nn_arena *a, nn_dtype dtype, int ndim, const int64_t *shape,
                    cmds_error *err);
/* Copies between tensors of equal dtype and element count, any devices (blocking). */
int nn_tensor_copy(nn_tensor *dst, const nn_tensor *src, cmds_error *err);
/* "(2, 3, 4)" into buf. */
const char *nn_tensor_shape_str(const nn_tensor *t, char *buf, size_t n);

/* Checks dtype F32, device and exact shape; the message names the op and the argument. */
int nn_tensor_expect(const nn_tensor *t, const char *op, const char *arg, nn_device device,
                     int ndim, const int64_t *shape, cmds_error *err);

/* --- half-precision storage (round to nearest even) --- */
uint16_t nn_f32_to_f16(float f);
float nn_f16_to_f32(uint16_t h);
uint16_t nn_f32_to_bf16(float f);
float nn_bf16_to_f32(uint16_t h);
/* n little-endian F16 or BF16 values (src_dtype) to fp32, in bulk (weight loading). */
void nn_half_to_f32_n(float *dst, const void *src, int64_t n, nn_dtype src_dtype);

/* --- context --- */
/* For NN_CUDA: selects nothing (the caller did cudaSetDevice), creates the cuBLAS handle
 * on `stream` (NULL: the default stream) and sets the math mode from allow_tf32. */
int nn_ctx_init(nn_ctx *ctx, nn_device device, nn_arena *scratch, void *stream, int allow_tf32,
                cmds_error *err);
void nn_ctx_free(nn_ctx *ctx);
/* Waits for the context's stream (no-op on the CPU); reports an asynchronous CUDA error. */
int nn_ctx_sync(nn_ctx *ctx, cmds_error *err);

#endif
