import hashlib

import pandas as pd

from core.images import decode_image, list_images
from core.synthetic import make_synthetic_queries


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
