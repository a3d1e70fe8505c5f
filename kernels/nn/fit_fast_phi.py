#!/usr/bin/env python3
"""Derives the constants of nn_fast_phi (kernels/nn/nn_fastexp.h): the standard normal CDF
Phi(x) = (1 + erf(x / sqrt 2)) / 2 that the CPU GELU, GEGLU and their backwards use instead of
libm's erff (a call per element, never vectorised).

  |x| <= 1:  Phi(x) = 1/2 + x S(x^2),            S a degree-5 polynomial
  |x| >  1:  Phi(-a) = exp(-a^2 / 2) Q(t),       t = 1 / (1 + a / 2), Q of degree 9, a in [1, 14]
             Phi(a) = 1 - Phi(-a)

Both are relative least-squares fits at Chebyshev nodes against mpmath at 40 digits; the
printed max relative errors are those of the fits in exact arithmetic (float32 evaluation adds a
few ulps; tests/kernels/nn/test_nn_fastmath.c measures the C function against libm in double).
Run: python3 kernels/nn/fit_fast_phi.py  (needs numpy and mpmath from PyPI); prints the C lines."""
import mpmath
import numpy as np

mpmath.mp.dps = 40
T, A_MAX, P = 1.0, 14.0, 0.5
DEG_S, DEG_Q = 5, 9


def cheb(lo, hi, n):
    k = np.arange(n)
    return (lo + hi) / 2 + (hi - lo) / 2 * np.cos((2 * k + 1) * np.pi / (2 * n))


def fit(xs, ys, basis, deg):
    v = np.vander(basis, deg + 1, increasing=True)
    c, *_ = np.linalg.lstsq(v / ys[:, None], np.ones_like(ys), rcond=None)
    return c


def s_of(x):
    return float((mpmath.ncdf(x) - 0.5) / x)


def q_of(a):
    return float(mpmath.ncdf(-a) * mpmath.exp(a * a / 2))


xs = cheb(1e-5, T, 300)
cs = fit(xs, np.array([s_of(x) for x in xs]), xs**2, DEG_S)
ts = cheb(1 / (1 + P * A_MAX), 1 / (1 + P * T), 400)
cq = fit(ts, np.array([q_of(a) for a in (1 / ts - 1) / P]), ts, DEG_Q)

xt = np.linspace(1e-5, T, 2001)
es = np.max(np.abs(np.polyval(cs[::-1], xt**2) / np.array([s_of(x) for x in xt]) - 1))
at = np.linspace(T, A_MAX, 3001)
eq = np.max(np.abs(np.polyval(cq[::-1], 1 / (1 + P * at)) / np.array([q_of(a) for a in at]) - 1))
print(f"/* S: max rel {es:.2e}; Q: max rel {eq:.2e} */")
print("static const float nn_phi_s[%d] = {%s};" % (DEG_S + 1, ", ".join("%.9ef" % np.float32(c) for c in cs)))
print("static const float nn_phi_q[%d] = {%s};" % (DEG_Q + 1, ", ".join("%.9ef" % np.float32(c) for c in cq)))
