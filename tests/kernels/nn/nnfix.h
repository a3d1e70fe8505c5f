/* nnfix: loads the nn fixture cases written by tests/fixtures/gen_nn*.py
 * (<dir>/<case>__<array>.npy) as CPU f32 tensors, and compares tensors with a stated
 * tolerance. Shared by the nn unit tests (CPU path), with their harness: the context and
 * output arena, NaN-filled outputs, expected success / refusal, and main's setup. */
#ifndef CMDS_TESTS_NNFIX_H
#define CMDS_TESTS_NNFIX_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cmds_error.h"
#include "npy.h"
#include "tensor.h"

#define NNFIX_MAX 16
static npy_array nnfix_arrays_[NNFIX_MAX];
static int nnfix_count_ = 0;
static const char *nnfix_dir_ = ".";

/* Loads <dir>/<case>__<name>.npy (f4 expected, or f8 for scalars); exits on failure. */
static nn_tensor nnfix_load(const char *case_name, const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s__%s.npy", nnfix_dir_, case_name, name);
  if (nnfix_count_ == NNFIX_MAX) {
    fprintf(stderr, "nnfix: too many arrays open\n");
    exit(1);
  }
  npy_array *a = &nnfix_arrays_[nnfix_count_++];
  if (npy_load(path, a) != 0 || strcmp(a->dtype, "f4") != 0 || a->ndim > NN_MAX_DIMS) {
    fprintf(stderr, "nnfix: %s: cannot load as a float32 array of <= 4 dims\n", path);
    exit(1);
  }
  nn_tensor t = {NN_F32, NN_CPU, a->ndim, {0, 0, 0, 0}, a->data};
  for (int i = 0; i < a->ndim; i++) t.shape[i] = a->shape[i];
  if (a->ndim == 0) { t.ndim = 1; t.shape[0] = 1; }
  return t;
}

/* A scalar parameter stored as a 1-element float64 array. */
static double nnfix_scalar(const char *case_name, const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s__%s.npy", nnfix_dir_, case_name, name);
  npy_array a;
  if (npy_load(path, &a) != 0 || a.count != 1) {
    fprintf(stderr, "nnfix: %s: cannot load a scalar\n", path);
    exit(1);
  }
  double v = npy_get(&a, 0);
  npy_free(&a);
  return v;
}

static void nnfix_release(void) {
  for (int i = 0; i < nnfix_count_; i++) npy_free(&nnfix_arrays_[i]);
  nnfix_count_ = 0;
}

/* Element-wise |got - want| <= rtol * (|want| + rms(want)): relative, with a floor of the
 * same relative size of the array's typical magnitude for values near zero. One CHECK
 * per call; prints the worst element. Returns the max error relative to rms. */
static double nnfix_compare(const char *what, const float *got, const float *want, int64_t n, double rtol) {
  double ss = 0;
  for (int64_t i = 0; i < n; i++) ss += (double)want[i] * want[i];
  double rms = n ? sqrt(ss / (double)n) : 0, worst = 0;
  int64_t bad = 0, wi = 0;
  for (int64_t i = 0; i < n; i++) {
    double e = fabs((double)got[i] - want[i]), lim = rtol * (fabs(want[i]) + rms);
    if (!(e <= lim)) bad++;
    if (!(e / (fabs(want[i]) + rms + 1e-30) <= worst)) {
      worst = e / (fabs(want[i]) + rms + 1e-30);
      wi = i;
    }
  }
  CHECK(bad == 0, "%s: %lld of %lld values off by more than %.1e relative; worst [%lld] got %.9g want %.9g",
        what, (long long)bad, (long long)n, rtol, (long long)wi, n ? got[wi] : 0.0, n ? want[wi] : 0.0);
  return worst;
}

/* --- the CPU op tests' harness (static inline: not every test uses every helper) --- */
static nn_ctx nnfix_ctx;      /* the ops' context (CPU, fp32) */
static nn_arena nnfix_out;    /* outputs, reset per case */
static nn_arena nnfix_scratch_;

/* An output tensor filled with v (exits on failure). */
static inline nn_tensor nnfix_out_fill(int ndim, const int64_t *shape, float v) {
  cmds_error err = {0};
  nn_tensor t;
  if (nn_tensor_alloc(&t, &nnfix_out, NN_F32, ndim, shape, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    exit(1);
  }
  float *p = t.data;
  for (int64_t i = 0; i < nn_tensor_numel(&t); i++) p[i] = v;
  return t;
}

/* An output tensor of NaN: a value the op does not write fails the comparison. */
static inline nn_tensor nnfix_out_like(int ndim, const int64_t *shape) { return nnfix_out_fill(ndim, shape, NAN); }

static inline void nnfix_expect_ok(int rc, const cmds_error *err, const char *what) {
  CHECK(rc == 0, "%s failed: %s", what, err->msg);
}

/* The call is refused as bad input with a message containing needle. */
static inline void nnfix_expect_fail(int rc, const cmds_error *err, const char *needle, const char *what) {
  CHECK(rc == CMDS_EINPUT && strstr(err->msg, needle), "%s: rc %d, message '%s' (expected to contain '%s')", what,
        rc, err->msg, needle);
}

/* End of a case: the fixture arrays released, the outputs dropped. */
static inline void nnfix_done_case(void) {
  nnfix_release();
  nn_arena_reset(&nnfix_out);
}

/* main's setup for `PROG FIXTURE_DIR`: the fixture folder, the tuning knobs at their defaults
 * (CMDS_NN_CONV_BAND_FLOATS unset: tests set it where they mean to), a CPU context with
 * scratch_bytes of scratch, 16 MiB of outputs. Returns -1 to go on, else the exit code. */
static inline int nnfix_setup(int argc, char **argv, size_t scratch_bytes) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s FIXTURE_DIR\n", argv[0]);
    return 2;
  }
  nnfix_dir_ = argv[1];
  unsetenv("CMDS_NN_CONV_BAND_FLOATS");
  cmds_error err = {0};
  if (nn_arena_init(&nnfix_scratch_, NN_CPU, scratch_bytes, &err) || nn_arena_init(&nnfix_out, NN_CPU, 16 << 20, &err) ||
      nn_ctx_init(&nnfix_ctx, NN_CPU, &nnfix_scratch_, NULL, 0, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  return -1;
}

static inline void nnfix_teardown(void) {
  nn_ctx_free(&nnfix_ctx);
  nn_arena_free(&nnfix_scratch_);
  nn_arena_free(&nnfix_out);
}

#endif
