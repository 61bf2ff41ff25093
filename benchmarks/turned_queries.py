"""The same synthetic photos in all four quarter turns: how much each embedding option loses to a turn.

``benchmarks.query_views`` scores each turn on different photos, and few of them turn by 90 or 270
(4% and 11% of the competition's queries: 9 and 20 of 200), so a gap between turns there mixes the
turn with the photos' other conditions. Here every synthetic photo of a run is turned back upright
(its first condition names its turn) and written in each quarter turn to ``RUN/turned/`` (PNG,
lossless), those photos are embedded with the run's recipe (all the views it kept), and every option
``query_views`` knows is scored per turn on the identical photos, after the post steps (fitted on the
pool and that turn's photos, as eval fits them). Per option: Hit@3 per turn, the mean weighted by
the competition's turn frequencies (``core.pixels.photosim.QUARTER_TURNS``), the largest drop from upright,
and the photos found upright but lost turned (and the reverse) for that drop.

    python -m eval recipes/submission.yaml data.labeled=[../shared/data/mcv-museum] \\
        data.distractors=[DISTRACTORS] embed.precision=fp32 embed.turns=[0,90,180,270] \\
        embed.crop=true embed.combine=gate run_dir=RUN
    CURATOR_SHARED=../shared python -m benchmarks.turned_queries RUN [--set 'post.steps=[learned_whiten]' ...]

Embedding the turned photos is the long part (4 x the run's synthetic photos, 8 views each); it is
saved under ``RUN/turned/`` and reused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from benchmarks.postprocess import load_synthetic
from benchmarks.query_views import OPTIONS, PLAIN, TURNS4
from core.base.atomic import atomic_write_bytes
from core.data.pool import recipe_pool
from core.model.backbone import EncoderSpec, build_encoder
from core.model.embed import Embeddings, embed_images, recipe_reader, recipe_views, select_views
from core.pixels.images import ImageReader
from core.pixels.photosim import QUARTER_TURNS, TURN_CONDITIONS
from core.post import PostProcessor
from core.recipe import load_recipe
from core.vectors.metrics import target_ranks

TURN_OF = {name: turn for turn, name in TURN_CONDITIONS.items()}


def turned_photos(run: Path, syn_names: list[str], conditions: list[list[str]], turn: int) -> list[Path]:
    """The run's synthetic photos upright, then turned ``turn`` degrees clockwise (files written once)."""
    folder = run / "turned" / f"rot{turn}"
    paths = []
    reader = ImageReader()
    for name, shown in zip(syn_names, conditions, strict=True):
        path = folder / f"{Path(name).stem}.png"
        if not path.is_file():
            photo = reader(run / "synthetic" / "images" / Path(name).name)
            # core.pixels.photosim turned the photo clockwise by its turn (np.rot90 with k = -turn / 90).
            upright = np.rot90(photo, k=TURN_OF[shown[0]] // 90)
            ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(np.rot90(upright, k=-turn // 90)),
                                                        cv2.COLOR_RGB2BGR))
            assert ok
            atomic_write_bytes(path, buf.tobytes())
        paths.append(path)
    return paths


def embed_turn(run: Path, recipe, paths: list[Path], turn: int) -> Embeddings:
    """The photos turned ``turn`` (files ``paths``) embedded with every view the run kept (cached in
    ``RUN/turned/``)."""
    folder = run / "turned" / f"embeddings_rot{turn}"
    if Embeddings.saved_in(folder):
        return Embeddings.load(folder)
    encoder = build_encoder(EncoderSpec.from_config(recipe.model))
    emb = embed_images(encoder, paths, [f"turned/rot{turn}/{p.stem}" for p in paths], recipe.embed,
                       reader=recipe_reader(recipe, encoder), desc=f"embed photos turned {turn}")
    emb.save(folder)
    return emb


def hits(vectors: np.ndarray, n_pool: int, targets: list[int]) -> np.ndarray:
    """Per photo (rows ``n_pool:``): whether its source is in its top 3."""
    ranks = target_ranks(vectors, list(range(n_pool, len(vectors))), [[t] for t in targets])
    return np.array([r.size > 0 and r.min() < 3 for r in ranks])


def benchmark(run: Path, overrides: list[str]) -> pd.DataFrame:
    """One row per option: Hit@3 per turn on the same photos, turn-weighted mean, worst drop."""
    recipe = load_recipe(run / "recipe.yaml", overrides)
    pool = recipe_pool(recipe)
    emb = Embeddings.load(run / "embeddings")
    syn, targets, conditions = load_synthetic(run, emb)
    if emb.views is None or syn.views is None or not conditions or not conditions[0]:
        raise SystemExit(f"{run} kept no views or has no turned synthetic photos: make it with {TURNS4} "
                         "embed.crop=true embed.combine=gate and synthetic.style=queries")
    paths = pool.paths_of(emb.names)
    turns = sorted(QUARTER_TURNS)
    files = {t: turned_photos(run, syn.names, conditions, t) for t in turns}
    photos = {t: embed_turn(run, recipe, files[t], t) for t in turns}
    print(f"{run}: {len(syn)} synthetic photos, each in turns {turns}; post steps {list(recipe.post.steps)}",
          flush=True)
    rows = []
    for label, option in OPTIONS.items():
        cfg = load_recipe(run / "recipe.yaml", [*overrides, *PLAIN, *option])
        if set(recipe_views(cfg.embed)) - set(emb.view_names):
            continue
        post = PostProcessor(cfg, None)
        found, raw = {}, {}
        for t in turns:
            joint = select_views(Embeddings.concat([emb, photos[t]]), cfg.embed)
            found[t] = hits(post.apply(joint, [*paths, *files[t]], save=False).vectors, len(emb), targets)
            raw[t] = hits(joint.vectors, len(emb), targets)
        worst = min((t for t in turns if t), key=lambda t: found[t].mean())
        row = {"option": label, **{f"rot{t}": found[t].mean() for t in turns},
               "turn-weighted": sum(QUARTER_TURNS[t] * found[t].mean() for t in turns),
               "worst drop": found[0].mean() - found[worst].mean(),
               "lost/gained": f"{int((found[0] & ~found[worst]).sum())}/{int((~found[0] & found[worst]).sum())} "
                              f"at {worst}",
               **{f"raw rot{t}": raw[t].mean() for t in turns},
               "raw turn-weighted": sum(QUARTER_TURNS[t] * raw[t].mean() for t in turns)}
        rows.append(row)
        print(f"{label:<30} " + " ".join(f"{t:>3}: {found[t].mean():.3f}" for t in turns)
              + f"  weighted {row['turn-weighted']:.3f}", flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an eval run that kept all eight views (see above)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="recipe overrides, e.g. 'post.steps=[learned_whiten]'")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/turned_queries.csv"))
    args = parser.parse_args()
    table = benchmark(args.run, args.overrides)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.float_format", "{:.3f}".format):
        print(f"\nHit@3 of the same {args.run} synthetic photos in each turn, after the post steps "
              "(lost/gained: photos found upright and missed in the worst turn, and the reverse):")
        print(table[[c for c in table.columns if not c.startswith("raw")]].to_string(index=False))
        print("\nthe same before the post steps (raw embeddings):")
        print(table[["option", *(c for c in table.columns if c.startswith("raw"))]].to_string(index=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
