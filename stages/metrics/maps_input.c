/* maps_input: see maps_input.h. */
#include "maps_input.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5io.h"
#include "regions.h"

static void close_ids(metrics_input *in) {
  hid_t *ids[] = {&in->mt_masks, &in->mt_labels};
  for (int k = 0; k < 2; k++)
    if (*ids[k] >= 0) H5Tclose(*ids[k]);
  hid_t *ds[] = {&in->d_scores, &in->d_masks, &in->d_labels};
  for (int k = 0; k < 3; k++)
    if (*ds[k] >= 0) H5Dclose(*ds[k]);
  if (in->file >= 0) H5Fclose(in->file);
  in->file = in->d_scores = in->d_masks = in->d_labels = H5I_INVALID_HID;
  in->mt_masks = in->mt_labels = H5I_INVALID_HID;
}

void metrics_input_close(metrics_input *in) { close_ids(in); }

/* Fails unless the dataset holds 1-byte integers (or h5py's bool enum); *mt receives
 * the matching memory type (bytes are then checked for 0/1). */
static int byte_type(const metrics_input *in, hid_t d, const char *name, hid_t *mt,
                     cmds_error *err) {
  hid_t t = H5Dget_type(d);
  H5T_class_t cls = H5Tget_class(t);
  size_t size = H5Tget_size(t);
  int ok = (cls == H5T_INTEGER || cls == H5T_ENUM) && size == 1;
  if (ok) *mt = H5Tget_native_type(t, H5T_DIR_ASCEND);
  H5Tclose(t);
  if (!ok)
    return CMDS_FAIL(err, CMDS_EINPUT,
                     "%s: %s: expected 1-byte integers 0/1 (uint8, int8 or bool), got a %s of "
                     "%zu bytes",
                     in->path, name, cls == H5T_FLOAT ? "float" : "non-byte type", size);
  return CMDS_OK;
}

static int check_float32(const metrics_input *in, hid_t d, const char *name, cmds_error *err) {
  hid_t t = H5Dget_type(d);
  int ok = H5Tget_class(t) == H5T_FLOAT && H5Tget_size(t) == 4;
  size_t size = H5Tget_size(t);
  H5Tclose(t);
  if (!ok)
    return CMDS_FAIL(err, CMDS_EINPUT,
                     "%s: %s: expected float32 (a %zu-byte type would change ties when "
                     "narrowed; store float32, e.g. numpy astype(np.float32))",
                     in->path, name, size);
  return CMDS_OK;
}

static void read_opt_str(hid_t f, const char *name, char *buf, size_t cap) {
  cmds_error e;
  buf[0] = 0;
  if (H5Aexists(f, name) > 0 && cmds_h5_attr_read_str(f, name, buf, cap, "", &e)) buf[0] = 0;
}

/* The maps_id attribute of an open file into id: 1 read, 0 absent, -1 (err filled, CMDS_EINPUT)
 * when it is not a short printable string (it is copied into result JSON and compared as
 * text). */
static int read_maps_id(hid_t f, const char *path, char *id, size_t cap, cmds_error *err) {
  id[0] = 0;
  if (H5Aexists(f, "maps_id") <= 0) return 0;
  char buf[1024];
  int ok = !cmds_h5_attr_read_str(f, "maps_id", buf, sizeof buf, path, err) && strlen(buf) > 0 && strlen(buf) < cap;
  for (const char *p = buf; ok && *p; p++) ok = *p > 32 && *p < 127 && *p != '"' && *p != '\\';
  if (!ok) {
    CMDS_FAIL(err, CMDS_EINPUT, "%s: attribute maps_id: expected a string of 1 to %zu printable characters without "
              "spaces, quotes or backslashes (the maps' content identity, schemas/maps_v1.md)", path, cap - 1);
    return -1;
  }
  snprintf(id, cap, "%s", buf);
  return 1;
}

int metrics_maps_id(const char *path, char *id, size_t cap) {
  hid_t f;
  cmds_error e = {0};
  id[0] = 0;
  if (cmds_h5_open_read(&f, path, MPI_COMM_SELF, NULL, 0, &e)) return -1;
  int rc = read_maps_id(f, path, id, cap, &e);
  H5Fclose(f);
  return rc;
}

int metrics_input_open(metrics_input *in, const char *path, MPI_Comm comm, cmds_error *err) {
  memset(in, 0, sizeof *in);
  in->file = in->d_scores = in->d_masks = in->d_labels = H5I_INVALID_HID;
  in->mt_masks = in->mt_labels = H5I_INVALID_HID;
  snprintf(in->path, sizeof in->path, "%s", path);
  int rc = cmds_h5_open_read(&in->file, path, comm, NULL, 0, err);
  if (rc) return rc;
  /* A maps file written by any tool may lack our schema attributes: accept it. One that
   * has them must be ours at our version. */
  if (H5Aexists(in->file, "cmds_schema") > 0) {
    char got[128];
    int64_t ver = -1;
    rc = cmds_h5_attr_read_str(in->file, "cmds_schema", got, sizeof got, path, err);
    if (!rc && strcmp(got, CMDS_MAPS_SCHEMA) != 0)
      rc = CMDS_FAIL(err, CMDS_ESCHEMA, "%s: holds a '%s' file, expected '%s'", path, got,
                     CMDS_MAPS_SCHEMA);
    if (!rc && H5Aexists(in->file, "cmds_schema_version") > 0)
      rc = cmds_h5_attr_read_i64(in->file, "cmds_schema_version", &ver, path, err);
    if (!rc && ver != CMDS_MAPS_VERSION)
      rc = CMDS_FAIL(err, CMDS_ESCHEMA,
                     "%s: schema '%s' version %lld, this build reads version %d", path,
                     CMDS_MAPS_SCHEMA, (long long)ver, CMDS_MAPS_VERSION);
    if (rc) {
      close_ids(in);
      return rc;
    }
  }
  read_opt_str(in->file, "dataset", in->dataset, sizeof in->dataset);
  read_opt_str(in->file, "category", in->category, sizeof in->category);
  if (read_maps_id(in->file, path, in->maps_id, sizeof in->maps_id, err) < 0) {
    close_ids(in);
    return err->code;
  }

  hsize_t ds[4], dm[4], dl[4], di[4];
  int nds = cmds_h5_dataset_shape(in->file, "scores", ds, 4);
  int ndm = cmds_h5_dataset_shape(in->file, "masks", dm, 4);
  int ndl = cmds_h5_dataset_shape(in->file, "labels", dl, 4);
  int ndi = cmds_h5_dataset_shape(in->file, "image_scores", di, 4);
  const char *missing = nds < 0 ? "/scores" : ndm < 0 ? "/masks" : ndl < 0 ? "/labels" : NULL;
  if (missing) rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: no dataset %s (see schemas/maps_v1.md)", path, missing);
  else if (nds != 3)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: /scores has %d dimensions, expected 3 (N, H, W)", path, nds);
  else if (ndm != 3 || dm[0] != ds[0] || dm[1] != ds[1] || dm[2] != ds[2])
    rc = CMDS_FAIL(err, CMDS_EINPUT,
                   "%s: /masks shape differs from /scores (%llu, %llu, %llu): expected the same "
                   "(N, H, W)",
                   path, (unsigned long long)ds[0], (unsigned long long)ds[1],
                   (unsigned long long)ds[2]);
  else if (ndl != 1 || dl[0] != ds[0])
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: /labels must have shape (N) with N = %llu", path,
                   (unsigned long long)ds[0]);
  else if (ndi >= 0 && (ndi != 1 || di[0] != ds[0]))
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: /image_scores must have shape (N) with N = %llu",
                   path, (unsigned long long)ds[0]);
  else if (ds[0] == 0 || ds[1] == 0 || ds[2] == 0)
    rc = CMDS_FAIL(err, CMDS_EINPUT, "%s: /scores is empty", path);
  if (rc) {
    close_ids(in);
    return rc;
  }
  in->n = (int64_t)ds[0];
  in->h = (int64_t)ds[1];
  in->w = (int64_t)ds[2];
  in->has_image_scores = ndi >= 0;
  in->d_scores = H5Dopen2(in->file, "scores", H5P_DEFAULT);
  in->d_masks = H5Dopen2(in->file, "masks", H5P_DEFAULT);
  in->d_labels = H5Dopen2(in->file, "labels", H5P_DEFAULT);
  if (in->d_scores < 0 || in->d_masks < 0 || in->d_labels < 0) {
    close_ids(in);
    return CMDS_FAIL(err, CMDS_EIO, "%s: cannot open its datasets", path);
  }
  rc = check_float32(in, in->d_scores, "/scores", err);
  if (!rc) rc = byte_type(in, in->d_masks, "/masks", &in->mt_masks, err);
  if (!rc) rc = byte_type(in, in->d_labels, "/labels", &in->mt_labels, err);
  if (!rc && in->has_image_scores) {
    hid_t d = H5Dopen2(in->file, "image_scores", H5P_DEFAULT);
    rc = check_float32(in, d, "/image_scores", err);
    H5Dclose(d);
  }
  if (rc) close_ids(in);
  return rc;
}

int metrics_input_read_image_scores(metrics_input *in, float *out, cmds_error *err) {
  hid_t d = H5Dopen2(in->file, "image_scores", H5P_DEFAULT);
  if (d < 0) return CMDS_FAIL(err, CMDS_EIO, "%s: cannot open /image_scores", in->path);
  int rc = cmds_h5_read_rows(d, H5T_NATIVE_FLOAT, 0, in->n, out, err);
  H5Dclose(d);
  if (rc) return cmds_error_wrap(err, "%s: /image_scores: ", in->path);
  for (int64_t i = 0; i < in->n; i++)
    if (!isfinite(out[i]))
      return CMDS_FAIL(err, CMDS_EINPUT, "%s: /image_scores[%lld] is %s; expected a finite score",
                       in->path, (long long)i, isnan(out[i]) ? "NaN" : "infinite");
  return CMDS_OK;
}

void metrics_local_free(metrics_local *loc) {
  cmds_table_free(&loc->table);
  free(loc->image_score);
  free(loc->image_label);
  memset(loc, 0, sizeof *loc);
}

/* Word-wise 64-bit mixing hash of one image (index, label, scores, mask). */
static uint64_t mix(uint64_t h, uint64_t x) {
  h ^= x + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h *= 0xff51afd7ed558ccdull;
  return h ^ (h >> 33);
}

static uint64_t image_hash(int64_t index, uint8_t label, const float *s, const uint8_t *m,
                           int64_t npix) {
  uint64_t h = mix(0xcbf29ce484222325ull, (uint64_t)index);
  h = mix(h, label);
  int64_t i = 0;
  for (; i + 2 <= npix; i += 2) {
    uint64_t a, b = 0;
    memcpy(&a, s + i, 8);
    memcpy(&b, m + i, 2);
    h = mix(h, a ^ (b << 48));
  }
  for (; i < npix; i++) {
    uint32_t a;
    memcpy(&a, s + i, 4);
    h = mix(h, a ^ ((uint64_t)m[i] << 32));
  }
  return h;
}

/* Checks one image; on a problem fills err naming the file and the global image index. */
static int check_image(const metrics_input *in, int64_t gi, const float *s, const uint8_t *m,
                       uint8_t label, cmds_error *err) {
  int64_t npix = in->h * in->w, n_anom = 0;
  if (label > 1)
    return CMDS_FAIL(err, CMDS_EINPUT, "%s: /labels[%lld] = %d; expected 0 (normal) or 1 (anomalous)",
                     in->path, (long long)gi, (int)(int8_t)label);
  for (int64_t p = 0; p < npix; p++) {
    if (!isfinite(s[p]))
      return CMDS_FAIL(err, CMDS_EINPUT,
                       "%s: /scores image %lld has %s at (row %lld, col %lld); expected finite "
                       "scores",
                       in->path, (long long)gi, isnan(s[p]) ? "NaN" : "an infinite value",
                       (long long)(p / in->w), (long long)(p % in->w));
    if (m[p] > 1)
      return CMDS_FAIL(err, CMDS_EINPUT,
                       "%s: /masks image %lld has value %d at (row %lld, col %lld); expected 0 or 1",
                       in->path, (long long)gi, (int)(int8_t)m[p], (long long)(p / in->w),
                       (long long)(p % in->w));
    n_anom += m[p];
  }
  if (label == 0 && n_anom > 0)
    return CMDS_FAIL(err, CMDS_EINPUT,
                     "%s: image %lld has label 0 (normal) but %lld anomalous mask pixels; a normal "
                     "image must have an empty mask",
                     in->path, (long long)gi, (long long)n_anom);
  return CMDS_OK;
}

int metrics_input_read_block(metrics_input *in, int64_t b, int64_t e, int64_t batch_pixels,
                             metrics_local *loc, cmds_progress *prog, cmds_error *err) {
  memset(loc, 0, sizeof *loc);
  cmds_table_init(&loc->table);
  loc->b = b;
  loc->e = e;
  int64_t nimg = e - b, npix = in->h * in->w;
  loc->image_score = cmds_xcalloc((size_t)(nimg > 0 ? nimg : 1), sizeof *loc->image_score);
  loc->image_label = cmds_xcalloc((size_t)(nimg > 0 ? nimg : 1), 1);
  if (nimg <= 0) return CMDS_OK;
  int64_t per = batch_pixels / npix;
  if (per < 1) per = 1;
  if (per > nimg) per = nimg;
  float *s = cmds_xmalloc((size_t)(per * npix) * sizeof *s);
  uint8_t *m = cmds_xmalloc((size_t)(per * npix));
  int32_t *lab = cmds_xmalloc((size_t)npix * sizeof *lab);
  int rc = cmds_h5_read_rows(in->d_labels, in->mt_labels, b, nimg, loc->image_label, err);
  if (rc) cmds_error_wrap(err, "%s: /labels: ", in->path);
  for (int64_t i0 = b; i0 < e && !rc; i0 += per) {
    int64_t cnt = e - i0 < per ? e - i0 : per;
    rc = cmds_h5_read_rows(in->d_scores, H5T_NATIVE_FLOAT, i0, cnt, s, err);
    if (rc) {
      cmds_error_wrap(err, "%s: /scores: ", in->path);
      break;
    }
    rc = cmds_h5_read_rows(in->d_masks, in->mt_masks, i0, cnt, m, err);
    if (rc) {
      cmds_error_wrap(err, "%s: /masks: ", in->path);
      break;
    }
    for (int64_t k = 0; k < cnt && !rc; k++) {
      int64_t gi = i0 + k;
      const float *si = s + k * npix;
      const uint8_t *mi = m + k * npix;
      uint8_t label = loc->image_label[gi - b];
      rc = check_image(in, gi, si, mi, label, err);
      if (rc) break;
      loc->content_hash += image_hash(gi, label, si, mi, npix);
      int64_t *sizes = NULL;
      int32_t nreg = cmds_regions_label8(mi, (int)in->h, (int)in->w, lab, &sizes);
      loc->n_regions += nreg;
      cmds_fix128 *wreg = cmds_xmalloc((size_t)(nreg + 1) * sizeof *wreg);
      for (int32_t r = 1; r <= nreg; r++) wreg[r] = cmds_fix_recip((uint64_t)sizes[r]);
      float mx = si[0];
      for (int64_t p = 0; p < npix; p++) {
        float v = si[p];
        mx = v > mx ? v : mx;
        uint32_t key = cmds_score_key(v);
        if (lab[p]) cmds_table_add_anom(&loc->table, key, 1, wreg[lab[p]]);
        else cmds_table_add_normal(&loc->table, key, 1);
      }
      loc->image_score[gi - b] = mx;
      free(wreg);
      free(sizes);
      if (prog) cmds_progress_step(prog, 1);
    }
  }
  free(s);
  free(m);
  free(lab);
  if (!rc) cmds_table_compact(&loc->table);
  return rc;
}
