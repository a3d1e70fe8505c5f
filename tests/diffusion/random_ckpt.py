"""Random-weight checkpoints in diffusers layout for the diffusion benchmarks (no weights can be
downloaded where they run): make_full_sd.py and make_full_marigold.py are its two front ends.

Full size (the default) is the architecture of stabilityai/stable-diffusion-2-1 ("sd": UNet with 4
input channels) or prs-eth/marigold-normals-v1-1 ("marigold": the same UNet with 8 input
channels): heads 5/10/20/20, cross-attention on OpenCLIP-H's 1024-wide states, linear projections,
upcast attention; the SD VAE; the 23-layer text encoder; the scheduler of each. --tiny keeps every
structural choice (four UNet and VAE levels, so the VAE still downsamples by 8; the block types;
linear projections; the schedulers; the tokenizer) at a few dozen channels, so both sides of a
benchmark can be dry-run on a laptop CPU in seconds.

The tokenizer is a small byte-level vocabulary with the real special-token ids (the real one has
49408 entries and is not here): the prompt's ids differ, the work does not. Weights are stored as
fp16 (variant "fp16"), as the hub ships them. The folder appears atomically (OUT.partial, then a
rename); an existing OUT with model_index.json is kept as it is."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from fixturelib import clip_vocab, write_clip_tokenizer  # noqa: E402

FULL = dict(unet_channels=(320, 640, 1280, 1280), unet_heads=(5, 10, 20, 20), unet_layers=2, unet_groups=32,
            vae_channels=(128, 256, 512, 512), vae_layers=2, vae_groups=32,
            text_width=1024, text_ffn=4096, text_layers=23, text_heads=16, text_proj=512)
TINY = dict(unet_channels=(32, 64, 64, 64), unet_heads=(2, 4, 4, 4), unet_layers=2, unet_groups=8,
            vae_channels=(16, 32, 32, 32), vae_layers=1, vae_groups=8,
            text_width=64, text_ffn=128, text_layers=2, text_heads=4, text_proj=32)


def _tokenizer(folder):
    """Byte-level symbols (with and without </w>), no merges, plus the two special tokens."""
    write_clip_tokenizer(folder, clip_vocab(special_ids=(49406, 49407)))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                   "pad_token": "!", "unk_token": "<|endoftext|>", "do_lower_case": True,
                   "tokenizer_class": "CLIPTokenizer"}, f)


def write(out, kind, tiny=False):
    """Writes the checkpoint of `kind` ("sd" or "marigold") into OUT unless it is there."""
    if os.path.exists(os.path.join(out, "model_index.json")):
        print("exists:", out)
        return
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    c = TINY if tiny else FULL
    tmp = out + ".partial"
    os.makedirs(tmp, exist_ok=True)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=96, in_channels=8 if kind == "marigold" else 4, out_channels=4, layers_per_block=c["unet_layers"],
        block_out_channels=c["unet_channels"], attention_head_dim=c["unet_heads"],
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=c["text_width"], use_linear_projection=True, upcast_attention=True,
        norm_num_groups=c["unet_groups"], flip_sin_to_cos=True, freq_shift=0)
    unet.half().save_pretrained(os.path.join(tmp, "unet"), variant="fp16", safe_serialization=True)
    del unet
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=c["vae_layers"],
        norm_num_groups=c["vae_groups"], block_out_channels=c["vae_channels"],
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=768,
        scaling_factor=0.18215)
    if kind == "sd":
        with torch.no_grad():  # random decoders blow up; keep the output in range so nothing is all-clamped
            vae.decoder.conv_out.weight.mul_(0.1)
    vae.half().save_pretrained(os.path.join(tmp, "vae"), variant="fp16", safe_serialization=True)
    del vae
    te = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=c["text_width"], intermediate_size=c["text_ffn"],
        num_hidden_layers=c["text_layers"], num_attention_heads=c["text_heads"], max_position_embeddings=77,
        hidden_act="gelu", projection_dim=c["text_proj"], bos_token_id=49406, eos_token_id=49407, pad_token_id=1))
    te.half().save_pretrained(os.path.join(tmp, "text_encoder"), variant="fp16", safe_serialization=True)
    del te
    if kind == "sd":
        DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
                      num_train_timesteps=1000).save_pretrained(os.path.join(tmp, "scheduler"))
    else:
        DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
                      timestep_spacing="trailing",
                      rescale_betas_zero_snr=True).save_pretrained(os.path.join(tmp, "scheduler"))
    _tokenizer(os.path.join(tmp, "tokenizer"))
    common = {"_diffusers_version": "0.42.1", "scheduler": ["diffusers", "DDIMScheduler"],
              "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
              "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}
    if kind == "sd":
        index = {"_class_name": "StableDiffusionPipeline", "feature_extractor": [None, None],
                 "requires_safety_checker": False, "safety_checker": [None, None], **common}
    else:
        index = {"_class_name": "MarigoldNormalsPipeline", "default_denoising_steps": 4,
                 "default_processing_resolution": 768, "prediction_type": "normals", "use_full_z_range": True,
                 **common}
    with open(os.path.join(tmp, "model_index.json"), "w") as f:
        json.dump(dict(sorted(index.items())), f, indent=2)
    os.rename(tmp, out)
    print("wrote", out, "(tiny)" if tiny else "")


def main(kind):
    args = [a for a in sys.argv[1:] if a != "--tiny"]
    if len(args) != 1 or any(a.startswith("-") for a in args):
        sys.exit(f"usage: {os.path.basename(sys.argv[0])} OUT_DIR [--tiny]")
    try:
        write(args[0], kind, tiny="--tiny" in sys.argv[1:])
    except ImportError as e:
        sys.exit(f"{os.path.basename(sys.argv[0])}: needs torch, diffusers and transformers ({e})")
