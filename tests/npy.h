/* npy: reads NumPy .npy files (format 1.0/2.0/3.0, little-endian, C order) so tests
 * compare with fixtures written by the committed generator scripts in
 * tests/fixtures/gen_*.py without needing Python at test time. */
#ifndef CMDS_TESTS_NPY_H
#define CMDS_TESTS_NPY_H

#include <stddef.h>
#include <stdint.h>

typedef struct npy_array {
  char dtype[8];  /* "f4", "f8", "u1", "u2", "i4", "i8", "b1" */
  int ndim;
  int64_t shape[8];
  int64_t count;  /* number of elements */
  size_t itemsize;
  void *data;
} npy_array;

/* Returns 0 on success; on failure prints why to stderr and returns -1. */
int npy_load(const char *path, npy_array *a);
void npy_free(npy_array *a);
/* Element i as double, whatever the dtype. */
double npy_get(const npy_array *a, int64_t i);

#endif
