"""Embedding statistics that warn before Hit@k does (a reading guide is in docs/guide.md).

- Norms before normalisation (``norm_*``): a large ``norm_cv`` means a few images dominate.
- ``effective_rank`` (exp of the entropy of the normalised singular values) and
  ``explained_variance_top1/top10``: a collapse shows as a rank far below the dimension and most
  variance in a few components.
- Hubness: ``hub_skew`` is the skewness of the k-occurrence (how often each image is among the
  others' k nearest neighbours); high values mean a few hubs sit near everything. ``top_hubs``
  names them.
- ``nn1_*`` and ``nn_margin_*`` (NN1 minus NN2 similarity), as mean and quantiles: a tiny margin
  means the space does not separate matches from look-alikes.
- ``mutual_nn_rate``: the share of rows in a mutual-nearest-neighbour pair (what stage 2 mines).
- On positive pairs (synthetic photo, source): ``alignment`` (mean squared distance, lower is
  better), ``uniformity`` (log mean exp(-2 d^2) over all pairs, lower is more spread; Wang & Isola
  2020), and ``photo_nn_is_photo``: how often a photo's nearest neighbour is another photo rather
  than a clean image, the sign of a domain split.
"""

from __future__ import annotations

import numpy as np

from core.vectors.search import is_mutual, topk

QUANTILES = (0.1, 0.5, 0.9)


def robust_threshold(values: np.ndarray, z: float) -> float:
    """The median of ``values`` plus ``z`` robust standard deviations (1.4826 MAD), never below 0: where
    the chance values of a pool rarely reach.

    >>> round(robust_threshold(np.array([-0.02, -0.01, 0.0, 0.01, 0.02, 0.3]), 6), 3)
    0.138
    """
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median)))
    return max(0.0, median + z * spread)


def effective_rank(vectors: np.ndarray) -> float:
    """Roy & Vetterli's effective rank of the centred rows."""
    s = _singular_values(vectors)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _singular_values(vectors: np.ndarray) -> np.ndarray:
    centred = vectors - vectors.mean(0, keepdims=True)
    return np.linalg.svd(centred.astype(np.float64), compute_uv=False)


def explained_variance(vectors: np.ndarray, components: tuple[int, ...] = (1, 10)) -> dict[str, float]:
    """Share of the variance in the top principal components."""
    var = _singular_values(vectors) ** 2
    total = var.sum()
    return {f"explained_variance_top{c}": float(var[:c].sum() / total) if total > 0 else 0.0 for c in components}


def hubness(idx: np.ndarray, names: list[str] | None = None, top: int = 5) -> dict:
    """Skewness of the k-occurrence counts of ``idx`` (each row's k neighbours) and the top hubs."""
    counts = np.bincount(idx.ravel(), minlength=len(idx)).astype(np.float64)
    std = counts.std()
    skew = float(((counts - counts.mean()) ** 3).mean() / std**3) if std > 0 else 0.0
    order = np.argsort(-counts, kind="stable")[:top]
    hubs = [{"row": int(i), "name": names[i] if names else None, "k_occurrence": int(counts[i])} for i in order]
    return {"hub_k": int(idx.shape[1]), "hub_skew": skew, "hub_max": int(counts.max()), "top_hubs": hubs}


def _quantiles(prefix: str, values: np.ndarray) -> dict[str, float]:
    return {f"{prefix}_mean": float(values.mean()),
            **{f"{prefix}_q{int(q * 100)}": float(np.quantile(values, q)) for q in QUANTILES}}


def pair_stats(vectors: np.ndarray, queries: list[int], targets: list[int], sample: int = 2000,
               seed: int = 0) -> dict[str, float]:
    """Alignment and uniformity on positive pairs (row ``queries[i]`` with ``targets[i]``), and the
    rate at which a query's nearest neighbour is another query (a photo-versus-clean domain split)."""
    q, t = np.asarray(queries), np.asarray(targets)
    alignment = float(((vectors[q] - vectors[t]) ** 2).sum(1).mean())
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False)
    sub = vectors[rows].astype(np.float64)
    d2 = np.clip(2 - 2 * sub @ sub.T, 0, None)[np.triu_indices(len(sub), 1)]
    uniformity = float(np.log(np.exp(-2 * d2).mean()))
    _, nn = topk(vectors, None, k=1)
    photo_nn_is_photo = float(np.isin(nn[q, 0], q).mean())
    return {"alignment": alignment, "uniformity": uniformity, "photo_nn_is_photo": photo_nn_is_photo}


def embedding_stats(vectors: np.ndarray, norms: np.ndarray, names: list[str] | None = None,
                    hub_k: int = 10) -> dict:
    """Statistics of L2-normalised ``vectors`` (N, D) and their raw ``norms`` (N,)."""
    n = len(vectors)
    out = {"n": n, "dim": int(vectors.shape[1]),
           "norm_mean": float(norms.mean()), "norm_std": float(norms.std()),
           "norm_cv": float(norms.std() / max(norms.mean(), 1e-12)),
           "norm_min": float(norms.min()), "norm_max": float(norms.max()),
           "effective_rank": effective_rank(vectors), **explained_variance(vectors)}
    if n >= 3:
        sims, idx = topk(vectors, None, k=min(max(2, hub_k), n - 1))
        nn = idx[:, 0]
        out.update(_quantiles("nn1", sims[:, 0]))
        out.update(_quantiles("nn_margin", sims[:, 0] - sims[:, 1]))
        out["mutual_nn_rate"] = float(np.mean(is_mutual(nn)))
        out.update(hubness(idx, names))
    return out
