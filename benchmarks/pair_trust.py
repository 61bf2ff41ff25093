"""Does the share of candidates that verify tell, without labels, whether unverified pairs are right?

Stage 2 keeps the mutual-NN candidates that verification did not pass as well when at least
``mining.trust_unverified_at`` of the candidates pass it (adapt/mining.py). This embeds a labeled
pool with each start model as round 1 does (recipes/pseudolabel.yaml's embedding), mines and
verifies its candidates once, and prints the label-free share beside what the labels say: the
precision of the verified candidates and of all candidates over the pairs the labels can judge, and
how many of each there are. The threshold should fall between the pools where unverified pairs won
and those where they lost.

    CURATOR_SHARED=../shared python -m benchmarks.pair_trust [key=value ...] [--start WEIGHTS ...]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
from omegaconf import OmegaConf

from adapt.config import PseudolabelRecipe
from adapt.mining import accounting, labeled_rows, mine_pairs, true_pairs
from adapt.pseudolabel import DEFAULT_RECIPE
from core.data.pool import recipe_pool
from core.model.backbone import EncoderSpec, build_encoder
from core.model.embed import embed_images, recipe_reader
from core.recipe import load_recipe


def measure(recipe, start: str) -> dict:
    """Round 1's candidates from ``start``: the verified share and both settings' labeled precision."""
    pool = recipe_pool(recipe)
    if not pool.labeled:
        raise SystemExit("pair_trust needs a labeled set in the pool (data.labeled=[...]) to judge the pairs")
    encoder = build_encoder(EncoderSpec.from_config(OmegaConf.merge(recipe.model, {"weights": start})))
    began = time.perf_counter()
    emb = embed_images(encoder, pool.paths, pool.names, recipe.embed, reader=recipe_reader(recipe, encoder),
                       desc="embed pool")
    embedded = time.perf_counter() - began
    mining = OmegaConf.merge(recipe.mining, {"verify": True})
    table = mine_pairs(emb.vectors, emb.names, pool.paths_of(emb.names), mining, progress=True, trust_unverified=False)
    truth, labeled = true_pairs(pool, emb.names), labeled_rows(pool, emb.names)
    verified = accounting(table, truth, labeled)
    everything = accounting(table.assign(kept=table["reason"].isin(["", "not verified"])), truth, labeled)
    return {"start": start, "images": len(emb.names), "candidates": int((table["inliers"] >= 0).sum()),
            "verified_share": table.attrs["verified_share"], "verified_kept": verified["kept"],
            "verified_precision": verified["labeled_precision"], "all_kept": everything["kept"],
            "all_precision": everything["labeled_precision"], "recall_verified": verified["recall"],
            "recall_all": everything["recall"], "embed_s": round(embedded, 1),
            "verify_s": round(time.perf_counter() - began - embedded, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of recipes/pseudolabel.yaml")
    parser.add_argument("--start", nargs="+", help="start models (model.weights values); default: the recipe's")
    args = parser.parse_args()
    recipe = load_recipe(DEFAULT_RECIPE, args.overrides, PseudolabelRecipe)
    rows = [measure(recipe, start) for start in args.start or [str(recipe.model.weights)]]
    print(pd.DataFrame(rows).to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
