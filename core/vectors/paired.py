"""Is one run better than another on the same queries? Paired Hit@k differences with their uncertainty.

Two runs scored on the same 140 queries differ by a few queries, and a few queries is what separates a
stage that earns its keep from noise. Pairing by query uses that both runs saw the same photos: the
interval comes from resampling queries (a paired bootstrap) and the test from the queries only one
run finds (McNemar's exact test), instead of treating the two Hit@k as independent proportions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest


@dataclass(frozen=True)
class PairedDifference:
    """Hit@k of ``run`` minus Hit@k of ``base`` over the queries both scored."""

    n: int
    diff: float
    low: float  # 95% paired-bootstrap interval of ``diff``
    high: float
    gained: int  # queries ``run`` finds within k and ``base`` does not
    lost: int
    p: float  # McNemar's exact two-sided p-value (1 where no query differs)

    def __str__(self) -> str:
        return (f"{self.diff:+.3f} [{self.low:+.3f}, {self.high:+.3f}] "
                f"+{self.gained}/-{self.lost} p={self.p:.2g}")


def paired_difference(base_hits: np.ndarray, run_hits: np.ndarray, n_boot: int = 10_000,
                      seed: int = 0) -> PairedDifference:
    """The paired difference of two runs' hits (booleans, one per query, same order).

    >>> d = paired_difference(np.array([1, 0, 0, 1, 0], bool), np.array([1, 1, 1, 1, 0], bool))
    >>> d.diff, d.gained, d.lost
    (0.4, 2, 0)
    """
    base_hits, run_hits = np.asarray(base_hits, bool), np.asarray(run_hits, bool)
    if base_hits.shape != run_hits.shape or base_hits.ndim != 1 or not len(base_hits):
        raise ValueError(f"need two equal, non-empty vectors of hits; got shapes {base_hits.shape}, {run_hits.shape}")
    delta = run_hits.astype(np.int8) - base_hits.astype(np.int8)
    gained, lost = int((delta > 0).sum()), int((delta < 0).sum())
    # A seeded bootstrap: the same two runs always print the same interval.
    rows = np.random.default_rng(seed).integers(0, len(delta), size=(n_boot, len(delta)), dtype=np.int32)
    low, high = np.percentile(delta[rows].mean(axis=1), [2.5, 97.5])
    p = binomtest(gained, gained + lost, 0.5).pvalue if gained + lost else 1.0
    return PairedDifference(len(delta), float(delta.mean()), float(low), float(high), gained, lost, float(p))
