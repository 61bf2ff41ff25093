"""Metrics on hand-made cases whose answers are known."""

import numpy as np
import pytest

from eval.metrics import average_precision, summarize, target_ranks

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
