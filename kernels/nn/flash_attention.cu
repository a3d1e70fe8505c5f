// flash_attention.cu: multi-head attention on bf16 q, k, v with tensor cores (our own
// flash-attention-2 style kernel; entry point in vit_bf16.h).
//
// Grid (ceil(N / 64), B * H); block 4 warps; each warp owns 16 query rows of the block's 64.
// The block stages its Q tile and then K/V tiles of 64 keys in shared memory with cp.async,
// two K/V stages deep so the next tile loads while this one is used. Per tile a warp computes
// S = Q K^T (16 x 64) with mma.sync m16n8k16 (bf16 in, f32 accumulate; Q fragments stay in
// registers), updates the running row max m and sum l in f32 (log2 domain, the 1/sqrt(D)
// scale folded into exp2), rescales its output accumulator, and adds P V with P converted to
// bf16 straight from the S accumulators (the C layout of two n8 tiles is the A layout of one
// k16 step). S never leaves registers; O is divided by l once at the end.
// Head dims: multiples of 16 up to 128 (k16 steps; D / 8 even for the paired ldmatrix). Shared
// rows are padded by 16 bytes (D + 8 elements, an odd number of 16-byte units for every such D),
// so the eight 16-byte row segments an ldmatrix phase reads fall in distinct banks.
// Keys past N (last tile) are zero-filled and masked to -inf; query rows past N compute on
// zeros and are not written.
#include <cuda_bf16.h>
#include <string.h>

#include "vit_bf16.h"

#define FA_BQ 64
#define FA_BK 64
#define FA_THREADS 128

#ifdef CMDS_CUDA_EMU
// The CUDA emulation (tests/cuda_emu) runs these sm_80 instructions itself, with the PTX
// semantics: warp-collective ldmatrix and mma in the ISA's fragment layouts, cp.async landing at
// its thread's wait.
__device__ static inline void cp_async16(void *dst, const void *src, bool valid) { cmds_emu::cp_async16(dst, src, valid); }
__device__ static inline void cp_async_commit() { cmds_emu::cp_async_commit(); }
template <int n>
__device__ static inline void cp_async_wait() {
  cmds_emu::cp_async_wait(n);
}
__device__ static inline void ldsm_x4(uint32_t (&r)[4], const void *p) { cmds_emu::ldmatrix_x4(r, p, false); }
__device__ static inline void ldsm_x4_trans(uint32_t (&r)[4], const void *p) { cmds_emu::ldmatrix_x4(r, p, true); }
__device__ static inline void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  cmds_emu::mma_m16n8k16_bf16(d, a, b0, b1);
}
#else
__device__ static inline uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

// 16 bytes global -> shared, asynchronously; valid = 0 writes zeros (src-size 0).
__device__ static inline void cp_async16(void *dst, const void *src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ static inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int n>
__device__ static inline void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(n));
}

__device__ static inline void ldsm_x4(uint32_t (&r)[4], const void *p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ static inline void ldsm_x4_trans(uint32_t (&r)[4], const void *p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// d += a (16x16, row) * b (16x8, col), bf16 operands, f32 accumulators.
__device__ static inline void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif

__device__ static inline uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);  // lo in the low half: the lower column
  uint32_t r;
  memcpy(&r, &h, sizeof r);  // not a pointer cast: strict aliasing (nvcc makes it a register move)
  return r;
}

// rows x D tile starting at row r0 of a (N, ld) matrix into shared (rows, D + 8); rows past N zero.
template <int D, int ROWS>
__device__ static inline void load_tile(__nv_bfloat16 *dst, const __nv_bfloat16 *src, int64_t ld, int r0, int N) {
  constexpr int CH = D / 8;
  for (int c = threadIdx.x; c < ROWS * CH; c += FA_THREADS) {
    int r = c / CH, col = (c % CH) * 8;
    bool ok = r0 + r < N;
    cp_async16(dst + r * (D + 8) + col, ok ? src + (int64_t)(r0 + r) * ld + col : src, ok);
  }
}

template <int D>
__global__ static void __launch_bounds__(FA_THREADS, D <= 64 ? 4 : 2)
flash_attention_bf16(__nv_bfloat16 *o, const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                     int N, int H, int64_t ld_q, int64_t ld_k, int64_t ld_v, int64_t ld_o, float scale_log2) {
  constexpr int LD = D + 8, KS = D / 16, DT = D / 8, NT = FA_BK / 8;
  extern __shared__ __align__(16) unsigned char fa_smem[];
  __nv_bfloat16 *sq = reinterpret_cast<__nv_bfloat16 *>(fa_smem);  // (BQ, LD)
  __nv_bfloat16 *sk = sq + FA_BQ * LD;                               // 2 x (BK, LD)
  __nv_bfloat16 *sv = sk + 2 * FA_BK * LD;                           // 2 x (BK, LD)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t b = blockIdx.y / H, h = blockIdx.y % H;
  const int q0 = blockIdx.x * FA_BQ;
  const __nv_bfloat16 *qb = q + b * N * ld_q + h * D, *kb = k + b * N * ld_k + h * D,
                      *vb = v + b * N * ld_v + h * D;
  const int ntiles = (N + FA_BK - 1) / FA_BK;

  load_tile<D, FA_BQ>(sq, qb, ld_q, q0, N);
  load_tile<D, FA_BK>(sk, kb, ld_k, 0, N);
  load_tile<D, FA_BK>(sv, vb, ld_v, 0, N);
  cp_async_commit();

  float acc[DT][4];
#pragma unroll
  for (int d = 0; d < DT; d++) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.0f;
  float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};
  uint32_t qf[KS][4];

  for (int j = 0; j < ntiles; j++) {
    const int st = j & 1;
    if (j + 1 < ntiles) {
      load_tile<D, FA_BK>(sk + (st ^ 1) * FA_BK * LD, kb, ld_k, (j + 1) * FA_BK, N);
      load_tile<D, FA_BK>(sv + (st ^ 1) * FA_BK * LD, vb, ld_v, (j + 1) * FA_BK, N);
      cp_async_commit();
      cp_async_wait<1>();  // everything up to tile j has landed
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int ks = 0; ks < KS; ks++) ldsm_x4(qf[ks], sq + (warp * 16 + lane % 16) * LD + ks * 16 + (lane / 16) * 8);
    }
    const __nv_bfloat16 *skt = sk + st * FA_BK * LD, *svt = sv + st * FA_BK * LD;

    // S (16 x BK) = Q K^T; an x4 ldmatrix brings the B fragments of two n8 tiles.
    float s[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int n = 0; n < NT; n += 2) {
#pragma unroll
      for (int ks = 0; ks < KS; ks++) {
        uint32_t bf[4];
        ldsm_x4(bf, skt + ((n + lane / 16) * 8 + lane % 8) * LD + ks * 16 + ((lane / 8) % 2) * 8);
        mma_bf16(s[n], qf[ks], bf[0], bf[1]);
        mma_bf16(s[n + 1], qf[ks], bf[2], bf[3]);
      }
    }
    if ((j + 1) * FA_BK > N) {  // keys past N
#pragma unroll
      for (int n = 0; n < NT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++)
          if (j * FA_BK + n * 8 + 2 * t + (e & 1) >= N) s[n][e] = -INFINITY;
    }
    // Online softmax: this thread holds rows g (e = 0, 1) and g + 8 (e = 2, 3); a row is spread
    // over the 4 threads of a quad.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < NT; n++) {
      mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]));
    }
    float corr[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      float mnew = fmaxf(mrow[r], mx[r] * scale_log2);  // every tile has a valid key: finite
      corr[r] = exp2f(mrow[r] - mnew);                   // first tile: exp2(-inf) = 0
      mrow[r] = mnew;
      lrow[r] *= corr[r];
    }
#pragma unroll
    for (int d = 0; d < DT; d++) {
      acc[d][0] *= corr[0];
      acc[d][1] *= corr[0];
      acc[d][2] *= corr[1];
      acc[d][3] *= corr[1];
    }
#pragma unroll
    for (int n = 0; n < NT; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        s[n][e] = exp2f(fmaf(s[n][e], scale_log2, -mrow[e / 2]));
        lrow[e / 2] += s[n][e];
      }
    }
    // O += P V, P (16 x BK) in bf16 from the accumulators; V B-fragments by transposed ldmatrix.
#pragma unroll
    for (int kk = 0; kk < FA_BK / 16; kk++) {
      uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                        pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int d = 0; d < DT; d += 2) {
        uint32_t bf[4];
        ldsm_x4_trans(bf, svt + (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * LD + (d + lane / 16) * 8);
        mma_bf16(acc[d], pa, bf[0], bf[1]);
        mma_bf16(acc[d + 1], pa, bf[2], bf[3]);
      }
    }
    __syncthreads();  // the next iteration's loads overwrite this stage
  }

#pragma unroll
  for (int r = 0; r < 2; r++) {
    lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 1);
    lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 2);
    lrow[r] = 1.0f / lrow[r];
  }
  const int r0 = q0 + warp * 16 + g;
  __nv_bfloat16 *ob = o + b * N * ld_o + h * D;
#pragma unroll
  for (int d = 0; d < DT; d++) {
    int col = d * 8 + 2 * t;
    if (r0 < N)
      *reinterpret_cast<__nv_bfloat162 *>(ob + (int64_t)r0 * ld_o + col) =
          __floats2bfloat162_rn(acc[d][0] * lrow[0], acc[d][1] * lrow[0]);
    if (r0 + 8 < N)
      *reinterpret_cast<__nv_bfloat162 *>(ob + (int64_t)(r0 + 8) * ld_o + col) =
          __floats2bfloat162_rn(acc[d][2] * lrow[1], acc[d][3] * lrow[1]);
  }
}

template <int D>
static int launch(nn_ctx *c, __nv_bfloat16 *o, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                  const __nv_bfloat16 *v, int64_t B, int64_t N, int64_t H, int64_t ld_q, int64_t ld_k, int64_t ld_v,
                  int64_t ld_o, cmds_error *err) {
  size_t smem = (size_t)(FA_BQ + 4 * FA_BK) * (D + 8) * sizeof(__nv_bfloat16);
  CUDA_CHECK(cudaFuncSetAttribute(flash_attention_bf16<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  dim3 grid(nn_grid(N, FA_BQ), (unsigned)(B * H));
  float scale_log2 = 1.4426950408889634f / sqrtf((float)D);
  flash_attention_bf16<D><<<grid, FA_THREADS, smem, nn_stream(c)>>>(o, q, k, v, (int)N, (int)H, ld_q, ld_k, ld_v,
                                                                     ld_o, scale_log2);
  CUDA_CHECK_LAUNCH();
  return CMDS_OK;
}

extern "C" int nn_flash_attention_bf16_cuda(nn_ctx *c, uint16_t *o, const uint16_t *q, const uint16_t *k,
                                            const uint16_t *v, int64_t B, int64_t N, int64_t H, int64_t D,
                                            int64_t ld_q, int64_t ld_k, int64_t ld_v, int64_t ld_o,
                                            cmds_error *err) {
  if (D < 16 || D > 128 || D % 16)
    return CMDS_FAIL(err, CMDS_EINPUT,
                     "flash attention (bf16, cuda): head dim %lld, supported multiples of 16 up to 128", (long long)D);
  if ((ld_q | ld_k | ld_v | ld_o) % 8 || ((uintptr_t)q | (uintptr_t)k | (uintptr_t)v | (uintptr_t)o) % 16)
    return CMDS_FAIL(err, CMDS_EINPUT,
                     "flash attention (bf16, cuda): row strides must be multiples of 8 and rows 16-byte aligned");
  if (B * H > 65535 || N > (int64_t)1 << 30)
    return CMDS_FAIL(err, CMDS_EINPUT, "flash attention (bf16, cuda): batch x heads %lld (max 65535), N %lld",
                     (long long)(B * H), (long long)N);
  if (B == 0 || N == 0) return CMDS_OK;
  typedef __nv_bfloat16 bf;
  bf *O = (bf *)o;
  const bf *Q = (const bf *)q, *K = (const bf *)k, *V = (const bf *)v;
  switch (D) {
    case 16: return launch<16>(c, O, Q, K, V, B, N, H, ld_q, ld_k, ld_v, ld_o, err);
    case 32: return launch<32>(c, O, Q, K, V, B, N, H, ld_q, ld_k, ld_v, ld_o, err);
    case 48: return launch<48>(c, O, Q, K, V, B, N, H, ld_q, ld_k, ld_v, ld_o, err);
    case 64: return launch<64>(c, O, Q, K, V, B, N, H, ld_q, ld_k, ld_v, ld_o, err);
    case 80: return launch<80>(c, O, Q, K, V, B, N, H, ld_q, ld_k, ld_v, ld_o, err);
    case 96: return launch<96>(c, O, Q, K, V, B, N, H, ld_q, ld_k, ld_v, ld_o, err);
    case 112: return launch<112>(c, O, Q, K, V, B, N, H, ld_q, ld_k, ld_v, ld_o, err);
    default: return launch<128>(c, O, Q, K, V, B, N, H, ld_q, ld_k, ld_v, ld_o, err);
  }
}
