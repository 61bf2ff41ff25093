"""A small synthetic museum that Curator makes itself, deterministically: demo and test data.

Layout (a labeled set in the format eval reads, whose ``images/`` also serves as an unlabeled pool)::

    ROOT/images/studio/s_NNN.png          clean procedural "paintings"
    ROOT/images/photos/SET/q_NNN.jpg      visitor photos of some of them (SET: cropped, wall)
    ROOT/images/distractors/d_NNN.png     texture and scene-like images with no match
    ROOT/pairs.csv                        query,target,set (empty target: painting not in the pool)

    python -m core.pixels.sample OUT [--paintings N --photos N --distractors N --seed S]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from core.base.errors import CuratorError, OutputError, command_line
from core.pixels.photosim import simulate_visitor_photo

SAMPLE_VERSION = 1


@dataclass(frozen=True)
class SampleSpec:
    paintings: int = 60
    photos: int = 24
    unmatched_photos: int = 4
    distractors: int = 30
    seed: int = 0
    min_side: int = 96
    max_side: int = 200


def _colour(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(c) for c in rng.integers(0, 256, 3))


def make_painting(rng: np.random.Generator, min_side: int = 96, max_side: int = 200) -> np.ndarray:
    """A procedural 'painting': a two-colour ground, then blocks, discs, strokes and polygons."""
    w, h = (int(rng.integers(min_side, max_side + 1)) for _ in range(2))
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = (np.array(_colour(rng), np.float32) * (1 - t) + np.array(_colour(rng), np.float32) * t)
    img = np.ascontiguousarray(np.broadcast_to(img, (h, w, 3))).astype(np.uint8)
    for _ in range(int(rng.integers(6, 14))):
        kind = rng.integers(4)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        colour = _colour(rng)
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(8, w // 2)), y + int(rng.integers(8, h // 2))),
                          colour, -1)
        elif kind == 1:
            cv2.circle(img, (x, y), int(rng.integers(5, min(w, h) // 3)), colour, -1, cv2.LINE_AA)
        elif kind == 2:
            end = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, (x, y), end, colour, int(rng.integers(2, 9)), cv2.LINE_AA)
        else:
            points = rng.integers(0, [w, h], size=(int(rng.integers(3, 6)), 2)).astype(np.int32)
            cv2.fillPoly(img, [points], colour, cv2.LINE_AA)
    # Brush texture: low-amplitude noise, softened, so paintings are not flat vector art.
    texture = cv2.GaussianBlur(rng.normal(0, 10, (h, w)).astype(np.float32), (0, 0), 1.2)[..., None]
    return np.clip(img.astype(np.float32) + texture, 0, 255).astype(np.uint8)


def make_distractor(rng: np.random.Generator, min_side: int = 96, max_side: int = 200) -> np.ndarray:
    """A non-painting: smooth coloured noise (like an out-of-focus scene) or a stripe/check pattern."""
    w, h = (int(rng.integers(min_side, max_side + 1)) for _ in range(2))
    if rng.random() < 0.5:
        small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3)).astype(np.uint8)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    period = int(rng.integers(6, 30))
    yy, xx = np.mgrid[0:h, 0:w]
    pattern = ((xx // period + (yy // period) * int(rng.integers(0, 2))) % 2).astype(bool)
    img = np.empty((h, w, 3), np.uint8)
    img[pattern], img[~pattern] = _colour(rng), _colour(rng)
    return img


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()


def _jpg(img: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def generate(root: str | Path, spec: SampleSpec = SampleSpec()) -> Path:
    """Write the sample museum to ``root`` (which must not exist yet). Same spec, same bytes."""
    if spec.photos > spec.paintings:
        raise CuratorError(f"{spec.photos} photos need at least as many paintings ({spec.paintings}). "
                           "Fix: raise --paintings or lower --photos")
    root = Path(root)
    files: dict[str, bytes] = {}
    rng = np.random.default_rng(spec.seed)
    paintings = [make_painting(rng, spec.min_side, spec.max_side) for _ in range(spec.paintings)]
    for i, painting in enumerate(paintings):
        files[f"images/studio/s_{i:03d}.png"] = _png(painting)
    rows = []
    photographed = rng.permutation(spec.paintings)[:spec.photos]
    absent = [make_painting(rng, spec.min_side, spec.max_side) for _ in range(spec.unmatched_photos)]
    subjects = [(int(i), paintings[i]) for i in photographed] + [(None, p) for p in absent]
    for q, (target, painting) in enumerate(subjects):
        on_wall = q % 2 == 1
        subset = "wall" if on_wall else "cropped"
        name = f"images/photos/{subset}/q_{q:03d}.jpg"
        files[name] = _jpg(simulate_visitor_photo(painting, rng, on_wall=on_wall))
        rows.append((name, "" if target is None else f"images/studio/s_{target:03d}.png", subset))
    for i in range(spec.distractors):
        files[f"images/distractors/d_{i:03d}.png"] = _png(make_distractor(rng, spec.min_side, spec.max_side))
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["query", "target", "set"])
    writer.writerows(rows)
    files["pairs.csv"] = table.getvalue().encode()
    files["sample.json"] = json.dumps({"version": SAMPLE_VERSION, **asdict(spec)}, indent=2).encode()

    # Build beside the destination and rename, so an interrupted generation leaves nothing half-made.
    tmp = root.parent / f".{root.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for name, data in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
    tmp.rename(root)
    return root


def ensure_sample(root: str | Path, spec: SampleSpec = SampleSpec()) -> Path:
    """The sample museum at ``root``, generated on first use (regenerated if made by another spec)."""
    root = Path(root)
    marker = root / "sample.json"
    wanted = {"version": SAMPLE_VERSION, **asdict(spec)}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return root
    if root.exists():
        if not marker.is_file():
            raise FileExistsError(f"{root} exists and is not a Curator sample museum. Fix: set "
                                  "data.sample_dir to another folder")
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    return generate(root, spec)


@command_line
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.pixels.sample", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    defaults = SampleSpec()
    for name in ("paintings", "photos", "unmatched_photos", "distractors", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    args = parser.parse_args(argv)
    if args.out.exists():
        raise OutputError(f"{args.out} already exists. Fix: name a new folder (the sample museum is made "
                          "whole or not at all)")
    spec = SampleSpec(paintings=args.paintings, photos=args.photos, unmatched_photos=args.unmatched_photos,
                      distractors=args.distractors, seed=args.seed)
    print(generate(args.out, spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
