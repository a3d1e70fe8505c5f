/* test_prep_truth: the sample cache written by cmds-prep from a cmds-synth dataset agrees
 * with the generator's ground truth:
 *   - foreground mask (RANSAC plane removal + padding + largest DBSCAN cluster for MVTec
 *     3D-AD; depth unprojection + the field's background removal for EyeCandies) matches the
 *     true object silhouette (IoU > 0.9 at the working resolution);
 *   - ground-truth defect masks lie on the object (but for sensor holes) and are non-empty exactly for anomalous
 *     samples; labels follow the defect folders (MVTec) / the masks (EyeCandies);
 *   - normals are unit length where the point is kept and face the camera.
 * Usage: test_prep_truth CACHE.h5 SYNTH_ROOT CATEGORY */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cmds_mpi.h"
#include "formats.h"
#include "h5io.h"
#include "resize.h"
#include "sample_cache.h"

/* The silhouette PNG of a sample, padded and resized like prep does for masks. */
static int truth_fg(const char *synth, const char *cat, const char *id, const int32_t *pad, int S,
                    uint8_t *out) {
  char split[64], folder[64], name[64], path[4096];
  if (sscanf(id, "%63[^/]/%63[^/]/%63s", split, folder, name) != 3) return -1;
  snprintf(path, sizeof path, "%s/.synth/%s/%s/%s/%s_fg.png", synth, cat, split, folder, name);
  cmds_image img;
  cmds_error e;
  if (cmds_png_read(path, &img, &e)) {
    fprintf(stderr, "%s\n", e.msg);
    return -1;
  }
  int side = pad[0], top = pad[1], left = pad[2];
  uint8_t *sq = calloc((size_t)side * (size_t)side, 1);
  for (int r = 0; r < img.height; r++)
    for (int c = 0; c < img.width; c++)
      sq[(size_t)(r + top) * (size_t)side + (size_t)(c + left)] =
          ((uint8_t *)img.data)[((size_t)r * (size_t)img.width + (size_t)c) * (size_t)img.channels];
  cmds_resize_nearest_torch(sq, side, side, 1, out, S, S);
  free(sq);
  cmds_image_free(&img);
  return 0;
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_h5_quiet();
  if (argc != 4) CMDS_PANIC("usage: test_prep_truth CACHE.h5 SYNTH_ROOT CATEGORY");
  const char *path = argv[1], *synth = argv[2], *cat = argv[3];
  cmds_error err = {0};
  hid_t f;
  CHECK(cmds_h5_open_read(&f, path, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA,
                          CMDS_SAMPLE_CACHE_VERSION, &err) == 0, "%s", err.msg);
  cmds_sc_info info;
  CHECK(cmds_sc_read_info(f, path, &info, &err) == 0, "%s", err.msg);
  int eyec = !strcmp(info.dataset, "eyecandies");
  for (int gi = 0; gi < 2; gi++) {
    cmds_sc_group g;
    CHECK(cmds_sc_group_open(f, gi ? "test" : "support", path, &g, &err) == 0, "%s", err.msg);
    int S = g.size;
    size_t spx = (size_t)S * (size_t)S;
    cmds_sample_batch b;
    cmds_sample_batch_alloc(&b, g.n, S);
    CHECK(cmds_sc_group_read(&g, 0, g.n, &b, &err) == 0, "%s", err.msg);
    uint8_t *truth = malloc(spx);
    int n_anom = 0;
    for (int64_t i = 0; i < g.n; i++) {
      const char *id = b.sample_id + i * CMDS_SC_ID_LEN;
      const char *dt = b.defect_type + i * CMDS_SC_DEFECT_LEN;
      const uint8_t *fg = b.fg_mask + (size_t)i * spx, *gt = b.gt_mask + (size_t)i * spx;
      const float *nrm = b.normals + (size_t)i * spx * 3, *xyz = b.xyz + (size_t)i * spx * 3;
      if (truth_fg(synth, cat, id, b.pad + i * 3, S, truth)) {
        CHECK(0, "no truth for %s", id);
        continue;
      }
      int64_t inter = 0, uni = 0, gt_n = 0, gt_in = 0, nrm_bad = 0, nrm_n = 0;
      for (size_t k = 0; k < spx; k++) {
        int t = truth[k] > 127;
        inter += t && fg[k];
        uni += t || fg[k];
        gt_n += gt[k];
        gt_in += gt[k] && t;
        double nx = nrm[3 * k], ny = nrm[3 * k + 1], nz = nrm[3 * k + 2];
        double len = sqrt(nx * nx + ny * ny + nz * nz);
        if (len > 0) {
          nrm_n++;
          /* unit, and facing the camera at the origin (MVTec: camera frame) */
          int facing = eyec || nx * xyz[3 * k] + ny * xyz[3 * k + 1] + nz * xyz[3 * k + 2] <= 0;
          nrm_bad += fabs(len - 1) > 1e-4 || !facing || !fg[k];
        }
      }
      double iou = uni ? (double)inter / (double)uni : 0;
      CHECK(iou > 0.9, "%s: foreground IoU with the true silhouette %.3f", id, iou);
      int label = b.label[i];
      n_anom += label;
      CHECK(label == (gt_n > 0), "%s: label %d but %lld gt pixels", id, label, (long long)gt_n);
      if (!eyec) CHECK(label == (strcmp(dt, "good") != 0), "%s: label %d for folder %s", id, label, dt);
      /* defects lie on the object; a few of their pixels may fall into sensor holes */
      if (gt_n) CHECK(gt_in >= 0.8 * (double)gt_n, "%s: %lld of %lld defect pixels off the object", id,
                      (long long)(gt_n - gt_in), (long long)gt_n);
      CHECK(nrm_n > 0.5 * (double)inter && nrm_bad == 0,
            "%s: %lld normals, %lld not unit / not facing the camera / off the foreground", id,
            (long long)nrm_n, (long long)nrm_bad);
    }
    if (gi == 0) CHECK(n_anom == 0, "support samples are all normal");
    else CHECK(n_anom > 0 && n_anom < g.n, "test set has normal and anomalous samples (%d of %lld)",
               n_anom, (long long)g.n);
    free(truth);
    cmds_sample_batch_free(&b);
    cmds_sc_group_close(&g);
  }
  cmds_sc_info_free(&info);
  H5Fclose(f);
  int rc = CHECK_DONE();
  return cmds_mpi_finalize(&mpi, rc);
}
