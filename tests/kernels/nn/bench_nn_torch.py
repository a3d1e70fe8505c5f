#!/usr/bin/env python3
"""PyTorch timings for the shapes of bench_nn_cuda (GPU): the qkv GEMM of ViT-B/8 at
batch 64 (50240 x 768 -> 2304) in fp32 and TF32, and fp32 attention (B=64, N=785, H=12,
D=64) through F.scaled_dot_product_attention. 3 warm-up runs, median of 10."""
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
print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
