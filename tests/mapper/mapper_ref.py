#!/usr/bin/env python3
"""mapper_ref: the PyTorch reference of the cmds feature mapper (METHOD.md sections 4-5),
written from METHOD.md and kernels/mapper/mapper.h. The fixture generator
(tests/fixtures/gen_mapper.py) and the benchmark (tests/mapper/bench_mapper.c) use it.

Parameter names and their order are the ones kernels/mapper/mapper.h documents:
  adapt.{l}.conv, adapt.{l}.norm, coord.conv1, coord.norm, coord.conv_h, coord.conv_w,
  selector.conv1, selector.conv2, proj.0, proj.2      (kind cmds)
  mlp.0, mlp.2                                        (kind mlp)
x and P are (B, L*D, H, W).

As a program it times training steps (forward + loss + backward + AdamW) for the benchmark:
  python3 mapper_ref.py bench --device cpu|cuda --width 768 --layers 3 --size 224 --batch 2 --steps 5
and prints one line `torch_steps_per_s <value>`.
"""
import argparse
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Adapt(nn.Module):
    """Local adaptation of one block: GELU(GN(Conv1x1(x)))."""

    def __init__(self, d, groups):
        super().__init__()
        self.conv = nn.Conv2d(d, d, 1)
        self.norm = nn.GroupNorm(groups, d)

    def forward(self, x):
        return F.gelu(self.norm(self.conv(x)))


class CoordAttention(nn.Module):
    """Coordinate attention (Hou et al., CVPR 2021) with GroupNorm instead of BatchNorm."""

    def __init__(self, c, reduction, groups):
        super().__init__()
        m = max(8, c // reduction)
        self.conv1 = nn.Conv2d(c, m, 1)
        self.norm = nn.GroupNorm(groups, m)
        self.conv_h = nn.Conv2d(m, c, 1)
        self.conv_w = nn.Conv2d(m, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        xh = x.mean(dim=3, keepdim=True)                     # (B, C, H, 1): mean over W
        xw = x.mean(dim=2, keepdim=True).permute(0, 1, 3, 2)  # (B, C, W, 1): mean over H
        y = torch.cat([xh, xw], dim=2)                        # (B, C, H+W, 1)
        y = F.hardswish(self.norm(self.conv1(y)))
        yh, yw = torch.split(y, [h, w], dim=2)
        ah = torch.sigmoid(self.conv_h(yh))                   # (B, C, H, 1)
        aw = torch.sigmoid(self.conv_w(yw.permute(0, 1, 3, 2)))  # (B, C, 1, W)
        return x * ah * aw


class Selector(nn.Module):
    def __init__(self, c, hidden, layers):
        super().__init__()
        self.conv1 = nn.Conv2d(c, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, layers, 1)

    def forward(self, x):
        return torch.softmax(self.conv2(F.relu(self.conv1(x))), dim=1)  # (B, L, H, W)


class Mapper(nn.Module):
    def __init__(self, width, layers, kind="cmds", adapt_groups=32, ca_reduction=32, ca_groups=8,
                 sel_hidden=128, proj_hidden=0, mlp_hidden=0):
        super().__init__()
        self.kind, self.width, self.layers = kind, width, layers
        c = width * layers
        if kind == "cmds":
            self.adapt = nn.ModuleList([Adapt(width, adapt_groups) for _ in range(layers)])
            self.coord = CoordAttention(c, ca_reduction, ca_groups)
            self.selector = Selector(c, sel_hidden, layers)
            ph = proj_hidden or 2 * width
            self.proj = nn.Sequential(nn.Conv2d(width, ph, 1), nn.GELU(), nn.Conv2d(ph, c, 1))
        else:
            mh = mlp_hidden or c
            self.mlp = nn.Sequential(nn.Conv2d(c, mh, 1), nn.GELU(), nn.Conv2d(mh, c, 1))

    def forward(self, x):
        if self.kind != "cmds":
            return self.mlp(x)
        d = self.width
        f = [a(x[:, l * d:(l + 1) * d]) for l, a in enumerate(self.adapt)]
        ft = self.coord(torch.cat(f, dim=1))
        w = self.selector(ft)
        s = sum(w[:, l:l + 1] * f[l] for l in range(self.layers))
        return self.proj(s)


def mapper_loss(p, t, layers, layer_w, denom, mask=None):
    """sum_l layer_w[l] * sum_{b,p} m (1 - cos(P_l, T_l)) / denom (METHOD.md 5)."""
    d = p.shape[1] // layers
    total = 0.0
    for l in range(layers):
        dist = 1.0 - F.cosine_similarity(p[:, l * d:(l + 1) * d], t[:, l * d:(l + 1) * d], dim=1,
                                         eps=1e-8)
        if mask is not None:
            dist = dist * mask
        total = total + layer_w[l] * dist.sum() / denom
    return total


def conv_flops(width, layers, h, w, cfg):
    """Multiply-adds x 2 of one forward's convolutions (the benchmark's FLOP count)."""
    d, c, hw = width, width * layers, h * w
    if cfg["kind"] != "cmds":
        mh = cfg["mlp_hidden"] or c
        return 2.0 * hw * (c * mh + mh * c)
    m = max(8, c // cfg["ca_reduction"])
    ph = cfg["proj_hidden"] or 2 * d
    sh = cfg["sel_hidden"]
    f = layers * d * d * hw                    # adapt
    f += c * m * (h + w)                        # coord conv1 on the H+W pooled positions
    f += m * c * h + m * c * w                  # conv_h, conv_w
    f += c * 9 * sh * hw + sh * layers * hw     # selector
    f += d * ph * hw + ph * c * hw              # projection
    return 2.0 * f


def bench(args):
    torch.manual_seed(0)
    dev = torch.device(args.device)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    else:
        torch.set_num_threads(args.threads)
    m = Mapper(args.width, args.layers, kind=args.kind).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=1e-4)
    c = args.width * args.layers
    x = torch.randn(args.batch, c, args.size, args.size, device=dev)
    t = torch.randn(args.batch, c, args.size, args.size, device=dev)
    lw = [1.2, 1.0, 0.8] + [1.0] * max(0, args.layers - 3)
    denom = float(args.batch * args.size * args.size)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = mapper_loss(m(x), t, args.layers, lw, denom)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    if args.device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if args.device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(f"torch_steps_per_s {args.steps / dt:.6g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["bench"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kind", default="cmds")
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("mapper_ref: no CUDA device", file=sys.stderr)
        return 77
    bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
