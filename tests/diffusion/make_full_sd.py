#!/usr/bin/env python3
"""A full-size Stable Diffusion 2.1 checkpoint with RANDOM weights, in diffusers layout, for the
augment benchmark (no weights can be downloaded here): the architecture of
stabilityai/stable-diffusion-2-1 (UNet with 4 input channels, heads 5/10/20/20, cross-attention on
OpenCLIP-H's 1024-wide states, linear projections, upcast attention; the SD VAE; the 23-layer text
encoder) with its scheduler_config.json (DDIM, v_prediction, scaled_linear, steps_offset 1,
leading). The tokenizer is a small byte-level vocabulary with the real special-token ids (the real
one has 49408 entries and is not here): the prompt's ids differ, the work does not.
Weights are stored as fp16 (variant "fp16"), as the hub ships them.
  make_full_sd.py OUT_DIR"""
import json
import os
import sys

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

out = sys.argv[1]
if os.path.exists(os.path.join(out, "model_index.json")):
    print("exists:", out)
    sys.exit(0)
tmp = out + ".partial"
os.makedirs(tmp, exist_ok=True)
torch.manual_seed(0)
unet = UNet2DConditionModel(
    sample_size=96, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024, use_linear_projection=True, upcast_attention=True, norm_num_groups=32,
    flip_sin_to_cos=True, freq_shift=0)
unet.half().save_pretrained(os.path.join(tmp, "unet"), variant="fp16", safe_serialization=True)
del unet
vae = AutoencoderKL(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, sample_size=768, scaling_factor=0.18215)
with torch.no_grad():  # random decoders blow up; keep the output in range so nothing is all-clamped
    vae.decoder.conv_out.weight.mul_(0.1)
vae.half().save_pretrained(os.path.join(tmp, "vae"), variant="fp16", safe_serialization=True)
del vae
te = CLIPTextModel(CLIPTextConfig(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=512, bos_token_id=49406, eos_token_id=49407,
    pad_token_id=1))
te.half().save_pretrained(os.path.join(tmp, "text_encoder"), variant="fp16", safe_serialization=True)
del te
DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
              set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
              num_train_timesteps=1000).save_pretrained(os.path.join(tmp, "scheduler"))
tok = os.path.join(tmp, "tokenizer")
os.makedirs(tok, exist_ok=True)
bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
cs, n = bs[:], 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
syms = [chr(c) for c in cs]
vocab = {s: i for i, s in enumerate(syms)}
vocab.update({s + "</w>": i + 256 for i, s in enumerate(syms)})
vocab["<|startoftext|>"] = 49406
vocab["<|endoftext|>"] = 49407
json.dump(vocab, open(os.path.join(tok, "vocab.json"), "w"), ensure_ascii=False)
open(os.path.join(tok, "merges.txt"), "w").write("#version: 0.2\n")
json.dump({"model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
           "pad_token": "!", "unk_token": "<|endoftext|>", "do_lower_case": True,
           "tokenizer_class": "CLIPTokenizer"}, open(os.path.join(tok, "tokenizer_config.json"), "w"))
json.dump({"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
           "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
           "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
           "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
           "vae": ["diffusers", "AutoencoderKL"]}, open(os.path.join(tmp, "model_index.json"), "w"), indent=2)
os.rename(tmp, out)
print("wrote", out)
