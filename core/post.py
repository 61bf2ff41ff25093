"""Training-free, transductive post-processing of a whole pool's embeddings (recipe ``post``).

The competition scores the submitted embeddings with plain cosine similarity and nobody knows which
images are queries, so every step here lives inside the embeddings and treats every image alike.
Steps run in the order of ``post.steps``:

- ``concat``: append other models' (or poolings') embeddings, each block L2-normalised and scaled
  by its weight, so the cosine becomes a weighted sum of the blocks' cosines.
- ``whiten``: centre and PCA-whiten on the pool itself (optional output dimension and power), its
  covariance shrunk towards the identity by Ledoit and Wolf's estimate, which is near zero for a large
  pool and keeps a small one (a few hundred images in 384-d) from turning neighbours into chance.
  Without truncation it is a ZCA map (rotated back), so an already white pool is left as it is.
  Saved as ``whiten.npz`` so it can be re-applied (``post.whiten.load``).
- ``learned_whiten``: whitening learned from pseudo pairs (Radenović, Tolias, Chum 2018): the pool's
  mutual nearest neighbours after PCA whitening, with a cosine above chance (optionally verified
  geometrically), are taken for matches, and the map whitens their differences, blended with the
  pool's (shrunk as above) covariance by ``shrinkage`` (1: PCA whitening again), then optionally keeps the ``dim``
  directions along which the pool varies most. Saved as ``learned_whiten.npz``; ``post.whiten.load`` re-applies it.
- ``dba``: database-side augmentation: each embedding becomes the similarity^alpha-weighted mean
  of itself and its k nearest neighbours.
- ``qe``: alpha query expansion. Where every image is both query and database item, it is the same
  neighbourhood averaging as DBA; after ``dba`` it is a second round over the augmented vectors,
  with its own k and alpha.
- ``fusion``: verified-match fusion. Each image's k nearest neighbours are checked geometrically
  (SIFT + RANSAC homography, ``core.verify``); a pair with enough inliers moves both embeddings
  towards each other by ``weight``. Off by default: it costs a feature extraction per image and k
  matches per image, and it uses the pixels beyond the embedding model, which competition rules
  may frown on.

Every step keeps the number and order of rows and returns unit-norm rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from core.atomic import atomic_path
from core.backbone import EncoderSpec, build_encoder
from core.diffusion import knn_graph, spectral_embedding
from core.embed import Embeddings, embed_images, recipe_reader
from core.images import ImageReader
from core.registry import Registry
from core.search import is_mutual, topk
from core.stats import robust_threshold
from core.verify import Verifier

log = logging.getLogger(__name__)


def _normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


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
        return _normalize((vectors - self.mean) @ self.projection)

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


def neighbour_average(vectors: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """Each row becomes the normalised sum of itself and its ``k`` nearest rows, weighted by
    max(similarity, 0)^alpha (self weight 1): points with no close neighbour barely move."""
    if len(vectors) < 2 or k < 1:
        return _normalize(vectors)
    sims, idx = topk(vectors, None, k=min(k, len(vectors) - 1))
    weights = np.clip(sims, 0, None) ** alpha
    out = vectors + np.einsum("nk,nkd->nd", weights, vectors[idx])
    return _normalize(out)


def concat_blocks(blocks: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Blocks (same rows) side by side, each normalised and scaled by its weight, then normalised."""
    if len({len(b) for b in blocks}) != 1:
        raise ValueError(f"blocks have different row counts: {[len(b) for b in blocks]}")
    return _normalize(np.concatenate([_normalize(b) * w for b, w in zip(blocks, weights, strict=True)], axis=1))


def verified_neighbours(vectors: np.ndarray, paths: Sequence[Path], k: int, min_inliers: int, verifier: Verifier,
                        progress: bool = False) -> list[tuple[int, int, int]]:
    """Each image's ``k`` nearest neighbours checked geometrically: the pairs (i, j, inliers), i < j,
    with at least ``min_inliers`` RANSAC inliers."""
    _, idx = topk(vectors, None, k=min(k, len(vectors) - 1))
    candidates = sorted({(min(i, int(j)), max(i, int(j))) for i in range(len(vectors)) for j in idx[i]})
    verified = []
    for i, j in tqdm(candidates, desc="verify neighbours", unit="pair", disable=not progress, mininterval=1.0):
        inliers = verifier.inliers(paths[i], paths[j])
        if inliers >= min_inliers:
            verified.append((i, j, inliers))
    return verified


def fuse_verified(vectors: np.ndarray, paths: Sequence[Path], k: int, min_inliers: int, weight: float,
                  verifier: Verifier, progress: bool = False) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Move geometrically verified neighbour pairs towards each other; others stay as they are.

    Returns the new vectors and the verified pairs (i, j, inliers), i < j.
    """
    verified = verified_neighbours(vectors, paths, k, min_inliers, verifier, progress)
    if not verified:
        return vectors.copy(), verified
    out = vectors.astype(np.float32).copy()
    for i, j, _ in verified:
        out[i] += weight * vectors[j]
        out[j] += weight * vectors[i]
    touched = sorted({i for i, _, _ in verified} | {j for _, j, _ in verified})
    out[touched] = _normalize(out[touched])
    return out, verified


class PostProcessor:
    """Applies a recipe's ``post`` steps; keeps what is worth keeping between calls (local features,
    the other models of a concatenation) and writes its artefacts to ``out_dir``."""

    def __init__(self, recipe: DictConfig, out_dir: str | Path | None = None):
        self.recipe = recipe
        self.cfg = recipe.post
        self.out_dir = Path(out_dir) if out_dir else None
        self.verifier: Verifier | None = None
        self.timings: dict[str, float] = {}
        self.verified_pairs = 0
        self.learned_pairs = 0

    @property
    def active(self) -> bool:
        return bool(self.cfg.steps)

    def verifier_for(self, max_side: int) -> Verifier:
        """The geometric verifier, made once and shared by the steps (it caches each image's local
        features; the first step to ask sets the side they are extracted at)."""
        if self.verifier is None:
            self.verifier = Verifier(ImageReader(min_side=max_side), max_side=max_side)
        return self.verifier

    def apply(self, emb: Embeddings, paths: Sequence[Path], save: bool = True) -> Embeddings:
        """``emb`` (rows = ``paths``) after every step; same names, same order, unit norms."""
        vectors = emb.vectors
        for step in self.cfg.steps:
            start = time.perf_counter()
            vectors = POST_STEPS[step](self, emb, vectors, paths, save)
            self.timings[step] = round(self.timings.get(step, 0.0) + time.perf_counter() - start, 3)
        return Embeddings(emb.names, vectors, emb.norms, emb.skipped)


# A step: ``fn(processor, embeddings, vectors so far, paths, save) -> new vectors`` (same rows, unit
# norms); its options are ``post.<name>`` of the recipe. A new step is a function, one
# ``@register_step`` line and its options section in ``PostConfig``.
PostStep = Callable[[PostProcessor, Embeddings, np.ndarray, Sequence[Path], bool], np.ndarray]
POST_STEPS: Registry[PostStep] = Registry("post step")
register_step = POST_STEPS.register


@register_step("concat")
def concat_step(post: PostProcessor, emb: Embeddings, vectors: np.ndarray, paths: Sequence[Path],
                save: bool) -> np.ndarray:
    """The recipe's model, then every ``post.concat`` model, each block weighted (first step only)."""
    blocks, weights = [emb.vectors], [float(post.cfg.weight)]
    for n, block in enumerate(post.cfg.concat):
        encoder = build_encoder(EncoderSpec.from_config(block))
        other = embed_images(encoder, paths, emb.names, post.recipe.embed,
                             reader=recipe_reader(post.recipe, encoder), desc=f"embed concat block {n + 1}")
        if other.names != emb.names:
            raise ValueError(f"concat block {n + 1} could not embed every image ({len(other.skipped)} skipped)")
        blocks.append(other.vectors)
        weights.append(float(block.weight))
    return concat_blocks(blocks, weights)


@register_step("whiten")
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


@register_step("learned_whiten")
def learned_whiten_step(post: PostProcessor, emb: Embeddings, vectors: np.ndarray, paths: Sequence[Path],
                        save: bool) -> np.ndarray:
    c = post.cfg.learned_whiten
    pairs, _, threshold = pseudo_pairs(vectors, None if c.min_similarity == "auto" else float(c.min_similarity))
    mined = len(pairs)
    if c.verify and mined:
        inliers = [post.verifier_for(int(c.max_side)).inliers(paths[i], paths[j])
                   for i, j in tqdm(pairs, desc="verify pseudo pairs", unit="pair",
                                    disable=not post.recipe.embed.progress, mininterval=1.0)]
        pairs = pairs[np.asarray(inliers) >= int(c.min_inliers)]
    post.learned_pairs = len(pairs)
    log.info("learned whitening: %d pseudo pairs among %d images (mutual nearest neighbours, cosine >= %.3f%s)",
             len(pairs), len(vectors), threshold, f", {len(pairs)} of {mined} verified" if c.verify else "")
    if not len(pairs):
        log.warning("learned whitening found no pseudo pairs: it is PCA whitening here")
    whitening = Whitening.fit_pairs(vectors, pairs, float(c.shrinkage), c.dim)
    if save and post.out_dir is not None:
        whitening.save(post.out_dir / "learned_whiten.npz")
    return whitening.apply(vectors)


def _neighbour_step(name: str) -> PostStep:
    def step(post: PostProcessor, emb: Embeddings, vectors: np.ndarray, paths: Sequence[Path],
             save: bool) -> np.ndarray:
        return neighbour_average(vectors, int(post.cfg[name].k), float(post.cfg[name].alpha))

    return step


register_step("dba")(_neighbour_step("dba"))
register_step("qe")(_neighbour_step("qe"))


@register_step("fusion")
def fusion_step(post: PostProcessor, emb: Embeddings, vectors: np.ndarray, paths: Sequence[Path],
                save: bool) -> np.ndarray:
    f = post.cfg.fusion
    fused, pairs = fuse_verified(vectors, paths, int(f.k), int(f.min_inliers), float(f.weight),
                                 post.verifier_for(int(f.max_side)),
                                 bool(post.recipe.embed.progress))
    post.verified_pairs = len(pairs)
    log.info("fusion: %d verified pairs among the %d nearest neighbours of %d images", len(pairs), f.k, len(vectors))
    return fused


@register_step("diffusion")
def diffusion_step(post: PostProcessor, emb: Embeddings, vectors: np.ndarray, paths: Sequence[Path],
                   save: bool) -> np.ndarray:
    """The embedding with its diffusion block appended (Fast Spectral Ranking, core/diffusion.py)."""
    d = post.cfg.diffusion
    pairs = None
    if d.verify:
        verified = verified_neighbours(vectors, paths, int(d.verify_k), int(d.min_inliers),
                                       post.verifier_for(int(d.max_side)), bool(post.recipe.embed.progress))
        post.verified_pairs = len(verified)
        pairs = np.array([(i, j) for i, j, _ in verified], np.int64).reshape(-1, 2)
    graph = knn_graph(vectors, int(d.k), float(d.gamma), pairs)
    log.info("diffusion: %d edges among %d images%s", graph.nnz // 2, len(vectors),
             f", {post.verified_pairs} verified" if d.verify else "")
    return concat_blocks([vectors, spectral_embedding(graph, float(d.alpha), int(d.rank))], [1.0, float(d.weight)])
