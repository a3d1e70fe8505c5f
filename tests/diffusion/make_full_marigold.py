#!/usr/bin/env python3
"""A full-size Marigold normals checkpoint with RANDOM weights, in diffusers layout, for the
benchmarks (no weights can be downloaded here): the architecture of prs-eth/marigold-normals-v1-1
(SD 2 UNet with 8 input channels, the SD VAE, OpenCLIP-H's text encoder of SD 2) with its
scheduler and pipeline defaults. The tokenizer is a small byte-level BPE vocabulary (the real
one has 49408 entries and is not here); only its ids of the empty prompt matter.
Weights are stored as fp16 (variant "fp16"), the way checkpoints are commonly shipped.
  make_full_marigold.py OUT_DIR"""
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
    sample_size=96, in_channels=8, out_channels=4, layers_per_block=2,
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
              timestep_spacing="trailing", rescale_betas_zero_snr=True).save_pretrained(os.path.join(tmp, "scheduler"))
# tokenizer: byte-level symbols (with and without </w>) + the two special tokens
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
json.dump({"_class_name": "MarigoldNormalsPipeline", "_diffusers_version": "0.42.1",
           "default_denoising_steps": 4, "default_processing_resolution": 768, "prediction_type": "normals",
           "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
           "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
           "use_full_z_range": True, "vae": ["diffusers", "AutoencoderKL"]},
          open(os.path.join(tmp, "model_index.json"), "w"), indent=2)
os.rename(tmp, out)
print("wrote", out)
