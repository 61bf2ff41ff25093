"""Bigger backbones for ``model.arch`` / ``model.weights=hub``: size, input, width and cost of each.

    python -m benchmarks.backbones [--run NAME ...] [--out runs/benchmarks/backbones.csv]

Every timm name below is built on PyTorch's meta device (no weights, no memory, nothing downloaded):
its parameters, the input size of its pretrained config, its embedding width and its forward FLOPs
at 224 px and at that input size are exact (``torch.utils.flop_counter``). The names given to
``--run`` (default: the two small ones) are also built for real as Curator encoders with random
weights (``model.weights=none``) and timed on this machine, which checks that Curator's pooling works
on that family and calibrates the estimate for the others: seconds per 1,000 images on this machine
= GFLOPs / the small models' measured GFLOP/s. GPU seconds per 1,000 images are an *estimate* at
``GPU_TFLOPS`` sustained (said so in the output); memory is the weights' in bf16 and fp32.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from core.model.backbone import EncoderSpec, build_encoder

NAMES = [
    "vit_small_patch14_dinov2", "vit_base_patch14_dinov2", "vit_large_patch14_dinov2", "vit_giant_patch14_dinov2",
    "vit_small_patch14_reg4_dinov2", "vit_base_patch14_reg4_dinov2", "vit_large_patch14_reg4_dinov2",
    "vit_giant_patch14_reg4_dinov2",
    "vit_small_patch16_dinov3", "vit_small_plus_patch16_dinov3", "vit_base_patch16_dinov3",
    "vit_large_patch16_dinov3", "vit_huge_plus_patch16_dinov3", "vit_7b_patch16_dinov3",
]
RUN = ["vit_small_patch14_dinov2", "vit_small_patch16_dinov3"]
# An assumption, not a measurement: bf16 inference of large ViTs on one H100 at ~30% of its 989
# TFLOP/s dense peak. Replace it with a measured figure when a GPU is at hand.
GPU_TFLOPS = 300.0


def meta_row(name: str) -> dict:
    """Parameters, input size, width and forward GFLOPs of ``name``, built on the meta device."""
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True)
    native = int(model.pretrained_cfg["input_size"][-1])
    flops = {}
    for side in sorted({224, native}):
        with FlopCounterMode(display=False) as counter:
            model.forward_features(torch.empty(1, 3, side, side, device="meta"))
        flops[side] = counter.get_total_flops() / 1e9
    params = sum(p.numel() for p in model.parameters())
    return {"arch": name, "hub tag": model.pretrained_cfg.get("tag", ""), "params M": round(params / 1e6, 1),
            "input px": native, "patch": model.patch_embed.patch_size[0], "width": model.num_features,
            "prefix tokens": int(getattr(model, "num_prefix_tokens", 0)),
            "GFLOPs 224": round(flops[224], 1), "GFLOPs native": round(flops[native], 1),
            "weights GB bf16": round(params * 2 / 1e9, 2), "weights GB fp32": round(params * 4 / 1e9, 2)}


def measured_rate(name: str, images: int = 16, batch: int = 8) -> tuple[float, float]:
    """(images/s, GFLOP/s) of a Curator encoder of ``name`` with random weights at 224 px, fp32."""
    encoder = build_encoder(EncoderSpec(arch=name, weights="none", img_size=224, pooling="gem"))
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        encoder(x[:2])  # warm-up
        start = time.perf_counter()
        for _ in range(images // batch):
            out = encoder(x)
        seconds = time.perf_counter() - start
    assert out.shape == (batch, encoder.dim)
    rate = images / seconds
    return rate, rate * meta_row(name)["GFLOPs 224"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", nargs="*", default=RUN, help="names to build for real and time here")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/backbones.csv"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    rates = {name: measured_rate(name) for name in args.run}
    for name, (rate, gflops) in rates.items():
        print(f"{name}: {rate:.1f} img/s here at 224 px, fp32 ({gflops:.0f} GFLOP/s)")
    here = sum(g for _, g in rates.values()) / max(len(rates), 1)
    rows = []
    for name in NAMES:
        row = meta_row(name)
        if here:
            row["s/1000 here (est.)"] = round(row["GFLOPs 224"] / here * 1000, 0)
        row["s/1000 GPU (est.)"] = round(row["GFLOPs 224"] / (GPU_TFLOPS * 1e3) * 1000, 2)
        row["timed here"] = name in rates
        rows.append(row)
    table = pd.DataFrame(rows)
    with pd.option_context("display.max_columns", None, "display.width", 220):
        print(table.to_string(index=False))
    print(f"\n'here' estimates: GFLOPs at 224 px / {here:.0f} GFLOP/s measured on {', '.join(rates) or 'nothing'};"
          f" GPU: at an assumed {GPU_TFLOPS:.0f} TFLOP/s sustained (bf16, one H100), not measured")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
