"""Embedding statistics that warn before Hit@k does: norm spread, effective rank, NN margins.

- ``norm_cv`` (std/mean of the raw norms): large values mean a few images dominate before
  normalisation.
- ``effective_rank`` (exp of the entropy of the normalised singular values): a collapse shows as a
  value far below the dimension.
- ``nn1_mean`` and ``nn_margin_mean`` (NN1 minus NN2 similarity): a tiny margin means the space does
  not separate near-duplicates from merely similar images.
- ``mutual_nn_rate``: the share of rows that are in a mutual-nearest-neighbour pair.
"""

from __future__ import annotations

import numpy as np

from core.search import topk


def effective_rank(vectors: np.ndarray) -> float:
    """Roy & Vetterli's effective rank of the centred rows."""
    centred = vectors - vectors.mean(0, keepdims=True)
    s = np.linalg.svd(centred.astype(np.float64), compute_uv=False)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def embedding_stats(vectors: np.ndarray, norms: np.ndarray) -> dict:
    """Statistics of L2-normalised ``vectors`` (N, D) and their raw ``norms`` (N,)."""
    n = len(vectors)
    out = {"n": n, "dim": int(vectors.shape[1]),
           "norm_mean": float(norms.mean()), "norm_std": float(norms.std()),
           "norm_cv": float(norms.std() / max(norms.mean(), 1e-12)),
           "norm_min": float(norms.min()), "norm_max": float(norms.max()),
           "effective_rank": effective_rank(vectors)}
    if n >= 3:
        sims, idx = topk(vectors, None, k=2)
        nn = idx[:, 0]
        out["nn1_mean"] = float(sims[:, 0].mean())
        out["nn_margin_mean"] = float((sims[:, 0] - sims[:, 1]).mean())
        out["mutual_nn_rate"] = float(np.mean(nn[nn] == np.arange(n)))
    return out
