"""The diffusion step (``diffusion``): a Fast Spectral Ranking block appended to each embedding
(``core.vectors.diffusion``), over the pool's k-NN graph, optionally with geometrically verified edges."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.base.options import option
from core.model.embed import Embeddings
from core.post.base import PostProcessor, register_step
from core.post.concat import concat_blocks
from core.post.fusion import verified_neighbours
from core.vectors.diffusion import knn_graph, spectral_embedding

log = logging.getLogger(__name__)


@dataclass
class DiffusionConfig:
    # The graph: each image's k nearest neighbours, edges weighted max(cosine, 0)^gamma; with verify,
    # each image's verify_k nearest are matched (the recipe's verify section) and confirmed pairs get the
    # full weight 1 (a match per pair: slow, as fusion is).
    k: int = option(10, ge=1)
    gamma: float = option(3.0, gt=0)
    verify: bool = False
    verify_k: int = option(3, ge=1)
    # Diffusion's restart: near 1 spreads further along the graph.
    alpha: float = option(0.99, gt=0, lt=1)
    # Eigenpairs kept: the diffusion block's width (the output grows by this many dimensions).
    rank: int = option(256, ge=1)
    # Weight of the diffusion block against the input embedding's (1.0): cosines add with weight^2.
    weight: float = option(1.0, ge=0)


@register_step("diffusion", DiffusionConfig)
def diffusion_step(post: PostProcessor, emb: Embeddings, vectors: np.ndarray, paths: Sequence[Path],
                   save: bool) -> np.ndarray:
    """The embedding with its diffusion block appended (Fast Spectral Ranking, core/vectors/diffusion.py)."""
    d = post.cfg.diffusion
    pairs = None
    if d.verify:
        verified = verified_neighbours(vectors, paths, int(d.verify_k), post.verified(),
                                       bool(post.recipe.embed.progress))
        post.verified_pairs = len(verified)
        pairs = np.array([(i, j) for i, j, _ in verified], np.int64).reshape(-1, 2)
    graph = knn_graph(vectors, int(d.k), float(d.gamma), pairs)
    log.info("diffusion: %d edges among %d images%s", graph.nnz // 2, len(vectors),
             f", {post.verified_pairs} verified" if d.verify else "")
    return concat_blocks([vectors, spectral_embedding(graph, float(d.alpha), int(d.rank))], [1.0, float(d.weight)])
