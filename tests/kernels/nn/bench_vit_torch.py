#!/usr/bin/env python3
"""PyTorch (timm) ViT-B/8 forward at 224 with random weights, eager, same batch, blocks and
precision as bench_vit.c (blocks 4, 7 and 11 out, stopping after 11, timm's own
forward_intermediates): images/s, median of REPS after a warm-up. Used by bench_vit.sh.
  bench_vit_torch.py cpu|cuda BATCH REPS [fp32|tf32|bf16]
fp32: fp32 everywhere; tf32: TF32 matmuls and convolutions; bf16: the model and the input
cast to bfloat16 (PyTorch's fastest eager bf16 inference; SDPA picks its flash kernel)."""
import statistics
import sys
import time

try:
    import timm
    import torch
except ImportError as e:
    print("reference: skipped (", e, ")")
    sys.exit(0)

dev, B, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
prec = sys.argv[4] if len(sys.argv) > 4 else "fp32"
tf32 = prec == "tf32"
torch.backends.cuda.matmul.allow_tf32 = tf32
torch.backends.cudnn.allow_tf32 = tf32
dtype = torch.bfloat16 if prec == "bf16" else torch.float32
m = timm.create_model("vit_base_patch8_224.dino", pretrained=False).eval().to(dev, dtype)
x = torch.randn(B, 3, 224, 224).to(dtype)
times = []
with torch.inference_mode():
    for k in range(reps + 1):
        t0 = time.perf_counter()
        xd = x.to(dev)
        # blocks 4, 7, 11 (1-based) without the class token, stopping after block 11, as ours
        feats = [f.float() for f in m.forward_intermediates(
            xd, indices=[3, 6, 10], stop_early=True, output_fmt="NLC", intermediates_only=True)]
        if dev == "cuda":
            torch.cuda.synchronize()
        if k:
            times.append(time.perf_counter() - t0)
med = statistics.median(times)
where = torch.cuda.get_device_name() if dev == "cuda" else f"{torch.get_num_threads()} threads"
print(f"torch {torch.__version__} {dev} ({where}) batch {B} {prec}: {B / med:.2f} images/s "
      f"(median of {reps}, {med:.4f} s per batch)")
