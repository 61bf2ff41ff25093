"""Orientation learned without labels (``embed.orient``): how right the head is, what it does to retrieval,
and what it saves.

All from one evaluation that kept every view of every image (``recipes/submission.yaml`` with
``embed.combine=gate``: the four quarter turns of the image and of its localised painting), so every
option is scored on the same embeddings (``Embeddings.oriented`` derives an oriented embedding from kept
views exactly: tests/test_orient.py). mcv-museum-extra's queries join that run's pool as distractors
and are scored here in a pool of their own (mcv-museum's references, which are extra's too, the
distractors and extra's queries), as ``python -m eval`` would score a run of extra with the same
distractors. Printed:

1. the head fitted on the pool's images, each in its four turns: held-out accuracy, calibration, the
   threshold chosen without labels and the share that falls back; the same head with a share of
   turned photos among its training images (label noise), to say what they cost;
2. its accuracy on the synthetic photos per condition (their turn is known) and on the labeled photos
   turned by hand into each of the four turns (their kept views);
3. Hit@1/3 per labeled set and synthetic Hit@3 per condition (in the run's whole pool, as eval scores
   them) after the recipe's post steps, eight views
   against oriented ones (and one view), each paired with eight views (95% interval, gained/lost, p);
4. with ``--turned``, ``benchmarks.turned_queries``' table: the same synthetic photos in each turn;
5. with ``--timing N``: seconds per 1,000 images and forward passes per image of one view, eight views
   and the oriented embedding, measured side by side in this process on N pool images.

    python -m eval recipes/submission.yaml data.labeled=[../shared/data/mcv-museum] \\
        "data.distractors=[../shared/data/distractors,../shared/data/mcv-museum-extra/images/queries]" \\
        embed.combine=gate embed.precision=fp32 run_dir=RUN
    CURATOR_SHARED=../shared python -m benchmarks.orientation RUN --extra ../shared/data/mcv-museum-extra \\
        [--turned] [--timing 200]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.postprocess import load_synthetic
from benchmarks.scoring import hits, labeled_pools, scores
from benchmarks.turned_queries import embed_turn, turned_photos
from core.data.pool import Pool, recipe_pool, row_index
from core.model.backbone import EncoderSpec, build_encoder
from core.model.embed import Embeddings, embed_images, orientation_of, recipe_reader, view_name
from core.model.orient import QUARTERS, Orientation, OrientationReport, fit_orientation, sample_rows
from core.pixels.photosim import CONDITIONS, QUARTER_TURNS, TURN_CONDITIONS
from core.post import PostProcessor
from core.recipe import load_recipe
from core.vectors.paired import paired_difference

TURN_OF = {name: turn for turn, name in TURN_CONDITIONS.items()}
TURN_VIEWS = [view_name(False, t) for t in QUARTERS]


def turn_views(emb: Embeddings, rows) -> np.ndarray:
    """(rows, 4, D): each row's plain views at 0, 90, 180 and 270 degrees (what the head is fitted on)."""
    return emb.views[rows][:, [emb.view_names.index(v) for v in TURN_VIEWS]]


def predicted(head, plain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the turn the head says it is in (clockwise degrees from upright) and whether it is sure."""
    turn, sure = head.upright_turns(torch.from_numpy(plain))
    return ((360 - turn.numpy()) % 360), sure.numpy()


class Options:
    """The embeddings compared, each derived from the kept views: eight views, oriented, one view."""

    def __init__(self, head, recipe):
        self.head, self.turns, self.crop = head, tuple(int(t) for t in recipe.embed.turns), bool(recipe.embed.crop)

    def __call__(self, emb: Embeddings) -> dict[str, Embeddings]:
        crops = (False, True) if self.crop else (False,)
        return {"eight views": emb.with_views([view_name(c, t) for c in crops for t in self.turns]),
                "oriented": emb.oriented(self.head, self.turns, self.crop),
                "one view": emb.with_views([view_name(False, 0)])}


def head_report(emb: Embeddings, syn: Embeddings, conditions: list[list[str]], labeled_rows: list[int],
                recipe) -> tuple[Orientation, list[dict], OrientationReport]:
    """Fit the head as ``embed.orient`` would on this pool; its accuracy on held-out images, on the synthetic
    photos per condition and on the labeled photos turned by hand; the cost of turned photos among its
    training images."""
    cfg = recipe.embed.orient
    rows = sample_rows(len(emb), int(cfg.images))
    head, report = fit_orientation(turn_views(emb, rows), float(cfg.held_out), float(cfg.accuracy))
    lines = [{"measure": "pool images held out, all four turns", "n": report.held_out * 4,
              "accuracy": report.accuracy, "falls back": report.fallback,
              "accuracy when sure": report.confident_accuracy,
              **{f"at {t}": a for t, a in report.per_turn.items()}}]
    truth = np.array([TURN_OF[c[0]] for c in conditions])
    syn_turn, syn_sure = predicted(head, syn.views[:, syn.view_names.index("0")])
    for condition in ["all", *CONDITIONS]:
        mask = np.ones(len(truth), bool) if condition == "all" else np.array([condition in c for c in conditions])
        if mask.any():
            right = syn_turn[mask] == truth[mask]
            lines.append({"measure": f"synthetic photos: {condition}", "n": int(mask.sum()), "accuracy": right.mean(),
                          "falls back": 1 - syn_sure[mask].mean(),
                          "accuracy when sure": right[syn_sure[mask]].mean() if syn_sure[mask].any() else np.nan})
    views = turn_views(emb, labeled_rows)
    by_turn = {}
    for i, t in enumerate(QUARTERS):
        turn, sure = predicted(head, views[:, i])
        by_turn[t] = (turn == t, sure)
    right = np.concatenate([r for r, _ in by_turn.values()])
    sure = np.concatenate([s for _, s in by_turn.values()])
    lines.append({"measure": "labeled photos turned by hand, all four turns", "n": len(right), "accuracy": right.mean(),
                  "falls back": 1 - sure.mean(), "accuracy when sure": right[sure].mean() if sure.any() else np.nan,
                  **{f"at {t}": r.mean() for t, (r, _) in by_turn.items()}})
    # Label noise: half the synthetic photos join the training images as they are (a turned photo is
    # then an "upright" example turned wrongly); the other half, never seen, measures the head.
    half = np.arange(len(syn)) % 2 == 0
    noisy = np.concatenate([turn_views(emb, rows), turn_views(syn, np.flatnonzero(half))])
    turned = int((truth[half] != 0).sum())
    for label, views_ in ((f"clean ({len(rows)} pool images)", turn_views(emb, rows)),
                          (f"+{int(half.sum())} photos, {turned} of them turned ({turned / len(noisy):.1%} label "
                           "noise)", noisy)):
        noisy_head, noisy_report = fit_orientation(views_, float(cfg.held_out), float(cfg.accuracy))
        turn, sure = predicted(noisy_head, syn.views[~half, syn.view_names.index("0")])
        right = turn == truth[~half]
        lines.append({"measure": f"label noise: head fitted on {label}; the other synthetic photos",
                      "n": int((~half).sum()), "accuracy": right.mean(), "falls back": 1 - sure.mean(),
                      "accuracy when sure": right[sure].mean() if sure.any() else np.nan,
                      "held-out pool accuracy": noisy_report.accuracy})
    return head, lines, report


def retrieval(run: Path, recipe, run_pool: Pool, emb: Embeddings, syn: Embeddings, syn_targets: list[int],
              conditions: list[list[str]], options: Options,
              extra: Path | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hit@1/3 per labeled set (its own pool) and synthetic Hit@3 per condition, after the post steps, per option."""
    paths = run_pool.paths_of(emb.names)
    syn_paths = [run / "synthetic" / "images" / Path(n).name for n in syn.names]
    post = PostProcessor(recipe, None)
    pools = labeled_pools(run_pool, emb, extra)
    made = {label: (e, options(syn)[label]) for label, e in options(emb).items()}
    rows, found = [], {}
    for label, (pool_emb, syn_emb) in made.items():
        scored = scores(post, pool_emb, syn_emb, paths, syn_paths, syn_targets, pools)
        row = {"option": label, **{f"{name} Hit@{k}": h.mean() for (name, k), h in scored.items()}}
        found.update({(label, name, k): h for (name, k), h in scored.items()})
        for c in CONDITIONS:
            mask = np.array([c in q for q in conditions])
            if mask.any():
                row[f"{c} (n={int(mask.sum())})"] = scored[("synthetic", 3)][mask].mean()
                found[(label, c, 3)] = scored[("synthetic", 3)][mask]
        if label == "oriented":
            row["falls back (pool)"] = float((pool_emb.upright < 0).mean())
            row["falls back (synthetic)"] = float((syn_emb.upright < 0).mean())
        rows.append(row)
    table = pd.DataFrame(rows)
    paired = []
    for (label, what, k), h in found.items():
        if label != "eight views" and what in ("mcv-museum", "mcv-museum-extra", "synthetic") and k == 3:
            base = found[("eight views", what, 3)]
            paired.append({"option": label, "queries": what,
                           "paired with eight views, Hit@3": str(paired_difference(base, h))})
    return table, pd.DataFrame(paired)


def turned(run: Path, recipe, run_pool: Pool, emb: Embeddings, syn: Embeddings, syn_targets: list[int],
           conditions: list[list[str]], options: Options) -> pd.DataFrame:
    """The same synthetic photos in each quarter turn (benchmarks.turned_queries), per option."""
    paths = run_pool.paths_of(emb.names)
    post = PostProcessor(recipe, None)
    files = {t: turned_photos(run, syn.names, conditions, t) for t in QUARTERS}
    photos = {t: embed_turn(run, recipe, files[t], t) for t in QUARTERS}
    pool_options = options(emb)
    rows = []
    for label in pool_options:
        found = {}
        for t in QUARTERS:
            joint = Embeddings.concat([pool_options[label], options(photos[t])[label]])
            vectors = post.apply(joint, [*paths, *files[t]], save=False).vectors
            found[t] = hits(vectors, list(range(len(emb), len(emb) + len(syn))), [[s] for s in syn_targets], 3)
        worst = min((t for t in QUARTERS if t), key=lambda t: found[t].mean())
        rows.append({"option": label, **{f"{t}": found[t].mean() for t in QUARTERS},
                     "turn-weighted": sum(QUARTER_TURNS[t] * found[t].mean() for t in QUARTERS),
                     "worst drop": found[0].mean() - found[worst].mean(),
                     "lost/gained": f"{int((found[0] & ~found[worst]).sum())}/{int((~found[0] & found[worst]).sum())} "
                                    f"at {worst}"})
    return pd.DataFrame(rows)


def timing(recipe_file: Path, paths: list[Path], names: list[str]) -> pd.DataFrame:
    """Seconds per 1,000 images and forward passes per image: one view, eight views, oriented (the head
    fitted first, on these images, and timed apart)."""
    rows = []
    base = load_recipe(recipe_file, ["embed.progress=false", "embed.combine=mean"])
    encoder = build_encoder(EncoderSpec.from_config(base.model))
    reader = recipe_reader(base, encoder)
    start = time.perf_counter()
    oriented_cfg = load_recipe(recipe_file, ["embed.progress=false", "embed.combine=mean", "embed.orient.enabled=true",
                                             f"embed.orient.images={len(paths)}"]).embed
    orientation_of(encoder, paths, names, oriented_cfg, reader)
    fit_s = time.perf_counter() - start
    for label, overrides in (("one view", ["embed.turns=[0]", "embed.crop=false"]), ("eight views", []),
                             ("oriented", ["embed.orient.enabled=true"])):
        cfg = load_recipe(recipe_file, ["embed.progress=false", "embed.combine=mean", *overrides]).embed
        start = time.perf_counter()
        emb = embed_images(encoder, paths, names, cfg, reader=reader)
        seconds = time.perf_counter() - start
        rows.append({"embedding": label, "images": len(paths), "s per 1,000 images": seconds * 1000 / len(paths),
                     "forward passes per image": emb.forwards_per_image})
    table = pd.DataFrame(rows)
    table["x one view"] = table["s per 1,000 images"] / table["s per 1,000 images"].iloc[0]
    print(f"fitting the head on those {len(paths)} images (each in 4 turns) took {fit_s:.1f} s, "
          f"{fit_s * 1000 / len(paths):.0f} s per 1,000 images of the fit sample (once per folder: "
          f"embed.orient.images={base.embed.orient.images} images by default)")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an eval run of recipes/submission.yaml with embed.combine=gate")
    parser.add_argument("--extra", type=Path, help="mcv-museum-extra, whose queries the run's pool holds")
    parser.add_argument("--turned", action="store_true", help="also the synthetic photos in each quarter turn")
    parser.add_argument("--timing", type=int, default=0, metavar="N", help="time the embeddings on N pool images")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="recipe overrides, e.g. embed.orient.accuracy=0.98")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/orientation"))
    args = parser.parse_args()
    recipe = load_recipe(args.run / "recipe.yaml", args.overrides)
    run_pool = recipe_pool(recipe)
    emb = Embeddings.load(args.run / "embeddings")
    syn, syn_targets, conditions = load_synthetic(args.run, emb)
    if emb.views is None or syn.views is None or set(TURN_VIEWS) - set(emb.view_names):
        raise SystemExit(f"{args.run} kept no views of the four turns: make it as the docstring says")
    labeled = run_pool.labeled[0]
    row = row_index(emb.names)
    head, accuracy, report = head_report(emb, syn, conditions, [row[run_pool.names[q]] for q in labeled.queries],
                                         recipe)
    options = Options(head, recipe)
    tables = {"accuracy": pd.DataFrame(accuracy)}
    tables["retrieval"], tables["paired"] = retrieval(args.run, recipe, run_pool, emb, syn, syn_targets, conditions,
                                                      options, args.extra)
    if args.turned:
        tables["turned"] = turned(args.run, recipe, run_pool, emb, syn, syn_targets, conditions, options)
    if args.timing:
        rows = sample_rows(len(emb), args.timing)
        paths = run_pool.paths_of(emb.names)
        tables["timing"] = timing(args.run / "recipe.yaml", [paths[i] for i in rows], [emb.names[i] for i in rows])
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"\n{args.run}: the head: {asdict(report)}")
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.float_format", "{:.3f}".format,
                           "display.max_colwidth", 80):
        for name, table in tables.items():
            table.to_csv(args.out / f"{name}.csv", index=False)
            print(f"\n{name}:\n{table.to_string(index=False)}")
    print(f"\nwrote {args.out}/*.csv")


if __name__ == "__main__":
    main()
