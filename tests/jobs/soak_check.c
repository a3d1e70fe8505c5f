/* soak_check: is a final output of the pipeline complete and readable, and what does it hold?
 * The kill-and-resume soak (test_soak.sh) runs it on every final file after each kill and
 * compares its output between the reference run and the resumed one.
 *   soak_check FILE...
 * Per file, by its name:
 *   *.h5           opened read-only with our zstd filter; the root attribute `cmds_schema`
 *                  must exist; every dataset is read in full in its stored type (so a cut
 *                  chunk or a missing one fails); every `done` / `*_done` flag must be set
 *                  (a final file holds only finished rows). Prints one line per attribute
 *                  (`@name <fnv64 of its bytes>`, string values shown) and per dataset
 *                  (`/path <dims> <fnv64 of its bytes>`), sorted as HDF5 visits them
 *                  (by name), so two files holding the same bytes print the same lines.
 *   *.safetensors  the whole header validated (comm/safetensors.h); prints each tensor's
 *                  name, dtype, shape and the fnv64 of its bytes.
 *   *.json         parsed (comm/jsonread.h); prints `json ok`.
 * Exit status 0 when every file passed; 1 and a line `FILE: what is wrong` otherwise. */
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds_error.h"
#include "h5zstd.h"
#include "hash.h"
#include "jsonread.h"
#include "safetensors.h"

static uint64_t fnv(const void *p, size_t n) { return cmds_fnv64(CMDS_FNV64_INIT, p, n); }

typedef struct {
  const char *path;
  FILE *out;
  int bad;
  char why[512];
} visit_ctx;

static void fail(visit_ctx *c, const char *fmt, const char *a) {
  if (!c->bad) snprintf(c->why, sizeof c->why, fmt, a);
  c->bad = 1;
}

static int is_done_name(const char *name) {
  const char *s = strrchr(name, '/');
  s = s ? s + 1 : name;
  size_t n = strlen(s);
  return !strcmp(s, "done") || (n > 5 && !strcmp(s + n - 5, "_done"));
}

static herr_t on_attr(hid_t loc, const char *name, const H5A_info_t *info, void *data) {
  (void)info;
  visit_ctx *c = data;
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  hid_t t = a >= 0 ? H5Aget_type(a) : -1;
  hid_t s = a >= 0 ? H5Aget_space(a) : -1;
  if (a < 0 || t < 0 || s < 0 || H5Tis_variable_str(t) > 0) {
    fail(c, "attribute %s cannot be read (or is a variable-length string)", name);
  } else {
    hssize_t n = H5Sget_simple_extent_npoints(s);
    size_t bytes = (size_t)(n > 0 ? n : 1) * H5Tget_size(t);
    char *buf = calloc(bytes + 1, 1);
    if (!buf || H5Aread(a, t, buf) < 0) {
      fail(c, "attribute %s cannot be read", name);
    } else if (H5Tget_class(t) == H5T_STRING && n == 1) {
      fprintf(c->out, "@%s = %s\n", name, buf);
    } else {
      fprintf(c->out, "@%s %016llx\n", name, (unsigned long long)fnv(buf, bytes));
    }
    free(buf);
  }
  if (s >= 0) H5Sclose(s);
  if (t >= 0) H5Tclose(t);
  if (a >= 0) H5Aclose(a);
  return 0;
}

static herr_t on_object(hid_t root, const char *name, const H5O_info_t *info, void *data) {
  visit_ctx *c = data;
  if (info->type == H5O_TYPE_GROUP) {
    hid_t g = H5Gopen2(root, name, H5P_DEFAULT);
    if (g < 0) {
      fail(c, "group %s cannot be opened", name);
      return 0;
    }
    if (strcmp(name, ".") != 0) fprintf(c->out, "group /%s\n", name);
    H5Aiterate2(g, H5_INDEX_NAME, H5_ITER_INC, NULL, on_attr, c);
    H5Gclose(g);
    return 0;
  }
  if (info->type != H5O_TYPE_DATASET) return 0;
  hid_t d = H5Dopen2(root, name, H5P_DEFAULT);
  hid_t t = d >= 0 ? H5Dget_type(d) : -1;
  hid_t s = d >= 0 ? H5Dget_space(d) : -1;
  if (d < 0 || t < 0 || s < 0 || H5Tis_variable_str(t) > 0 || H5Tget_class(t) == H5T_VLEN) {
    fail(c, "dataset /%s cannot be opened (or holds variable-length data)", name);
  } else {
    hsize_t dims[H5S_MAX_RANK];
    int rank = H5Sget_simple_extent_dims(s, dims, NULL);
    hssize_t n = H5Sget_simple_extent_npoints(s);
    size_t esize = H5Tget_size(t);
    size_t bytes = (size_t)(n > 0 ? n : 0) * esize;
    unsigned char *buf = malloc(bytes ? bytes : 1);
    if (!buf || (bytes && H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)) {
      fail(c, "dataset /%s cannot be read in full (a cut or missing chunk)", name);
    } else {
      if (is_done_name(name))
        for (size_t i = 0; i < bytes; i++)
          if (!buf[i]) {
            fail(c, "dataset /%s: a row is not done in a final file", name);
            break;
          }
      fprintf(c->out, "/%s (", name);
      for (int i = 0; i < rank; i++) fprintf(c->out, "%s%llu", i ? "," : "", (unsigned long long)dims[i]);
      fprintf(c->out, ") %zu %016llx\n", esize, (unsigned long long)fnv(buf, bytes));
    }
    free(buf);
  }
  if (d >= 0) H5Aiterate2(d, H5_INDEX_NAME, H5_ITER_INC, NULL, on_attr, c);
  if (s >= 0) H5Sclose(s);
  if (t >= 0) H5Tclose(t);
  if (d >= 0) H5Dclose(d);
  return 0;
}

static int check_h5(const char *path, FILE *out, char *why, size_t cap) {
  visit_ctx c = {path, out, 0, ""};
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) {
    snprintf(why, cap, "not an HDF5 file that opens (cut during a write?)");
    return 1;
  }
  if (H5Aexists(f, "cmds_schema") <= 0) fail(&c, "no root attribute %s", "cmds_schema");
#if H5_VERSION_GE(1, 12, 0)
  herr_t rc = H5Ovisit3(f, H5_INDEX_NAME, H5_ITER_INC, on_object, &c, H5O_INFO_BASIC);
#else
  herr_t rc = H5Ovisit2(f, H5_INDEX_NAME, H5_ITER_INC, on_object, &c, H5O_INFO_BASIC);
#endif
  if (rc < 0) fail(&c, "walking the file failed%s", "");
  H5Fclose(f);
  if (c.bad) snprintf(why, cap, "%s", c.why);
  return c.bad;
}

static const char *dtype_name(cmds_st_dtype d) {
  static const char *names[] = {"BOOL", "U8", "I8", "F8_E4M3", "F8_E5M2", "I16", "U16", "F16",
                                "BF16", "I32", "U32", "F32", "I64", "U64", "F64"};
  return (int)d >= 0 && d < CMDS_ST_NDTYPES ? names[d] : "?";
}

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && !strcmp(s + a - b, suf);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: soak_check FILE... (*.h5, *.safetensors, *.json)\n");
    return 2;
  }
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  if (cmds_h5z_zstd_register() != 0) {
    fprintf(stderr, "soak_check: cannot register the zstd filter\n");
    return 2;
  }
  int bad = 0;
  for (int i = 1; i < argc; i++) {
    const char *p = argv[i];
    char why[1600] = "";
    int r = 0;
    printf("== %s\n", p);
    if (ends_with(p, ".h5")) {
      r = check_h5(p, stdout, why, sizeof why);
    } else if (ends_with(p, ".safetensors")) {
      cmds_st_file f;
      cmds_error err = {0, ""};
      if (cmds_st_open(&f, p, &err)) {
        r = 1;
        snprintf(why, sizeof why, "%s", err.msg);
      } else {
        for (int k = 0; k < f.n_tensors; k++) {
          const cmds_st_tensor *t = &f.tensors[k];
          printf("%s %s (", t->name, dtype_name(t->dtype));
          for (int j = 0; j < t->ndim; j++) printf("%s%lld", j ? "," : "", (long long)t->shape[j]);
          printf(") %016llx\n", (unsigned long long)fnv(t->data, (size_t)(t->end - t->begin)));
        }
        cmds_st_close(&f);
      }
    } else if (ends_with(p, ".json")) {
      cmds_jv v;
      cmds_error err = {0, ""};
      if (cmds_jv_read_file(p, &v, &err)) {
        r = 1;
        snprintf(why, sizeof why, "%s", err.msg);
      } else {
        printf("json ok\n");
        cmds_jv_free(&v);
      }
    } else {
      r = 1;
      snprintf(why, sizeof why, "not a kind soak_check knows (*.h5, *.safetensors, *.json)");
    }
    if (r) {
      fprintf(stderr, "%s: %s\n", p, why);
      bad = 1;
    }
  }
  return bad;
}
