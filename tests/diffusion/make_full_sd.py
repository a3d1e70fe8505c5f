#!/usr/bin/env python3
"""A full-size Stable Diffusion 2.1 checkpoint with RANDOM weights, in diffusers layout, for the
augment benchmark (bench_sd.sh): the architecture of stabilityai/stable-diffusion-2-1 with its
scheduler_config.json (DDIM, v_prediction, scaled_linear, steps_offset 1, leading), fp16 on disk
(~2.6 GB). --tiny: the same structure at a few dozen channels (dry runs). See random_ckpt.py.
  make_full_sd.py OUT_DIR [--tiny]"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import random_ckpt  # noqa: E402

random_ckpt.main("sd")
