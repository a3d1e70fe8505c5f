#!/usr/bin/env python3
"""diffusers + peft on the same checkpoint, size, steps and device as bench_sd.c: one LoRA
fine-tune step (train_text_to_image_lora.py's step: rank 16 gaussian LoRA on to_q/k/v/out.0,
v-prediction target, MSE, backward, clip_grad_norm_, AdamW; the VAE posterior of the image is
computed once outside the timing, as ours does) and one StableDiffusionImg2ImgPipeline image
(guidance 7.5) with the LoRA attached. Median of the steps after the first; peak memory.
  bench_sd_torch.py ROOT cpu|cuda R STEPS I2I_STEPS STRENGTH      I2I_STEPS 0: the training step only"""
import resource
import statistics
import sys
import time

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, StableDiffusionImg2ImgPipeline
    from peft import LoraConfig
except ImportError as e:
    print("reference: skipped (", e, ")")
    sys.exit(0)

root, dev, R, steps, i2i, strength = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), \
    float(sys.argv[6])
# fp32 like ours (cmds-estimate and cmds-augment run with allow_tf32 = 0): PyTorch would use TF32 for
# convolutions by default on the GPU.
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
steps = max(steps, 2)
pipe = StableDiffusionImg2ImgPipeline.from_pretrained(root, variant="fp16", torch_dtype=torch.float32,
                                                      safety_checker=None).to(dev)
pipe.set_progress_bar_config(disable=True)
unet, vae = pipe.unet, pipe.vae
for m in (unet, vae, pipe.text_encoder):
    m.requires_grad_(False)
unet.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian",
                            target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
params = [p for p in unet.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
sched = DDPMScheduler.from_pretrained(root, subfolder="scheduler")
prompt = "a photo of a bagel"
ids = pipe.tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
rng = np.random.default_rng(0)
img = torch.from_numpy(rng.random((1, 3, R, R), dtype=np.float32) * 2 - 1).to(dev)
with torch.no_grad():
    enc = pipe.text_encoder(ids.to(dev))[0]
    dist = vae.encode(img).latent_dist
g = torch.Generator(device=dev).manual_seed(0)
unet.train()
times, cpus = [], []
for i in range(steps):
    if dev == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    latents = dist.sample(g) * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=g, device=dev)
    t = torch.randint(0, sched.config.num_train_timesteps, (1,), generator=g, device=dev).long()
    noisy = sched.add_noise(latents, noise, t)
    target = sched.get_velocity(latents, noise, t) if sched.config.prediction_type == "v_prediction" else noise
    pred = unet(noisy, t, enc, return_dict=False)[0]
    loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad()
    if dev == "cuda":
        torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
    cpus.append(time.process_time() - c0)
    print(f"  torch step {i + 1}: {times[-1]:.3f} s (cpu {cpus[-1]:.3f} s), loss {loss.item():.4f}")
step_t = statistics.median(times[1:])
print(f"torch: {statistics.median(cpus[1:]):.3f} cpu-s per training step (median; min wall {min(times[1:]):.3f} s, "
      f"min cpu {min(cpus[1:]):.3f} s)")
peak_train = (torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
print(f"torch (diffusers {__import__('diffusers').__version__}, {torch.__version__}): {step_t:.3f} s per training step "
      f"({R}x{R}, rank 16, batch 1), peak {'GPU' if dev == 'cuda' else 'RSS'} {peak_train:.2f} GiB")
if i2i < 1:  # I2I_STEPS 0: the training step only
    sys.exit(0)
unet.eval()
ti = 0
with torch.inference_mode():
    for r in range(2 if dev == "cuda" else 1):
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        pipe(prompt=prompt, image=(img + 1) / 2, strength=strength, num_inference_steps=i2i, guidance_scale=7.5,
             output_type="np", generator=torch.Generator(device=dev).manual_seed(0))
        if dev == "cuda":
            torch.cuda.synchronize()
        ti = time.perf_counter() - t0
peak = (torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
print(f"torch: {ti:.3f} s per image (img2img {R}x{R}, {i2i} DDIM steps x strength {strength:.2f}, guidance 7.5, LoRA), "
      f"peak {'GPU' if dev == 'cuda' else 'RSS'} {peak:.2f} GiB")
