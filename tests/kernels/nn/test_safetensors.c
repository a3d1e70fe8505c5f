/* test_safetensors: the safetensors reader (comm/safetensors.h) on files the Python
 * `safetensors` package wrote (tests/fixtures/gen_nn.py: several dtypes, a scalar, an
 * empty tensor, metadata), the name-table check, and corrupted files made here (truncated,
 * header length past the end, invalid JSON, overlapping offsets, shape/size mismatch,
 * unknown dtype, ...): each must give CMDS_EINPUT with the file name and the reason.
 *   test_safetensors <tests/fixtures/nn> */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "npy.h"
#include "safetensors.h"
#include "tensor.h"

static char tmpdir[256];

static void write_bytes(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(p, 1, n, f) != n) {
    perror(path);
    exit(1);
  }
  fclose(f);
}

/* <tmpdir>/<name>: 8-byte little-endian length of `header`, header, data_bytes bytes. */
static const char *make_file(const char *name, const char *header, size_t data_bytes) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  size_t n = strlen(header), total = 8 + n + data_bytes;
  unsigned char *b = calloc(total, 1);
  for (int k = 0; k < 8; k++) b[k] = (unsigned char)((uint64_t)n >> (8 * k));
  memcpy(b + 8, header, n);
  write_bytes(path, b, total);
  free(b);
  return path;
}

static void expect_reject(const char *path, const char *reason) {
  cmds_st_file f;
  cmds_error err = {0};
  int rc = cmds_st_open(&f, path, &err);
  CHECK(rc == CMDS_EINPUT && strstr(err.msg, path) && strstr(err.msg, reason),
        "%s: want EINPUT with '%s', got rc %d: %s", path, reason, rc, err.msg);
  CHECK(f.map == NULL && f.tensors == NULL, "%s: state left after a failed open", path);
}

static void test_valid(const char *dir) {
  char path[512];
  cmds_error err = {0};
  cmds_st_file f;
  snprintf(path, sizeof path, "%s/valid.safetensors", dir);
  int rc = cmds_st_open(&f, path, &err);
  CHECK(rc == 0, "open %s: %s", path, err.msg);
  if (rc) return;
  CHECK(f.n_tensors == 7, "7 tensors expected, %d", f.n_tensors);
  CHECK(cmds_st_meta(&f, "format") && !strcmp(cmds_st_meta(&f, "format"), "pt"), "metadata format");
  CHECK(cmds_st_meta(&f, "note") && !strcmp(cmds_st_meta(&f, "note"), "cmds test"), "metadata note");
  for (int i = 1; i < f.n_tensors; i++) CHECK(f.tensors[i].begin >= f.tensors[i - 1].end, "sorted by offset");

  npy_array qkv, half, brain;
  snprintf(path, sizeof path, "%s/st_valid__qkv.npy", dir);
  CHECK(npy_load(path, &qkv) == 0, "load %s", path);
  snprintf(path, sizeof path, "%s/st_valid__half.npy", dir);
  CHECK(npy_load(path, &half) == 0, "load %s", path);
  snprintf(path, sizeof path, "%s/st_valid__brain.npy", dir);
  CHECK(npy_load(path, &brain) == 0, "load %s", path);

  const cmds_st_tensor *t;
  int64_t s34[2] = {3, 4}, s5[1] = {5}, s4[1] = {4}, s22[2] = {2, 2}, s7[1] = {7}, s03[2] = {0, 3};
  CHECK(cmds_st_get(&f, "blocks.0.attn.qkv.weight", CMDS_ST_F32, 2, s34, &t, &err) == 0, "%s", err.msg);
  CHECK(t && memcmp(t->data, qkv.data, 48) == 0, "F32 bytes differ from numpy");
  CHECK(cmds_st_get(&f, "half", CMDS_ST_F16, 1, s5, &t, &err) == 0, "%s", err.msg);
  for (int i = 0; t && i < 5; i++) {
    uint16_t h;
    memcpy(&h, (const char *)t->data + 2 * i, 2);
    CHECK(nn_f16_to_f32(h) == ((float *)half.data)[i], "F16 value %d", i);
  }
  CHECK(cmds_st_get(&f, "brain", CMDS_ST_BF16, 1, s4, &t, &err) == 0, "%s", err.msg);
  for (int i = 0; t && i < 4; i++) {
    uint16_t h;
    memcpy(&h, (const char *)t->data + 2 * i, 2);
    CHECK(nn_bf16_to_f32(h) == ((float *)brain.data)[i], "BF16 value %d", i);
  }
  CHECK(cmds_st_get(&f, "ids", CMDS_ST_I64, 2, s22, &t, &err) == 0, "%s", err.msg);
  if (t) {
    int64_t v[4];
    memcpy(v, t->data, 32);
    CHECK(v[0] == 1 && v[1] == -2 && v[2] == 3 && v[3] == ((int64_t)1 << 40), "I64 values");
  }
  CHECK(cmds_st_get(&f, "bytes", CMDS_ST_U8, 1, s7, &t, &err) == 0 && ((const uint8_t *)t->data)[6] == 6, "U8");
  CHECK(cmds_st_get(&f, "scalar", CMDS_ST_F64, 0, NULL, &t, &err) == 0 && *(const double *)t->data == 2.5,
        "F64 scalar: %s", err.msg);
  CHECK(cmds_st_get(&f, "empty", CMDS_ST_F32, 2, s03, &t, &err) == 0 && t->end == t->begin, "empty tensor");

  /* wrong dtype / shape / name through cmds_st_get */
  rc = cmds_st_get(&f, "half", CMDS_ST_F32, 1, s5, &t, &err);
  CHECK(rc == CMDS_EINPUT && strstr(err.msg, "'half' is F16, F32 expected"), "dtype: %s", err.msg);
  rc = cmds_st_get(&f, "ids", CMDS_ST_I64, 1, s4, &t, &err);
  CHECK(rc == CMDS_EINPUT && strstr(err.msg, "'ids' has shape (2, 2), (4) expected"), "shape: %s", err.msg);
  rc = cmds_st_get(&f, "nope", CMDS_ST_I64, 1, s4, &t, &err);
  CHECK(rc == CMDS_EINPUT && strstr(err.msg, "no tensor 'nope'"), "missing: %s", err.msg);

  /* name table: every problem in one message */
  cmds_st_expect table[] = {
    {"blocks.0.attn.qkv.weight", 2, {3, 4}}, {"half", 1, {5}}, {"bytes", -1, {0}},
    {"blocks.0.attn.proj.weight", 2, {4, 4}}, {"ids", 2, {2, 3}}, {"norm.bias", 1, {4}},
  };
  CHECK(cmds_st_check_names(&f, table, 3, &err) == 0, "good table: %s", err.msg);
  rc = cmds_st_check_names(&f, table, 6, &err);
  CHECK(rc == CMDS_EINPUT && strstr(err.msg, "2 of 6 expected tensors missing, 1 with a wrong shape") &&
            strstr(err.msg, "missing 'blocks.0.attn.proj.weight'") && strstr(err.msg, "missing 'norm.bias'") &&
            strstr(err.msg, "'ids' has shape (2, 2), (2, 3) expected"),
        "table: %s", err.msg);
  npy_free(&qkv);
  npy_free(&half);
  npy_free(&brain);
  cmds_st_close(&f);
}

static void test_corrupt(const char *dir) {
  char path[512];
  snprintf(path, sizeof path, "%s/tiny.safetensors", dir);
  FILE *in = fopen(path, "rb");
  unsigned char buf[4096];
  size_t n = in ? fread(buf, 1, sizeof buf, in) : 0;
  if (in) fclose(in);
  CHECK(n > 8 && n < sizeof buf, "read %s", path);
  if (n <= 8) return;

  /* the package's file itself opens */
  cmds_st_file f;
  cmds_error err = {0};
  CHECK(cmds_st_open(&f, path, &err) == 0 && f.n_tensors == 1, "tiny: %s", err.msg);
  cmds_st_close(&f);

  char p2[512];
  snprintf(p2, sizeof p2, "%s/truncated.safetensors", tmpdir);
  write_bytes(p2, buf, n - 4);
  expect_reject(p2, "end past the data area");
  snprintf(p2, sizeof p2, "%s/short.safetensors", tmpdir);
  write_bytes(p2, buf, 5);
  expect_reject(p2, "too short");
  snprintf(p2, sizeof p2, "%s/longheader.safetensors", tmpdir);
  unsigned char b2[4096];
  memcpy(b2, buf, n);
  uint64_t big = n;
  for (int k = 0; k < 8; k++) b2[k] = (unsigned char)(big >> (8 * k));
  write_bytes(p2, b2, n);
  expect_reject(p2, "runs past the end of the file");

  const char *w = "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}";
  char h[1024];
  snprintf(h, sizeof h, "{%s", w);
  expect_reject(make_file("nobrace.safetensors", h, 24), "JSON ends early");
  snprintf(h, sizeof h, "{%s,}", w);
  expect_reject(make_file("comma.safetensors", h, 24), "invalid JSON");
  expect_reject(make_file("notjson.safetensors", "hello world", 24), "the header object");
  expect_reject(make_file("overlap.safetensors",
                          "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                          "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24),
                "overlap");
  expect_reject(make_file("size.safetensors",
                          "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,24]}}", 24),
                "give 16 bytes but data_offsets [0, 24) hold 24");
  expect_reject(make_file("dtype.safetensors",
                          "{\"w\":{\"dtype\":\"F33\",\"shape\":[6],\"data_offsets\":[0,24]}}", 24),
                "unknown dtype \"F33\"");
  expect_reject(make_file("outside.safetensors",
                          "{\"w\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[8,32]}}", 24),
                "end past the data area of 24 bytes");
  expect_reject(make_file("backwards.safetensors",
                          "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,4]}}", 24),
                "run backwards");
  expect_reject(make_file("dup.safetensors",
                          "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                          "\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 8),
                "appears twice");
  expect_reject(make_file("nooffsets.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4]}}", 8),
                "lacks \"data_offsets\"");
  expect_reject(make_file("negdim.safetensors",
                          "{\"w\":{\"dtype\":\"U8\",\"shape\":[-4],\"data_offsets\":[0,4]}}", 8),
                "non-negative integer");
  expect_reject(make_file("meta.safetensors",
                          "{\"__metadata__\":{\"k\":3},\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 8),
                "__metadata__ values must be strings");

  /* space padding after the object, escapes and UTF-8 in names are fine */
  const char *pth = make_file("padded.safetensors",
                              "{\"__metadata__\":{\"who\":\"caf\\u00e9\"},"
                              "\"a\\\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}      ", 4);
  CHECK(cmds_st_open(&f, pth, &err) == 0, "padded: %s", err.msg);
  if (f.map) {
    CHECK(cmds_st_find(&f, "a\"b") != NULL, "escaped name");
    CHECK(cmds_st_meta(&f, "who") && !strcmp(cmds_st_meta(&f, "who"), "caf\xc3\xa9"), "utf-8 metadata");
    cmds_st_close(&f);
  }
  snprintf(p2, sizeof p2, "%s/absent.safetensors", tmpdir);
  CHECK(cmds_st_open(&f, p2, &err) == CMDS_EIO && strstr(err.msg, p2), "absent file: %s", err.msg);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s <tests/fixtures/nn>\n", argv[0]);
    return 2;
  }
  snprintf(tmpdir, sizeof tmpdir, "%s/cmds_st_%s", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", "XX" "XX" "XX");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  test_valid(argv[1]);
  test_corrupt(argv[1]);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  return CHECK_DONE();
}
