"""Evaluate an embedding model on labeled sets and held-out synthetic queries; write metrics.json."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict

from omegaconf import DictConfig

from core.base.atomic import atomic_write_text
from core.base.runs import RunDir
from core.base.seeding import seed_everything
from core.data.pool import recipe_pool
from core.model.backbone import Encoder, EncoderSpec, build_encoder
from core.model.embed import embed_images, recipe_reader
from core.post import PostProcessor
from core.recipe import to_dict
from core.scoring import labeled_scores, post_applied, query_table, synthetic_metrics
from core.vectors.metrics import METRICS
from core.vectors.stats import embedding_stats

log = logging.getLogger(__name__)

METRIC_KEYS = (*METRICS, "n_queries")


def keep_orientation(encoder: Encoder, run: RunDir) -> dict | None:
    """Where this run fitted the encoder's orientation head (``embed.orient``), save the encoder with it as
    ``RUN/encoder.pt`` (``model.weights`` reuses both) and return how the head did; else None."""
    if encoder.orientation_report is None:
        return None
    encoder.save(run.path / "encoder.pt")
    return {**asdict(encoder.orientation_report), "encoder": str(run.path / "encoder.pt")}


def evaluate(recipe: DictConfig) -> dict:
    """Embed the recipe's pool, score it, write ``metrics.json`` and ``queries.csv`` in the run directory;
    return the metrics."""
    started = time.perf_counter()
    seed_everything(int(recipe.seed))
    with RunDir.create(recipe, "evaluate") as run, run.logging_to_file():
        pool = recipe_pool(recipe)
        encoder = build_encoder(EncoderSpec.from_config(recipe.model))
        reader = recipe_reader(recipe, encoder)
        t0 = time.perf_counter()
        emb = embed_images(encoder, pool.paths, pool.names, recipe.embed, reader=reader,
                           skip_corrupt=recipe.data.skip_corrupt, desc="embed pool")
        embed_s = time.perf_counter() - t0
        emb.save(run.embeddings_dir)
        paths = pool.paths_of(emb.names)
        post = PostProcessor(recipe, run.path / "post")
        processed = post_applied(post, emb, paths, save=True)
        if processed is not None:
            processed.save(run.path / "post" / "embeddings")
        final = processed if processed is not None else emb
        per_set, overall = labeled_scores(pool, emb, processed)
        synthetic = synthetic_metrics(recipe, run, paths, emb, encoder, reader, post)
        metrics = {
            **overall,
            "sets": per_set,
            "synthetic": synthetic.figures if synthetic else None,
            "stats": embedding_stats(final.vectors, final.norms, final.names),
            "post": {"steps": list(recipe.post.steps), "time_s": post.timings,
                     "verified_pairs": post.verified_pairs} if post.active else None,
            "pool_size": len(emb),
            "orientation": keep_orientation(encoder, run),
            "forwards_per_image": emb.forwards_per_image,
            "skipped": emb.skipped,
            "backbone": encoder.describe(),
            "recipe": to_dict(recipe),
            "time_s": {"embed_pool": round(embed_s, 2), "total": round(time.perf_counter() - started, 2)},
            "images_per_s": round(len(emb) / max(embed_s, 1e-9), 2),
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "run_dir": str(run.path),
        }
        # Per query, so that runs scored on the same pool can be paired (eval.compare --baseline).
        atomic_write_text(run.queries_file, query_table(pool, emb, processed, synthetic).to_csv(index=False))
        run.write_metrics(metrics)
        return metrics


def format_table(metrics: dict) -> str:
    """The metrics as a fixed-width table: one row per set and subset, synthetic, overall."""
    rows = []
    for name, figures in metrics["sets"].items():
        rows.append((name, figures))
        rows.extend((f"  {name}/{s}", f) for s, f in figures["subsets"].items())
    if metrics.get("synthetic"):
        rows.append(("synthetic queries", metrics["synthetic"]))
        rows.extend((f"  synthetic/{c}", f) for c, f in metrics["synthetic"].get("conditions", {}).items())
    if metrics["sets"]:
        rows.append(("overall", metrics))
    # Before the post steps: what the model gives without them.
    rows.extend([(f"{name} before post", {"n_queries": f["n_queries"], **f["raw"]}) for name, f in rows
                 if name in ("synthetic queries", "overall") and f.get("raw")])
    header = f"{'set':<34}{'n':>6}" + "".join(f"{k:>9}" for k in METRIC_KEYS[:-1])
    lines = [header, "-" * len(header)]
    for name, f in rows:
        cells = "".join(f"{'-' if f.get(k) is None else format(f[k], '.3f'):>9}" for k in METRIC_KEYS[:-1])
        lines.append(f"{name:<34}{f['n_queries']:>6}{cells}")
    s = metrics["stats"]
    lines.append("")
    lines.append(f"pool {metrics['pool_size']} images, {s['dim']}-d; effective rank {s['effective_rank']:.1f} "
                 f"(top-10 components {s['explained_variance_top10']:.0%} of the variance); norm cv {s['norm_cv']:.3f}")
    if "nn1_mean" in s:
        lines.append(f"NN1 {s['nn1_mean']:.3f}, NN1-NN2 margin {s['nn_margin_mean']:.4f} (median "
                     f"{s['nn_margin_q50']:.4f}); mutual NN {s['mutual_nn_rate']:.1%}; hub skew {s['hub_skew']:.2f} "
                     f"(busiest image in {s['hub_max']} top-{s['hub_k']} lists)")
    syn = (metrics.get("synthetic") or {}).get("stats")
    if syn:
        lines.append(f"synthetic pairs: alignment {syn['alignment']:.3f}, uniformity {syn['uniformity']:.3f}, "
                     f"a photo's NN is another photo {syn['photo_nn_is_photo']:.1%}")
    lines.append(f"{metrics['images_per_s']:.1f} img/s, {metrics['time_s']['total']:.0f} s in all")
    return "\n".join(lines)
