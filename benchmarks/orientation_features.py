"""Which features of a frozen backbone reveal an image's quarter turn: the class token, the mean patch
token, or the patch tokens pooled on a 2x2 or 3x3 grid (a turn permutes the cells, so a linear head can
read where things are).

N images of an eval run's pool, each in its four quarter turns (one forward pass per turn, at the
recipe's input size and resize policy), a linear head per feature (``core.model.orient.fit_orientation``,
a quarter of the images held out): held-out accuracy per turn and the share that falls back at the
threshold that keeps ``--accuracy`` of the confident predictions right.

    CURATOR_SHARED=../shared python -m benchmarks.orientation_features RUN [--images 400] [--accuracy 0.99] \
        [--weights ENCODER]

``--weights``: another encoder in the run's place (e.g. one trained with ``train.rotation_weight``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from core.data.pool import recipe_pool
from core.model.backbone import EncoderSpec, build_encoder
from core.model.embed import Embeddings, recipe_reader
from core.model.orient import QUARTERS, fit_orientation, sample_rows
from core.pixels.preprocess import eval_transform
from core.recipe import load_recipe

FEATURES = ("class token", "mean patch", "2x2 grid", "3x3 grid")


def grid(tokens: torch.Tensor, cells: int) -> torch.Tensor:
    """(B, N, C) square patch tokens -> (B, cells * cells * C): each cell's mean token, normalised."""
    b, n, c = tokens.shape
    side = int(round(n ** 0.5))
    pooled = F.adaptive_avg_pool2d(tokens.transpose(1, 2).reshape(b, c, side, side), cells)
    return F.normalize(pooled.flatten(2).transpose(1, 2), dim=-1).flatten(1)


@torch.no_grad()
def turn_features(run: Path, images: int, weights: Path | None = None) -> dict[str, np.ndarray]:
    """Per feature: (images, 4 turns, D) for a seeded sample of the run's pool (by ``weights``, else the
    run's model)."""
    swap = [f"model.weights={weights}"] if weights else []
    recipe = load_recipe(run / "recipe.yaml", ["embed.progress=false", *swap])
    names = Embeddings.load(run / "embeddings").names
    paths = recipe_pool(recipe).paths_of(names)
    encoder = build_encoder(EncoderSpec.from_config(recipe.model)).eval()
    reader = recipe_reader(recipe, encoder)
    transform = eval_transform(encoder.img_size, encoder.spec.resize, encoder.spec.mean, encoder.spec.std,
                               recipe.embed.light)
    rows = sample_rows(len(paths), images)
    out: dict[str, list] = {f: [] for f in FEATURES}
    start = time.perf_counter()
    for i in range(0, len(rows), 16):
        batch = torch.stack([transform(reader(paths[r])) for r in rows[i:i + 16]])
        per_turn: dict[str, list] = {f: [] for f in FEATURES}
        for k in range(len(QUARTERS)):
            feats = encoder.model.forward_features(torch.rot90(batch, -k, dims=(2, 3)))  # k turns clockwise
            tokens = encoder.spatial_tokens(feats)
            for name, value in zip(FEATURES, (feats[:, 0], tokens.mean(1), grid(tokens, 2), grid(tokens, 3)),
                                   strict=True):
                per_turn[name].append(value)
        for name in FEATURES:
            out[name].append(torch.stack(per_turn[name], 1).numpy())
    seconds = time.perf_counter() - start
    print(f"{len(rows)} images x 4 turns in {seconds:.0f} s")
    return {name: np.concatenate(parts) for name, parts in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an eval run (its recipe and pool)")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--accuracy", type=float, default=0.99)
    parser.add_argument("--weights", type=Path, help="an encoder file to measure instead of the run's model")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/orientation_features.csv"))
    args = parser.parse_args()
    rows = []
    for name, views in turn_features(args.run, args.images, args.weights).items():
        views = views / np.linalg.norm(views, axis=-1, keepdims=True)
        _, report = fit_orientation(views.astype(np.float32), held_out=0.25, accuracy=args.accuracy)
        rows.append({"feature": name, "dim": views.shape[-1], "held-out images": report.held_out,
                     "accuracy": report.accuracy, **{f"at {t}": a for t, a in report.per_turn.items()},
                     "falls back": report.fallback, "calibration error": report.calibration_error})
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False, float_format="{:.3f}".format))


if __name__ == "__main__":
    main()
