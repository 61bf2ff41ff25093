"""Retrieval metrics over labeled pairs: Hit@k, mAP and MRR, where a query may have several targets.

Each query is ranked against every other pool row (never itself). Ties with non-target rows are
broken against the query: a target only counts as ahead of the rows it strictly beats, so a
degenerate embedding (all rows equal) scores zero instead of looking perfect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from core.base.registry import Registry

# The cut-offs every report uses; Hit@3 is the competition's measure.
KS = (1, 3, 10)
HIT_KEYS = tuple(f"hit@{k}" for k in KS)
HITS_LABEL = "Hit@" + "/".join(str(k) for k in KS)


def format_hits(figures: dict) -> str:
    """``figures``' Hit@k at every cut-off, e.g. ``0.500/0.650/0.707`` (see ``HITS_LABEL``)."""
    return "/".join(f"{figures[k]:.3f}" for k in HIT_KEYS)


def target_ranks(vectors: np.ndarray, queries: Sequence[int], targets: Sequence[Sequence[int]],
                 chunk: int = 1024) -> list[np.ndarray]:
    """0-based rank of each target of each query (sorted), searching all rows of ``vectors``."""
    ranks: list[np.ndarray] = []
    for start in range(0, len(queries), chunk):
        q_idx = np.asarray(queries[start:start + chunk])
        sims = vectors[q_idx] @ vectors.T
        sims[np.arange(len(q_idx)), q_idx] = -np.inf
        for row, t in zip(sims, targets[start:start + chunk], strict=True):
            t = np.asarray(sorted(set(t)), dtype=np.int64)
            if len(t) == 0:
                ranks.append(np.zeros(0, np.int64))
                continue
            s_t = row[t][:, None]
            ahead = (row[None, :] > s_t).sum(1)
            others = np.ones(len(row), bool)
            others[t] = False
            tied = ((row[None, :] == s_t) & others[None, :]).sum(1)
            ranks.append(np.sort(ahead + tied))
    return ranks


def average_precision(ranks: np.ndarray) -> float:
    """AP of one query from its targets' sorted 0-based ranks."""
    if len(ranks) == 0:
        return 0.0
    return float(np.mean(np.arange(1, len(ranks) + 1) / (ranks + 1)))


# Measures of a set of queries, each from the matched queries' sorted 0-based target ranks:
# ``fn(ranks) -> float``. A new measure is a function and one ``@register_metric`` line; every
# report (metrics.json, the printed table, compare) picks it up.
Metric = Callable[[Sequence[np.ndarray]], float]
METRICS: Registry[Metric] = Registry("metric")
register_metric = METRICS.register


def _hit_at(k: int) -> Metric:
    def hit(ranks: Sequence[np.ndarray]) -> float:
        """Share of queries with a target among their first k neighbours."""
        return float(np.mean([r[0] < k for r in ranks]))

    return hit


for _k in KS:
    register_metric(f"hit@{_k}")(_hit_at(_k))


@register_metric("map")
def mean_average_precision(ranks: Sequence[np.ndarray]) -> float:
    return float(np.mean([average_precision(r) for r in ranks]))


@register_metric("mrr")
def mean_reciprocal_rank(ranks: Sequence[np.ndarray]) -> float:
    return float(np.mean([1.0 / (r[0] + 1) for r in ranks]))


def summarize(ranks: Sequence[np.ndarray]) -> dict:
    """Every registered measure over the queries with at least one target; ``n_queries`` counts those.

    >>> summarize([np.array([0]), np.array([4]), np.array([], dtype=int)])["hit@3"]
    0.5
    """
    matched = [r for r in ranks if len(r)]
    return {"n_queries": len(matched), **{name: fn(matched) if matched else None for name, fn in METRICS.items()}}
