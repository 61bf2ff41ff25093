import hashlib

import pandas as pd

from core.data.synthetic import make_synthetic_queries
from core.pixels.images import decode_image, list_images


def test_synthetic_queries_are_deterministic_photos_of_their_sources(sample_root, tmp_path):
    paths = list_images(sample_root / "images" / "studio")
    names = [p.name for p in paths]
    a = make_synthetic_queries(paths, names, 6, seed=3, out_dir=tmp_path / "a")
    b = make_synthetic_queries(paths, names, 6, seed=3, out_dir=tmp_path / "b")
    c = make_synthetic_queries(paths, names, 6, seed=4, out_dir=tmp_path / "c")
    digest = lambda q: [hashlib.sha1(p.read_bytes()).hexdigest() for p in q.paths]  # noqa: E731
    assert a.sources == b.sources and digest(a) == digest(b)
    assert digest(a) != digest(c)
    assert len(set(a.sources)) == 6
    pairs = pd.read_csv(tmp_path / "a" / "pairs.csv")
    assert pairs["target"].tolist() == [names[s] for s in a.sources]
    for path, source in zip(a.paths, a.sources, strict=True):
        photo, original = decode_image(path), decode_image(paths[source])
        assert photo.shape != original.shape or abs(photo.astype(int) - original).mean() > 5
    assert len(make_synthetic_queries(paths, names, 10_000, seed=0, out_dir=tmp_path / "d").paths) == len(paths)


def test_query_style_photos_carry_their_conditions_at_the_real_frequencies(sample_root, tmp_path):
    from collections import Counter

    import numpy as np

    from core.pixels.photosim import CONDITIONS, simulate_query

    paths = list_images(sample_root / "images" / "studio")
    queries = make_synthetic_queries(paths, [p.name for p in paths], 8, seed=1, out_dir=tmp_path / "q")
    pairs = pd.read_csv(tmp_path / "q" / "pairs.csv", keep_default_na=False)
    assert pairs["conditions"].tolist() == [";".join(c) for c in queries.conditions]
    assert all(c[0] in ("upright", "rot90", "rot180", "rot270") and set(c) <= set(CONDITIONS)
               for c in queries.conditions)
    classic = make_synthetic_queries(paths, [p.name for p in paths], 4, seed=1, out_dir=tmp_path / "c",
                                     style="classic")
    assert classic.conditions == [[]] * 4
    # Over many photos the turns follow the inspected queries (56% upright, 29% 180, 11% 270, 4% 90).
    painting = np.full((60, 90, 3), 128, np.uint8)
    counts = Counter(simulate_query(painting, np.random.default_rng([0, i]))[1][0] for i in range(2000))
    assert abs(counts["rot180"] / 2000 - 0.29) < 0.03 and abs(counts["upright"] / 2000 - 0.56) < 0.03
    # A turned photo is the upright photo turned: a quarter turn swaps the sides of a landscape painting.
    turned = next(i for i in range(50) if simulate_query(painting, np.random.default_rng([0, i]))[1][0] == "rot90")
    photo, _ = simulate_query(painting, np.random.default_rng([0, turned]))
    assert photo.shape[0] > photo.shape[1]



def test_the_hard_style_gives_each_hard_condition_alone_in_equal_shares(sample_root, tmp_path):
    from collections import Counter

    from core.pixels.photosim import HARD_KINDS

    paths = list_images(sample_root / "images" / "studio")
    queries = make_synthetic_queries(paths, [p.name for p in paths], 12, seed=1, out_dir=tmp_path / "h", style="hard")
    kinds = Counter(c[-1] for c in queries.conditions)
    assert kinds == {kind: 3 for kind in HARD_KINDS}
    # Each photo shows one hard condition, never two (dim and low resolution are not confounded).
    assert all(sum(k in c for k in ("dim", "low resolution", "zoom")) <= 1 for c in queries.conditions)
    low = [p for p, c in zip(queries.paths, queries.conditions, strict=True) if "low resolution" in c]
    assert all(max(decode_image(p).shape[:2]) <= 128 for p in low)
