/* fc_variant: writes a copy of a feature cache with one modality dropped or with an
 * estimated-normals modality added (a copy of the real normals' features), so the train
 * tests can exercise the E stream and the "feature cache without a modality" error without
 * running the estimate stage.
 *   fc_variant IN OUT --drop rgb|normals|normals_est
 *   fc_variant IN OUT --add-est
 *   fc_variant IN OUT --old          the same file as written before the sample_cache_id
 *                                    attribute existed (features must compute it again) */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feature_cache.h"
#include "h5io.h"

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  cmds_h5_quiet();
  int add_est = argc == 4 && !strcmp(argv[3], "--add-est"), old = argc == 4 && !strcmp(argv[3], "--old"), drop = -1;
  if (argc == 5 && !strcmp(argv[3], "--drop"))
    for (int m = 0; m < CMDS_FC_NMOD; m++)
      if (!strcmp(argv[4], cmds_fc_modality_name((cmds_fc_modality)m))) drop = m;
  if (!add_est && !old && drop < 0) {
    fprintf(stderr, "usage: fc_variant IN OUT (--drop MODALITY | --add-est | --old)\n");
    MPI_Finalize();
    return 2;
  }
  cmds_error err = {0};
  hid_t in;
  cmds_fc_info info;
  int rc = cmds_h5_open_read(&in, argv[1], MPI_COMM_SELF, CMDS_FEATURE_CACHE_SCHEMA, CMDS_FEATURE_CACHE_VERSION, &err);
  if (!rc) rc = cmds_fc_read_info(in, argv[1], &info, &err);
  cmds_fc_info out_info = info;
  if (add_est) out_info.modalities |= 1 << CMDS_FC_NORMALS_EST;
  else if (old) out_info.sample_cache_id[0] = 0;
  else out_info.modalities &= ~(1 << drop);
  cmds_h5file f;
  if (!rc) rc = cmds_fc_create(&f, argv[2], MPI_COMM_WORLD, &out_info, 1, &err);
  size_t row = (size_t)(info.nblocks * info.grid * info.grid * info.width);
  for (int g = 0; g < 2 && !rc; g++)
    for (int m = 0; m < CMDS_FC_NMOD && !rc; m++) {
      if (!(out_info.modalities & (1 << m)) || !info.n[g]) continue;
      int src = m == CMDS_FC_NORMALS_EST && add_est ? CMDS_FC_NORMALS : m;
      uint16_t *buf = malloc(sizeof(uint16_t) * row * (size_t)info.n[g]);
      rc = cmds_fc_read_rows(in, g, (cmds_fc_modality)src, 0, info.n[g], buf, &err);
      if (!rc) rc = cmds_fc_write_rows(f.id, g, (cmds_fc_modality)m, 0, info.n[g], buf, &err);
      free(buf);
    }
  if (!rc) rc = cmds_h5_commit(&f, &err);
  if (rc) fprintf(stderr, "fc_variant: %s\n", err.msg);
  MPI_Finalize();
  return rc ? 1 : 0;
}
