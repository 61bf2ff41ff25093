"""Whitening fitted on the pool (``whiten``) and learned from its pseudo pairs (``learned_whiten``).

- ``whiten``: centre and PCA-whiten on the pool itself (optional output dimension and power), its
  covariance shrunk towards the identity by Ledoit and Wolf's estimate, which is near zero for a large
  pool and keeps a small one (a few hundred images in 384-d) from turning neighbours into chance.
  Without truncation it is a ZCA map (rotated back), so an already white pool is left as it is.
  Saved as ``whiten.npz`` so it can be re-applied (``post.whiten.load``).
- ``learned_whiten``: whitening learned from pseudo pairs (Radenović, Tolias, Chum 2018): the pool's
  mutual nearest neighbours after PCA whitening, with a cosine above chance (optionally verified
  geometrically), are taken for matches, and the map whitens their differences, blended with the
  pool's (shrunk as above) covariance by ``shrinkage`` (1: PCA whitening again), then optionally keeps
  the ``dim`` directions along which the pool varies most. Saved as ``learned_whiten.npz``;
  ``post.whiten.load`` re-applies it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.base.atomic import atomic_path
from core.base.options import check_auto_or_number, option
from core.model.embed import Embeddings
from core.post.base import PostProcessor, register_step, unit_rows
from core.vectors.search import is_mutual, topk
from core.vectors.stats import robust_threshold

log = logging.getLogger(__name__)


@dataclass
class WhitenConfig:
    # Output dimension (PCA truncation); null keeps every dimension (then whitening is a ZCA map).
    dim: int | None = option(None, ge=1)
    # Weight of the identity against the pool's covariance, for pools small next to the dimension: auto
    # (Ledoit-Wolf's estimate: ~0.003 for 3,437 images in 384-d, 0.05-0.09 for 242) or a number in [0, 1].
    shrinkage: str = "auto"
    # Scale each component by eigenvalue^-power: 0.5 whitens fully, 0 only centres and rotates.
    power: float = option(0.5, ge=0, le=1)
    # A whiten.npz saved by an earlier run: apply it instead of fitting on this pool.
    load: str | None = None

    @staticmethod
    def check(section, key: str) -> None:
        check_auto_or_number(f"{key}.shrinkage", section.shrinkage, 0, 1,
                             "a weight in [0, 1] (0: none); auto is Ledoit-Wolf's estimate from the pool")


@dataclass
class LearnedWhitenConfig:
    # Weight of the pool's covariance against the pseudo pairs' differences (1: PCA whitening).
    shrinkage: float = option(0.5, gt=0, le=1)
    # Keep the whitened pool's leading principal directions; null keeps every dimension.
    dim: int | None = option(None, ge=1)
    # Pseudo pairs: mutual nearest neighbours after PCA whitening with at least this cosine; auto: 3
    # robust standard deviations above the median nearest-neighbour cosine of unpaired images (chance).
    min_similarity: str = "auto"
    # Keep only the pairs verification confirms (the recipe's verify section: SIFT + RANSAC homography).
    verify: bool = False

    @staticmethod
    def check(section, key: str) -> None:
        check_auto_or_number(f"{key}.min_similarity", section.min_similarity, -1, 1, "a cosine, e.g. 0.4")


def _floored(eigval: np.ndarray) -> np.ndarray:
    """Eigenvalues with a floor that keeps directions of (numerically) zero variance from blowing up."""
    return np.maximum(eigval, eigval.max() * 1e-9 + 1e-12)


def ledoit_wolf(centred: np.ndarray) -> float:
    """Ledoit and Wolf's (2004) shrinkage of the sample covariance of ``centred`` rows towards a multiple
    of the identity: the weight on the identity that minimises the expected squared error, from the data.

    Whitening divides by the covariance's eigenvalues. With few images next to the dimension the small
    ones are mostly noise (with fewer images than dimensions, zero), and full whitening then spreads the
    images evenly, so that every image is about as close to every other: nearest neighbours become
    chance. The estimate is near 0 for a pool much larger than the dimension and grows as it shrinks.

    >>> rng = np.random.default_rng(0)
    >>> wide = rng.normal(size=(5000, 8)) * np.arange(1, 9)  # many images, unequal variances
    >>> bool(ledoit_wolf(wide - wide.mean(0)) < 0.01)
    True
    >>> few = rng.normal(size=(20, 64)) * np.linspace(1, 2, 64)  # fewer images than dimensions
    >>> bool(ledoit_wolf(few - few.mean(0)) > 0.5)
    True
    """
    x = np.asarray(centred, dtype=np.float64)
    return _ledoit_wolf_weight(x, x.T @ x)


def _ledoit_wolf_weight(x: np.ndarray, scatter: np.ndarray) -> float:
    """:func:`ledoit_wolf` of rows ``x`` given their scatter matrix ``x.T @ x`` (computed once by the caller)."""
    n, d = x.shape
    cov = scatter / n
    target = np.trace(cov) / d
    spread = ((cov - target * np.eye(d)) ** 2).sum()
    # Sum over images of ||x x^T - cov||^2, without forming the d x d outer products.
    noise = ((np.einsum("ij,ij->i", x, x) ** 2).sum() - n * (cov**2).sum()) / n**2
    return float(min(noise, spread) / spread) if spread > 0 else 1.0


def pool_covariance(centred: np.ndarray, shrinkage: float | None = None) -> np.ndarray:
    """Covariance of ``centred`` rows, blended with weight ``shrinkage`` (None: :func:`ledoit_wolf`) with
    the identity scaled to the same trace."""
    x = np.asarray(centred, dtype=np.float64)
    scatter = x.T @ x
    weight = _ledoit_wolf_weight(x, scatter) if shrinkage is None else shrinkage
    cov = scatter / max(len(x) - 1, 1)
    return (1 - weight) * cov + weight * np.trace(cov) / len(cov) * np.eye(len(cov))


@dataclass
class Whitening:
    """x -> (x - mean) @ projection, then L2-normalised."""

    mean: np.ndarray
    projection: np.ndarray

    @classmethod
    def fit(cls, vectors: np.ndarray, dim: int | None = None, shrinkage: float | None = None, power: float = 0.5
            ) -> Whitening:
        """PCA whitening of the pool's covariance, shrunk by ``shrinkage`` (None: :func:`ledoit_wolf`)."""
        if dim is not None and not 1 <= dim <= vectors.shape[1]:
            raise ValueError(f"post.whiten.dim={dim} must be between 1 and {vectors.shape[1]}")
        x = vectors.astype(np.float64)
        mean = x.mean(axis=0)
        eigval, eigvec = np.linalg.eigh(pool_covariance(x - mean, shrinkage))
        order = np.argsort(eigval)[::-1]
        eigval, eigvec = np.clip(eigval[order], 0, None), eigvec[:, order]
        scale = _floored(eigval) ** -power
        if dim is None:
            projection = (eigvec * scale) @ eigvec.T  # ZCA: whiten, then rotate back
        else:
            projection = eigvec[:, :dim] * scale[:dim]
        return cls(mean.astype(np.float32), projection.astype(np.float32))

    @classmethod
    def fit_pairs(cls, vectors: np.ndarray, pairs: np.ndarray, shrinkage: float = 0.5, dim: int | None = None
                  ) -> Whitening:
        """Whitening of the differences within matching ``pairs`` (rows i, j of ``vectors``).

        The covariance of the pair differences (each pair a match: what varies between a photo and its
        painting is nuisance) and the pool's (:func:`pool_covariance`), both scaled to unit trace, are
        blended with weight ``shrinkage`` on the pool's, which also keeps the map full-rank when there
        are fewer pairs than dimensions; ``shrinkage=1`` is PCA whitening. With ``dim``, the whitened pool's
        ``dim`` leading principal directions are kept.

        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(200, 8)) * [5, 1, 1, 1, 1, 1, 1, 1]  # axis 0: wide in the pool...
        >>> pairs = np.stack([np.arange(100), np.arange(100, 200)], axis=1)
        >>> x[100:] = x[:100] + rng.normal(size=(100, 8)) * [0, 3, 0, 0, 0, 0, 0, 0]  # ...axis 1: nuisance
        >>> w = Whitening.fit_pairs(x, pairs, shrinkage=0.1)
        >>> bool(np.abs(w.projection[1, 1]) < np.abs(w.projection[0, 0]))  # axis 1 is damped the most
        True
        """
        if not 0.0 < shrinkage <= 1.0:
            raise ValueError(f"shrinkage={shrinkage} must be in (0, 1]")
        x = vectors.astype(np.float64)
        mean = x.mean(axis=0)
        pool = pool_covariance(x - mean)
        cov = shrinkage * pool / np.trace(pool)
        if len(pairs) and shrinkage < 1.0:
            diff = x[pairs[:, 0]] - x[pairs[:, 1]]
            within = diff.T @ diff / len(diff)
            cov += (1 - shrinkage) * within / max(np.trace(within), 1e-12)
        eigval, eigvec = np.linalg.eigh(cov)
        projection = (eigvec * _floored(eigval) ** -0.5) @ eigvec.T
        if dim is not None:
            whitened = (x - mean) @ projection
            _, rotation = np.linalg.eigh(np.cov(whitened, rowvar=False))
            projection = projection @ rotation[:, ::-1][:, :dim]
        return cls(mean.astype(np.float32), projection.astype(np.float32))

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        return unit_rows((vectors - self.mean) @ self.projection)

    def inverse(self, whitened: np.ndarray) -> np.ndarray:
        """Undo the map (before normalisation) where it is invertible: no truncation."""
        if self.projection.shape[0] != self.projection.shape[1]:
            raise ValueError("a truncated whitening (post.whiten.dim) cannot be inverted")
        return whitened @ np.linalg.inv(self.projection) + self.mean

    def save(self, path: str | Path) -> Path:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, mean=self.mean, projection=self.projection)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Whitening:
        with np.load(path) as data:
            return cls(data["mean"], data["projection"])


@register_step("whiten", WhitenConfig)
def whiten_step(post: PostProcessor, emb: Embeddings, vectors: np.ndarray, paths: Sequence[Path],
                save: bool) -> np.ndarray:
    w = post.cfg.whiten
    if w.load:
        whitening = Whitening.load(w.load)
    else:
        shrinkage = None if w.shrinkage == "auto" else float(w.shrinkage)
        whitening = Whitening.fit(vectors, w.dim, shrinkage, float(w.power))
        if save and post.out_dir is not None:
            whitening.save(post.out_dir / "whiten.npz")
    return whitening.apply(vectors)


# Pseudo pairs must beat the median nearest-neighbour cosine of the whitened pool's unpaired images by
# this many robust standard deviations (post.learned_whiten.min_similarity=auto).
PAIR_Z = 3.0


def pseudo_pairs(vectors: np.ndarray, min_similarity: float | None = None, duplicate_similarity: float = 0.995
                 ) -> tuple[np.ndarray, np.ndarray, float]:
    """Mutual nearest neighbours of the PCA-whitened ``vectors`` (where photos find their paintings far
    more often than before whitening) with a cosine in [min_similarity, duplicate_similarity): near-copies
    teach nothing about what separates a photo from its painting. Returns pairs, cosines, threshold.

    ``min_similarity=None`` chooses it from the pool: an image in no mutual pair has, nearly always, no
    match in the pool, so its nearest neighbour's cosine is chance, and a pair must clear ``PAIR_Z``
    robust standard deviations above the median of those cosines.
    """
    whitened = Whitening.fit(vectors).apply(vectors)
    sims, idx = topk(whitened, None, k=1)
    nn = idx[:, 0]
    mutual = is_mutual(nn)
    if min_similarity is None:
        min_similarity = robust_threshold(sims[~mutual, 0] if (~mutual).any() else sims[:, 0], PAIR_Z)
    rows = np.flatnonzero(mutual & (np.arange(len(nn)) < nn))
    keep = rows[(sims[rows, 0] >= min_similarity) & (sims[rows, 0] < duplicate_similarity)]
    return np.stack([keep, nn[keep]], axis=1), sims[keep, 0], float(min_similarity)


@register_step("learned_whiten", LearnedWhitenConfig)
def learned_whiten_step(post: PostProcessor, emb: Embeddings, vectors: np.ndarray, paths: Sequence[Path],
                        save: bool) -> np.ndarray:
    c = post.cfg.learned_whiten
    pairs, _, threshold = pseudo_pairs(vectors, None if c.min_similarity == "auto" else float(c.min_similarity))
    mined = len(pairs)
    if c.verify and mined:
        verifier = post.verified()
        inliers = [verifier.inliers(paths[i], paths[j])
                   for i, j in tqdm(pairs, desc="verify pseudo pairs", unit="pair",
                                    disable=not post.recipe.embed.progress, mininterval=1.0)]
        pairs = pairs[np.asarray(inliers) >= verifier.min_inliers]
    post.learned_pairs = len(pairs)
    log.info("learned whitening: %d pseudo pairs among %d images (mutual nearest neighbours, cosine >= %.3f%s)",
             len(pairs), len(vectors), threshold, f", {len(pairs)} of {mined} verified" if c.verify else "")
    if not len(pairs):
        log.warning("learned whitening found no pseudo pairs: it is PCA whitening here")
    whitening = Whitening.fit_pairs(vectors, pairs, float(c.shrinkage), c.dim)
    if save and post.out_dir is not None:
        whitening.save(post.out_dir / "learned_whiten.npz")
    return whitening.apply(vectors)
