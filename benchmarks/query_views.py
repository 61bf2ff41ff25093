"""Views at embedding time (issue 12): quarter turns and painting crops, averaged or gated, after whitening.

Reads ``python -m eval`` runs made with their views kept (``embed.combine=gate``: the run saves each
view of the pool and of its synthetic photos; ``embed.turns=[0,90,180,270] embed.crop=true`` keeps all
eight), derives every option the kept views allow from them through the same code as embedding
(``Embeddings.gated``, the mean of the views), applies the run's ``post`` steps (whitening, as the
submission recipe does) and prints one table per run: Hit@3 per labeled set and overall, synthetic
Hit@3 per condition after the post steps and before them, and, measured side by side on the same
sample of pool images, seconds per 1,000 images of embedding with each option's ``embed`` settings
(the gate's own time over the pool beside it). Several runs (e.g. one per encoder) share one table.

    python -m eval recipes/submission.yaml data.labeled=[../shared/data/mcv-museum] \\
        data.distractors=[DISTRACTORS] embed.precision=fp32 embed.turns=[0,90,180,270] \\
        embed.crop=true embed.combine=gate run_dir=RUN
    CURATOR_SHARED=../shared python -m benchmarks.query_views RUN [RUN ...] [--timing-images 48] \\
        [--set 'post.steps=[learned_whiten]' ...]

``--set`` overrides the runs' recipes (e.g. the post steps) before any option is derived.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.postprocess import load_synthetic, synthetic_hits
from core.data.pool import recipe_pool
from core.model.backbone import EncoderSpec, build_encoder
from core.model.embed import Embeddings, embed_images, recipe_reader, recipe_views, select_views
from core.pixels.photosim import CONDITIONS
from core.post import PostProcessor
from core.recipe import load_recipe
from core.scoring import labeled_metrics

TURNS4 = "embed.turns=[0,90,180,270]"
# The run kept every view; each option starts from the plain embedding and adds its own views.
PLAIN = ["embed.combine=mean", "embed.turns=[0]", "embed.crop=false"]
# Each option is the embed overrides a recipe would carry.
OPTIONS = {
    "plain (submission recipe)": [],
    "turn TTA: mean of 4 turns": [TURNS4],
    "gated turns, auto margin": [TURNS4, "embed.combine=gate"],
    "gated turns, margin 0.15": [TURNS4, "embed.combine=gate", "embed.gate_margin=0.15"],
    "gated turns, margin 0.05": [TURNS4, "embed.combine=gate", "embed.gate_margin=0.05"],
    "turns 0+180: mean": ["embed.turns=[0,180]"],
    "gated 180 only, auto": ["embed.turns=[0,180]", "embed.combine=gate"],
    "crop: mean with the photo": ["embed.crop=true"],
    "crop gated, auto": ["embed.crop=true", "embed.combine=gate"],
    "turns + crop gated, auto": [TURNS4, "embed.crop=true", "embed.combine=gate"],
    "turns 0+180 + crop: mean of 4": ["embed.turns=[0,180]", "embed.crop=true"],
    "turns + crop: mean of 8": [TURNS4, "embed.crop=true"],
}


def seconds_per_1000(recipe, overrides: list[str], paths: list[Path], names: list[str]) -> float:
    """Embedding time of ``paths`` with ``overrides`` on ``recipe``, scaled to 1,000 images."""
    cfg = load_recipe(recipe, ["embed.progress=false", *overrides])
    encoder = build_encoder(EncoderSpec.from_config(cfg.model))
    start = time.perf_counter()
    embed_images(encoder, paths, names, cfg.embed, reader=recipe_reader(cfg, encoder))
    return (time.perf_counter() - start) * 1000 / len(paths)


def benchmark(run: Path, timing_images: int, overrides: list[str] = ()) -> pd.DataFrame:
    """One row per option the run's kept views can derive (the others are skipped, said so)."""
    recipe_file = run / "recipe.yaml"
    pool = recipe_pool(load_recipe(recipe_file, list(overrides)))
    emb = Embeddings.load(run / "embeddings")
    syn, syn_targets, conditions = load_synthetic(run, emb)
    if emb.views is None or syn.views is None:
        raise SystemExit(f"{run} kept no views: make it with {TURNS4} embed.crop=true embed.combine=gate")
    paths = pool.paths_of(emb.names)
    syn_paths = [run / "synthetic" / "images" / Path(n).name for n in syn.names]
    sample = np.random.default_rng(0).choice(len(paths), min(timing_images, len(paths)), replace=False)
    counts = {c: sum(c in q for q in conditions) for c in CONDITIONS}
    print(f"{run}: {len(conditions)} synthetic photos; per condition: "
          + ", ".join(f"{c} {n}" for c, n in counts.items() if n), flush=True)
    rows = []
    for label, option in OPTIONS.items():
        recipe = load_recipe(recipe_file, [*overrides, *PLAIN, *option])
        missing = sorted(set(recipe_views(recipe.embed)) - set(emb.view_names))
        if missing:
            print(f"{label:<30} skipped: {run} lacks the views {missing}")
            continue
        post = PostProcessor(recipe, None)
        t0 = time.perf_counter()
        chosen = select_views(emb, recipe.embed)
        gate_s = time.perf_counter() - t0
        per_set, overall = labeled_metrics(pool, post.apply(chosen, paths, save=False))
        joint = select_views(Embeddings.concat([emb, syn]), recipe.embed)
        processed = post.apply(joint, [*paths, *syn_paths], save=False)
        row = {"run": run.name, "option": label,
               **{s: g["hit@3"] for f in per_set.values() for s, g in f["subsets"].items()},
               "mcv overall": overall["hit@3"],
               **synthetic_hits(processed.vectors, len(emb), syn_targets, conditions),
               **synthetic_hits(joint.vectors, len(emb), syn_targets, conditions, prefix="raw "),
               "gate s": round(gate_s, 2)}
        if len(sample):
            row["s/1000 img"] = round(seconds_per_1000(recipe_file, [*overrides, *PLAIN, *option],
                                                       [paths[i] for i in sample],
                                                       [emb.names[i] for i in sample]), 1)
        rows.append(row)
        print(f"{label:<30} mcv {row['mcv overall']:.3f}  synthetic {row['synthetic']:.3f} "
              f"(raw {row['raw synthetic']:.3f})  {row.get('s/1000 img', float('nan')):7.1f} s/1000 img", flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="eval runs that kept their views (one per encoder)")
    parser.add_argument("--timing-images", type=int, default=48,
                        help="pool images embedded with each option to time it (default: 48; 0: no timing)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="recipe overrides for every run, e.g. 'post.steps=[learned_whiten]'")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/query_views.csv"))
    args = parser.parse_args()
    table = pd.concat([benchmark(run, args.timing_images, args.overrides) for run in args.runs], ignore_index=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    conditions = [c for c in CONDITIONS if c in table.columns]
    sets = [c for c in table.columns if c.startswith("20")]
    timing = [c for c in ("s/1000 img", "gate s") if c in table.columns]
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.float_format", "{:.3f}".format):
        print("\nHit@3 after the run's post steps; mcv-museum per set:")
        print(table[["run", "option", *sets, "mcv overall", *timing]].to_string(index=False))
        print("\nsynthetic queries, Hit@3 per condition, after the run's post steps:")
        print(table[["run", "option", "synthetic", *conditions]].to_string(index=False))
        print("\nthe same before the post steps (raw embeddings):")
        print(table[["run", "option", *(f"raw {c}" for c in ["synthetic", *conditions])]].to_string(index=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
