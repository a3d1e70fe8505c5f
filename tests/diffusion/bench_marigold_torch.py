#!/usr/bin/env python3
"""diffusers' MarigoldNormalsPipeline on the same checkpoint, image size, steps and device as
bench_marigold.c: seconds per image (median of REPS after one warm-up on CUDA; no warm-up on the
CPU, where one image takes minutes) and peak memory. Used by bench_marigold.sh.
  bench_marigold_torch.py ROOT cpu|cuda SIZE STEPS REPS"""
import resource
import statistics
import sys
import time

try:
    import numpy as np
    import torch
    from diffusers import MarigoldNormalsPipeline
except ImportError as e:
    print("reference: skipped (", e, ")")
    sys.exit(0)

root, dev, size, steps, reps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
# fp32 like ours (cmds-estimate and cmds-augment run with allow_tf32 = 0): PyTorch would use TF32 for
# convolutions by default on the GPU.
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
pipe = MarigoldNormalsPipeline.from_pretrained(root, variant="fp16", torch_dtype=torch.float32).to(dev)
pipe.set_progress_bar_config(disable=True)
rng = np.random.default_rng(0)
img = torch.from_numpy(rng.random((1, 3, size, size), dtype=np.float32))
times = []
with torch.inference_mode():
    for k in range(reps + (1 if dev == "cuda" else 0)):
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        pipe(img.to(dev), num_inference_steps=steps, ensemble_size=1, processing_resolution=768,
             output_type="np", generator=torch.Generator(device=dev).manual_seed(0))
        if dev == "cuda":
            torch.cuda.synchronize()
        if k or dev != "cuda":
            times.append(time.perf_counter() - t0)
med = statistics.median(times)
peak = (torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
print(f"torch (diffusers {__import__('diffusers').__version__}, {torch.__version__}): {med:.3f} s per image, "
      f"peak {'GPU' if dev == 'cuda' else 'RSS'} {peak:.2f} GiB")
