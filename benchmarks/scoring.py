"""Scoring a run's embeddings as eval would: each labeled set in its own pool, the synthetic photos in the
run's whole pool, after the recipe's post steps refitted on that pool (benchmarks.orientation and
benchmarks.hard_photos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.data.pool import Pool, row_index
from core.model.embed import Embeddings
from core.post import PostProcessor
from core.vectors.metrics import target_ranks


def hits(vectors: np.ndarray, queries: list[int], targets: list[list[int]], k: int) -> np.ndarray:
    """Per query (a row of ``vectors``), whether one of its targets is among its ``k`` nearest other rows."""
    ranks = target_ranks(vectors, queries, targets)
    return np.array([len(r) > 0 and r[0] < k for r in ranks])


def labeled_pools(run_pool: Pool, emb: Embeddings, extra: Path | None) -> dict[str, tuple[list[int], list, list]]:
    """Per labeled set, its own pool (rows of ``emb``) and its queries and targets (positions in that pool).

    The run's pool holds mcv-museum, the distractors and extra's queries (as distractors): mcv-museum is
    scored without extra's queries, extra without mcv-museum's, against the same references."""
    row = row_index(emb.names)
    labeled = run_pool.labeled[0]
    mcv_rows = {i for q, ts in zip(labeled.queries, labeled.targets, strict=True) for i in (q, *ts)}
    mcv_queries = {run_pool.names[q] for q in labeled.queries}
    mcv_source = labeled.name
    out = {}
    extra_queries = set()
    if extra is not None:
        table = pd.read_csv(extra / "pairs.csv", dtype=str, keep_default_na=False)
        extra_name = {q: f"queries/{Path(q).relative_to('images/queries').as_posix()}" for q in table["query"]}
        extra_queries = set(extra_name.values())
    distractors = [i for i, n in enumerate(emb.names) if n not in extra_queries and not n.startswith(f"{mcv_source}/")]
    references = [row[n] for n in emb.names if n.startswith(f"{mcv_source}/") and n not in mcv_queries]
    mcv_pool = sorted({row[run_pool.names[i]] for i in mcv_rows} | set(references) | set(distractors))
    at = {r: k for k, r in enumerate(mcv_pool)}
    out["mcv-museum"] = (mcv_pool, [at[row[run_pool.names[q]]] for q in labeled.queries],
                         [[at[row[run_pool.names[t]]] for t in ts] for ts in labeled.targets])
    if extra is not None:
        extra_pool = sorted(set(references) | set(distractors) | {row[n] for n in extra_queries})
        at = {r: k for k, r in enumerate(extra_pool)}
        queries, targets = [], {}
        for q, t in zip(table["query"], table["target"], strict=True):
            name = extra_name[q]
            if name not in targets:
                queries.append(name)
                targets[name] = []
            if t:
                targets[name].append(at[row[f"{mcv_source}/{Path(t).relative_to('images').as_posix()}"]])
        out["mcv-museum-extra"] = (extra_pool, [at[row[q]] for q in queries], [targets[q] for q in queries])
    return out


def scores(post: PostProcessor, emb: Embeddings, syn: Embeddings, paths: list[Path], syn_paths: list[Path],
           syn_targets: list[int], pools: dict[str, tuple[list[int], list, list]]) -> dict[tuple[str, int], np.ndarray]:
    """Each query's hit, keyed (set, k): Hit@1 and Hit@3 of each labeled set of ``pools`` in its own pool, and
    Hit@3 of the synthetic photos ``syn`` (whose targets are rows of ``emb``) in the whole pool."""
    out = {}
    for name, (rows, queries, targets) in pools.items():
        sub = Embeddings([emb.names[r] for r in rows], emb.vectors[rows], emb.norms[rows])
        vectors = post.apply(sub, [paths[r] for r in rows], save=False).vectors
        for k in (1, 3):
            out[(name, k)] = hits(vectors, queries, targets, k)
    # Their sources may be any image of the pool, so the synthetic photos are searched in all of it.
    joint = Embeddings.concat([Embeddings(emb.names, emb.vectors, emb.norms), syn])
    vectors = post.apply(joint, [*paths, *syn_paths], save=False).vectors
    out[("synthetic", 3)] = hits(vectors, list(range(len(emb), len(emb) + len(syn))), [[t] for t in syn_targets], 3)
    return out
