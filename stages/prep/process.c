/* process: see process.h. */
#include "process.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats.h"
#include "fsutil.h"
#include "hash.h"
#include "json.h"
#include "resize.h"
#include "rng.h"

void prep_params_default(prep_params *p) {
  memset(p, 0, sizeof *p);
  p->size = 224;
  p->seed = 0;
  p->zstd_level = 3;
  cmds_mvtec_params_default(&p->mvtec);
  cmds_eyecandies_bg_params_default(&p->eyecandies_bg);
  p->eyecandies_focal = 711.11;
}

char *prep_params_json(const prep_params *p, const char *dataset, const char *root, int shots) {
  cmds_json j;
  cmds_json_init(&j, 0);
  cmds_json_object_begin(&j);
  cmds_json_kv_str(&j, "dataset", dataset);
  cmds_json_kv_str(&j, "root", root);
  cmds_json_kv_int(&j, "shots", shots);
  cmds_json_kv_int(&j, "resolution", p->size);
  cmds_json_kv_int(&j, "seed", (int64_t)p->seed);
  cmds_json_kv_int(&j, "zstd_level", p->zstd_level);
  const cmds_mvtec_params *m = &p->mvtec;
  cmds_json_kv_int(&j, "ransac_iterations", m->plane.iterations);
  cmds_json_kv_int(&j, "ransac_points", m->plane.sample_points);
  cmds_json_kv_num(&j, "ransac_inlier_dist", m->plane.inlier_dist);
  cmds_json_kv_int(&j, "ransac_border", m->plane.border);
  cmds_json_kv_num(&j, "plane_remove_dist", m->remove_dist);
  cmds_json_kv_int(&j, "pad_multiple", m->pad_multiple);
  cmds_json_kv_num(&j, "dbscan_eps", m->dbscan_eps);
  cmds_json_kv_int(&j, "dbscan_min_points", m->dbscan_min_points);
  cmds_json_kv_num(&j, "eyecandies_focal", p->eyecandies_focal);
  cmds_json_kv_num(&j, "eyecandies_bg_q1_max", p->eyecandies_bg.q1_max);
  cmds_json_kv_num(&j, "eyecandies_bg_q2_max", p->eyecandies_bg.q2_max);
  cmds_json_kv_num(&j, "eyecandies_bg_q0_abs_max", p->eyecandies_bg.q0_abs_max);
  cmds_json_kv_num(&j, "eyecandies_scale", p->eyecandies_bg.scale);
  cmds_json_object_end(&j);
  return j.buf; /* ownership passes to the caller */
}

/* Source files of a sample, resolved from the layout. */
typedef struct sample_paths {
  char rgb[4096], cloud[4096], gt[4096], yaml[4096], pose[4096];
} sample_paths;

static void resolve(prep_format f, const char *root, const char *cat, const prep_sample *s,
                    sample_paths *sp) {
  char dir[4096], file[256];
  memset(sp, 0, sizeof *sp);
  if (f == PREP_MVTEC3D) {
    cmds_path_join(dir, sizeof dir, root, cat, s->split, s->folder);
    snprintf(file, sizeof file, "rgb/%s.png", s->name);
    cmds_path_join(sp->rgb, sizeof sp->rgb, dir, file, NULL, NULL);
    snprintf(file, sizeof file, "xyz/%s.tiff", s->name);
    cmds_path_join(sp->cloud, sizeof sp->cloud, dir, file, NULL, NULL);
    snprintf(file, sizeof file, "gt/%s.png", s->name);
    cmds_path_join(sp->gt, sizeof sp->gt, dir, file, NULL, NULL);
  } else {
    cmds_path_join(dir, sizeof dir, root, cat, s->split, s->folder);
    snprintf(file, sizeof file, "%s_image_4.png", s->name);
    cmds_path_join(sp->rgb, sizeof sp->rgb, dir, file, NULL, NULL);
    snprintf(file, sizeof file, "%s_depth.png", s->name);
    cmds_path_join(sp->cloud, sizeof sp->cloud, dir, file, NULL, NULL);
    snprintf(file, sizeof file, "%s_mask.png", s->name);
    cmds_path_join(sp->gt, sizeof sp->gt, dir, file, NULL, NULL);
    snprintf(file, sizeof file, "%s_info_depth.yaml", s->name);
    cmds_path_join(sp->yaml, sizeof sp->yaml, dir, file, NULL, NULL);
    snprintf(file, sizeof file, "%s_pose.txt", s->name);
    cmds_path_join(sp->pose, sizeof sp->pose, dir, file, NULL, NULL);
  }
}


uint64_t prep_sample_fingerprint(prep_format f, const char *root, const char *category,
                                 const prep_sample *s, uint64_t h) {
  sample_paths sp;
  resolve(f, root, category, s, &sp);
  const char *files[5] = {sp.rgb, sp.cloud, sp.gt, sp.yaml, sp.pose};
  for (int k = 0; k < 5; k++) {
    struct stat st;
    if (!files[k][0] || stat(files[k], &st) != 0) continue;
    int64_t id[3] = {(int64_t)st.st_size, (int64_t)st.st_mtim.tv_sec, (int64_t)st.st_mtim.tv_nsec};
    h = cmds_fnv64(h, files[k], strlen(files[k]));
    h = cmds_fnv64(h, id, sizeof id);
  }
  return h;
}

/* RGB as 8-bit, 3 channels; `allow_alpha` drops a 4th channel (EyeCandies renders). */
static int load_rgb(const char *path, int allow_alpha, uint8_t **rgb, int *h, int *w,
                    cmds_error *err) {
  cmds_image img;
  int rc = cmds_png_read(path, &img, err);
  if (rc) return rc;
  if (img.bit_depth != 8 || !(img.channels == 3 || (allow_alpha && img.channels == 4))) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: %d-bit PNG with %d channel(s), expected 8-bit RGB%s", path,
                   img.bit_depth, img.channels, allow_alpha ? " or RGBA" : "");
    cmds_image_free(&img);
    return rc;
  }
  size_t px = (size_t)img.width * (size_t)img.height;
  uint8_t *out = cmds_xmalloc(px * 3);
  const uint8_t *src = img.data;
  for (size_t i = 0; i < px; i++)
    for (int c = 0; c < 3; c++) out[i * 3 + c] = src[i * (size_t)img.channels + (size_t)c];
  *rgb = out;
  *h = img.height;
  *w = img.width;
  cmds_image_free(&img);
  return CMDS_OK;
}

/* Ground-truth mask as 0/255 bytes (any channel above half range counts); *count is the
 * number of such pixels, *nonzero the number of pixels with any non-zero value. */
static int load_mask(const char *path, int h, int w, uint8_t **mask, int64_t *count,
                     int64_t *nonzero, cmds_error *err) {
  cmds_image img;
  int rc = cmds_png_read(path, &img, err);
  if (rc) return rc;
  if (img.width != w || img.height != h) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: mask is %d x %d, the RGB image is %d x %d", path,
                   img.width, img.height, w, h);
    cmds_image_free(&img);
    return rc;
  }
  size_t px = (size_t)w * (size_t)h;
  uint8_t *out = cmds_xmalloc(px);
  *count = *nonzero = 0;
  int half = img.bit_depth == 16 ? 32767 : 127, ch = img.channels > 2 ? 3 : 1;
  for (size_t i = 0; i < px; i++) {
    int on = 0, any = 0;
    for (int c = 0; c < ch; c++) {
      size_t k = i * (size_t)img.channels + (size_t)c;
      int v = img.bit_depth == 16 ? ((uint16_t *)img.data)[k] : ((uint8_t *)img.data)[k];
      on |= v > half;
      any |= v != 0;
    }
    out[i] = on ? 255 : 0;
    *count += on;
    *nonzero += any;
  }
  cmds_image_free(&img);
  *mask = out;
  return CMDS_OK;
}

static int check_cloud(const char *path, const float *xyz, size_t px, cmds_error *err) {
  size_t valid = 0;
  for (size_t i = 0; i < px; i++) {
    const float *p = xyz + 3 * i;
    if (!isfinite(p[0]) || !isfinite(p[1]) || !isfinite(p[2]))
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: non-finite coordinate at pixel %zu (expected finite "
                       "values, zeros where the sensor saw nothing)", path, i);
    valid += p[0] != 0 || p[1] != 0 || p[2] != 0;
  }
  if (!valid) return CMDS_FAIL(err, CMDS_EINPUT, "%s: all-zero point cloud", path);
  return CMDS_OK;
}

/* Replaces *buf (h x w pixels of elem bytes) by its centred zero padding to the square
 * `side` (the same placement as the point cloud's). */
static void pad_like(void **buf, int h, int w, size_t elem, int multiple) {
  void *dst;
  int side, top, left;
  cmds_pad_square(*buf, h, w, elem, multiple, &dst, &side, &top, &left);
  free(*buf);
  *buf = dst;
}

/* MVTec 3D-AD: read, validate, then METHOD.md's cleaning (plane, removal, padding,
 * largest cluster) in one call; *xyz_out is the padded, cleaned cloud. */
static int load_cloud_mvtec(const sample_paths *sp, const prep_sample *s, const prep_params *p, int h,
                            int w, float **xyz_out, cmds_mvtec_result *res, cmds_error *err) {
  cmds_imagef cloud;
  int rc = cmds_tiff_read_f32(sp->cloud, 3, &cloud, err);
  if (rc) return rc;
  if (cloud.width != w || cloud.height != h) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: point cloud is %d x %d, the RGB image %s is %d x %d",
                   sp->cloud, cloud.width, cloud.height, sp->rgb, w, h);
    cmds_imagef_free(&cloud);
    return rc;
  }
  rc = check_cloud(sp->cloud, cloud.data, (size_t)w * (size_t)h, err);
  cmds_mvtec_params mp = p->mvtec;
  char id[CMDS_SC_ID_LEN];
  prep_sample_id(PREP_MVTEC3D, s, id, sizeof id);
  mp.plane.seed = p->seed ^ cmds_hash_str(id); /* same sample, same stream, on any rank */
  if (!rc) rc = cmds_mvtec_clean(cloud.data, h, w, &mp, xyz_out, res, err);
  cmds_imagef_free(&cloud);
  if (rc == CMDS_EINPUT && !strstr(err->msg, sp->cloud)) cmds_error_wrap(err, "%s", sp->cloud);
  if (!rc && res->kept <= 0) {
    free(*xyz_out);
    *xyz_out = NULL;
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: no object left after removing the background plane "
                   "and clustering (eps %g, min %d points)", sp->cloud, mp.dbscan_eps,
                   mp.dbscan_min_points);
  }
  return rc;
}

/* EyeCandies: the camera is not at the origin of the processed frame. Its centre is
 * inverse(pose) @ (0,0,0,1), mapped like the points (axes (x, z, y), scaled by
 * (0.1, -0.1, 0.1)); normals are turned to face it. */
static void orient_to_camera(const double pose[16], const float *xyz, float *normals, size_t px) {
  double inv[16];
  if (cmds_mat4_inverse(pose, inv)) return;
  double w = inv[15] != 0 ? inv[15] : 1;
  double cw[3] = {inv[3] / w, inv[7] / w, inv[11] / w};
  double cam[3] = {0.1 * cw[0], -0.1 * cw[2], 0.1 * cw[1]};
  for (size_t i = 0; i < px; i++) {
    float *n = normals + 3 * i;
    const float *q = xyz + 3 * i;
    double dot = n[0] * (q[0] - cam[0]) + n[1] * (q[1] - cam[1]) + n[2] * (q[2] - cam[2]);
    if (dot > 0) {
      n[0] = -n[0];
      n[1] = -n[1];
      n[2] = -n[2];
    }
  }
}

static int load_cloud_eyecandies(const sample_paths *sp, const prep_params *p, int h, int w,
                                 float **xyz_out, double pose_out[16], cmds_error *err) {
  cmds_image depth;
  int rc = cmds_png_read(sp->cloud, &depth, err);
  if (rc) return rc;
  if (depth.bit_depth != 16 || depth.channels != 1 || depth.width != w || depth.height != h) {
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: %d x %d, %d-bit, %d channel(s); expected a 16-bit "
                   "single-channel depth PNG of the RGB image's size %d x %d", sp->cloud,
                   depth.width, depth.height, depth.bit_depth, depth.channels, w, h);
    cmds_image_free(&depth);
    return rc;
  }
  double dmin, dmax, pose[16];
  rc = cmds_yaml_read_depth_range(sp->yaml, &dmin, &dmax, err);
  if (!rc && !(dmin > 0 && dmax >= dmin))
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: normalization min %g / max %g, expected 0 < min <= max",
                   sp->yaml, dmin, dmax);
  if (!rc) rc = cmds_matrix4_read(sp->pose, pose, err);
  double inv[16];
  if (!rc && cmds_mat4_inverse(pose, inv))
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: the pose matrix is singular", sp->pose);
  if (rc) {
    cmds_image_free(&depth);
    return rc;
  }
  memcpy(pose_out, pose, sizeof pose);
  size_t px = (size_t)w * (size_t)h;
  float *d = cmds_xmalloc(px * sizeof(float)), *xyz = cmds_xmalloc(px * 3 * sizeof(float));
  const uint16_t *raw = depth.data;
  /* depth = png / 65535 (max - min) + min, in float32 as the field's loader does */
  for (size_t i = 0; i < px; i++)
    d[i] = (float)raw[i] / 65535.0f * (float)(dmax - dmin) + (float)dmin;
  cmds_image_free(&depth);
  rc = cmds_eyecandies_unproject(d, h, w, pose, p->eyecandies_focal, xyz, err);
  free(d);
  if (!rc) rc = check_cloud(sp->cloud, xyz, px, err);
  if (!rc) cmds_eyecandies_remove_background_p(xyz, h, w, &p->eyecandies_bg);
  if (rc) {
    free(xyz);
    return rc;
  }
  *xyz_out = xyz;
  return CMDS_OK;
}

int prep_process_sample(prep_format f, const char *root, const char *category, const prep_sample *s,
                        const prep_params *p, cmds_sample_batch *b, int64_t row, cmds_error *err) {
  sample_paths sp;
  resolve(f, root, category, s, &sp);
  const int S = p->size;
  const size_t spx = (size_t)S * (size_t)S;
  uint8_t *rgb = NULL, *gt = NULL;
  float *xyz = NULL, *normals = NULL;
  int h = 0, w = 0, rc;
  int64_t gt_count = 0, gt_nonzero = 0;
  double pose[16];
  cmds_mvtec_result res;
  memset(&res, 0, sizeof res);

  rc = load_rgb(sp.rgb, f == PREP_EYECANDIES, &rgb, &h, &w, err);
  /* MVTec ships gt for every split; EyeCandies only for test_public. */
  int want_gt = s->group == 1;
  if (!rc && want_gt) rc = load_mask(sp.gt, h, w, &gt, &gt_count, &gt_nonzero, err);
  if (!rc && !want_gt) gt = cmds_xcalloc((size_t)w * (size_t)h, 1);
  int label = 0;
  if (!rc) {
    if (f == PREP_MVTEC3D) {
      label = strcmp(s->folder, "good") != 0;
      if (!label && gt_count)
        rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: ground truth of a 'good' sample has %lld defect pixels",
                       sp.gt, (long long)gt_count);
    } else {
      label = gt_nonzero > 0; /* EyeCandies: anomalous iff the mask has any non-zero pixel */
    }
  }
  if (!rc)
    rc = f == PREP_MVTEC3D ? load_cloud_mvtec(&sp, s, p, h, w, &xyz, &res, err)
                           : load_cloud_eyecandies(&sp, p, h, w, &xyz, pose, err);
  int side = 0;
  if (!rc) {
    /* Padding: MVTec to the cleaned cloud's square (a multiple of 100, centred), RGB and
     * ground truth placed the same way; EyeCandies only squared. */
    int multiple = f == PREP_MVTEC3D ? p->mvtec.pad_multiple : 1;
    cmds_pad_square_geometry(h, w, multiple, &side, &res.top, &res.left);
    if (f == PREP_EYECANDIES) pad_like((void **)&xyz, h, w, 3 * sizeof(float), multiple);
    res.side = side;
    pad_like((void **)&rgb, h, w, 3, multiple);
    pad_like((void **)&gt, h, w, 1, multiple);
  }
  if (!rc) {
    normals = cmds_xmalloc((size_t)side * (size_t)side * 3 * sizeof(float));
    cmds_normals_central(xyz, side, side, normals);
    if (f == PREP_EYECANDIES) orient_to_camera(pose, xyz, normals, (size_t)side * (size_t)side);
    uint8_t *gt_small = cmds_xmalloc(spx);
    cmds_resize_bicubic_aa_u8(rgb, side, side, 3, b->rgb + (size_t)row * spx * 3, S, S);
    cmds_resize_nearest_torch(xyz, side, side, 3 * sizeof(float), b->xyz + (size_t)row * spx * 3, S, S);
    cmds_resize_nearest_torch(normals, side, side, 3 * sizeof(float),
                              b->normals + (size_t)row * spx * 3, S, S);
    cmds_resize_nearest_pil(gt, side, side, 1, gt_small, S, S);
    const float *rx = b->xyz + (size_t)row * spx * 3;
    for (size_t i = 0; i < spx; i++) {
      b->gt_mask[(size_t)row * spx + i] = gt_small[i] > 127; /* > 0.5 after scaling to [0,1] */
      b->fg_mask[(size_t)row * spx + i] = cmds_pc_is_valid(rx + 3 * i);
    }
    free(gt_small);
    b->label[row] = (uint8_t)label;
    char *dt = b->defect_type + (size_t)row * CMDS_SC_DEFECT_LEN;
    memset(dt, 0, CMDS_SC_DEFECT_LEN);
    snprintf(dt, CMDS_SC_DEFECT_LEN, "%s",
             f == PREP_MVTEC3D ? s->folder : (label ? "anomalous" : "good"));
    char *id = b->sample_id + (size_t)row * CMDS_SC_ID_LEN;
    memset(id, 0, CMDS_SC_ID_LEN);
    prep_sample_id(f, s, id, CMDS_SC_ID_LEN);
    b->native_hw[row * 2] = h;
    b->native_hw[row * 2 + 1] = w;
    b->pad[row * 3] = side;
    b->pad[row * 3 + 1] = res.top;
    b->pad[row * 3 + 2] = res.left;
    memcpy(b->plane + row * 4, res.plane, sizeof res.plane);
  }
  free(rgb);
  free(gt);
  free(xyz);
  free(normals);
  return rc;
}
