// nn_cuda_reduce: block-wide sums for the backward kernels (warp shuffles, then one value per
// warp through shared memory). Every thread of the block must call it; all get the sum.
#ifndef CMDS_NN_CUDA_REDUCE_CUH
#define CMDS_NN_CUDA_REDUCE_CUH

template <typename T>
__device__ inline T nn_block_sum(T v) {
  __shared__ T part[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  __syncthreads();  // part[] may still be read by a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  T s = 0;
  for (int i = 0; i < nw; i++) s += part[i];
  return s;
}

#endif
