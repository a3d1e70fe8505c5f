/* check: the assertions our C tests use. Each CHECK counts a pass or a failure and
 * prints the failing expression with values; CHECK_DONE() prints the plain closing
 * line "N passed, N failed" and returns the exit code. Tests needing a GPU that is
 * absent return 77 (ctest SKIP_RETURN_CODE). */
#ifndef CMDS_TESTS_CHECK_H
#define CMDS_TESTS_CHECK_H

#include <math.h>
#include <stdio.h>

static int check_passed_ = 0, check_failed_ = 0;

#define CHECK(cond, ...)                                                  \
  do {                                                                    \
    if (cond) {                                                           \
      check_passed_++;                                                    \
    } else {                                                              \
      check_failed_++;                                                    \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);     \
      fprintf(stderr, __VA_ARGS__);                                       \
      fputc('\n', stderr);                                                \
    }                                                                     \
  } while (0)

/* |got - want| <= atol + rtol * |want|, NaN never passes. */
#define CHECK_CLOSE(got, want, atol, rtol, what)                                        \
  do {                                                                                  \
    double g_ = (double)(got), w_ = (double)(want);                                     \
    CHECK(fabs(g_ - w_) <= (atol) + (rtol) * fabs(w_), "%s: got %.10g want %.10g", what, \
          g_, w_);                                                                      \
  } while (0)

/* ||got - want|| / ||want|| in double (||got - want|| where want is all zeros); INFINITY when a
 * value is not finite, so NaN never passes a bound. */
static inline double check_rel_l2(const float *got, const float *want, long long n) {
  double num = 0, den = 0;
  for (long long i = 0; i < n; i++) {
    double d = (double)got[i] - want[i];
    num += d * d;
    den += (double)want[i] * want[i];
  }
  if (!isfinite(num)) return INFINITY;
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

#define CHECK_DONE()                                                           \
  (printf("%d passed, %d failed\n", check_passed_, check_failed_), fflush(stdout), \
   check_failed_ ? 1 : 0)

#endif
