"""Exact cosine top-k search (chunked torch, or faiss when installed) and mutual nearest neighbours.

Inputs are L2-normalised float32 rows, so the inner product is the cosine similarity. Equal
similarities are ordered by row index (lower first) whichever backend searched, so results never
depend on whether faiss is installed. ``CURATOR_SEARCH=torch`` (or ``faiss``) makes the ``auto``
backend one of them, e.g. to check a result without faiss.
"""

from __future__ import annotations

import importlib.util
import logging
import os

import numpy as np
import torch

# faiss announces at INFO which CPU build it loaded, several lines per process.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

BACKENDS = ("auto", "torch", "faiss")


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def resolve_backend(backend: str = "auto") -> str:
    """The backend ``backend`` stands for: ``auto`` is ``$CURATOR_SEARCH``, else faiss when installed."""
    if backend == "auto":
        backend = os.environ.get("CURATOR_SEARCH", "auto") or "auto"
    if backend not in BACKENDS:
        raise ValueError(f"search backend {backend!r} is not one of {BACKENDS}")
    if backend == "auto":
        return "faiss" if faiss_available() else "torch"
    return backend


def _topk_torch(queries: np.ndarray, db: np.ndarray, k: int, self_search: bool, chunk: int
                ) -> tuple[np.ndarray, np.ndarray]:
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    d = torch.from_numpy(np.ascontiguousarray(db, dtype=np.float32))
    sims = np.empty((len(q), k), np.float32)
    idx = np.empty((len(q), k), np.int64)
    with torch.inference_mode():
        for start in range(0, len(q), chunk):
            s = q[start:start + chunk] @ d.T
            if self_search:
                rows = torch.arange(len(s))
                s[rows, rows + start] = -float("inf")
            top = torch.topk(s, k, dim=1)
            sims[start:start + chunk] = top.values.numpy()
            idx[start:start + chunk] = top.indices.numpy()
    return sims, idx


def _topk_faiss(queries: np.ndarray, db: np.ndarray, k: int, self_search: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(db.shape[1])
    index.add(np.ascontiguousarray(db, dtype=np.float32))
    extra = 1 if self_search else 0
    sims, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k + extra, len(db)))
    if not self_search:
        return sims, idx.astype(np.int64)
    # Drop each row's own index; with exact duplicates it need not come first.
    own = idx == np.arange(len(queries))[:, None]
    keep = ~own
    keep[own.sum(1) == 0, -1] = False
    return sims[keep].reshape(len(queries), k), idx[keep].reshape(len(queries), k).astype(np.int64)


def _settle_ties(sims: np.ndarray, idx: np.ndarray, k: int, queries: np.ndarray, db: np.ndarray,
                 self_search: bool) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of each row's candidates ordered by (similarity desc, index asc).

    Candidates are one more than ``k`` where the database allows: a row whose k-th and (k+1)-th
    similarities are equal may have tied rows the backend left out, and is searched again in full.
    """
    order = np.lexsort((idx, -sims), axis=-1)
    sims, idx = np.take_along_axis(sims, order, 1), np.take_along_axis(idx, order, 1)
    if sims.shape[1] > k:
        for r in np.flatnonzero(sims[:, k - 1] == sims[:, k]):
            row = db @ queries[r]
            if self_search:
                row[r] = -np.inf
            best = np.lexsort((np.arange(len(row)), -row))[: sims.shape[1]]
            sims[r], idx[r] = row[best], best
    return np.ascontiguousarray(sims[:, :k]), np.ascontiguousarray(idx[:, :k])


def topk(queries: np.ndarray, db: np.ndarray | None = None, k: int = 10, *, backend: str = "auto",
         chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar rows of ``db`` for each query: (similarities, indices), best first,
    equal similarities in row order.

    With ``db=None`` the queries search among themselves and each row's own index is excluded.
    ``backend='auto'`` uses faiss when installed, else chunked torch (memory ``chunk x len(db)``).

    >>> x = np.eye(3, dtype=np.float32)[[0, 1, 1, 2]]  # rows 1 and 2 are the same
    >>> topk(x[[0]], x, k=2)[1].tolist()  # rows 1, 2, 3 tie at 0: the lowest indices win
    [[0, 1]]
    """
    self_search = db is None
    db = queries if db is None else db
    if queries.shape[1:] != db.shape[1:]:
        raise ValueError(f"queries are {queries.shape[1]}-d but the database is {db.shape[1]}-d")
    limit = len(db) - (1 if self_search else 0)
    if not 1 <= k <= limit:
        raise ValueError(f"k={k} must be between 1 and {limit} (the searchable rows)")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    db = queries if self_search else np.ascontiguousarray(db, dtype=np.float32)
    wanted = min(k + 1, limit)
    if resolve_backend(backend) == "faiss":
        sims, idx = _topk_faiss(queries, db, wanted, self_search)
    else:
        sims, idx = _topk_torch(queries, db, wanted, self_search, chunk)
    return _settle_ties(sims, idx, k, queries, db, self_search)


def is_mutual(nn: np.ndarray) -> np.ndarray:
    """Which rows are their nearest neighbour's nearest neighbour, from each row's NN index ``nn``.

    >>> is_mutual(np.array([1, 0, 1])).tolist()  # 0 and 1 choose each other; 2 chooses 1
    [True, True, False]
    """
    return nn[nn] == np.arange(len(nn))


def mutual_nearest_neighbours(vectors: np.ndarray, *, backend: str = "auto"
                              ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, that are each other's nearest neighbour, and their similarities."""
    sims, idx = topk(vectors, None, k=1, backend=backend)
    nn = idx[:, 0]
    mutual = is_mutual(nn) & (np.arange(len(nn)) < nn)
    return np.stack([np.flatnonzero(mutual), nn[mutual]], axis=1), sims[mutual, 0]
