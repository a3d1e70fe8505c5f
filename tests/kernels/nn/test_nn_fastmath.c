/* test_nn_fastmath: the vectorised exp, Gaussian and normal CDF of kernels/nn/nn_fastexp.h
 * against libm in double precision (exp, erfc: an independent reference for elementwise
 * functions), on dense grids, at the edges of their ranges and at special values; and the GELU,
 * GEGLU and GELU-backward ops built on them against the same double-precision formulas.
 * The bounds are the ones nn_fastexp.h promises. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "nn/activation.h"
#include "nn/backward.h"
#include "nn/nn_fastexp.h"

static double phi_ref(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }
static double rel(double got, double want) { return fabs(got - want) / fabs(want); }

static void check_exp(void) {
  double worst = 0, at = 0;
  for (double x = -87.0; x <= 88.0; x += 1.0 / 1024 + 1e-7) {
    float xf = (float)x;
    double e = rel(nn_fast_exp(xf), exp((double)xf));
    if (e > worst) worst = e, at = xf;
  }
  printf("nn_fast_exp on [-87, 88]: max relative error %.3g at %g\n", worst, at);
  CHECK(worst <= 1.2e-7 * 1.05, "nn_fast_exp: %g at %g", worst, at);
  float lo = nn_fast_exp(-1000.0f), hi = nn_fast_exp(1000.0f);
  CHECK(lo > 0 && lo < 2e-38f, "nn_fast_exp(-1000) = %g (the floor, never 0)", lo);
  CHECK(isfinite(hi) && hi > 1e38f, "nn_fast_exp(1000) = %g (the ceiling, never inf)", hi);
}

static void check_phi_gauss(void) {
  double w_pos = 0, w_mid = 0, w_gauss = 0, a_pos = 0, a_mid = 0, a_gauss = 0, excess = 0, a_excess = 0;
  for (double x = -13.0; x <= 14.0; x += 1.0 / 4096 + 1e-8) {
    float xf = (float)x;
    double xd = xf, p = nn_fast_phi(xf), e = rel(p, phi_ref(xd));
    if (xd >= -1.0 && e > w_pos) w_pos = e, a_pos = xd;
    if (xd < -1.0) {
      /* the exponent's rounding: about x^2 / 2 ulps of float */
      double allowed = 3e-7 + 0.5 * xd * xd * 6.0e-8 * 1.3;
      if (e > w_mid) w_mid = e, a_mid = xd;
      if (e / allowed > excess) excess = e / allowed, a_excess = xd;
    }
    if (fabs(xd) > 13.0) continue; /* exp(-x^2 / 2) under float's normal range: nn_fast_exp's floor */
    double g = nn_fast_gauss(xf), gr = exp(-0.5 * xd * xd);
    double eg = rel(g, gr), allowed_g = 1.2e-7 + 0.5 * xd * xd * 6.0e-8 * 1.3;
    if (eg / allowed_g > w_gauss) w_gauss = eg / allowed_g, a_gauss = xd;
  }
  printf("nn_fast_phi: max relative error %.3g on [-1, 14] (at %g), %.3g on [-13, -1) (at %g); "
         "worst against the x^2/2-ulp bound %.3g of it (at %g); nn_fast_gauss %.3g of its bound (at %g)\n",
         w_pos, a_pos, w_mid, a_mid, excess, a_excess, w_gauss, a_gauss);
  CHECK(w_pos <= 2.5e-7, "nn_fast_phi on [-1, 14]: %g at %g", w_pos, a_pos);
  CHECK(excess <= 1.0, "nn_fast_phi below -1: %g of the bound at %g", excess, a_excess);
  CHECK(w_gauss <= 1.0, "nn_fast_gauss: %g of the bound at %g", w_gauss, a_gauss);
  /* the seams of the two pieces, both sides */
  const float seams[] = {1.0f, nextafterf(1.0f, 2.0f), -1.0f, nextafterf(-1.0f, -2.0f), 14.0f, 13.0f, -13.0f};
  for (int i = 0; i < 7; i++) CHECK_CLOSE(nn_fast_phi(seams[i]), phi_ref(seams[i]), 0, 3e-6, "phi at a seam");
  /* monotone (to a few ulps) where Phi is a normal float, and within [0, 1] everywhere */
  float prev = 0.0f;
  int mono = 1, inside = 1;
  for (float x = -40.0f; x <= 40.0f; x += 1.0f / 512) {
    float p = nn_fast_phi(x);
    if (x >= -13.0f) mono &= p >= prev - 3e-7f * prev;
    inside &= p >= 0.0f && p <= 1.0f;
    prev = p;
  }
  CHECK(mono, "nn_fast_phi not monotone on [-13, 40]");
  CHECK(inside, "nn_fast_phi outside [0, 1] on [-40, 40]");
  /* far tails and special values: finite, the right side */
  const float far[] = {-1e30f, -3000.0f, -40.0f, -INFINITY};
  for (int i = 0; i < 4; i++) {
    float p = nn_fast_phi(far[i]);
    CHECK(p >= 0.0f && p < 1e-37f, "nn_fast_phi(%g) = %g (expected a tiny positive number)", far[i], p);
  }
  const float farp[] = {40.0f, 3000.0f, 1e30f, INFINITY};
  for (int i = 0; i < 4; i++) CHECK(nn_fast_phi(farp[i]) == 1.0f, "nn_fast_phi(%g) = %.9g", farp[i], nn_fast_phi(farp[i]));
  CHECK(nn_fast_phi(0.0f) == 0.5f && nn_fast_phi(-0.0f) == 0.5f, "phi(0) = %.9g", nn_fast_phi(0.0f));
  float g_inf = nn_fast_gauss(INFINITY), g_nan = nn_fast_gauss(NAN);
  CHECK(g_inf >= 0.0f && g_inf < 2e-38f, "nn_fast_gauss(inf) = %g", g_inf);
  CHECK(g_nan >= 0.0f && g_nan < 2e-38f, "nn_fast_gauss(NaN) = %g (held like huge x)", g_nan);
}

/* The ops on a spread of values (odd count: the vector loops' tails too). */
static void check_ops(void) {
  enum { N = 4099, F = 4099 };
  nn_ctx ctx;
  cmds_error err = {0};
  nn_ctx_init(&ctx, NN_CPU, NULL, NULL, 0, &err);
  float *x = malloc(sizeof(float) * 2 * F), *y = malloc(sizeof(float) * 2 * F), *d = malloc(sizeof(float) * 2 * F);
  for (int i = 0; i < N; i++) x[i] = -12.0f + 24.0f * (float)i / (N - 1) + 1e-3f * (float)(i % 7);
  nn_tensor tx = {.data = x, .dtype = NN_F32, .device = NN_CPU, .ndim = 1, .shape = {N}};
  nn_tensor ty = tx, td = tx;
  ty.data = y;
  td.data = d;
  CHECK(nn_gelu_forward(&ctx, &ty, &tx, &err) == CMDS_OK, "gelu: %s", err.msg);
  double wg = 0;
  for (int i = 0; i < N; i++) {
    double want = x[i] * phi_ref(x[i]), e = fabs(y[i] - want) / (fabs(want) + 1e-30);
    double allowed = 2.5e-7 + (x[i] < -1 ? 0.5 * x[i] * x[i] * 7.8e-8 : 0);
    if (e / allowed > wg) wg = e / allowed;
  }
  printf("gelu: worst %.3g of the bound\n", wg);
  CHECK(wg <= 1.0, "gelu: %g of the bound", wg);
  /* backward: dx = dy (Phi(x) + x phi(x)), dy = 1; the error relative to |Phi| + |x phi| (the
   * two terms cancel near x = -0.75, where GELU' is 0) */
  for (int i = 0; i < N; i++) y[i] = 1.0f;
  CHECK(nn_gelu_backward(&ctx, &td, &ty, &tx, &err) == CMDS_OK, "gelu backward: %s", err.msg);
  double wb = 0;
  for (int i = 0; i < N; i++) {
    double xd = x[i], t1 = phi_ref(xd), t2 = xd * exp(-0.5 * xd * xd) / sqrt(2 * M_PI), want = t1 + t2;
    double allowed = 4e-7 + 0.5 * xd * xd * 7.8e-8;
    double e = fabs(d[i] - want) / (fabs(t1) + fabs(t2));
    if (e / allowed > wb) wb = e / allowed;
  }
  printf("gelu backward: worst %.3g of the bound\n", wb);
  CHECK(wb <= 1.0, "gelu backward: %g of the bound", wb);
  /* GEGLU: y = h * gelu(g), x = [h | g], one row */
  for (int f = 0; f < F; f++) x[f] = 0.5f + 0.001f * (float)f, x[F + f] = -8.0f + 16.0f * (float)f / (F - 1);
  nn_tensor gx = {.data = x, .dtype = NN_F32, .device = NN_CPU, .ndim = 2, .shape = {1, 2 * F}};
  nn_tensor gy = {.data = y, .dtype = NN_F32, .device = NN_CPU, .ndim = 2, .shape = {1, F}};
  CHECK(nn_geglu_forward(&ctx, &gy, &gx, &err) == CMDS_OK, "geglu: %s", err.msg);
  double wq = 0;
  for (int f = 0; f < F; f++) {
    double g = x[F + f], want = x[f] * g * phi_ref(g), e = fabs(y[f] - want) / (fabs(want) + 1e-30);
    double allowed = 4e-7 + (g < -1 ? 0.5 * g * g * 7.8e-8 : 0);
    if (e / allowed > wq) wq = e / allowed;
  }
  printf("geglu: worst %.3g of the bound\n", wq);
  CHECK(wq <= 1.0, "geglu: %g of the bound", wq);
  free(x);
  free(y);
  free(d);
  nn_ctx_free(&ctx);
}

int main(void) {
  check_exp();
  check_phi_gauss();
  check_ops();
  return CHECK_DONE();
}
