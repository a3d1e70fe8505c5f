/* collective: the all-reduce of data-parallel training: sums a float buffer over the ranks
 * of a communicator (a task's group of ranks in cmds-train).
 *
 * Buffers on the GPU go through NCCL when the build has it (CMDS_NCCL): the NCCL unique id
 * is made by the group's rank 0 and broadcast over MPI, and one NCCL communicator per group
 * is created once, at cmds_collective_init. Without NCCL a GPU buffer is copied to host
 * memory, reduced with MPI_Allreduce and copied back (CUDA-aware MPI is not assumed). Host
 * buffers always use MPI_Allreduce. On one rank the call returns at once and the buffer is
 * untouched (so a 1-rank group is bit-identical to no reduction at all).
 *
 * Determinism: MPI_Allreduce on the same communicator size with the same buffers gives the
 * same result run to run (Open MPI picks the algorithm from size and count); different
 * group sizes may round differently (summation order).
 *
 *   cmds_collective c;
 *   cmds_collective_init(&c, group_comm, on_gpu, &err);      // collective over group_comm
 *   cmds_allreduce_sum_f32(&c, grads, n, on_gpu, &err);      // collective
 *   cmds_collective_free(&c); */
#ifndef CMDS_COLLECTIVE_H
#define CMDS_COLLECTIVE_H

#include <mpi.h>
#include <stddef.h>

#include "cmds_error.h"

typedef struct cmds_collective {
  MPI_Comm comm;
  int rank, size;
  int gpu;      /* buffers live on the GPU */
  void *nccl;   /* ncclComm_t, when gpu and CMDS_NCCL */
  void *stream; /* cudaStream_t the NCCL calls run on (NULL: the default stream) */
  float *host;  /* staging buffer for GPU buffers without NCCL */
  size_t host_cap;
} cmds_collective;

/* Collective over comm. gpu: buffers passed later live on the current CUDA device. */
int cmds_collective_init(cmds_collective *c, MPI_Comm comm, int gpu, cmds_error *err);
void cmds_collective_free(cmds_collective *c);
/* In place: buf[i] = sum over ranks of buf[i], n floats (on the GPU when c->gpu). Returns
 * after the result is in buf (the stream is synchronised). */
int cmds_allreduce_sum_f32(cmds_collective *c, float *buf, size_t n, cmds_error *err);
/* "none" (one rank), "nccl", "mpi" or "mpi-host-staged". */
const char *cmds_collective_backend(const cmds_collective *c);

#endif
