import pytest

from core.base.errors import MissingInputError
from core.data.pool import build_pool


def test_labeled_set_resolves_to_pool_rows(sample_root, tmp_path):
    pool = build_pool([str(sample_root)], [str(sample_root / "images" / "studio")])
    # The distractor folder is inside the labeled set: its files are not added twice.
    assert len(pool) == len(set(p.resolve() for p in pool.paths)) == len(list((sample_root / "images").rglob("*.*")))
    labeled = pool.labeled[0]
    assert labeled.name == "museum" and labeled.unmatched == 2
    for q, targets in zip(labeled.queries, labeled.targets, strict=True):
        assert pool.names[q].startswith("museum/photos/")
        assert all(pool.names[t].startswith("museum/studio/") for t in targets)


def test_pairs_naming_a_missing_file(tmp_path, sample_root):
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    (bad / "images" / "a.png").write_bytes((sample_root / "images" / "studio" / "s_000.png").read_bytes())
    (bad / "pairs.csv").write_text("query,target\nimages/a.png,images/nope.png\n")
    with pytest.raises(MissingInputError, match="names images/nope.png.*Fix: correct the path"):
        build_pool([str(bad)], [])
    with pytest.raises(MissingInputError, match="is not a labeled set"):
        build_pool([str(tmp_path / "elsewhere")], [])


def test_mcv_museum_ground_truth(shared):
    pool = build_pool([str(shared / "data" / "mcv-museum")], [])
    labeled = pool.labeled[0]
    assert len(pool) == 437 and len(labeled.queries) == 150 and labeled.unmatched == 10
    assert sum(1 for t in labeled.targets if len(t) == 2) > 0  # queries showing two paintings
    assert sorted(set(labeled.subsets)) == ["2024_qsd1_w1", "2024_qsd1_w3", "2024_qsd1_w4",
                                            "2024_qsd2_w2", "2024_qsd2_w3"]
