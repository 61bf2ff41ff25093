"""Zero-shot grid on a labeled pool: every resize policy x pooling x flip TTA, Hit@1/3/10 per set.

    CURATOR_SHARED=../shared python -m benchmarks.zeroshot_sweep [recipes/zeroshot.yaml] [key=value ...]

Defaults to ../shared/data/mcv-museum with ../shared/data/distractors in the pool. Poolings and
flips share one decoding and forward pass per resize policy (core.model.embed.embed_variants), so the grid
costs three pool embeddings with flipping, not eighteen. Prints a table, writes it as CSV with
per-set Hit@1/3/10, and keeps every variant's embeddings for later comparisons.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from core.data.pool import build_pool
from core.model.backbone import POOLINGS, EncoderSpec, build_encoder
from core.model.embed import embed_variants, recipe_reader
from core.pixels.preprocess import RESIZE_POLICIES
from core.recipe import load_recipe
from core.scoring import labeled_metrics
from core.vectors.metrics import HIT_KEYS, KS

HEADLINE = ["resize", "pooling", "flip", *(f"overall {k}" for k in HIT_KEYS), "overall map"]


def main(argv: list[str]) -> None:
    shared = Path(os.environ.get("CURATOR_SHARED", "../shared"))
    recipe_path = argv[0] if argv and "=" not in argv[0] else "recipes/zeroshot.yaml"
    overrides = [a for a in argv if "=" in a]
    defaults = [f"data.labeled=[{shared / 'data' / 'mcv-museum'}]",
                f"data.distractors=[{shared / 'data' / 'distractors'}]"]
    recipe = load_recipe(recipe_path, defaults + overrides)
    pool = build_pool(list(recipe.data.labeled), list(recipe.data.distractors), recipe.data.root)
    print(f"pool: {len(pool)} images; model {recipe.model.arch} @ {recipe.model.img_size} px, "
          f"{recipe.embed.precision}", flush=True)
    out = Path(os.environ.get("CURATOR_BENCH_OUT", "runs/benchmarks/zeroshot_sweep"))
    rows = []
    for policy in RESIZE_POLICIES:
        encoder = build_encoder(replace(EncoderSpec.from_config(recipe.model), resize=policy))
        reader = recipe_reader(recipe, encoder)
        start = time.perf_counter()
        variants = embed_variants(
            encoder, pool.paths, pool.names, poolings=POOLINGS, flips=(False, True),
            scales=tuple(recipe.embed.scales), batch_size=recipe.embed.batch_size,
            num_workers=recipe.embed.num_workers, precision=recipe.embed.precision,
            reader=reader, progress=recipe.embed.progress, desc=f"embed {policy}")
        seconds = time.perf_counter() - start
        for name, emb in variants.items():
            per_set, overall = labeled_metrics(pool, emb)
            row = {"resize": policy, "pooling": name.removesuffix("+flip"), "flip": name.endswith("+flip")}
            for figures in per_set.values():
                for subset, f in figures["subsets"].items():
                    row.update({f"{subset} hit@{k}": f[f"hit@{k}"] for k in KS})
            row.update({f"overall {k}": overall[k] for k in (*HIT_KEYS, "map")})
            row["embed_s (6 variants)"] = round(seconds, 1)
            rows.append(row)
            emb.save(out / "embeddings" / f"{policy}-{name}")
        print(pd.DataFrame(rows).tail(len(variants))[HEADLINE].to_string(index=False, float_format="%.3f"),
              flush=True)
    table = pd.DataFrame(rows).sort_values("overall hit@3", ascending=False, kind="stable")
    print("\nall configurations, best overall Hit@3 first (per-set Hit@1/3/10 in the CSV):")
    print(table[HEADLINE + [c for c in table.columns if c.endswith("hit@3") and not c.startswith("overall")]]
          .to_string(index=False, float_format="%.3f"))
    table.to_csv(out / "zeroshot_sweep.csv", index=False)
    print(f"\nwritten: {out}/zeroshot_sweep.csv and embeddings/")


if __name__ == "__main__":
    main(sys.argv[1:])
