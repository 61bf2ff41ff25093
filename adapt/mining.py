"""Mining pseudo query–HQ pairs without labels: mutual nearest neighbours, filtered for trust.

A visitor photo and the studio image of its painting are often each other's nearest neighbour in a
good embedding space. Every mutual-nearest-neighbour pair of the pool is a candidate; a candidate is
kept only if

- its similarity reaches ``min_similarity`` and both sides' NN1-NN2 margin reaches ``min_margin``
  (a confident, unambiguous match);
- it is not a near-duplicate (similarity at least ``duplicate_similarity``): two copies of one file
  teach nothing about photos versus studio images;
- optionally (``k_reciprocal`` > 0) the two share at least ``min_shared`` of their k nearest
  neighbours (k-reciprocal agreement: the pair sits in one neighbourhood, not between two);
- optionally (``verify``) a RANSAC homography between their local features has at least
  ``min_inliers`` inliers (paintings are planar: a near-certain match). Verification misses true
  pairs (a photo at a steep angle, glare, a small crop) but passes few false ones (81-84% of those it
  passed on mcv-museum were right), so the share of candidates it passes tracks their precision: at
  ``trust_unverified_at`` or above, the candidates it did not pass are kept too (more pairs, enough of
  them right), below it only the verified ones (round 1 decides for the run). That chooses without
  labels between the two settings that each won somewhere (recipes/pseudolabel.yaml).

Every candidate lands in ``pairs.csv`` with its scores, whether it was kept and why not.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from core.base.atomic import atomic_write_text
from core.base.options import option
from core.data.pool import row_index
from core.pixels.verify import Verifier
from core.vectors.search import is_mutual, topk

log = logging.getLogger(__name__)


@dataclass
class MiningConfig:
    min_similarity: float = option(0.5, ge=-1, le=1)
    min_margin: float = option(0.0, ge=0)
    duplicate_similarity: float = option(0.995, ge=-1, le=1)
    k_reciprocal: int = option(0, ge=0)
    min_shared: float = option(0.3, ge=0, le=1)
    # Verify candidates geometrically, as the recipe's verify section says (min_inliers, max_side).
    verify: bool = False
    trust_unverified_at: float | None = option(None, ge=0, le=1)  # None: verified candidates only


def mine_pairs(vectors: np.ndarray, names: Sequence[str], paths: Sequence[Path], cfg,
               verifier: Verifier | None = None, progress: bool = False,
               trust_unverified: bool | None = None) -> pd.DataFrame:
    """All mutual-nearest-neighbour candidates of ``vectors`` with their scores and verdicts.

    ``trust_unverified``: keep the candidates verification did not pass (None: decide from their
    share against ``cfg.trust_unverified_at``; a later round passes round 1's decision).

    Columns: a, b (row indices, a < b), name_a, name_b, similarity, margin (the smaller of the two
    sides' NN1-NN2 margins), shared (k-reciprocal overlap or NaN), inliers (or -1), kept, reason.
    With verification, ``table.attrs`` holds ``verified_share`` and the ``trust_unverified`` decision.
    """
    k = max(2, int(cfg.k_reciprocal) or 2)
    sims, idx = topk(vectors, None, k=min(k, len(vectors) - 1))
    nn = idx[:, 0]
    rows = np.arange(len(vectors))
    a = rows[is_mutual(nn) & (rows < nn)]
    b = nn[a]
    margin_row = sims[:, 0] - sims[:, 1] if sims.shape[1] > 1 else sims[:, 0]
    table = pd.DataFrame({"a": a, "b": b, "name_a": [names[i] for i in a], "name_b": [names[i] for i in b],
                          "similarity": sims[a, 0], "margin": np.minimum(margin_row[a], margin_row[b])})
    if int(cfg.k_reciprocal) > 0:
        table["shared"] = [len(set(idx[i]) - {j} & set(idx[j]) - {i}) / max(1, idx.shape[1] - 1)
                           for i, j in zip(a, b, strict=True)]
    else:
        table["shared"] = np.nan
    reason = np.full(len(table), "", dtype=object)
    reason[table["similarity"] < float(cfg.min_similarity)] = "low similarity"
    reason[(reason == "") & (table["margin"] < float(cfg.min_margin))] = "low margin"
    reason[(reason == "") & (table["similarity"] >= float(cfg.duplicate_similarity))] = "near-duplicate"
    if int(cfg.k_reciprocal) > 0:
        reason[(reason == "") & (table["shared"] < float(cfg.min_shared))] = "few shared neighbours"
    inliers = np.full(len(table), -1)
    if cfg.verify:
        verifier = verifier or Verifier()
        todo = np.flatnonzero(reason == "")
        for n in tqdm(todo, desc="verify pairs", unit="pair", disable=not progress, mininterval=1.0):
            inliers[n] = verifier.inliers(paths[table.at[n, "a"]], paths[table.at[n, "b"]])
        share = verified_share(inliers, verifier.min_inliers)
        if trust_unverified is None:
            trust_unverified = cfg.trust_unverified_at is not None and share >= float(cfg.trust_unverified_at)
        log.info("verification passed %.0f%% of %d candidates: %s", 100 * share, len(todo),
                 "the others are kept too" if trust_unverified else "only those are kept")
        if not trust_unverified:
            reason[(reason == "") & (inliers < verifier.min_inliers) & (inliers >= 0)] = "not verified"
        table.attrs.update(verified_share=share, trust_unverified=bool(trust_unverified))
    table["inliers"] = inliers
    table["kept"] = reason == ""
    table["reason"] = reason
    dropped = table.loc[~table["kept"], "reason"].value_counts()
    log.info("mining: %d mutual-NN candidates, %d kept (%s)", len(table), int(table["kept"].sum()),
             ", ".join(f"{r}: {n}" for r, n in dropped.items()) or "none dropped")
    return table


def verified_share(inliers: np.ndarray, min_inliers: int) -> float:
    """Share of the verified candidates (inliers >= 0; -1 = not verified) with at least ``min_inliers``.

    >>> verified_share(np.array([-1, 3, 40, 200]), 25)
    0.6666666666666666
    """
    checked = inliers[inliers >= 0]
    return float((checked >= min_inliers).mean()) if len(checked) else 0.0


def true_pairs(pool, names: Sequence[str]) -> set[tuple[int, int]]:
    """The labeled query–target pairs of ``pool`` as unordered row pairs of ``names``."""
    row = row_index(names)
    out = set()
    for labeled in pool.labeled:
        for q, ts in zip(labeled.queries, labeled.targets, strict=True):
            for t in ts:
                if pool.names[q] in row and pool.names[t] in row:
                    i, j = row[pool.names[q]], row[pool.names[t]]
                    out.add((min(i, j), max(i, j)))
    return out


def labeled_rows(pool, names: Sequence[str]) -> set[int]:
    """Rows of ``names`` that belong to one of ``pool``'s labeled sets (queries and references)."""
    sources = {labeled.name for labeled in pool.labeled}
    source = dict(zip(pool.names, pool.sources, strict=True))
    return {i for i, name in enumerate(names) if source.get(name) in sources}


def accounting(table: pd.DataFrame, truth: set[tuple[int, int]], labeled: set[int] | None = None) -> dict:
    """Precision and recall of the kept pairs against labeled ground truth (None without labels).

    ``precision`` counts every kept pair that is not a labeled pair as wrong, although the labels
    cannot judge a pair of two unlabeled images (two copies of one painting among the distractors
    are a right pair). Given ``labeled`` (the rows of labeled images), ``kept_unjudged`` counts those
    pairs and ``labeled_precision`` is the precision over the pairs the labels can judge.
    """
    if not truth:
        return {"true_pairs": 0, "precision": None, "recall": None}
    a, b = table["a"].to_numpy(int), table["b"].to_numpy(int)
    is_true = np.array([(int(i), int(j)) in truth for i, j in zip(a, b, strict=True)], bool)
    kept = table["kept"].to_numpy(bool)
    found = int((is_true & kept).sum())
    out = {"true_pairs": len(truth), "candidates": len(table), "candidates_true": int(is_true.sum()),
           "kept": int(kept.sum()), "kept_true": found, "kept_wrong": int((kept & ~is_true).sum()),
           "precision": found / int(kept.sum()) if kept.any() else None, "recall": found / len(truth)}
    if labeled is not None:
        judged = kept & np.array([int(i) in labeled or int(j) in labeled for i, j in zip(a, b, strict=True)], bool)
        out["kept_unjudged"] = int((kept & ~judged).sum())
        out["labeled_precision"] = found / int(judged.sum()) if judged.any() else None
    return out


def write_pairs(table: pd.DataFrame, truth: set[tuple[int, int]], path: Path) -> Path:
    """``pairs.csv`` with every candidate (and, when labels exist, whether it is a true pair)."""
    out = table.copy()
    if truth:
        out["true_pair"] = [(int(a), int(b)) in truth for a, b in zip(out["a"], out["b"], strict=True)]
    atomic_write_text(path, out.to_csv(index=False, float_format="%.6f"))
    return path
