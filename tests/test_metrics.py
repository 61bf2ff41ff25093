"""Metrics on hand-made cases whose answers are known."""

import numpy as np
import pytest

from core.vectors.metrics import average_precision, summarize, target_ranks
from core.vectors.paired import paired_difference
from core.vectors.stats import effective_rank, explained_variance, hubness, pair_stats

# Row 0 is the query; rows 1..4 have cosines 0.9, 0.8, 0.7, 0.6 with it.
ANGLES = np.arccos([1.0, 0.9, 0.8, 0.7, 0.6])
POOL = np.stack([np.cos(ANGLES), np.sin(ANGLES)], 1).astype(np.float32)


def test_ranks_exclude_the_query_itself():
    assert target_ranks(POOL, [0], [[1]])[0].tolist() == [0]
    assert target_ranks(POOL, [0], [[3]])[0].tolist() == [2]


def test_several_targets_hit_if_any_is_in_top_k():
    ranks = target_ranks(POOL, [0], [[4, 2]])
    assert ranks[0].tolist() == [1, 3]
    m = summarize(ranks)
    assert m["hit@1"] == 0.0 and m["hit@3"] == 1.0 and m["mrr"] == pytest.approx(0.5)
    assert m["map"] == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_queries_without_target_are_left_out():
    ranks = target_ranks(POOL, [0, 1], [[1], []])
    m = summarize(ranks)
    assert m["n_queries"] == 1 and m["hit@1"] == 1.0
    assert summarize([np.zeros(0, np.int64)])["hit@3"] is None


def test_ties_count_against_the_query():
    same = np.ones((5, 2), np.float32) / np.sqrt(2)
    # Everything ties: the target is placed after the three other non-target rows.
    assert target_ranks(same, [0], [[2]])[0].tolist() == [3]
    # Tied targets do not push each other down.
    assert target_ranks(same, [0], [[1, 2]])[0].tolist() == [2, 2]
    assert summarize(target_ranks(same, [0], [[2]]))["hit@3"] == 0.0


def test_average_precision_known_values():
    assert average_precision(np.array([0, 1])) == 1.0
    assert average_precision(np.array([2])) == pytest.approx(1 / 3)


def test_hubness_counts_k_occurrences_and_names_the_hub():
    # Row 0 is everyone's neighbour: a hub.
    idx = np.array([[1], [0], [0], [0], [0]])
    out = hubness(idx, names=list("abcde"), top=2)
    assert out["hub_max"] == 4 and out["top_hubs"][0] == {"row": 0, "name": "a", "k_occurrence": 4}
    counts = np.array([4, 1, 0, 0, 0], float)
    expected = ((counts - counts.mean()) ** 3).mean() / counts.std() ** 3
    assert out["hub_skew"] == pytest.approx(expected)
    assert hubness(np.array([[1], [2], [0]]))["hub_skew"] == 0.0  # every row once: no hubs


def test_alignment_uniformity_and_domain_split_on_known_points():
    # Two clean images (rows 0, 1) and their photos (rows 2, 3); photo 2 sits nearest its painting,
    # photo 3 sits nearest photo 2 (a domain split). No two similarities tie.
    v = np.array([[1, 0], [0, 1], [0.95, 0.05], [0.9, 0.1]], np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    out = pair_stats(v, queries=[2, 3], targets=[0, 1])
    assert out["alignment"] == pytest.approx((((v[2] - v[0]) ** 2).sum() + ((v[3] - v[1]) ** 2).sum()) / 2, rel=1e-5)
    assert out["photo_nn_is_photo"] == pytest.approx(0.5)
    d2 = np.clip(2 - 2 * v.astype(np.float64) @ v.T, 0, None)[np.triu_indices(4, 1)]
    assert out["uniformity"] == pytest.approx(np.log(np.exp(-2 * d2).mean()))


def test_effective_rank_and_explained_variance_of_a_line_and_a_plane():
    t = np.linspace(-1, 1, 50)[:, None]
    line = np.hstack([t, np.zeros((50, 3))])
    assert effective_rank(line) == pytest.approx(1.0)
    assert explained_variance(line)["explained_variance_top1"] == pytest.approx(1.0)
    plane = np.hstack([np.cos(np.linspace(0, 2 * np.pi, 200, endpoint=False))[:, None],
                       np.sin(np.linspace(0, 2 * np.pi, 200, endpoint=False))[:, None], np.zeros((200, 2))])
    assert effective_rank(plane) == pytest.approx(2.0, rel=1e-6)


def test_paired_difference_counts_discordant_queries_and_brackets_the_difference():
    base = np.zeros(140, bool)
    base[:120] = True
    run = base.copy()
    run[120:125] = True  # five queries only the run finds
    d = paired_difference(base, run)
    assert (d.n, d.gained, d.lost) == (140, 5, 0) and d.diff == pytest.approx(5 / 140)
    assert d.p == pytest.approx(2 / 2 ** 5)  # McNemar exact: 5 of 5 discordant go one way
    assert 0 <= d.low <= d.diff <= d.high and d == paired_difference(base, run)  # seeded: reproducible
    run[:3] = False  # three lost: the interval now reaches below zero
    d = paired_difference(base, run)
    assert (d.gained, d.lost) == (5, 3) and d.low < 0 < d.high and d.p > 0.5
    same = paired_difference(base, base)
    assert (same.diff, same.low, same.high, same.p) == (0, 0, 0, 1)
    assert str(d).startswith("+0.014 [") and str(d).endswith("+5/-3 p=0.73")
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_difference(base, run[:10])
