"""Training-free post-processing on saved embeddings: each step alone, and chains, with their cost.

Reads the embeddings an ``python -m eval`` run saved (pool and synthetic queries), applies the
recipe ``post`` steps through the same code as eval (``core.post.PostProcessor``), and
prints Hit@1/3/10 on the labeled sets, synthetic Hit@3 (overall and per condition of the photos,
for runs made with ``synthetic.style=queries``) and the time each configuration took.

    CURATOR_SHARED=../shared python -m benchmarks.postprocess RUN_DIR [RUN_DIR ...] [--fusion] [--diffusion]
        [--only TEXT ...] [--concat-with RUN_DIR] [--embed KEY=VALUE ...]

``--embed`` picks which of the views a run kept (``embed.combine=gate``) are averaged first, e.g.
``--embed embed.combine=mean 'embed.turns=[0,180]' embed.crop=true`` for the submission recipe's four.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.pool import recipe_pool
from core.data.synthetic import load_synthetic_queries
from core.model.embed import Embeddings, select_views
from core.post import PostProcessor, concat_blocks
from core.recipe import load_recipe
from core.scoring import by_condition, labeled_metrics
from core.vectors.metrics import HIT_KEYS, summarize, target_ranks

SINGLE = {
    "none": ["post.steps=[]"],
    "whiten": ["post.steps=[whiten]", "post.whiten.shrinkage=auto"],
    "whiten no shrinkage": ["post.steps=[whiten]", "post.whiten.shrinkage=0"],
    "whiten shrink 0.1": ["post.steps=[whiten]", "post.whiten.shrinkage=0.1"],
    "whiten shrink 0.5": ["post.steps=[whiten]", "post.whiten.shrinkage=0.5"],
    "whiten power 0.25": ["post.steps=[whiten]", "post.whiten.power=0.25"],
    "whiten dim 256": ["post.steps=[whiten]", "post.whiten.dim=256"],
    "whiten dim 128": ["post.steps=[whiten]", "post.whiten.dim=128"],
    "learned whiten shrink 0.2": ["post.steps=[learned_whiten]", "post.learned_whiten.shrinkage=0.2"],
    "learned whiten shrink 0.5": ["post.steps=[learned_whiten]", "post.learned_whiten.shrinkage=0.5"],
    "learned whiten shrink 0.8": ["post.steps=[learned_whiten]", "post.learned_whiten.shrinkage=0.8"],
    "learned whiten shrink 0.5 dim 256": ["post.steps=[learned_whiten]", "post.learned_whiten.dim=256"],
    "learned whiten shrink 0.5 min sim 0.3": ["post.steps=[learned_whiten]", "post.learned_whiten.min_similarity=0.3"],
    "dba k1": ["post.steps=[dba]", "post.dba.k=1"],
    "dba k2": ["post.steps=[dba]", "post.dba.k=2"],
    "dba k3": ["post.steps=[dba]", "post.dba.k=3"],
    "dba k2 + qe k2": ["post.steps=[dba,qe]"],
    "whiten + dba k1": ["post.steps=[whiten,dba]", "post.dba.k=1"],
    "whiten + dba k2": ["post.steps=[whiten,dba]", "post.dba.k=2"],
    "whiten + dba k1 + qe k1": ["post.steps=[whiten,dba,qe]", "post.dba.k=1", "post.qe.k=1"],
}
# Fast Spectral Ranking blocks appended after learned whitening (--diffusion).
DIFFUSION = {
    "learned whiten + diffusion": ["post.steps=[learned_whiten,diffusion]"],
    "learned whiten + diffusion w0.5": ["post.steps=[learned_whiten,diffusion]", "post.diffusion.weight=0.5"],
    "learned whiten + diffusion alpha 0.5": ["post.steps=[learned_whiten,diffusion]", "post.diffusion.alpha=0.5"],
    "learned whiten + diffusion gamma 1": ["post.steps=[learned_whiten,diffusion]", "post.diffusion.gamma=1"],
    "learned whiten + diffusion k3 rank 64": ["post.steps=[learned_whiten,diffusion]", "post.diffusion.k=3",
                                              "post.diffusion.rank=64"],
}
FUSION = {
    "learned whiten shrink 0.5 verified": ["post.steps=[learned_whiten]", "post.learned_whiten.verify=true"],
    "fusion k3": ["post.steps=[fusion]"],
    "whiten + fusion k3": ["post.steps=[whiten,fusion]"],
    "whiten + fusion k3 w1.0": ["post.steps=[whiten,fusion]", "post.fusion.weight=1.0"],
    "learned whiten + fusion k3": ["post.steps=[learned_whiten,fusion]"],
    "learned whiten + diffusion verified": ["post.steps=[learned_whiten,diffusion]", "post.diffusion.verify=true"],
    "learned whiten verified + diffusion verified": ["post.steps=[learned_whiten,diffusion]",
                                                     "post.learned_whiten.verify=true", "post.diffusion.verify=true"],
}


def load_synthetic(run: Path, pool: Embeddings) -> tuple[Embeddings, list[int], list[list[str]]] | None:
    """A run's synthetic photos: embeddings, their sources' pool rows, and each photo's conditions."""
    folder = run / "synthetic"
    if not Embeddings.saved_in(folder / "embeddings"):
        return None
    queries = load_synthetic_queries(folder, pool.names)
    return Embeddings.load(folder / "embeddings"), queries.sources, queries.conditions


def synthetic_hits(vectors: np.ndarray, n_pool: int, targets: list[int], conditions, prefix: str = "") -> dict:
    """Synthetic Hit@3 overall and per condition of the photos (rows ``n_pool:``) in ``vectors``."""
    ranks = target_ranks(vectors, list(range(n_pool, len(vectors))), [[t] for t in targets])
    return {f"{prefix}synthetic": summarize(ranks)["hit@3"],
            **{f"{prefix}{c}": f["hit@3"] for c, f in by_condition(ranks, conditions).items()}}


def benchmark(run: Path, configs: dict[str, list[str]], concat_with: Path | None, embed: list[str]) -> list[dict]:
    base = load_recipe(run / "recipe.yaml", embed)
    pool = recipe_pool(base)
    emb = Embeddings.load(run / "embeddings")
    paths = pool.paths_of(emb.names)
    synthetic = load_synthetic(run, emb)
    if embed:
        if emb.views is None or (synthetic and synthetic[0].views is None):
            raise SystemExit(f"--embed picks among kept views, and {run} kept none (make it with embed.combine=gate)")
        emb = select_views(emb, base.embed)
        synthetic = (select_views(synthetic[0], base.embed), *synthetic[1:]) if synthetic else None
    syn_paths = [run / "synthetic" / "images" / Path(n).name for n in synthetic[0].names] if synthetic else []
    blocks = {"": (emb, synthetic[0] if synthetic else None)}
    if concat_with is not None:
        other = Embeddings.load(concat_with / "embeddings")
        other_syn = load_synthetic(concat_with, other)
        if other.names != emb.names or (synthetic and (not other_syn or other_syn[0].names != synthetic[0].names)):
            raise SystemExit(f"{concat_with} embeds other images (or other synthetic photos) than {run}")
        for w in (0.5, 1.0):
            joined = Embeddings(emb.names, concat_blocks([emb.vectors, other.vectors], [1.0, w]), emb.norms)
            joined_syn = (Embeddings(synthetic[0].names, concat_blocks([synthetic[0].vectors, other_syn[0].vectors],
                                                                       [1.0, w]), synthetic[0].norms)
                          if synthetic else None)
            blocks[f"concat {concat_with.name} x{w} + "] = (joined, joined_syn)
    rows, verifier = [], None
    for prefix, (start, start_syn) in blocks.items():
        for label, overrides in configs.items():
            post = PostProcessor(load_recipe(run / "recipe.yaml", [*embed, *overrides]), None)
            post.verifier = verifier
            t0 = time.perf_counter()
            out = post.apply(start, paths, save=False)
            seconds = time.perf_counter() - t0
            verifier = post.verifier or verifier
            overall = labeled_metrics(pool, out)[1]
            row = {"run": run.name, "post": prefix + label, **{k: overall[k] for k in HIT_KEYS},
                   "map": overall["map"], "seconds": round(seconds, 2), "verified_pairs": post.verified_pairs,
                   "pseudo_pairs": post.learned_pairs}
            if start_syn is not None:
                joint = post.apply(Embeddings.concat([start, start_syn]), [*paths, *syn_paths], save=False)
                hits = synthetic_hits(joint.vectors, len(start), synthetic[1], synthetic[2], prefix="syn ")
                row["synthetic_hit@3"] = hits.pop("syn synthetic")
                row.update(hits)  # Hit@3 per condition: "syn upright", "syn rot90", ...
            rows.append(row)
            print(f"{row['run']:<28}{row['post']:<60}" + " ".join(
                f"{row[k]:.3f}" for k in HIT_KEYS) +
                f"  syn {row.get('synthetic_hit@3', float('nan')):.3f}  {row['seconds']:7.2f} s"
                + (f"  {row['pseudo_pairs']} pseudo pairs" if row["pseudo_pairs"] else ""), flush=True)
            per_condition = {k[4:]: v for k, v in row.items() if k.startswith("syn ")}
            if per_condition:
                shown = ", ".join(f"{c} {v:.3f}" for c, v in per_condition.items())
                print(f"    synthetic Hit@3 by condition: {shown}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--fusion", action="store_true", help="also the (slow) steps that verify pairs geometrically")
    parser.add_argument("--diffusion", action="store_true", help="also the diffusion blocks (tens of seconds each)")
    parser.add_argument("--only", nargs="+", default=[], metavar="TEXT",
                        help="only the configurations whose name contains one of these texts (and 'none')")
    parser.add_argument("--concat-with", type=Path, help="a run whose embeddings to concatenate with each run's")
    parser.add_argument("--embed", nargs="+", default=[], metavar="KEY=VALUE",
                        help="embed overrides choosing which kept views to average first")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/postprocess.csv"))
    args = parser.parse_args()
    configs = {**SINGLE, **(DIFFUSION if args.diffusion else {}), **(FUSION if args.fusion else {})}
    if args.only:
        configs = {k: v for k, v in configs.items() if k == "none" or any(t in k for t in args.only)}
    rows = [r for run in args.runs for r in benchmark(run, configs, args.concat_with, args.embed)]
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print("\nbest per run (by Hit@3, then mAP):")
    for run, group in table.groupby("run", sort=False):
        best = group.sort_values(["hit@3", "map"], ascending=False).iloc[0]
        none = group[group["post"] == "none"].iloc[0]
        print(f"{run}: {best['post']}: Hit@3 {none['hit@3']:.3f} -> {best['hit@3']:.3f} "
              f"({(best['hit@3'] - none['hit@3']) * 100:+.1f} points) in {best['seconds']:.1f} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
