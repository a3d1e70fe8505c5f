#!/usr/bin/env python3
"""A full-size Marigold normals checkpoint with RANDOM weights, in diffusers layout, for the
Marigold and VAE benchmarks (bench_marigold.sh, bench_vae.sh): the architecture of
prs-eth/marigold-normals-v1-1 (SD 2 UNet with 8 input channels, the SD VAE, OpenCLIP-H's text
encoder) with its scheduler and pipeline defaults, fp16 on disk (~2.5 GB). --tiny: the same
structure at a few dozen channels (dry runs). See random_ckpt.py.
  make_full_marigold.py OUT_DIR [--tiny]"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import random_ckpt  # noqa: E402

random_ckpt.main("marigold")
