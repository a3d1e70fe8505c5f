/* score_files: see score_files.h. */
#include "score_files.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds_mpi.h"
#include "fsutil.h"

static const char *psi_names[PSI_N] = {"psi_2d_real", "psi_2d_est", "psi_3d_real", "psi_3d_est"};
const char *score_psi_name(int i) { return psi_names[i]; }

int score_streams_same(const score_streams_info *a, const score_streams_info *b) {
  return !strcmp(a->dataset, b->dataset) && !strcmp(a->category, b->category) && !strcmp(a->tag, b->tag) &&
         a->k == b->k && !strcmp(a->mapper_id, b->mapper_id) && !strcmp(a->mapper_kind, b->mapper_kind) &&
         !strcmp(a->weights_id, b->weights_id) && !strcmp(a->sample_list_hash, b->sample_list_hash) &&
         !strcmp(a->backbone, b->backbone) && !strcmp(a->blocks, b->blocks) && a->final_norm == b->final_norm &&
         a->width == b->width && a->layers == b->layers && a->grid == b->grid && a->resolution == b->resolution &&
         a->eval_size == b->eval_size && a->n == b->n && a->est == b->est && !strcmp(a->est_id, b->est_id);
}

void score_streams_identity(const score_streams_info *s, char *out, size_t cap) {
  snprintf(out, cap,
           "dataset=%s;category=%s;k=%lld;tag=%s;mapper_id=%s;mapper_kind=%s;weights_id=%s;sample_list_hash=%s;"
           "backbone=%s;blocks=%s;final_norm=%lld;width=%lld;layers=%lld;grid=%lld;resolution=%lld;eval_size=%lld;"
           "n=%lld;est=%lld;est_id=%s",
           s->dataset, s->category, (long long)s->k, s->tag, s->mapper_id, s->mapper_kind, s->weights_id,
           s->sample_list_hash, s->backbone, s->blocks, (long long)s->final_norm, (long long)s->width,
           (long long)s->layers, (long long)s->grid, (long long)s->resolution, (long long)s->eval_size,
           (long long)s->n, (long long)s->est, s->est_id);
}

static int write_info(hid_t f, const score_streams_info *s) {
  int rc = cmds_h5_write_schema(f, SCORE_STREAMS_SCHEMA, SCORE_STREAMS_VERSION);
  const char *sk[] = {"dataset", "category", "tag", "mapper_id", "mapper_kind", "weights_id", "sample_list_hash",
                      "backbone", "blocks"};
  const char *sv[] = {s->dataset, s->category, s->tag, s->mapper_id, s->mapper_kind, s->weights_id,
                      s->sample_list_hash, s->backbone, s->blocks};
  for (int i = 0; i < 9; i++) rc |= cmds_h5_attr_write_str(f, sk[i], sv[i]);
  const char *ik[] = {"k", "final_norm", "width", "layers", "grid", "resolution", "eval_size", "n", "est"};
  const int64_t iv[] = {s->k, s->final_norm, s->width, s->layers, s->grid, s->resolution, s->eval_size, s->n, s->est};
  for (int i = 0; i < 9; i++) rc |= cmds_h5_attr_write_i64(f, ik[i], iv[i]);
  if (s->est_id[0]) rc |= cmds_h5_attr_write_str(f, "normals_est_id", s->est_id);
  return rc;
}

int score_streams_read_info(hid_t f, const char *path, score_streams_info *s, cmds_error *err) {
  memset(s, 0, sizeof *s);
  struct { const char *k; char *v; size_t cap; } sk[] = {
      {"dataset", s->dataset, sizeof s->dataset}, {"category", s->category, sizeof s->category},
      {"tag", s->tag, sizeof s->tag}, {"mapper_id", s->mapper_id, sizeof s->mapper_id},
      {"mapper_kind", s->mapper_kind, sizeof s->mapper_kind}, {"weights_id", s->weights_id, sizeof s->weights_id},
      {"sample_list_hash", s->sample_list_hash, sizeof s->sample_list_hash},
      {"backbone", s->backbone, sizeof s->backbone}, {"blocks", s->blocks, sizeof s->blocks}};
  for (size_t i = 0; i < sizeof sk / sizeof sk[0]; i++) {
    int rc = cmds_h5_attr_read_str(f, sk[i].k, sk[i].v, sk[i].cap, path, err);
    if (rc) return rc;
  }
  struct { const char *k; int64_t *v; } ik[] = {
      {"k", &s->k}, {"final_norm", &s->final_norm}, {"width", &s->width}, {"layers", &s->layers},
      {"grid", &s->grid}, {"resolution", &s->resolution}, {"eval_size", &s->eval_size}, {"n", &s->n},
      {"est", &s->est}};
  for (size_t i = 0; i < sizeof ik / sizeof ik[0]; i++) {
    int rc = cmds_h5_attr_read_i64(f, ik[i].k, ik[i].v, path, err);
    if (rc) return rc;
  }
  /* optional: written only when the feature cache has estimated normals */
  if (H5Aexists(f, "normals_est_id") > 0)
    return cmds_h5_attr_read_str(f, "normals_est_id", s->est_id, sizeof s->est_id, path, err);
  return CMDS_OK;
}

/* Creates a dataset and closes it; 0 or -1. */
static int make(hid_t f, const char *name, hid_t type, int nd, const hsize_t *dims, int level, cmds_error *err) {
  hid_t d = cmds_h5_create_rows(f, name, type, nd, dims, level, err);
  if (d < 0) return -1;
  H5Dclose(d);
  return 0;
}

int score_streams_create(cmds_h5file *f, const char *path, MPI_Comm comm, const score_streams_info *s,
                         cmds_error *err) {
  int rc = cmds_h5_create(f, path, comm, err);
  if (rc) return rc;
  if (write_info(f->id, s)) {
    cmds_h5_abandon(f);
    return CMDS_FAIL(err, CMDS_EIO, "%s: cannot write the attributes", f->partial);
  }
  hsize_t n = (hsize_t)s->n, R = (hsize_t)s->resolution, S = (hsize_t)s->eval_size;
  hsize_t dm[3] = {n, R, R}, dk[3] = {n, S, S}, d1[1] = {n};
  hid_t tid = cmds_h5_str_type(SCORE_ID_LEN), tdef = cmds_h5_str_type(SCORE_DEFECT_LEN);
  int bad = 0;
  for (int i = 0; i < PSI_N && !bad; i++)
    if (s->est || (i != PSI_2D_EST && i != PSI_3D_EST)) bad = make(f->id, psi_names[i], H5T_IEEE_F32LE, 3, dm, -1, err);
  if (!bad) bad = make(f->id, "masks", H5T_STD_U8LE, 3, dk, 3, err);
  if (!bad) bad = make(f->id, "fg_masks", H5T_STD_U8LE, 3, dk, 3, err);
  if (!bad) bad = make(f->id, "labels", H5T_STD_U8LE, 1, d1, -1, err);
  if (!bad) bad = make(f->id, "sample_id", tid, 1, d1, -1, err);
  if (!bad) bad = make(f->id, "defect_type", tdef, 1, d1, -1, err);
  if (!bad) bad = make(f->id, "done", H5T_STD_U8LE, 1, d1, -1, err);
  H5Tclose(tid);
  H5Tclose(tdef);
  if (!bad && n > 0) {
    /* done flags start at 0 (the fill time is `never`): every rank writes its share */
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int64_t b, e;
    cmds_block_range((int64_t)n, rank, size, &b, &e);
    uint8_t *zero = cmds_xcalloc((size_t)(e - b + 1), 1);
    hid_t d = H5Dopen2(f->id, "done", H5P_DEFAULT);
    bad = cmds_h5_write_rows(d, H5T_NATIVE_UINT8, e > b ? b : 0, e - b, zero, err) ? -1 : 0;
    H5Dclose(d);
    free(zero);
  }
  if (!bad && H5Fflush(f->id, H5F_SCOPE_GLOBAL) < 0) bad = -1;
  if (bad) {
    cmds_h5_abandon(f);
    return err->code ? err->code : CMDS_FAIL(err, CMDS_EIO, "%s: cannot create the datasets", path);
  }
  return CMDS_OK;
}

int score_streams_reopen(cmds_h5file *f, const char *path, MPI_Comm comm, const score_streams_info *want,
                         cmds_error *err) {
  memset(f, 0, sizeof *f);
  f->id = H5I_INVALID_HID;
  f->comm = comm;
  snprintf(f->path, sizeof f->path, "%s", path);
  snprintf(f->partial, sizeof f->partial, "%s.partial", path);
  int rank, ok = 0;
  MPI_Comm_rank(comm, &rank);
  /* rank 0 checks alone first: a file cut by a kill may not open at all */
  if (rank == 0 && cmds_is_file(f->partial)) {
    hid_t t;
    cmds_error e;
    score_streams_info got;
    if (!cmds_h5_open_read(&t, f->partial, MPI_COMM_SELF, SCORE_STREAMS_SCHEMA, SCORE_STREAMS_VERSION, &e)) {
      ok = !score_streams_read_info(t, f->partial, &got, &e) && score_streams_same(&got, want) &&
           cmds_h5_exists(t, "fg_masks");
      H5Fclose(t);
    }
  }
  MPI_CHECK(MPI_Bcast(&ok, 1, MPI_INT, 0, comm));
  if (!ok) return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: no resumable partial file", f->partial);
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
  H5Pset_all_coll_metadata_ops(fapl, 1);
  H5Pset_coll_metadata_write(fapl, 1);
  f->id = H5Fopen(f->partial, H5F_ACC_RDWR, fapl);
  H5Pclose(fapl);
  if (f->id < 0) return CMDS_FAIL(err, CMDS_ESCHEMA, "%s: cannot reopen for writing", f->partial);
  return CMDS_OK;
}

int score_streams_read_done(hid_t file, int64_t n, uint8_t *done, cmds_error *err) {
  hid_t d = H5Dopen2(file, "done", H5P_DEFAULT);
  if (d < 0) return CMDS_FAIL(err, CMDS_ESCHEMA, "streams file: /done is missing");
  int rc = cmds_h5_read_rows(d, H5T_NATIVE_UINT8, 0, n, done, err);
  H5Dclose(d);
  return rc;
}

static int write1(hid_t file, const char *name, hid_t mt, int has, int64_t row, const void *buf, cmds_error *err) {
  hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
  if (d < 0) return CMDS_FAIL(err, CMDS_ESCHEMA, "streams file: /%s is missing", name);
  int rc = cmds_h5_write_rows(d, mt, has ? row : 0, has ? 1 : 0, buf, err);
  H5Dclose(d);
  return rc ? cmds_error_wrap(err, "/%s: ", name) : CMDS_OK;
}

int score_streams_write_row(hid_t file, const score_streams_info *info, int has, int64_t row, const score_row *r,
                            cmds_error *err) {
  char id[SCORE_ID_LEN] = {0}, def[SCORE_DEFECT_LEN] = {0};
  if (has) {
    snprintf(id, sizeof id, "%s", r->sample_id);
    snprintf(def, sizeof def, "%s", r->defect_type);
  }
  hid_t tid = cmds_h5_str_type(SCORE_ID_LEN), tdef = cmds_h5_str_type(SCORE_DEFECT_LEN);
  int rc = CMDS_OK;
  for (int i = 0; i < PSI_N && !rc; i++)
    if (info->est || (i != PSI_2D_EST && i != PSI_3D_EST))
      rc = write1(file, psi_names[i], H5T_NATIVE_FLOAT, has, row, has ? r->maps[i] : NULL, err);
  if (!rc) rc = write1(file, "masks", H5T_NATIVE_UINT8, has, row, has ? r->mask : NULL, err);
  if (!rc) rc = write1(file, "fg_masks", H5T_NATIVE_UINT8, has, row, has ? r->fg : NULL, err);
  if (!rc) rc = write1(file, "labels", H5T_NATIVE_UINT8, has, row, &r->label, err);
  if (!rc) rc = write1(file, "sample_id", tid, has, row, id, err);
  if (!rc) rc = write1(file, "defect_type", tdef, has, row, def, err);
  H5Tclose(tid);
  H5Tclose(tdef);
  if (!rc && H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) rc = CMDS_FAIL(err, CMDS_EIO, "flushing the streams file");
  uint8_t one = 1;
  if (!rc) rc = write1(file, "done", H5T_NATIVE_UINT8, has, row, &one, err);
  if (!rc && H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) rc = CMDS_FAIL(err, CMDS_EIO, "flushing the streams file");
  return rc;
}

static int read1(hid_t file, const char *name, hid_t mt, int64_t row0, int64_t n, void *buf, cmds_error *err) {
  hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
  if (d < 0) return CMDS_FAIL(err, CMDS_ESCHEMA, "streams file: /%s is missing", name);
  int rc = cmds_h5_read_rows(d, mt, row0, n, buf, err);
  H5Dclose(d);
  return rc ? cmds_error_wrap(err, "/%s: ", name) : CMDS_OK;
}

int score_streams_read_rows(hid_t file, const score_streams_info *info, int64_t row0, int64_t n, float *maps[PSI_N],
                            uint8_t *masks, uint8_t *fg, uint8_t *labels, char *ids, cmds_error *err) {
  int rc = CMDS_OK;
  for (int i = 0; i < PSI_N && !rc; i++)
    if (maps[i] && (info->est || (i != PSI_2D_EST && i != PSI_3D_EST)))
      rc = read1(file, psi_names[i], H5T_NATIVE_FLOAT, row0, n, maps[i], err);
  if (!rc && masks) rc = read1(file, "masks", H5T_NATIVE_UINT8, row0, n, masks, err);
  if (!rc && fg) rc = read1(file, "fg_masks", H5T_NATIVE_UINT8, row0, n, fg, err);
  if (!rc && labels) rc = read1(file, "labels", H5T_NATIVE_UINT8, row0, n, labels, err);
  if (!rc && ids) {
    hid_t tid = cmds_h5_str_type(SCORE_ID_LEN);
    rc = read1(file, "sample_id", tid, row0, n, ids, err);
    H5Tclose(tid);
  }
  return rc;
}

/* ------------------------------------------------------------------ maps */

int score_maps_create(cmds_h5file *f, const char *path, MPI_Comm comm, const score_maps_info *m, cmds_error *err) {
  int rc = cmds_h5_create(f, path, comm, err);
  if (rc) return rc;
  int bad = cmds_h5_write_schema(f->id, SCORE_MAPS_SCHEMA, SCORE_MAPS_VERSION);
  bad |= cmds_h5_attr_write_str(f->id, "dataset", m->dataset);
  bad |= cmds_h5_attr_write_str(f->id, "category", m->category);
  bad |= cmds_h5_attr_write_str(f->id, "tag", m->tag);
  bad |= cmds_h5_attr_write_str(f->id, "setting", m->setting);
  bad |= cmds_h5_attr_write_i64(f->id, "k", m->k);
  bad |= cmds_h5_attr_write_str(f->id, "score_key", m->score_key);
  bad |= cmds_h5_attr_write_str(f->id, "streams_identity", m->streams_identity);
  hsize_t n = (hsize_t)m->n, S = (hsize_t)m->size, dk[3] = {n, S, S}, d1[1] = {n};
  hid_t tid = cmds_h5_str_type(SCORE_ID_LEN);
  if (!bad) bad = make(f->id, "scores", H5T_IEEE_F32LE, 3, dk, -1, err);
  if (!bad) bad = make(f->id, "masks", H5T_STD_U8LE, 3, dk, 3, err);
  if (!bad) bad = make(f->id, "labels", H5T_STD_U8LE, 1, d1, -1, err);
  if (!bad) bad = make(f->id, "image_scores", H5T_IEEE_F32LE, 1, d1, -1, err);
  if (!bad) bad = make(f->id, "sample_id", tid, 1, d1, -1, err);
  H5Tclose(tid);
  if (bad) {
    cmds_h5_abandon(f);
    return err->code ? err->code : CMDS_FAIL(err, CMDS_EIO, "%s: cannot create the datasets", path);
  }
  return CMDS_OK;
}

static int writen(hid_t file, const char *name, hid_t mt, int64_t row0, int64_t n, const void *buf, cmds_error *err) {
  hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
  if (d < 0) return CMDS_FAIL(err, CMDS_EINTERNAL, "maps file: /%s is missing", name);
  int rc = cmds_h5_write_rows(d, mt, n ? row0 : 0, n, buf, err);
  H5Dclose(d);
  return rc ? cmds_error_wrap(err, "/%s: ", name) : CMDS_OK;
}

int score_maps_write_rows(hid_t file, int64_t row0, int64_t n, const float *scores, const uint8_t *masks,
                          const uint8_t *labels, const float *image_scores, const char *ids, cmds_error *err) {
  hid_t tid = cmds_h5_str_type(SCORE_ID_LEN);
  int rc = writen(file, "scores", H5T_NATIVE_FLOAT, row0, n, scores, err);
  if (!rc) rc = writen(file, "masks", H5T_NATIVE_UINT8, row0, n, masks, err);
  if (!rc) rc = writen(file, "labels", H5T_NATIVE_UINT8, row0, n, labels, err);
  if (!rc) rc = writen(file, "image_scores", H5T_NATIVE_FLOAT, row0, n, image_scores, err);
  if (!rc) rc = writen(file, "sample_id", tid, row0, n, ids, err);
  H5Tclose(tid);
  return rc;
}

/* ------------------------------------------------------------------ maps_id */

/* Two 64-bit lanes over 8-byte words (murmur3-style rounds, distinct constants), finished with
 * murmur3's fmix64. Zero-padded tail; every field has a fixed length or is preceded by its
 * length, so field boundaries cannot shift. */
static uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  return k ^ (k >> 33);
}
static void lanes_word(score_maps_hash *h, uint64_t w) {
  h->a = rotl64(h->a ^ (w * 0x87c37b91114253d5ull), 31) * 0x4cf5ad432745937full;
  h->b = rotl64(h->b ^ (w * 0x9e3779b97f4a7c15ull), 27) * 0xc2b2ae3d27d4eb4full + 0x52dce729ull;
}
static void lanes_bytes(score_maps_hash *h, const void *p, size_t n) {
  const unsigned char *c = p;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, c + i, 8);
    lanes_word(h, w);
  }
  if (i < n) {
    uint64_t w = 0;
    memcpy(&w, c + i, n - i);
    lanes_word(h, w);
  }
}
static void lanes_str(score_maps_hash *h, const char *s, size_t max) {
  size_t n = strnlen(s, max);
  lanes_word(h, (uint64_t)n);
  lanes_bytes(h, s, n);
}

void score_maps_hash_init(score_maps_hash *h) { h->a = h->b = 0; }

void score_maps_hash_rows(score_maps_hash *h, int64_t row0, int64_t n, int64_t size, const float *scores,
                          const uint8_t *masks, const uint8_t *labels, const float *image_scores, const char *ids) {
  size_t px = (size_t)(size * size);
  for (int64_t i = 0; i < n; i++) {
    score_maps_hash r = {0x6a09e667f3bcc908ull, 0xbb67ae8584caa73bull};
    uint32_t is;
    memcpy(&is, &image_scores[i], 4);
    lanes_word(&r, (uint64_t)(row0 + i));
    lanes_word(&r, (uint64_t)labels[i] | (uint64_t)is << 32);
    lanes_str(&r, ids + (size_t)i * SCORE_ID_LEN, SCORE_ID_LEN);
    lanes_bytes(&r, masks + (size_t)i * px, px);
    lanes_bytes(&r, scores + (size_t)i * px, px * sizeof(float));
    h->a ^= fmix64(r.a ^ r.b);
    h->b ^= fmix64(r.b + rotl64(r.a, 17));
  }
}

int score_maps_write_id(hid_t file, MPI_Comm comm, const score_maps_hash *h, const score_maps_info *m, char *id,
                        size_t cap, cmds_error *err) {
  uint64_t x[2] = {h->a, h->b}, all[2];
  MPI_CHECK(MPI_Allreduce(x, all, 2, MPI_UINT64_T, MPI_BXOR, comm));
  score_maps_hash f = {all[0], all[1]};
  lanes_word(&f, (uint64_t)m->n);
  lanes_word(&f, (uint64_t)m->size);
  lanes_str(&f, m->dataset, sizeof m->dataset);
  lanes_str(&f, m->category, sizeof m->category);
  uint64_t a = fmix64(f.a ^ f.b), b = fmix64(f.b + rotl64(f.a, 17));
  snprintf(id, cap, "hash128:%016llx%016llx", (unsigned long long)a, (unsigned long long)b);
  if (cmds_h5_attr_write_str(file, "maps_id", id))
    return CMDS_FAIL(err, CMDS_EIO, "maps file: cannot write the maps_id attribute");
  return CMDS_OK;
}

int score_maps_up_to_date(const char *path, const score_maps_info *want, int *other_setting, char *id) {
  *other_setting = 0;
  id[0] = 0;
  if (!cmds_is_file(path)) return 0;
  hid_t t;
  cmds_error e;
  if (cmds_h5_open_read(&t, path, MPI_COMM_SELF, SCORE_MAPS_SCHEMA, SCORE_MAPS_VERSION, &e)) return 0;
  char key[sizeof want->score_key], ident[sizeof want->streams_identity];
  int ok = !cmds_h5_attr_read_str(t, "score_key", key, sizeof key, path, &e) &&
           !cmds_h5_attr_read_str(t, "streams_identity", ident, sizeof ident, path, &e);
  if (ok && H5Aexists(t, "maps_id") > 0 && cmds_h5_attr_read_str(t, "maps_id", id, SCORE_MAPS_ID_LEN, path, &e)) id[0] = 0;
  H5Fclose(t);
  if (!ok) return 0;
  if (strcmp(key, want->score_key)) {
    *other_setting = 1;
    return 0;
  }
  return !strcmp(ident, want->streams_identity);
}
