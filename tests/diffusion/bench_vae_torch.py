#!/usr/bin/env python3
"""diffusers' side of bench_vae: AutoencoderKL.from_pretrained(CKPT/vae) in float32, one
SIZE x SIZE image, seconds per encode (latent_dist.mean * scaling_factor, what Marigold
does) and per decode (z / scaling_factor), best of REPS after one warm-up run, and the peak
memory (CUDA: torch.cuda.max_memory_allocated; CPU: the process's max RSS).
  bench_vae_torch.py CKPT cpu|cuda SIZE REPS"""
import os
import resource
import sys
import time

import torch
from diffusers import AutoencoderKL

ckpt, dev, size, reps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
plain = os.path.exists(os.path.join(ckpt, "vae", "diffusion_pytorch_model.safetensors"))
vae = AutoencoderKL.from_pretrained(ckpt, subfolder="vae", variant=None if plain else "fp16",
                                    torch_dtype=torch.float32).to(dev).eval()
sf = vae.config.scaling_factor
i = torch.arange(3 * size * size, dtype=torch.float64)
x = (torch.sin(0.001 * i) * 0.9).float().reshape(1, 3, size, size).to(dev)


def sync():
    if dev == "cuda":
        torch.cuda.synchronize()


te = td = float("inf")
with torch.no_grad():
    for r in range(reps + 1):
        sync(); a = time.perf_counter()
        lat = vae.encode(x).latent_dist.mean * sf
        sync(); b = time.perf_counter()
        y = vae.decode(lat / sf).sample
        sync(); c = time.perf_counter()
        if r > 0:
            te, td = min(te, b - a), min(td, c - b)
if dev == "cuda":
    peak = torch.cuda.max_memory_allocated() / 2**20
    what = "CUDA max allocated"
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    what = "max RSS"
print(f"diffusers: encode {te:.3f} s, decode {td:.3f} s per image (best of {reps}), {what} {peak:.1f} MiB")
print(f"reference: {te + td:.3f} s per image (encode + decode)")
for name, t in (("latent", lat), ("image", y)):
    t = t.double().cpu()
    print(f"{name}: mean {t.mean().item():.6e}, mean abs {t.abs().mean().item():.6e}")
