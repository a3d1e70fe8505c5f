/* comm/collective: the all-reduce sums over a group (exactly, for values whose sums are
 * exact in float), leaves a 1-rank group's buffer untouched, works on sub-communicators
 * (groups of 2 from MPI_Comm_split, as cmds-train makes them), and, when a GPU is visible in
 * a CUDA build, sums device buffers (NCCL when built with it, host staging otherwise). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collective.h"
#include "nn/tensor.h"

static int fails = 0, passes = 0;
#define CHECK(c, ...)                                  \
  do {                                                 \
    if (c) passes++;                                   \
    else {                                             \
      fails++;                                         \
      printf("FAIL line %d: ", __LINE__);              \
      printf(__VA_ARGS__);                             \
      printf("\n");                                    \
    }                                                  \
  } while (0)

static void check_sum(MPI_Comm comm, int gpu, const char *what) {
  int rank, size;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  cmds_collective c;
  cmds_error err = {0};
  int rc = cmds_collective_init(&c, comm, gpu, &err);
  CHECK(!rc, "%s: init: %s", what, err.msg);
  if (rc) return;
  size_t n = 100003; /* not a multiple of anything */
  float *h = malloc(sizeof(float) * n);
  for (size_t i = 0; i < n; i++) h[i] = (float)((i % 97) * (rank + 1)) * 0.25f;
  float *buf = h;
  nn_tensor dev = {0};
  nn_arena arena = {0};
  if (gpu) {
    int64_t shape[1] = {(int64_t)n};
    rc = nn_arena_init(&arena, NN_CUDA, sizeof(float) * n + 4096, &err);
    if (!rc) rc = nn_tensor_alloc(&dev, &arena, NN_F32, 1, shape, &err);
    nn_tensor hv = nn_tensor_view(h, NN_F32, NN_CPU, (int64_t)n, -1, -1, -1);
    if (!rc) rc = nn_tensor_copy(&dev, &hv, &err);
    buf = dev.data;
  }
  if (!rc) rc = cmds_allreduce_sum_f32(&c, buf, n, &err);
  CHECK(!rc, "%s: allreduce: %s", what, err.msg);
  if (gpu && !rc) {
    nn_tensor hv = nn_tensor_view(h, NN_F32, NN_CPU, (int64_t)n, -1, -1, -1);
    rc = nn_tensor_copy(&hv, &dev, &err);
  }
  double tri = size * (size + 1) / 2.0;
  size_t bad = 0;
  for (size_t i = 0; i < n; i++)
    if (h[i] != (float)((double)(i % 97) * tri * 0.25)) bad++;
  CHECK(!rc && !bad, "%s (%d ranks, %s): %zu wrong sums", what, size, cmds_collective_backend(&c), bad);
  CHECK(!strcmp(cmds_collective_backend(&c), size == 1 ? "none" : gpu ? cmds_collective_backend(&c) : "mpi"), "%s: backend %s",
        what, cmds_collective_backend(&c));
  if (gpu) nn_arena_free(&arena);
  free(h);
  cmds_collective_free(&c);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  check_sum(MPI_COMM_WORLD, 0, "world");
  MPI_Comm pair, self;
  MPI_Comm_split(MPI_COMM_WORLD, rank / 2, rank, &pair);
  check_sum(pair, 0, "groups of 2");
  MPI_Comm_split(MPI_COMM_WORLD, rank, 0, &self);
  check_sum(self, 0, "groups of 1");
  int gpu = nn_cuda_select(rank) >= 0;
  if (gpu) {
    check_sum(MPI_COMM_WORLD, 1, "world, GPU buffers");
    check_sum(pair, 1, "groups of 2, GPU buffers");
  } else if (rank == 0) {
    printf("no GPU visible: the GPU-buffer part is not run here\n");
  }
  MPI_Comm_free(&pair);
  MPI_Comm_free(&self);
  int all = 0;
  MPI_Allreduce(&fails, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) printf("%d passed, %d failed (rank 0; %d failures over all ranks)\n", passes, fails, all);
  MPI_Finalize();
  return all ? 1 : 0;
}
