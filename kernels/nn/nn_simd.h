/* nn_simd: NN_SIMD_CLONES, for the CPU ops' hot elementwise loops (internal to kernels/nn). The
 * build targets baseline x86-64 (SSE2), so that one binary runs on every node of a cluster;
 * a function marked NN_SIMD_CLONES is compiled twice, for AVX2 and for the baseline, and the
 * loader picks the AVX2 one where the CPU has it (GCC/Clang target_clones, an ifunc). The two
 * compute the same operations in the same order (no FMA: AVX2 alone does not enable it, and
 * reductions keep their explicit lanes), so the results are the same bits on either. Measured on
 * the ViT-B/8 forward (2 cores, perf samples): the attention's softmax 5.4 % -> 3.0 %, GELU
 * 3.6 % -> 1.6 %. */
#ifndef CMDS_NN_SIMD_H
#define CMDS_NN_SIMD_H

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && defined(__ELF__) && \
    !defined(__AVX2__) && !defined(CMDS_NO_SIMD_CLONES)
#define NN_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define NN_SIMD_CLONES
#endif

#endif
