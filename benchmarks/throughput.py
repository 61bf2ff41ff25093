"""Embedding throughput: the full pipeline (decode, resize, model) against the model alone, side by side.

    CURATOR_SHARED=../shared python -m benchmarks.throughput [recipes/zeroshot.yaml] [--images N] [key=value ...]

Uses the first N images of ../shared/data/mcv-museum (real JPEGs up to 768 px), or of the sample
museum when ../shared is absent. Prints images/s of: decoding + resizing alone (the data pipeline),
the model alone on pre-made tensors, and the full pipeline, in fp32 and bf16, with the ratio
full/model (1.0 means the data pipeline costs nothing). Then times mutual-nearest-neighbour search
over 20,000 x 384-d embeddings with each available search backend.

With ``--option``, it times instead what embedding options cost: seconds per 1,000 images of the
recipe and of the recipe with each option (space-separated key=value overrides), interleaved chunk by
chunk so that the machine's load falls on all of them alike:

    python -m benchmarks.throughput recipes/submission.yaml --images 60 --option embed.light=dim-gamma \
        --option model.img_size=336
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from core.model.backbone import EncoderSpec, build_encoder
from core.model.embed import ImageFileDataset, embed_images, recipe_reader
from core.pixels.images import ImageReader, list_images
from core.pixels.preprocess import eval_transform
from core.pixels.sample import ensure_sample
from core.recipe import load_recipe
from core.vectors.search import faiss_available, mutual_nearest_neighbours


def _images(n: int) -> list[Path]:
    shared = Path(os.environ.get("CURATOR_SHARED", "../shared")) / "data" / "mcv-museum" / "images"
    folder = shared if shared.is_dir() else ensure_sample(".curator/sample-museum") / "images"
    paths = list_images(folder)
    print(f"images: {min(n, len(paths))} from {folder}")
    return paths[:n]


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:7.1f} img/s ({seconds:6.1f} s)"


def data_pipeline(paths: list[Path], encoder, workers: int, batch: int) -> float:
    transform = eval_transform(encoder.img_size, encoder.spec.resize, encoder.spec.mean, encoder.spec.std)
    dataset = ImageFileDataset(paths, ImageReader(min_side=encoder.img_size), [transform])
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers,
                                         collate_fn=lambda items: items)
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def model_alone(encoder, n: int, batch: int, precision: str) -> float:
    x = torch.randn(batch, 3, encoder.img_size, encoder.img_size)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), autocast:
        encoder(x[:2])  # warm-up
        start = time.perf_counter()
        for i in range(0, n, batch):
            encoder(x[: min(batch, n - i)])
    return time.perf_counter() - start


def search(n: int = 20_000, d: int = 384) -> None:
    rng = np.random.default_rng(0)
    # Clustered rather than uniform, so there are real mutual pairs to find.
    centres = rng.normal(size=(n // 2, d)).astype(np.float32)
    x = np.concatenate([centres, centres + 0.3 * rng.normal(size=centres.shape).astype(np.float32)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for backend in ["torch"] + (["faiss"] if faiss_available() else []):
        start = time.perf_counter()
        pairs, _ = mutual_nearest_neighbours(x, backend=backend)
        print(f"mutual NN over {n} x {d}-d, {backend:5s}: {time.perf_counter() - start:6.2f} s, "
              f"{len(pairs)} pairs")


def options_side_by_side(recipe: str, overrides: list[str], options: list[str], paths: list[Path],
                         rounds: int = 3) -> None:
    """Print seconds per 1,000 images of embedding ``paths`` with the recipe and with each option, the
    chunks of ``paths`` taken in turn by every setting (``rounds`` chunks), with the ratio to the recipe."""
    setups = {}
    for name, extra in [("the recipe", []), *((option, option.split()) for option in options)]:
        cfg = load_recipe(recipe, ["embed.progress=false", *overrides, *extra])
        encoder = build_encoder(EncoderSpec.from_config(cfg.model))
        setups[name] = (cfg, encoder, recipe_reader(cfg, encoder))
    seconds = dict.fromkeys(setups, 0.0)
    for chunk in np.array_split(np.arange(len(paths)), rounds):
        part = [paths[i] for i in chunk]
        for name, (cfg, encoder, reader) in setups.items():
            start = time.perf_counter()
            embed_images(encoder, part, [p.name for p in part], cfg.embed, reader=reader)
            seconds[name] += time.perf_counter() - start
    for name, s in seconds.items():
        print(f"{name:40s} {1000 * s / len(paths):7.0f} s per 1,000 images, x{s / seconds['the recipe']:.2f} "
              "the recipe's")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe", nargs="?", default="recipes/zeroshot.yaml")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--option", action="append", default=[],
                        help="key=value overrides (space-separated) timed against the recipe; repeatable")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    recipe = load_recipe(args.recipe, ["embed.progress=false", *args.overrides])
    paths = _images(args.images)
    if args.option:
        options_side_by_side(args.recipe, args.overrides, args.option, paths)
        return
    n = len(paths)
    encoder = build_encoder(EncoderSpec.from_config(recipe.model))
    batch, workers = recipe.embed.batch_size, recipe.embed.num_workers
    print(f"model {recipe.model.arch} @ {encoder.img_size} px, batch {batch}, {workers} workers, "
          f"{torch.get_num_threads()} torch threads")
    print(f"data pipeline alone (decode+resize): {_rate(n, data_pipeline(paths, encoder, workers, batch))}")
    for precision in ("fp32", "bf16"):
        alone = model_alone(encoder, n, batch, precision)
        cfg = load_recipe(args.recipe, ["embed.progress=false", f"embed.precision={precision}", *args.overrides])
        start = time.perf_counter()
        embed_images(encoder, paths, [p.name for p in paths], cfg.embed)
        full = time.perf_counter() - start
        print(f"{precision}: model alone {_rate(n, alone)} | full pipeline {_rate(n, full)} | "
              f"full/model throughput ratio {alone / full:.2f}")
    search()


if __name__ == "__main__":
    main()
