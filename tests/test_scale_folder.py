"""benchmarks/scale.py's competition-shaped folder: its proportions hold in every prefix it measures."""
import hashlib

import cv2
import pandas as pd

from benchmarks.scale import exponent, make, subset


def test_the_generated_folder_has_the_competitions_shape_in_every_prefix(tmp_path):
    make(tmp_path / "one", images=60, min_side=64, max_side=96, workers=1)
    make(tmp_path / "two", images=60, min_side=64, max_side=96, workers=2)
    truth = pd.read_csv(tmp_path / "one" / "truth.csv", keep_default_na=False)
    names = sorted(p.name for p in (tmp_path / "one" / "images").iterdir())
    assert names == [f"{n:05d}.png" for n in range(1, 61)] and sorted(truth["image"]) == names
    assert truth["kind"].value_counts().to_dict() == {"painting": 30, "distractor": 27, "photo": 3}
    # Same bytes whichever worker made which image.
    digest = {d: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / d / "images").iterdir()}
              for d in ("one", "two")}
    assert digest["one"] == digest["two"]
    folder = subset(tmp_path / "one", 40)
    kept = truth[truth["item"] < 40]
    assert sorted(p.name for p in folder.iterdir()) == sorted(kept["image"])
    photos = kept[kept["kind"] == "photo"]
    assert len(photos) == 2 and set(photos["target"]) <= set(kept.loc[kept["kind"] == "painting", "image"])
    assert all(max(cv2.imread(str(p)).shape[:2]) <= 96 for p in folder.iterdir())


def test_exponent_reads_the_growth_of_a_power_law():
    assert abs(exponent([2500, 5000, 10000], [3.0, 6.0, 12.0]) - 1.0) < 1e-9
    assert abs(exponent([2500, 5000, 10000], [1.0, 4.0, 16.0]) - 2.0) < 1e-9
