"""Diffusion on the pool's k-nearest-neighbour graph, baked into one vector per image.

Diffusion ranks by the stationary state of a random walk on the k-NN graph, so two images that share
neighbours come closer even when their own cosine is modest (Iscen et al. 2017). The competition
scores plain cosines of fixed vectors, so the ranking must live inside the embeddings: Fast Spectral
Ranking (Iscen, Avrithis, Tolias, Furon, Chum 2018) writes the diffusion matrix as
``(1 - alpha) (I - alpha S)^-1 = U h(L) U^T`` over the eigenpairs ``(L, U)`` of the normalised graph
``S``, with ``h(l) = (1 - alpha) / (1 - alpha l)``; keeping the ``rank`` leading eigenpairs gives every
image the row ``U h(L)^(1/2)``, whose inner products are the low-rank diffusion affinities.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh

from core.vectors.search import topk


def knn_graph(vectors: np.ndarray, k: int, gamma: float, pairs: np.ndarray | None = None) -> sp.csr_matrix:
    """Symmetric k-NN affinity: an edge where either row is among the other's ``k`` nearest, weighted
    max(cosine, 0)^gamma; ``pairs`` (m x 2 rows) are added with weight 1, e.g. verified matches."""
    n = len(vectors)
    if n < 2:  # a lone image has no neighbour to link to
        return sp.csr_matrix((n, n), dtype=np.float32)
    sims, idx = topk(vectors, None, k=min(k, n - 1))
    rows = np.repeat(np.arange(n), idx.shape[1])
    graph = sp.csr_matrix((np.clip(sims, 0, None).ravel() ** gamma, (rows, idx.ravel())), shape=(n, n))
    if pairs is not None and len(pairs):
        ones = np.ones(len(pairs), np.float32)
        graph = graph.maximum(sp.csr_matrix((ones, (pairs[:, 0], pairs[:, 1])), shape=(n, n)))
    return graph.maximum(graph.T).tocsr()


def spectral_embedding(graph: sp.csr_matrix, alpha: float, rank: int) -> np.ndarray:
    """``rank`` columns whose inner products approximate ``(1 - alpha) (I - alpha S)^-1`` with its
    ``rank`` leading eigenpairs, ``S = D^-1/2 W D^-1/2`` (an image with no edge is a row and column of
    zeros in ``S``: it keeps only its own eigenvector, of eigenvalue 0).

    >>> pairs_of_copies = np.eye(4, dtype=np.float32)[[0, 0, 1, 1]]
    >>> psi = spectral_embedding(knn_graph(pairs_of_copies, k=1, gamma=3.0), alpha=0.9, rank=2)
    >>> bool(psi[0] @ psi[1] > psi[0] @ psi[2])
    True
    """
    n = graph.shape[0]
    degree = np.asarray(graph.sum(axis=1)).ravel()
    scale = sp.diags(np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1e-12)), 0.0))
    s = (scale @ graph @ scale).astype(np.float64)
    kept = min(rank, n)
    if 2 * kept + 1 >= n:  # Lanczos would need about as many vectors as there are images: solve densely
        eigval, eigvec = np.linalg.eigh(s.toarray())
        eigval, eigvec = eigval[-kept:], eigvec[:, -kept:]
    else:  # a fixed start vector: the same pool gives the same vectors
        eigval, eigvec = eigsh(s, k=kept, which="LA", v0=np.ones(n))
    h = (1 - alpha) / (1 - alpha * np.clip(eigval, -1.0, 1.0))
    out = np.zeros((n, rank), np.float32)  # a pool smaller than rank still gives rank columns
    out[:, :kept] = eigvec * np.sqrt(h)
    return out
