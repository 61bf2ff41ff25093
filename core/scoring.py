"""Scoring a model's embeddings: Hit@k per labeled set and subset, and on held-out synthetic photos.

Shared by the evaluator (``python -m eval``), the training monitor and stage 2's round accounting.
Figures are those of the embeddings after the recipe's post steps (what a user submits); where steps
ran, ``raw`` holds the same Hit@k and mAP before them, so a run shows what it adds over whitening.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from core.base.runs import RunDir
from core.data.pool import LabeledSet, Pool, row_index
from core.data.synthetic import SyntheticQueries, make_synthetic_queries
from core.model.backbone import Encoder
from core.model.embed import Embeddings, embed_images, gate_margin
from core.pixels.images import ImageReader
from core.pixels.photosim import CONDITIONS
from core.post import PostProcessor
from core.vectors.metrics import HIT_KEYS, summarize, target_ranks
from core.vectors.stats import pair_stats


def rows_of(labeled: LabeledSet, pool: Pool, emb: Embeddings) -> tuple[list[int], list[list[int]], list[str]]:
    """The set's queries and targets as rows of ``emb`` (skipped images dropped), and their subsets."""
    row = row_index(emb.names)
    queries, targets, subsets = [], [], []
    for q, ts, subset in zip(labeled.queries, labeled.targets, labeled.subsets, strict=True):
        if pool.names[q] not in row:
            continue
        queries.append(row[pool.names[q]])
        targets.append([row[pool.names[t]] for t in ts if pool.names[t] in row])
        subsets.append(subset)
    return queries, targets, subsets


def labeled_ranks(pool: Pool, emb: Embeddings) -> dict[str, tuple[list[int], list[str], list[np.ndarray]]]:
    """Per labeled set: its queries (rows of ``emb``), their subsets and their targets' sorted ranks."""
    ranked = {}
    for labeled in pool.labeled:
        queries, targets, subsets = rows_of(labeled, pool, emb)
        ranked[labeled.name] = (queries, subsets, target_ranks(emb.vectors, queries, targets))
    return ranked


def labeled_metrics(pool: Pool, emb: Embeddings) -> tuple[dict, dict]:
    """Per-set metrics (with a ``subsets`` breakdown by the ``set`` column) and the pooled overall."""
    per_set, all_ranks = {}, []
    unmatched = {labeled.name: labeled.unmatched for labeled in pool.labeled}
    for name, (_, subsets, ranks) in labeled_ranks(pool, emb).items():
        all_ranks.extend(ranks)
        groups: dict[str, list[np.ndarray]] = defaultdict(list)
        for subset, r in zip(subsets, ranks, strict=True):
            groups[subset].append(r)
        per_set[name] = {**summarize(ranks), "n_unmatched": unmatched[name],
                         "subsets": {s: summarize(r) for s, r in sorted(groups.items())}}
    return per_set, summarize(all_ranks)


def first_ranks(ranks: Sequence[np.ndarray]) -> list[int | None]:
    """The 0-based rank of each query's best-placed target (None for a query without one)."""
    return [int(r[0]) if len(r) else None for r in ranks]


def query_table(pool: Pool, raw: Embeddings, final: Embeddings | None = None,
                synthetic: SyntheticScore | None = None) -> pd.DataFrame:
    """One row per scored query: ``kind`` (labeled or synthetic), ``set``, ``query`` (image name), ``rank``
    of its best target after the post steps and ``raw_rank`` before them (empty where none ran), and a
    synthetic photo's ``conditions`` (joined by ``;``).

    Runs scored on the same pool share these rows, so ``eval.compare --baseline`` can pair them.
    """
    rows = []
    scored = raw if final is None else final
    after = labeled_ranks(pool, scored)
    before = labeled_ranks(pool, raw) if final is not None else None
    for name, (queries, _, ranks) in after.items():
        raw_ranks = first_ranks(before[name][2]) if before is not None else [None] * len(ranks)
        rows += [("labeled", name, scored.names[q], r, rr, "")
                 for q, r, rr in zip(queries, first_ranks(ranks), raw_ranks, strict=True)]
    if synthetic is not None:
        raw_ranks = synthetic.raw_ranks or [None] * len(synthetic.ranks)
        rows += [("synthetic", "synthetic", n, r, rr, ";".join(c))
                 for n, r, rr, c in zip(synthetic.names, synthetic.ranks, raw_ranks, synthetic.conditions, strict=True)]
    table = pd.DataFrame(rows, columns=["kind", "set", "query", "rank", "raw_rank", "conditions"])
    return table.astype({"rank": "Int64", "raw_rank": "Int64"})


def headline(figures: dict) -> dict:
    """The Hit@k and mAP of a :func:`core.vectors.metrics.summarize` result."""
    return {k: figures[k] for k in (*HIT_KEYS, "map")}


def labeled_scores(pool: Pool, raw: Embeddings, final: Embeddings | None = None) -> tuple[dict, dict]:
    """:func:`labeled_metrics` of ``final`` (the post-processed embeddings; ``raw`` where no step ran),
    with the overall figures of ``raw`` under ``overall["raw"]`` when there is a ``final``."""
    per_set, overall = labeled_metrics(pool, raw if final is None else final)
    if final is not None:
        overall["raw"] = headline(labeled_metrics(pool, raw)[1])
    return per_set, overall


def post_applied(post: PostProcessor, emb: Embeddings, paths: list[Path], save: bool = False) -> Embeddings | None:
    """``emb`` after ``post``'s steps, or None where the recipe has none."""
    return post.apply(emb, paths, save=save) if post.active else None


def by_condition(ranks: list[np.ndarray], conditions: list[list[str]]) -> dict[str, dict]:
    """The metrics of the queries showing each condition (``core.pixels.photosim.CONDITIONS`` order; a
    condition no query shows is left out)."""
    shown = [c for c in CONDITIONS if any(c in q for q in conditions)]
    return {c: summarize([r for r, q in zip(ranks, conditions, strict=True) if c in q]) for c in shown}


@dataclass
class SyntheticScore:
    """Synthetic photos' figures (``metrics.json``'s ``synthetic``) and each photo's best target rank."""

    figures: dict
    names: list[str]
    ranks: list[int | None]
    conditions: list[list[str]]
    raw_ranks: list[int | None] | None = None


def score_synthetic(encoder: Encoder, queries: SyntheticQueries, emb: Embeddings, embed_cfg,
                    save_to: Path | None = None, post: PostProcessor | None = None,
                    pool_paths: list[Path] | None = None) -> SyntheticScore:
    """Hit@k of the synthetic photos, each ranked against ``emb`` (rows = its sources) and each other.

    With ``post``, the photos join the pool (files ``pool_paths``) before its steps, as any image would,
    and ``raw`` holds the Hit@k and mAP before the steps (overall and per condition).
    """
    syn = embed_images(encoder, queries.paths, queries.names, embed_cfg, desc="embed synthetic")
    if save_to is not None:
        syn.save(save_to)
    # Views are gated over the pool the photos join, as they would be had they been in it all along.
    joint = Embeddings.concat([emb, syn]).gated(gate_margin(embed_cfg))
    rows = list(range(len(emb), len(emb) + len(syn)))
    targets = [[s] for s in queries.sources]
    raw, raw_ranks = None, None
    if post is not None and post.active:
        raw_ranks = target_ranks(joint.vectors, rows, targets)
        raw = {**headline(summarize(raw_ranks)),
               "conditions": {c: headline(f) for c, f in by_condition(raw_ranks, queries.conditions).items()}}
        joint = post.apply(joint, [*(pool_paths or []), *queries.paths], save=False)
    ranks = target_ranks(joint.vectors, rows, targets)
    figures = {**summarize(ranks), **({"raw": raw} if raw else {}),
               "conditions": by_condition(ranks, queries.conditions),
               "stats": pair_stats(joint.vectors, rows, list(queries.sources))}
    return SyntheticScore(figures, list(queries.names), first_ranks(ranks), list(queries.conditions),
                          first_ranks(raw_ranks) if raw_ranks is not None else None)


def synthetic_metrics(recipe: DictConfig, run: RunDir, pool_paths: list[Path], emb: Embeddings,
                      encoder: Encoder, reader: ImageReader,
                      post: PostProcessor | None = None) -> SyntheticScore | None:
    """Make the recipe's held-out synthetic photos of pool images and score them (None if disabled).

    ``pool_paths`` are the files of ``emb``'s rows, in order.
    """
    count = int(recipe.synthetic.num_queries)
    if count <= 0 or len(emb) < 2:
        return None
    queries = make_synthetic_queries(pool_paths, emb.names, count, int(recipe.synthetic.seed),
                                     run.path / "synthetic", reader, str(recipe.synthetic.style))
    return score_synthetic(encoder, queries, emb, recipe.embed, run.path / "synthetic" / "embeddings", post,
                           pool_paths)
