/* bench_maps_write: a synthetic category for the metrics benchmark: N images of S x S
 * with smooth random anomaly maps, blob-shaped defects on 60% of the images (scores
 * raised inside them), written as a maps file (schemas/maps_v1.md, no compression).
 *   bench_maps_write OUT.h5 N S */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cmds_mpi.h"
#include "h5io.h"
#include "rng.h"

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  if (argc != 4) {
    fprintf(stderr, "usage: %s OUT.h5 N S\n", argv[0]);
    return cmds_mpi_finalize(&mpi, 2);
  }
  int n = atoi(argv[2]), s = atoi(argv[3]);
  cmds_error err;
  cmds_h5file f;
  int rc = cmds_h5_create(&f, argv[1], MPI_COMM_SELF, &err);
  hsize_t d3[3] = {(hsize_t)n, (hsize_t)s, (hsize_t)s}, d1[1] = {(hsize_t)n};
  hid_t ds = rc ? -1 : cmds_h5_create_rows(f.id, "scores", H5T_NATIVE_FLOAT, 3, d3, -1, &err);
  hid_t dm = rc ? -1 : cmds_h5_create_rows(f.id, "masks", H5T_NATIVE_UINT8, 3, d3, -1, &err);
  hid_t dl = rc ? -1 : cmds_h5_create_rows(f.id, "labels", H5T_NATIVE_UINT8, 1, d1, -1, &err);
  if (rc || ds < 0 || dm < 0 || dl < 0) {
    fprintf(stderr, "%s: %s\n", argv[1], err.msg);
    return cmds_mpi_finalize(&mpi, 3);
  }
  cmds_h5_write_schema(f.id, "cmds.maps", 1);
  float *sc = malloc((size_t)s * s * sizeof *sc);
  uint8_t *m = malloc((size_t)s * s), *lab = malloc((size_t)n);
  cmds_rng rng;
  cmds_rng_seed(&rng, 2024 ^ cmds_hash_str("bench_maps"));
  for (int i = 0; i < n && !rc; i++) {
    lab[i] = cmds_rng_uniform(&rng) < 0.6;
    double fx = 2 + 6 * cmds_rng_uniform(&rng), fy = 2 + 6 * cmds_rng_uniform(&rng);
    for (int y = 0; y < s; y++)
      for (int x = 0; x < s; x++) {
        m[y * s + x] = 0;
        sc[y * s + x] = (float)(0.3 + 0.1 * sin(fx * x / s) * cos(fy * y / s) + 0.05 * cmds_rng_normal(&rng));
      }
    int blobs = lab[i] ? 1 + (int)cmds_rng_below(&rng, 4) : 0;
    for (int b = 0; b < blobs; b++) {
      int cy = (int)cmds_rng_below(&rng, (uint64_t)s), cx = (int)cmds_rng_below(&rng, (uint64_t)s);
      int r = 5 + (int)cmds_rng_below(&rng, (uint64_t)(s / 16 + 1));
      for (int y = cy - r; y <= cy + r; y++)
        for (int x = cx - r; x <= cx + r; x++)
          if (y >= 0 && y < s && x >= 0 && x < s && (y - cy) * (y - cy) + (x - cx) * (x - cx) <= r * r) {
            m[y * s + x] = 1;
            sc[y * s + x] += 0.15f;
          }
    }
    rc = cmds_h5_write_rows(ds, H5T_NATIVE_FLOAT, i, 1, sc, &err);
    if (!rc) rc = cmds_h5_write_rows(dm, H5T_NATIVE_UINT8, i, 1, m, &err);
  }
  if (!rc) rc = cmds_h5_write_rows(dl, H5T_NATIVE_UINT8, 0, n, lab, &err);
  H5Dclose(ds);
  H5Dclose(dm);
  H5Dclose(dl);
  if (!rc) rc = cmds_h5_commit(&f, &err);
  if (rc) fprintf(stderr, "%s: %s\n", argv[1], err.msg);
  free(sc);
  free(m);
  free(lab);
  return cmds_mpi_finalize(&mpi, rc);
}
