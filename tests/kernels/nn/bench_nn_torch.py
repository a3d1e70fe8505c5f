#!/usr/bin/env python3
"""PyTorch timings for the shapes of bench_nn_cuda (GPU): the qkv GEMM of ViT-B/8 at
batch 64 (50240 x 768 -> 2304) in fp32, TF32 and bf16, attention (B=64, N=785, H=12, D=64)
through F.scaled_dot_product_attention in fp32 and bf16, and a bf16 block's fc1, fc2 (+
residual), LayerNorm and GELU. 3 warm-up runs, median of 10."""
import sys
import time

import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    print("torch: no GPU")
    sys.exit(0)
dev = "cuda"
torch.manual_seed(0)
B, N, C, H = 64, 785, 768, 12
M, NO = B * N, 3 * C
x = torch.randn(M, C, device=dev)
w = torch.randn(NO, C, device=dev) * 0.03
b = torch.randn(NO, device=dev)
q, k, v = (torch.randn(B, H, N, C // H, device=dev) for _ in range(3))


def median_ms(fn):
    ts = []
    for r in range(13):
        torch.cuda.synchronize()
        s = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        if r >= 3:
            ts.append((time.perf_counter() - s) * 1e3)
    ts.sort()
    return (ts[4] + ts[5]) / 2


gemm_flop, att_flop = 2.0 * M * C * NO, 4.0 * B * H * N * N * (C // H)
torch.backends.cuda.matmul.allow_tf32 = False
ms = median_ms(lambda: F.linear(x, w, b))
print(f"torch gemm fp32 {M}x{C}->{NO}  {ms:8.3f} ms  {gemm_flop / ms * 1e-9:6.1f} TFLOP/s")
torch.backends.cuda.matmul.allow_tf32 = True
ms = median_ms(lambda: F.linear(x, w, b))
print(f"torch gemm tf32 {M}x{C}->{NO}  {ms:8.3f} ms  {gemm_flop / ms * 1e-9:6.1f} TFLOP/s")
torch.backends.cuda.matmul.allow_tf32 = False
ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v))
print(f"torch attention fp32 B={B} N={N} H={H} D={C // H}  {ms:8.3f} ms  {att_flop / ms * 1e-9:6.1f} TFLOP/s")
bf = torch.bfloat16
x16, w16, b16 = x.to(bf), w.to(bf), b.to(bf)
ms = median_ms(lambda: F.linear(x16, w16, b16))
print(f"torch gemm bf16 {M}x{C}->{NO} (+bias)  {ms:8.3f} ms  {gemm_flop / ms * 1e-9:6.1f} TFLOP/s")
q16, k16, v16 = q.to(bf), k.to(bf), v.to(bf)
ms = median_ms(lambda: F.scaled_dot_product_attention(q16, k16, v16))
print(f"torch attention bf16 B={B} N={N} H={H} D={C // H}  {ms:8.3f} ms  {att_flop / ms * 1e-9:6.1f} TFLOP/s")
Fh = 4 * C
w1 = torch.randn(Fh, C, device=dev, dtype=bf) * 0.03
b1 = torch.randn(Fh, device=dev, dtype=bf)
w2 = torch.randn(C, Fh, device=dev, dtype=bf) * 0.03
b2 = torch.randn(C, device=dev, dtype=bf)
h16 = torch.randn(M, Fh, device=dev, dtype=bf)
mlp_flop = 2.0 * M * C * Fh
ms = median_ms(lambda: F.linear(x16, w1, b1))
print(f"torch fc1 bf16 {M}x{C}->{Fh} (+bias)  {ms:8.3f} ms  {mlp_flop / ms * 1e-9:6.1f} TFLOP/s")
ms = median_ms(lambda: x16 + F.linear(h16, w2, b2))
print(f"torch fc2 bf16 {M}x{Fh}->{C} (+bias, + residual)  {ms:8.3f} ms  {mlp_flop / ms * 1e-9:6.1f} TFLOP/s")
ln = torch.nn.LayerNorm(C, eps=1e-6, device=dev, dtype=bf)
ms = median_ms(lambda: ln(x16))
print(f"torch layernorm bf16 {M}x{C}  {ms:8.3f} ms")
ms = median_ms(lambda: F.gelu(h16))
print(f"torch gelu bf16 {M * Fh}  {ms:8.3f} ms")
print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
