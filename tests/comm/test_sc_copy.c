/* test_sc_copy: cmds_h5_copy_compact (comm/h5io.h), the work copies of augment and
 * estimate. On a copy of a sample cache with an augmented group, its normals_est and extra
 * root attributes (a variable-length string, an int array):
 *   - the copy holds every object and attribute but the skipped ones: the datasets' values,
 *     chunking and zstd filter, the attributes' values (fixed and variable-length strings,
 *     arrays), nested skips ("augmented/normals_est", "augmented@normals_est_augmented_id")
 *     leave the rest of their group;
 *   - replacing the augmented group 4 times through such copies keeps the file size (within
 *     1 %), where the same through byte copies grows by more than 1 % (HDF5 reuses part of a
 *     deleted group's space within one session, never all of it);
 *   - a missing source is an error naming it and leaves no destination.
 *   test_sc_copy SRC.h5 WORK_DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "cmds_mpi.h"
#include "fsutil.h"
#include "h5io.h"
#include "sample_cache.h"

static long long file_size(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 ? (long long)st.st_size : -1;
}

/* n augmented rows of side S keyed by salt (rgb a pattern, the rest as the schema says). */
static void make_rows(cmds_sample_batch *b, int64_t n, int S, int salt) {
  cmds_sample_batch_alloc(b, n, S);
  size_t px = (size_t)S * (size_t)S;
  for (int64_t i = 0; i < n; i++) {
    uint32_t x = 2463534242u + (uint32_t)(i * 977 + salt * 7919); /* xorshift: incompressible pixels */
    for (size_t p = 0; p < px * 3; p++) {
      x ^= x << 13, x ^= x >> 17, x ^= x << 5;
      b->rgb[(size_t)i * px * 3 + p] = (uint8_t)(x & 255);
    }
    snprintf(b->defect_type + (size_t)i * CMDS_SC_DEFECT_LEN, CMDS_SC_DEFECT_LEN, "augmented");
    snprintf(b->sample_id + (size_t)i * CMDS_SC_ID_LEN, CMDS_SC_ID_LEN, "augmented/k1/train/good/000/%lld", (long long)i);
  }
}

/* Replaces the augmented group of `path` (n rows, salt) through a work copy made by `compact`
 * or a byte copy, as cmds-augment publishes. */
static void replace_group(const char *path, const char *work, int compact, int64_t n, int S, int salt) {
  cmds_error err = {0};
  static const char *const skip[] = {"augmented", "@augmented_id"};
  int rc = compact ? cmds_h5_copy_compact(path, work, skip, 2, &err) : cmds_copy_file_atomic(path, work, &err);
  CHECK(rc == 0, "copy: %s", err.msg);
  hid_t f;
  CHECK(cmds_sc_open_rw(&f, work, MPI_COMM_SELF, &err) == 0, "open: %s", err.msg);
  cmds_sample_batch b;
  make_rows(&b, n, S, salt);
  char id[64];
  snprintf(id, sizeof id, "test salt %d", salt);
  CHECK(cmds_sc_aug_write(f, work, n, S, &b, id, 3, &err) == 0, "aug write: %s", err.msg);
  cmds_sample_batch_free(&b);
  H5Fclose(f);
  CHECK(rename(work, path) == 0, "rename %s", work);
}

/* A root attribute's value as text: fixed or variable-length string, or an int64 array. */
static void attr_text(hid_t file, const char *name, char *out, size_t cap) {
  out[0] = 0;
  hid_t a = H5Aopen(file, name, H5P_DEFAULT);
  if (a < 0) return;
  hid_t t = H5Aget_type(a);
  if (H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) > 0) {
    char *s = NULL;
    hid_t m = H5Tcopy(t); /* variable-length, the stored character set */
    herr_t r = H5Aread(a, m, &s);
    if (r >= 0 && s) snprintf(out, cap, "vlen:%s", s);
    else snprintf(out, cap, "(unreadable)");
    free(s);
    H5Tclose(m);
  } else if (H5Tget_class(t) == H5T_STRING) {
    size_t n = H5Tget_size(t);
    char *s = calloc(n + 1, 1);
    if (H5Aread(a, t, s) >= 0) snprintf(out, cap, "str:%s", s);
    free(s);
  } else {
    hid_t sp = H5Aget_space(a);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    long long v[16] = {0};
    if (n > 0 && n <= 16 && H5Aread(a, H5T_NATIVE_LLONG, v) >= 0) {
      size_t u = (size_t)snprintf(out, cap, "i64:");
      for (hssize_t i = 0; i < n && u < cap; i++) u += (size_t)snprintf(out + u, cap - u, "%lld,", v[i]);
    }
    H5Sclose(sp);
  }
  H5Tclose(t);
  H5Aclose(a);
}

static herr_t collect_name(hid_t loc, const char *name, const H5A_info_t *info, void *op) {
  (void)loc;
  (void)info;
  char *list = op;
  strcat(list, name);
  strcat(list, ";");
  return 0;
}

int main(int argc, char **argv) {
  cmds_mpi mpi;
  cmds_mpi_init(&argc, &argv, &mpi);
  cmds_h5_quiet();
  if (argc < 3) {
    fprintf(stderr, "usage: test_sc_copy SRC.h5 WORK_DIR\n");
    return cmds_mpi_finalize(&mpi, 2);
  }
  char a[4200], work[4300], b[4300], c[4300];
  cmds_error err = {0};
  CHECK(cmds_mkdir_p(argv[2], &err) == 0, "%s", err.msg);
  snprintf(a, sizeof a, "%s/a.h5", argv[2]);
  snprintf(work, sizeof work, "%s/a.h5.work", argv[2]);
  snprintf(b, sizeof b, "%s/b.h5", argv[2]);
  snprintf(c, sizeof c, "%s/c.h5", argv[2]);
  CHECK(cmds_copy_file_atomic(argv[1], a, &err) == 0, "%s", err.msg);
  hid_t f;
  CHECK(cmds_sc_open_rw(&f, a, MPI_COMM_SELF, &err) == 0, "%s", err.msg);
  hsize_t dims[8];
  CHECK(cmds_h5_dataset_shape(f, "support/rgb", dims, 8) == 4, "support/rgb");
  const int S = (int)dims[1];
  H5Fclose(f);
  const int64_t N = 6;
  replace_group(a, work, 0, N, S, 1);
  /* the augmented rows' normals_est and extra root attributes */
  CHECK(cmds_sc_open_rw(&f, a, MPI_COMM_SELF, &err) == 0, "%s", err.msg);
  CHECK(cmds_sc_est_aug_prepare(f, a, 3, &err) == 0, "%s", err.msg);
  {
    hid_t m = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    H5Tset_size(m, H5T_VARIABLE);
    const char *v = "a variable-length string";
    hid_t at = H5Acreate2(f, "extra_vlen", m, sp, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(at >= 0 && H5Awrite(at, m, &v) >= 0, "vlen attribute");
    H5Aclose(at);
    H5Sclose(sp);
    H5Tclose(m);
    hsize_t three = 3;
    long long arr[3] = {4, -5, 6};
    sp = H5Screate_simple(1, &three, NULL);
    at = H5Acreate2(f, "extra_array", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(at >= 0 && H5Awrite(at, H5T_NATIVE_LLONG, arr) >= 0, "array attribute");
    H5Aclose(at);
    H5Sclose(sp);
  }
  H5Fclose(f);

  /* everything but the augmented normals_est and their attribute */
  static const char *const skip[] = {"augmented/normals_est", "augmented/normals_est_done",
                                     "augmented@normals_est_augmented_id"};
  CHECK(cmds_h5_copy_compact(a, b, skip, 3, &err) == 0, "copy: %s", err.msg);
  hid_t fa, fb;
  CHECK(cmds_h5_open_read(&fa, a, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, &err) == 0, "%s", err.msg);
  CHECK(cmds_h5_open_read(&fb, b, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, &err) == 0, "%s", err.msg);
  char la[4096] = "", lb[4096] = "";
  hsize_t idx = 0;
  H5Aiterate2(fa, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_name, la);
  idx = 0;
  H5Aiterate2(fb, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_name, lb);
  CHECK(!strcmp(la, lb) && strstr(la, "extra_vlen;") && strstr(la, "augmented_id;"), "root attributes: %s vs %s", la, lb);
  for (char *p = la, *semi; (semi = strchr(p, ';')); p = semi + 1) {
    *semi = 0;
    char va[1024], vb[1024];
    attr_text(fa, p, va, sizeof va);
    attr_text(fb, p, vb, sizeof vb);
    CHECK(va[0] && !strcmp(va, vb), "attribute %s: '%s' vs '%s'", p, va, vb);
  }
  for (int g = 0; g < 3; g++) {
    cmds_sc_group ga, gb;
    const char *name = cmds_sc_group_name(g);
    CHECK(cmds_sc_group_open(fa, name, a, &ga, &err) == 0 && cmds_sc_group_open(fb, name, b, &gb, &err) == 0, "%s: %s", name,
          err.msg);
    CHECK(ga.n == gb.n && ga.size == gb.size, "%s: %lld vs %lld rows", name, (long long)ga.n, (long long)gb.n);
    cmds_sample_batch ra, rb;
    cmds_sample_batch_alloc(&ra, ga.n, ga.size);
    cmds_sample_batch_alloc(&rb, ga.n, ga.size);
    CHECK(cmds_sc_group_read(&ga, 0, ga.n, &ra, &err) == 0 && cmds_sc_group_read(&gb, 0, gb.n, &rb, &err) == 0, "%s", err.msg);
    size_t px = (size_t)ga.size * (size_t)ga.size * (size_t)ga.n;
    CHECK(!memcmp(ra.rgb, rb.rgb, px * 3) && !memcmp(ra.xyz, rb.xyz, px * 3 * sizeof(float)) &&
              !memcmp(ra.sample_id, rb.sample_id, (size_t)ga.n * CMDS_SC_ID_LEN) && !memcmp(ra.fg_mask, rb.fg_mask, px),
          "%s: values differ in the copy", name);
    /* layout, chunking and filters kept (the augmented group's: one row per chunk, zstd) */
    for (int k = 0; k < 2; k++) {
      hid_t pa = H5Dget_create_plist(ga.dset[k]), pb = H5Dget_create_plist(gb.dset[k]);
      hsize_t ca[4] = {0}, cb[4] = {0};
      int la_ = H5Pget_layout(pa), lb_ = H5Pget_layout(pb);
      if (la_ == H5D_CHUNKED) H5Pget_chunk(pa, 4, ca);
      if (lb_ == H5D_CHUNKED) H5Pget_chunk(pb, 4, cb);
      CHECK(la_ == lb_ && !memcmp(ca, cb, sizeof ca) && H5Pget_nfilters(pa) == H5Pget_nfilters(pb),
            "%s dataset %d: layout %d/%d, chunk %llu/%llu, filters %d/%d", name, k, la_, lb_, (unsigned long long)ca[0],
            (unsigned long long)cb[0], H5Pget_nfilters(pa), H5Pget_nfilters(pb));
      if (g == CMDS_SC_AUGMENTED && k == 0) {
        unsigned flags = 0, cd[4];
        size_t ncd = 4;
        CHECK(lb_ == H5D_CHUNKED && cb[0] == 1 && H5Pget_filter_by_id2(pb, 32015, &flags, &ncd, cd, 0, NULL, NULL) >= 0,
              "augmented/rgb: one row per chunk, zstd");
      }
      H5Pclose(pa);
      H5Pclose(pb);
    }
    cmds_sample_batch_free(&ra);
    cmds_sample_batch_free(&rb);
    cmds_sc_group_close(&ga);
    cmds_sc_group_close(&gb);
  }
  cmds_sc_aug_est_state st;
  CHECK(cmds_sc_est_aug_state(fa, a, &st, &err) == 0 && st == CMDS_SC_AUG_EST_PARTIAL, "source: augmented normals_est %d", (int)st);
  CHECK(cmds_sc_est_aug_state(fb, b, &st, &err) == 0 && st == CMDS_SC_AUG_EST_ABSENT, "copy: augmented normals_est %d", (int)st);
  hid_t grp = H5Gopen2(fb, "augmented", H5P_DEFAULT);
  CHECK(grp >= 0 && H5Aexists(grp, "normals_est_augmented_id") == 0, "copy: the skipped group attribute is gone");
  H5Gclose(grp);
  H5Fclose(fa);
  H5Fclose(fb);

  /* replacing the group: compact copies keep the size, byte copies grow */
  CHECK(cmds_copy_file_atomic(a, c, &err) == 0, "%s", err.msg);
  long long first_compact = -1, first_bytes = -1, last_compact = 0, last_bytes = 0;
  for (int i = 2; i <= 5; i++) {
    replace_group(a, work, 1, N, S, i);
    replace_group(c, work, 0, N, S, i);
    last_compact = file_size(a);
    last_bytes = file_size(c);
    if (first_compact < 0) first_compact = last_compact, first_bytes = last_bytes;
    printf("replacement %d: compact copies %lld bytes, byte copies %lld bytes\n", i - 1, last_compact, last_bytes);
    long long d = last_compact - first_compact;
    CHECK((d < 0 ? -d : d) * 100 <= first_compact, "compact: %lld bytes after %d replacements, %lld after the first",
          last_compact, i - 1, first_compact);
  }
  CHECK((last_bytes - first_bytes) * 100 > first_bytes,
        "byte copies should grow by more than 1 %% (else the check above could not fail): %lld -> %lld", first_bytes,
        last_bytes);
  {
    CHECK(cmds_h5_open_read(&fa, a, MPI_COMM_SELF, CMDS_SAMPLE_CACHE_SCHEMA, CMDS_SAMPLE_CACHE_VERSION, &err) == 0, "%s", err.msg);
    int64_t n = 0;
    char id[64];
    CHECK(cmds_sc_aug_status(fa, a, &n, id, sizeof id, &err) == 0 && n == N && !strcmp(id, "test salt 5"), "final group: %lld %s",
          (long long)n, id);
    H5Fclose(fa);
  }

  /* a missing source */
  char missing[4300], out[4300];
  snprintf(missing, sizeof missing, "%s/none.h5", argv[2]);
  snprintf(out, sizeof out, "%s/out.h5", argv[2]);
  memset(&err, 0, sizeof err);
  CHECK(cmds_h5_copy_compact(missing, out, NULL, 0, &err) == CMDS_EIO && strstr(err.msg, missing), "missing source: %s",
        err.msg);
  CHECK(!cmds_is_file(out), "no destination after a failed copy");
  int rc = CHECK_DONE();
  return cmds_mpi_finalize(&mpi, rc);
}
