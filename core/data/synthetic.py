"""Held-out synthetic queries: visitor-photo versions of pool images, the label-free yardstick.

A seeded sample of pool images is photographed by ``core.pixels.photosim`` (a simulator that is not the
training augmentation), the photos are written to the run directory (so a person can look at them)
with a ``pairs.csv``, and each photo's target is its source image in the pool.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from core.base.atomic import atomic_write_bytes, atomic_write_text
from core.base.errors import MissingInputError
from core.base.options import check_choices, option
from core.data.pool import row_index
from core.pixels.images import ImageReader, shrink_to
from core.pixels.photosim import HARD_KINDS, simulate_hard_query, simulate_query, simulate_visitor_photo

# Sources are shrunk first: the simulator's cost grows with the area, and models see ~224 px.
SOURCE_MAX_SIDE = 768
# How the photos are made (synthetic.style): "queries" as the real competition queries look, each
# with its conditions (core.pixels.photosim.simulate_query); "hard", the yardstick for the hard
# conditions: wall photos, dim, low-resolution and zoomed-in photos in equal shares, each hard condition
# alone (simulate_hard_query); "classic", the wall and frame photos of the earliest synthetic figures.
STYLES = ("queries", "hard", "classic")


@dataclass
class SyntheticConfig:
    # Held-out synthetic visitor photos made from pool images; 0 disables them.
    num_queries: int = option(100, ge=0)
    seed: int = option(0, ge=0)
    # "queries": as the real competition queries look (quarter turns, tilt in pale padding, zoom-ins,
    # dim light, low resolution, a third on walls), with Hit@k per condition; "hard": a quarter each of
    # wall, dim, low-resolution and zoomed-in photos (a balanced yardstick for the hard conditions);
    # "classic": the wall and frame photos only (what the earliest synthetic figures used).
    style: str = "queries"

    @staticmethod
    def check(section, key: str) -> None:
        check_choices(section, (("style", STYLES),), key)


@dataclass
class SyntheticQueries:
    paths: list[Path]
    names: list[str]
    sources: list[int]
    # The conditions each photo shows (turn first); empty lists for the classic style.
    conditions: list[list[str]]


def make_synthetic_queries(pool_paths: list[Path], pool_names: list[str], count: int, seed: int,
                           out_dir: str | Path, reader: ImageReader | None = None, style: str = "queries"
                           ) -> SyntheticQueries:
    """Photograph ``count`` pool images chosen with ``seed`` in ``style``; write them and ``pairs.csv``
    (``query,target,conditions``, conditions joined by ``;``) to ``out_dir``."""
    if style not in STYLES:
        raise ValueError(f"synthetic style {style!r} is not one of {STYLES}")
    out_dir = Path(out_dir)
    count = min(count, len(pool_paths))
    rng = np.random.default_rng(seed)
    chosen = sorted(int(i) for i in rng.choice(len(pool_paths), size=count, replace=False))
    reader = reader or ImageReader(min_side=SOURCE_MAX_SIDE)
    paths, names, conditions = [], [], []
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["query", "target", "conditions"])
    for n, source in enumerate(chosen):
        painting = shrink_to(reader(pool_paths[source]), SOURCE_MAX_SIDE)
        # One generator per source: a photo depends only on the seed and the image it shows.
        rng = np.random.default_rng([seed, source])
        if style == "classic":
            photo, shown = simulate_visitor_photo(painting, rng), []
        elif style == "hard":
            photo, shown = simulate_hard_query(painting, rng, HARD_KINDS[n % len(HARD_KINDS)])
        else:
            photo, shown = simulate_query(painting, rng)
        name = f"synthetic/syn_{n:05d}.jpg"
        path = out_dir / "images" / f"syn_{n:05d}.jpg"
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        atomic_write_bytes(path, buf.tobytes())
        paths.append(path)
        names.append(name)
        conditions.append(shown)
        writer.writerow([name, pool_names[source], ";".join(shown)])
    atomic_write_text(out_dir / "pairs.csv", table.getvalue())
    return SyntheticQueries(paths, names, chosen, conditions)


def load_synthetic_queries(folder: str | Path, pool_names: list[str]) -> SyntheticQueries:
    """The synthetic photos a run wrote to ``folder`` (its ``synthetic/``), sources as rows of ``pool_names``."""
    folder = Path(folder)
    if not (folder / "pairs.csv").is_file():
        raise MissingInputError(f"{folder} holds no synthetic photos (pairs.csv). Fix: evaluate with "
                                "synthetic.num_queries > 0")
    pairs = pd.read_csv(folder / "pairs.csv", keep_default_na=False)
    row = row_index(pool_names)
    conditions = [c.split(";") if c else [] for c in pairs.get("conditions", [""] * len(pairs))]
    return SyntheticQueries([folder / "images" / Path(n).name for n in pairs["query"]], list(pairs["query"]),
                            [row[t] for t in pairs["target"]], conditions)
