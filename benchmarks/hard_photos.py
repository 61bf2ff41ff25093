"""Hard photos (dim light, low resolution, zoom-ins): each model and embedding option through the submission
recipe, per condition, paired with a baseline.

Reads ``python -m eval`` runs made on one pool: mcv-museum, the distractors and mcv-museum-extra's queries
(as distractors), with the balanced hard yardstick (``synthetic.style=hard``), e.g.

    python -m eval recipes/submission.yaml [model.weights=RUN/encoder.pt] [OPTIONS] \\
        data.labeled=[../shared/data/mcv-museum] synthetic.style=hard synthetic.num_queries=600 \\
        "data.distractors=[../shared/data/distractors,../shared/data/mcv-museum-extra/images/queries]" \\
        run_dir=runs/hard/eval-NAME

and scores each, after the run's post steps refitted on each set's own pool (mcv-museum without extra's
queries; mcv-museum-extra with mcv-museum's references, which are extra's, and without mcv-museum's
queries: as a run of extra with the same distractors would), Hit@1/3 of both labeled sets, and synthetic
Hit@3 per condition with its n (in the run's whole pool, as eval scores them); every run is paired with
``--baseline`` query by query (95% interval, gained/lost, McNemar's p) on the labeled sets and on each hard
condition. A run's wall time is its
embedding's (and, with ``--trained RUN=STAGE1_RUN``, that stage-1 run's training time and how far it
moved the weights).

    CURATOR_SHARED=../shared python -m benchmarks.hard_photos runs/hard/eval-* --baseline runs/hard/eval-zeroshot \\
        --extra ../shared/data/mcv-museum-extra [--trained eval-simclr=runs/hard/simclr ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.postprocess import load_synthetic
from benchmarks.scoring import labeled_pools, scores
from core.data.pool import recipe_pool
from core.model.backbone import EncoderSpec, build_encoder
from core.model.embed import Embeddings
from core.pixels.photosim import CONDITIONS
from core.post import PostProcessor
from core.recipe import load_recipe
from core.vectors.paired import paired_difference

PAIRED = ("mcv-museum", "mcv-museum-extra", "dim", "low resolution", "zoom", "upright", "turned", "wall/frame")


def found(run: Path, extra: Path | None) -> dict[str, np.ndarray]:
    """Per labeled set (Hit@1 and Hit@3) and per synthetic condition (Hit@3): each query's hit, in a fixed order."""
    recipe = load_recipe(run / "recipe.yaml")
    pool = recipe_pool(recipe)
    emb = Embeddings.load(run / "embeddings")
    syn, targets, conditions = load_synthetic(run, emb)
    paths = pool.paths_of(emb.names)
    syn_paths = [run / "synthetic" / "images" / Path(n).name for n in syn.names]
    scored = scores(PostProcessor(recipe, None), emb, syn, paths, syn_paths, targets, labeled_pools(pool, emb, extra))
    out = {f"{name} Hit@{k}": h for (name, k), h in scored.items()}
    syn_hits = out["synthetic Hit@3"]
    for condition in [*CONDITIONS, "turned"]:
        mask = np.array([(c[0] != "upright") if condition == "turned" else (condition in c) for c in conditions])
        if mask.any():
            out[condition] = syn_hits[mask]
    return out


def moved(encoder_file: Path) -> float:
    """How far training moved an encoder from the weights it started from: ||W - W0|| / ||W0|| over the
    tensors that changed (0 when none did)."""
    payload = torch.load(encoder_file, weights_only=True, map_location="cpu")
    spec = payload["spec"]
    base = build_encoder(EncoderSpec(**{**spec, "mean": tuple(spec["mean"]), "std": tuple(spec["std"])})).state_dict()
    changed = [(v.float(), base[k].float()) for k, v in payload["state_dict"].items()
               if k in base and v.shape == base[k].shape and not torch.equal(v, base[k])]
    if not changed:
        return 0.0
    return float(sum((v - w).norm() ** 2 for v, w in changed) ** 0.5 / sum(w.norm() ** 2 for _, w in changed) ** 0.5)


def wall_s(run: Path, trained: Path | None) -> dict:
    """A run's embedding time and forward passes per image; with the stage-1 run, its training time and how
    far it moved the weights."""
    metrics = json.loads((run / "metrics.json").read_text())
    row = {"embed s": metrics["time_s"]["embed_pool"], "forwards/img": metrics.get("forwards_per_image")}
    if trained is not None:
        row["train s"] = json.loads((trained / "metrics.json").read_text())["time_s"]["total"]
        row["moved"] = f"{moved(trained / 'encoder.pt'):.1e}"  # too small for the table's 3 decimals
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--extra", type=Path, help="mcv-museum-extra, whose queries the runs' pools hold")
    parser.add_argument("--trained", nargs="*", default=[], metavar="EVAL_RUN=STAGE1_RUN",
                        help="the stage-1 run each evaluated encoder came from (its training time)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/hard_photos.csv"))
    args = parser.parse_args()
    trained = dict(t.split("=", 1) for t in args.trained)
    base = found(args.baseline, args.extra)
    rows, paired = [], []
    for run in dict.fromkeys([args.baseline, *args.runs]):
        hits_ = base if run == args.baseline else found(run, args.extra)
        row = {"run": run.name, **{k: v.mean() for k, v in hits_.items()},
               **wall_s(run, Path(trained[run.name]) if run.name in trained else None)}
        row.update({f"n {k}": len(v) for k, v in hits_.items() if k in PAIRED})
        rows.append(row)
        if run != args.baseline:
            for key in PAIRED:
                name = f"{key} Hit@3" if key.startswith("mcv") else key
                if name in hits_ and name in base and len(hits_[name]) == len(base[name]):
                    paired.append({"run": run.name, "queries": key, "n": len(base[name]),
                                   "vs baseline, Hit@3": str(paired_difference(base[name], hits_[name]))})
        print(run.name, {k: round(float(v), 3) for k, v in row.items() if isinstance(v, float)}, flush=True)
    table, pairs = pd.DataFrame(rows), pd.DataFrame(paired)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    pairs.to_csv(args.out.with_name(args.out.stem + "-paired.csv"), index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 60, "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))
        print(pairs.to_string(index=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
