"""The gated view (``embed.combine=gate``): per image, one of its views replaces the plain one only
where the pool says so, label-free.

An image has several views: its quarter turns (``embed.turns``) and the rectified crop of the
painting found in it (``embed.crop``). View 0, the image as it is, is the default. A view replaces
it when its nearest other image in the pool is more similar than view 0's nearest other image, by
more than a margin: a visitor photo turned by 180 degrees finds its studio image once turned back,
and a studio image finds nothing better turned. Images switch one at a time, largest gain first,
each decision against the pool as it stands, so a photo and its studio image never both turn (which
would leave them apart again).

The margin is chosen from the pool itself. Nearly every image of a pool is shown as it should be
(the studio images, the distractors, most photos), so the gains of the pool are mostly chance: a
view's nearest neighbour happens to be a little closer. The margin sits ``z`` robust standard
deviations (1.4826 MAD) above the median gain, where chance rarely reaches and a real match (a
cosine jump of 0.1-0.2) still clears.
"""

from __future__ import annotations

import logging

import numpy as np

from core.vectors.search import topk
from core.vectors.stats import robust_threshold

log = logging.getLogger(__name__)

# Robust standard deviations above the median gain that a switch must clear (embed.gate_margin=auto).
AUTO_Z = 6.0


def nearest_other(views: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """(n, V): the cosine of each view of image i to its nearest pool row other than row i."""
    n, count, dim = views.shape
    sims, idx = topk(views.reshape(n * count, dim), pool, k=min(2, len(pool)))
    own = np.repeat(np.arange(n), count)[:, None]
    sims = np.where(idx == own, -np.inf, sims)  # the image itself is never its own match
    return sims.max(axis=1).reshape(n, count)


def gate_views(views: np.ndarray, margin: float | None = None) -> tuple[np.ndarray, float]:
    """The view each image keeps (n,) and the margin used (``None``: ``AUTO_Z`` robust standard
    deviations above the median gain).

    ``views``: (n, V, d) unit rows, view 0 the image as it is. Candidates are tried from the largest
    gain down; each is re-scored against the pool with the switches made so far.
    """
    n, count, _ = views.shape
    chosen = np.zeros(n, np.int64)
    if count < 2 or n < 3:
        return chosen, float("inf") if margin is None else float(margin)
    pool = np.ascontiguousarray(views[:, 0], dtype=np.float32)
    sims = nearest_other(views, pool)
    gains = sims[:, 1:].max(axis=1) - sims[:, 0]
    margin = robust_threshold(gains, AUTO_Z) if margin is None else float(margin)
    for i in np.argsort(-gains, kind="stable"):
        if gains[i] <= margin:
            break
        current = pool @ views[i].T  # (n, V): the pool as it stands now
        current[i] = -np.inf
        best = current.max(axis=0)
        view = int(np.argmax(best[1:])) + 1
        if best[view] - best[0] > margin:
            chosen[i] = view
            pool[i] = views[i, view]
    return chosen, margin


def gated_vectors(views: np.ndarray, view_names: list[str], margin: float | None = None) -> np.ndarray:
    """One row per image: the view :func:`gate_views` keeps; logs how many images took each view."""
    chosen, used = gate_views(views, margin)
    counts = np.bincount(chosen, minlength=len(view_names))
    switched = ", ".join(f"{name} {c}" for name, c in zip(view_names[1:], counts[1:], strict=True) if c)
    log.info("gate (margin %.3f%s): %d of %d images switched view%s", used, " auto" if margin is None else "",
             int(counts[1:].sum()), len(views), f" ({switched})" if switched else "")
    return np.ascontiguousarray(views[np.arange(len(views)), chosen], dtype=np.float32)
