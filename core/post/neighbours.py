"""Neighbourhood averaging: database-side augmentation (``dba``) and alpha query expansion (``qe``).

- ``dba``: each embedding becomes the similarity^alpha-weighted mean of itself and its k nearest neighbours.
- ``qe``: alpha query expansion. Where every image is both query and database item, it is the same
  neighbourhood averaging as DBA; after ``dba`` it is a second round over the augmented vectors, with
  its own k and alpha.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.base.options import option
from core.model.embed import Embeddings
from core.post.base import PostProcessor, PostStep, register_step, unit_rows
from core.vectors.search import topk


@dataclass
class NeighbourConfig:
    # Average each embedding with its k nearest neighbours, weighted by similarity^alpha.
    k: int = option(2, ge=1)
    alpha: float = option(3.0, ge=0)


def neighbour_average(vectors: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """Each row becomes the normalised sum of itself and its ``k`` nearest rows, weighted by
    max(similarity, 0)^alpha (self weight 1): points with no close neighbour barely move."""
    if len(vectors) < 2 or k < 1:
        return unit_rows(vectors)
    sims, idx = topk(vectors, None, k=min(k, len(vectors) - 1))
    weights = np.clip(sims, 0, None) ** alpha
    out = vectors + np.einsum("nk,nkd->nd", weights, vectors[idx])
    return unit_rows(out)


def _neighbour_step(name: str) -> PostStep:
    def step(post: PostProcessor, emb: Embeddings, vectors: np.ndarray, paths: Sequence[Path],
             save: bool) -> np.ndarray:
        return neighbour_average(vectors, int(post.cfg[name].k), float(post.cfg[name].alpha))

    return step


register_step("dba", NeighbourConfig)(_neighbour_step("dba"))
register_step("qe", NeighbourConfig)(_neighbour_step("qe"))
