"""python -m eval.crops FOLDER [--out crops.png] [--limit 24] [--seed 0]

A PNG grid of what painting localisation (``embed.crop``, ``core.pixels.localise``) makes of the photos
in FOLDER: each photo with the quadrilaterals found in it (green), beside the rectified crops that
are embedded (side by side where a photo shows several paintings); "no crop" where the photo is kept
as it is. Look at it before turning crops on.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from core.base.atomic import check_writable
from core.base.errors import command_line
from core.base.figures import plt, save_png
from core.pixels.images import ImageReader, list_images
from core.pixels.localise import find_paintings, rectify

# Photos are localised at about this size; the grid shows them smaller still.
READ_SIDE = 640


def side_by_side(images: list[np.ndarray]) -> np.ndarray:
    """``images`` scaled to the first one's height and joined left to right, with a white gap."""
    height = images[0].shape[0]
    gap = np.full((height, max(2, height // 20), 3), 255, np.uint8)
    scaled = [cv2.resize(im, (max(1, round(im.shape[1] * height / im.shape[0])), height)) for im in images]
    return np.hstack([part for im in scaled for part in (im, gap)][:-1])


def crop_grid(paths: list[Path], out: str | Path, columns: int = 4) -> tuple[Path, int]:
    """Draw each photo with its quadrilaterals beside its crops; returns the PNG and how many had a crop."""
    reader = ImageReader(min_side=READ_SIDE)
    rows = -(-len(paths) // columns)
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2.2 * 2 * columns, 2.4 * rows), squeeze=False)
    found = 0
    for ax in axes.flat:
        ax.axis("off")
    for n, path in enumerate(paths):
        image = reader(path)
        paintings = find_paintings(image)
        left, right = axes[n // columns, 2 * (n % columns)], axes[n // columns, 2 * (n % columns) + 1]
        shown = image.copy()
        if paintings:
            found += 1
            thickness = max(2, round(max(image.shape[:2]) / 150))
            cv2.polylines(shown, [c.round().astype(np.int32) for c in paintings], True, (0, 255, 0), thickness)
            right.imshow(side_by_side([rectify(image, c) for c in paintings]))
            right.set_title("crop" if len(paintings) == 1 else f"{len(paintings)} crops", fontsize=7)
        else:
            right.text(0.5, 0.5, "no crop", ha="center", va="center", fontsize=8, transform=right.transAxes)
        left.imshow(shown)
        left.set_title(path.name[-28:], fontsize=7)
    return save_png(fig, out, dpi=90), found


@command_line
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.crops", description=__doc__.split("\n\n")[1])
    parser.add_argument("folder", type=Path, help="a folder of photos (searched recursively)")
    parser.add_argument("--out", default="crops.png", help="the PNG to write (default: crops.png)")
    parser.add_argument("--limit", type=int, default=24, help="how many photos, drawn at random (default: 24)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    check_writable(args.out, "--out")
    paths = list_images(args.folder)
    if len(paths) > args.limit:
        pick = np.random.default_rng(args.seed).choice(len(paths), args.limit, replace=False)
        paths = [paths[i] for i in sorted(pick)]
    start = time.perf_counter()
    out, found = crop_grid(paths, args.out)
    print(f"wrote {out}: {found} of {len(paths)} photos cropped, {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
