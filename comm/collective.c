/* collective: see collective.h. */
#include "collective.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cmds_mpi.h"

#ifdef CMDS_CUDA
#include <cuda_runtime.h>
#endif
#ifdef CMDS_NCCL
#include <nccl.h>
#endif

int cmds_collective_init(cmds_collective *c, MPI_Comm comm, int gpu, cmds_error *err) {
  memset(c, 0, sizeof *c);
  c->comm = comm;
  c->gpu = gpu;
  MPI_CHECK(MPI_Comm_rank(comm, &c->rank));
  MPI_CHECK(MPI_Comm_size(comm, &c->size));
#ifndef CMDS_CUDA
  if (gpu) return CMDS_FAIL(err, CMDS_EINTERNAL, "collective: GPU buffers in a build without CUDA");
#endif
#ifdef CMDS_NCCL
  if (gpu && c->size > 1) {
    ncclUniqueId id;
    int rc = 0;
    if (c->rank == 0 && ncclGetUniqueId(&id) != ncclSuccess) rc = 1;
    MPI_CHECK(MPI_Bcast(&rc, 1, MPI_INT, 0, comm));
    if (rc) return CMDS_FAIL(err, CMDS_EINTERNAL, "collective: ncclGetUniqueId failed on the group's rank 0");
    MPI_CHECK(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, comm));
    ncclComm_t nc;
    ncclResult_t r = ncclCommInitRank(&nc, c->size, id, c->rank);
    int bad = r != ncclSuccess, any = 0;
    MPI_CHECK(MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, comm));
    if (any) {
      if (!bad) ncclCommDestroy(nc);
      return CMDS_FAIL(err, CMDS_EINTERNAL, "collective: ncclCommInitRank failed (rank %d of %d: %s)", c->rank, c->size,
                       bad ? ncclGetErrorString(r) : "on another rank");
    }
    c->nccl = nc;
  }
#endif
  return CMDS_OK;
}

void cmds_collective_free(cmds_collective *c) {
#ifdef CMDS_NCCL
  if (c->nccl) ncclCommDestroy((ncclComm_t)c->nccl);
#endif
  free(c->host);
  memset(c, 0, sizeof *c);
}

const char *cmds_collective_backend(const cmds_collective *c) {
  if (c->size <= 1) return "none";
  if (c->nccl) return "nccl";
  return c->gpu ? "mpi-host-staged" : "mpi";
}

/* MPI counts are int: reduce in pieces below INT_MAX elements. */
static void mpi_sum(MPI_Comm comm, float *buf, size_t n) {
  const size_t piece = (size_t)1 << 30;
  for (size_t off = 0; off < n; off += piece) {
    size_t cnt = n - off < piece ? n - off : piece;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)cnt, MPI_FLOAT, MPI_SUM, comm));
  }
}

int cmds_allreduce_sum_f32(cmds_collective *c, float *buf, size_t n, cmds_error *err) {
  if (c->size <= 1 || n == 0) return CMDS_OK;
  if (!c->gpu) {
    mpi_sum(c->comm, buf, n);
    return CMDS_OK;
  }
#ifdef CMDS_NCCL
  if (c->nccl) {
    cudaStream_t s = (cudaStream_t)c->stream;
    ncclResult_t r = ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, (ncclComm_t)c->nccl, s);
    if (r != ncclSuccess) return CMDS_FAIL(err, CMDS_EINTERNAL, "collective: ncclAllReduce of %zu floats: %s", n, ncclGetErrorString(r));
    cudaError_t e = cudaStreamSynchronize(s);
    if (e != cudaSuccess) return CMDS_FAIL(err, CMDS_EINTERNAL, "collective: after ncclAllReduce: %s", cudaGetErrorString(e));
    return CMDS_OK;
  }
#endif
#ifdef CMDS_CUDA
  if (c->host_cap < n) {
    free(c->host);
    c->host = cmds_xmalloc(sizeof(float) * n);
    c->host_cap = n;
  }
  cudaError_t e = cudaMemcpy(c->host, buf, sizeof(float) * n, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) return CMDS_FAIL(err, CMDS_EINTERNAL, "collective: copy to host: %s", cudaGetErrorString(e));
  mpi_sum(c->comm, c->host, n);
  e = cudaMemcpy(buf, c->host, sizeof(float) * n, cudaMemcpyHostToDevice);
  if (e != cudaSuccess) return CMDS_FAIL(err, CMDS_EINTERNAL, "collective: copy to the GPU: %s", cudaGetErrorString(e));
  return CMDS_OK;
#else
  return CMDS_FAIL(err, CMDS_EINTERNAL, "collective: GPU buffers in a build without CUDA");
#endif
}
