"""Verified-match fusion (``fusion``): each image's k nearest neighbours are checked geometrically
(SIFT + RANSAC homography, ``core.pixels.verify``), and a pair with enough inliers moves both embeddings
towards each other by ``weight``. Off by default: it costs a feature extraction per image and k matches
per image, and it uses the pixels beyond the embedding model, which competition rules may frown on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.base.options import option
from core.model.embed import Embeddings
from core.pixels.verify import Verifier
from core.post.base import PostProcessor, register_step, unit_rows
from core.vectors.search import topk

log = logging.getLogger(__name__)


@dataclass
class FusionConfig:
    # Candidates: each image's k nearest neighbours; a pair the recipe's verify section confirms moves
    # both embeddings towards each other by weight.
    k: int = option(3, ge=1)
    weight: float = option(0.5, ge=0, le=1)


def verified_neighbours(vectors: np.ndarray, paths: Sequence[Path], k: int, verifier: Verifier,
                        progress: bool = False) -> list[tuple[int, int, int]]:
    """Each image's ``k`` nearest neighbours checked geometrically: the pairs (i, j, inliers), i < j,
    with at least the verifier's ``min_inliers`` RANSAC inliers."""
    _, idx = topk(vectors, None, k=min(k, len(vectors) - 1))
    candidates = sorted({(min(i, int(j)), max(i, int(j))) for i in range(len(vectors)) for j in idx[i]})
    verified = []
    for i, j in tqdm(candidates, desc="verify neighbours", unit="pair", disable=not progress, mininterval=1.0):
        inliers = verifier.inliers(paths[i], paths[j])
        if inliers >= verifier.min_inliers:
            verified.append((i, j, inliers))
    return verified


def fuse_verified(vectors: np.ndarray, paths: Sequence[Path], k: int, weight: float, verifier: Verifier,
                  progress: bool = False) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Move geometrically verified neighbour pairs towards each other; others stay as they are.

    Returns the new vectors and the verified pairs (i, j, inliers), i < j.
    """
    verified = verified_neighbours(vectors, paths, k, verifier, progress)
    if not verified:
        return vectors.copy(), verified
    out = vectors.astype(np.float32).copy()
    for i, j, _ in verified:
        out[i] += weight * vectors[j]
        out[j] += weight * vectors[i]
    touched = sorted({i for i, _, _ in verified} | {j for _, j, _ in verified})
    out[touched] = unit_rows(out[touched])
    return out, verified


@register_step("fusion", FusionConfig)
def fusion_step(post: PostProcessor, emb: Embeddings, vectors: np.ndarray, paths: Sequence[Path],
                save: bool) -> np.ndarray:
    f = post.cfg.fusion
    fused, pairs = fuse_verified(vectors, paths, int(f.k), float(f.weight), post.verified(),
                                 bool(post.recipe.embed.progress))
    post.verified_pairs = len(pairs)
    log.info("fusion: %d verified pairs among the %d nearest neighbours of %d images", len(pairs), f.k, len(vectors))
    return fused
