/* difftest: what the diffusion tests and benchmarks in tests/diffusion share: the command line
 * `PROG FIXTURE_DIR [--cuda]` with its GPU skip (exit 77), fixture loading, NaN poisoning of
 * outputs and the error measures the tests state their tolerances in; for the benchmarks a
 * clock, a median, peak RSS, the device argument and the seeded random input. */
#ifndef CMDS_TESTS_DIFFTEST_H
#define CMDS_TESTS_DIFFTEST_H

#include <stddef.h>
#include <stdint.h>

#include "npy.h"
#include "nn/tensor.h"

/* Parses `PROG FIXTURE_DIR [--cuda]`: *dir = FIXTURE_DIR, *cuda = 1 with --cuda, and then the
 * GPU is selected (nn_cuda_select(0)) before anything is loaded. Returns -1 to go on, or the
 * exit code: 2 (usage, printed) or 77 (--cuda without a GPU: "no GPU: skipped"). */
int difftest_args(int argc, char **argv, const char **dir, int *cuda);

/* npy_load of DIR/NAME (NAME may hold subfolders); 0 or -1 (npy_load says why). */
int difftest_load(const char *dir, const char *name, npy_array *a);

/* NaN in every value before a run: a value the run does not write fails the checks. */
void difftest_poison(float *y, int64_t n);

/* An f4 npy_array over n floats the caller owns (not freed by npy_free's caller: do not). */
npy_array difftest_f32_array(float *data, int64_t n);

/* max |got - want| over n values; *where = its index. NaN stays the worst (INFINITY). */
double difftest_max_abs(const float *got, const npy_array *want, int64_t n, int64_t *where);

/* difftest_max_abs / max |want| (divided by 1 when want is all zero). */
double difftest_rel_err(const float *got, const npy_array *want, int64_t n, int64_t *where);

/* --- benchmarks --- */

/* Wall seconds (monotonic). */
double difftest_now(void);
/* CPU seconds of the process, all threads (on a shared machine: the work without the waits). */
double difftest_cpu_now(void);
/* Peak resident memory of the process, GiB. */
double difftest_rss_gib(void);
/* Sorts n seconds ascending (the median is v[n / 2]). */
void difftest_sort(double *v, size_t n);
/* A benchmark's device argument: "cuda" -> NN_CUDA, selecting GPU 0; anything else NN_CPU.
 * Returns 0, or 77 when cuda is asked for and there is no GPU ("no GPU: skipped" printed). */
int difftest_bench_device(const char *arg, nn_device *dev);
/* The benchmarks' seeded input: the next 16-bit value of a linear congruential sequence
 * (s = s * 1103515245 + 12345, bits 8..23), 0 .. 65535. Start with *s = 1. */
unsigned difftest_lcg_u16(unsigned *s);

#endif
