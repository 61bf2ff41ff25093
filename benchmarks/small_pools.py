"""Whitening on small pools: a saved run's labeled images with a growing number of its other images.

Whitening divides by the pool's covariance eigenvalues; with few images next to the dimension most of
them are noise, and with fewer images than dimensions full whitening places every image at the same
distance from every other. This prints labeled Hit@1/3/10 without post-processing, with PCA whitening
unshrunk (``post.whiten.shrinkage=0``, what ``whiten`` did before the Ledoit-Wolf default), with the
default (``auto``), and with the run's own ``post`` steps, for pools of the labeled images plus N of
the others drawn at random (seeded), through the same code as eval (``core.post.PostProcessor``).

    CURATOR_SHARED=../shared python -m benchmarks.small_pools RUN_DIR [RUN_DIR ...] [--extra 0 300 1000 3000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from core.embed import Embeddings
from core.metrics import HIT_KEYS
from core.pool import recipe_pool
from core.post import PostProcessor, ledoit_wolf
from core.recipe import load_recipe
from core.scoring import labeled_metrics

CONFIGS = {
    "none": ["post.steps=[]"],
    "whiten, no shrinkage": ["post.steps=[whiten]", "post.whiten.shrinkage=0"],
    "whiten, Ledoit-Wolf": ["post.steps=[whiten]", "post.whiten.shrinkage=auto"],
    "the run's post steps": [],
}


def subsets(run: Path, extras: list[int], seed: int = 0):
    """(pool, subset embeddings, their paths) per size: every labeled image and ``extra`` others."""
    pool = recipe_pool(load_recipe(run / "recipe.yaml"))
    emb = Embeddings.load(run / "embeddings")
    labeled = {pool.names[i] for s in pool.labeled for i in [*s.queries, *(t for ts in s.targets for t in ts)]}
    keep = np.array([n in labeled for n in emb.names])
    others = np.flatnonzero(~keep)
    rng = np.random.default_rng(seed)
    for extra in extras:
        if extra > len(others):
            print(f"{run.name}: {extra} other images asked for, {len(others)} there: skipped")
            continue
        rows = np.sort(np.concatenate([np.flatnonzero(keep), rng.choice(others, extra, replace=False)]))
        names = [emb.names[i] for i in rows]
        yield pool, Embeddings(names, emb.vectors[rows], emb.norms[rows]), pool.paths_of(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="python -m eval run directories (saved embeddings)")
    parser.add_argument("--extra", nargs="+", type=int, default=[0, 300, 1000, 3000],
                        help="how many of the run's unlabeled images to add to its labeled ones")
    args = parser.parse_args()
    print(f"{'run':<24}{'images':>7}{'LW':>7}  " + "".join(f"{c:<28}" for c in CONFIGS) + "(Hit@1/3/10)")
    for run in args.runs:
        for pool, sub, paths in subsets(run, args.extra):
            cells = []
            for overrides in CONFIGS.values():
                post = PostProcessor(load_recipe(run / "recipe.yaml", overrides))
                out = post.apply(sub, paths, save=False) if post.active else sub
                overall = labeled_metrics(pool, out)[1]
                cells.append("/".join(f"{overall[k]:.3f}" for k in HIT_KEYS))
            shrink = ledoit_wolf(sub.vectors - sub.vectors.mean(0))
            print(f"{run.name:<24}{len(sub):>7}{shrink:>7.3f}  " + "".join(f"{c:<28}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
