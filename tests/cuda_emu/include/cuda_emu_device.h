/* cuda_emu_device.h: the device side of the CUDA emulation (tests/cuda_emu), C++ only.
 *
 * A kernel launch runs every block in turn; each CUDA thread of a block is a fiber (its own
 * stack) that runs until it returns or reaches __syncthreads or a warp shuffle, where it yields
 * to the block's scheduler (emu.cpp). Threads run in a random order (seeded) between barriers,
 * so a missing __syncthreads shows up as a result that changes with CMDS_CUDA_EMU_SEED. A
 * barrier not every live thread reaches, a full-mask shuffle with a lane that has exited or
 * does not exist, a launch configuration CUDA would refuse and a pointer argument outside the
 * device allocations are reported on stderr with the kernel's name and launch site, and turn
 * into the error CUDA would give (sticky cudaErrorLaunchFailure for failures inside a kernel).
 *
 * __shared__ variables are thread_local statics: one copy per OS thread, which runs one block
 * at a time. The dynamic shared memory of a launch (extern __shared__, which cu2cpp rewrites into
 * a pointer from cmds_emu::dynamic_smem) is one buffer per OS thread, filled with 0xff bytes (NaN
 * as floats and bf16) at the start of every block, as uninitialised shared memory would read.
 *
 * The sm_80 instructions that .cu files reach through inline PTX have emulated forms here, which
 * such a file calls under CMDS_CUDA_EMU in place of its asm: ldmatrix (.x4, .trans), mma.sync
 * m16n8k16 bf16 -> f32 and cp.async (16 bytes, commit and wait groups). ldmatrix and mma are
 * warp collectives: all 32 lanes must reach the same one; the last to arrive computes every
 * lane's result from the lanes' fragments in the PTX ISA layouts, so a wrong fragment layout
 * gives wrong numbers, as on a GPU. A cp.async copy lands when issued or only at its thread's
 * cp_async_wait(n) for its group, drawn per copy: a read of the tile before the wait sees old
 * bytes, and a refill while other warps still read the buffer clobbers what they read. */
#ifndef CMDS_CUDA_EMU_DEVICE_H
#define CMDS_CUDA_EMU_DEVICE_H

#include <math.h>
#include <stdint.h>
#include <string.h>


#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static thread_local
#ifndef __CUDACC__
#define __CUDACC__ 1
#endif

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct float2 {
  float x, y;
};
struct __attribute__((aligned(16))) float4 {
  float x, y, z, w;
};
struct __attribute__((aligned(16))) uint4 {
  unsigned x, y, z, w;
};
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

extern thread_local uint3 threadIdx, blockIdx;
extern thread_local dim3 blockDim, gridDim;

static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
#define __expf(x) expf(x)  /* glibc declares its own __expf */

extern "C" void __syncthreads(void);

namespace cmds_emu {
enum shfl_kind { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_XOR };
uint64_t shfl(unsigned mask, uint64_t v, shfl_kind kind, int arg, int width);

struct launch_cfg {
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
};
int launch_begin(const char *name, const char *file, int line, const launch_cfg &cfg);
void launch_run(void (*body)(void *), void *ctx);
void check_pointer_arg(int i, const void *p);

// The launch's dynamic shared memory (extern __shared__), 128-byte aligned.
void *dynamic_smem();
// sm_80 instructions (inline PTX on a GPU): see the top of this file.
void cp_async16(void *dst_shared, const void *src_global, bool valid);  // valid = 0: 16 zero bytes
void cp_async_commit();
void cp_async_wait(int n);  // all but the n most recent committed groups have landed
void ldmatrix_x4(uint32_t (&r)[4], const void *row, bool trans);
void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);

template <class T>
inline void check_arg(int i, T *p) {
  check_pointer_arg(i, (const void *)p);
}
template <class T>
inline void check_arg(int, const T &) {}
}  // namespace cmds_emu

template <class T>
static inline T cmds_emu_shfl_t(unsigned mask, T v, cmds_emu::shfl_kind k, int arg, int width) {
  static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
  uint64_t b = 0;
  memcpy(&b, &v, sizeof(T));
  b = cmds_emu::shfl(mask, b, k, arg, width);
  memcpy(&v, &b, sizeof(T));
  return v;
}
template <class T>
static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return cmds_emu_shfl_t(mask, v, cmds_emu::SHFL_IDX, src, width);
}
template <class T>
static inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
  return cmds_emu_shfl_t(mask, v, cmds_emu::SHFL_UP, (int)d, width);
}
template <class T>
static inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
  return cmds_emu_shfl_t(mask, v, cmds_emu::SHFL_DOWN, (int)d, width);
}
template <class T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lm, int width = 32) {
  return cmds_emu_shfl_t(mask, v, cmds_emu::SHFL_XOR, lm, width);
}

static inline cmds_emu::launch_cfg cmds_emu_cfg(dim3 g, dim3 b, size_t smem = 0, cudaStream_t s = 0) {
  return cmds_emu::launch_cfg{g, b, smem, s};
}

/* kernel<<<cfg>>>(args) is rewritten by cu2cpp into
 *   cmds_emu_launch("kernel", file, line, cmds_emu_cfg(cfg), [=] { kernel(args); }, args)
 * The lambda calls the kernel as CUDA would (template arguments deduced, arguments converted to
 * the parameters, a copy per thread); the trailing args are only looked at: pointers must be
 * device memory. */
template <class F, class... A>
static void cmds_emu_launch(const char *name, const char *file, int line, cmds_emu::launch_cfg cfg, F body,
                            const A &...a) {
  if (cmds_emu::launch_begin(name, file, line, cfg)) return;
  int i = 0;
  (cmds_emu::check_arg(i++, a), ...);
  (void)i;
  cmds_emu::launch_run([](void *p) { (*(F *)p)(); }, &body);
}

#endif
