import hashlib

import pandas as pd
from conftest import SMALL

from core.pixels.images import list_images
from core.pixels.sample import ensure_sample, generate


def _digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_and_complete(tmp_path, sample_root):
    again = generate(tmp_path / "again", SMALL)
    assert _digest(again) == _digest(sample_root)
    pairs = pd.read_csv(sample_root / "pairs.csv", keep_default_na=False)
    assert len(pairs) == SMALL.photos + SMALL.unmatched_photos
    assert (pairs["target"] == "").sum() == SMALL.unmatched_photos
    assert set(pairs["set"]) == {"cropped", "wall"}
    for rel in list(pairs["query"]) + [t for t in pairs["target"] if t]:
        assert (sample_root / rel).is_file()
    images = list_images(sample_root / "images")
    assert len(images) == SMALL.paintings + SMALL.photos + SMALL.unmatched_photos + SMALL.distractors


def test_another_seed_differs_and_ensure_reuses(tmp_path):
    from dataclasses import replace

    a = ensure_sample(tmp_path / "m", SMALL)
    stamp = (a / "pairs.csv").stat().st_mtime_ns
    assert ensure_sample(tmp_path / "m", SMALL) == a
    assert (a / "pairs.csv").stat().st_mtime_ns == stamp
    b = generate(tmp_path / "b", replace(SMALL, seed=1))
    assert _digest(a) != _digest(b)
