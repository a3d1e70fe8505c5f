#!/usr/bin/env python3
"""PyTorch reference timings for bench_nn_backward2 (same ops, same sizes, same line format):
the backward of each op through torch.autograd.grad on a graph built once (retain_graph), so
only the backward is timed; attention through F.scaled_dot_product_attention (PyTorch picks its
CPU / GPU kernel). One warm-up, then REPS runs: the minimum (and the median).
  bench_nn_backward2_torch.py cpu|cuda REPS [OP_PREFIX]   (only the ops whose names start with it)"""
import sys
import time

import torch
import torch.nn.functional as F

dev = sys.argv[1]
reps = int(sys.argv[2])
only = sys.argv[3] if len(sys.argv) > 3 else ""
if dev == "cuda" and not torch.cuda.is_available():
    print("torch: no GPU")
    sys.exit(0)
torch.manual_seed(0)


def sync():
    if dev == "cuda":
        torch.cuda.synchronize()


def timeit(name, fn, alias=None):
    if not name.startswith(only):
        return
    ts = []
    for r in range(reps + 1):
        sync()
        s = time.perf_counter()
        fn()
        sync()
        if r:
            ts.append(time.perf_counter() - s)
    ts.sort()
    n = len(ts)
    med = ts[n // 2] if n % 2 else 0.5 * (ts[n // 2 - 1] + ts[n // 2])
    for nm in (name, alias) if alias else (name,):
        print(f"{nm:<28s} {ts[0] * 1e3:10.3f} ms (median {med * 1e3:.3f})", flush=True)


def rnd(*shape, grad=False):
    return (torch.randn(*shape, device=dev) * 0.5).requires_grad_(grad)


def bwd(y, ins):
    dy = rnd(*y.shape)
    return lambda: torch.autograd.grad(y, ins, dy, retain_graph=True)


N, C, H, D = 4096, 320, 5, 64
for cross in (0, 1):
    M = 77 if cross else N
    q, k, v = rnd(1, H, N, D, grad=True), rnd(1, H, M, D, grad=True), rnd(1, H, M, D, grad=True)
    o = F.scaled_dot_product_attention(q, k, v)
    # SDPA's backward always reuses the forward's log-sum-exp: also our _lse ops' reference
    name = "attention_cross_bwd" if cross else "attention_self_bwd"
    timeit(name, bwd(o, (q, k, v)), alias=name + "_lse" if dev == "cpu" else None)
with torch.no_grad():  # the forward at 4096 and 9216 tokens; also the reference of our _gemm path
    for T in (4096, 9216):
        q, k, v = rnd(1, H, T, D), rnd(1, H, T, D), rnd(1, H, T, D)
        name = f"attention_{T}_fwd"
        timeit(name, lambda: F.scaled_dot_product_attention(q, k, v), alias=name + "_gemm" if dev == "cpu" else None)
for variant in range(3):
    x = rnd(1, C, 64, 64, grad=True)
    w = rnd(C, C, 3, 3, grad=variant == 1)
    y = F.conv2d(x, w, stride=2 if variant == 2 else 1, padding=1)
    name = ["conv3x3_bwd_dx", "conv3x3_bwd_dx_dw", "conv3x3_s2_bwd_dx"][variant]
    timeit(name, bwd(y, (x, w) if variant == 1 else (x,)))
    if variant == 0:
        with torch.no_grad():
            timeit("conv3x3_fwd", lambda: F.conv2d(x, w, padding=1))
x, w, b = rnd(N, C, grad=True), rnd(C, C, grad=True), rnd(C, grad=True)
w0 = w.detach()
timeit("linear_bwd_dx", bwd(F.linear(x, w0), (x,)))
timeit("linear_bwd_dx_dw_db", bwd(F.linear(x, w, b), (x, w, b)))
g, bt = rnd(C, grad=True), rnd(C, grad=True)
timeit("layernorm_bwd", bwd(F.layer_norm(x, (C,), g, bt, 1e-5), (x, g, bt)))
xg = rnd(N, 2560, grad=True)
h, gate = xg.chunk(2, dim=-1)
timeit("geglu_bwd", bwd(h * F.gelu(gate), (xg,)))
xs = rnd(1, C, 64, 64, grad=True)
timeit("silu_bwd", bwd(F.silu(xs), (xs,)))
