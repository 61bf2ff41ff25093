"""Evaluation during training: a Lightning callback that scores the model before and after epochs.

Each evaluation embeds a fixed monitoring pool (every labeled image plus a seeded random fill of the
rest, up to ``monitor.pool_size``) and a fixed set of held-out synthetic photos, and records
synthetic Hit@k and Hit@k per labeled set after the recipe's post steps fitted on that pool (with
the figures before them under ``raw``: training earns its keep only if it adds over whitening),
the effective rank of the raw embeddings (a falling rank warns of collapse) and the NN1-NN2 margin.
Records go to ``metrics.jsonl`` (one line per evaluation, with the epoch's mean loss and its parts
(DINO: dino_loss, koleo), learning rates and teacher momentum) and to the Lightning logger. Epoch 0
is the model before any training: the zero-shot row.

Any LightningModule with an ``export_encoder()`` method can be monitored. The monitor only records:
the run's outputs (``encoder.pt``, ``curves.png``, ``metrics.json``) are written by
``ssl.training.finish``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytorch_lightning as pl
from omegaconf import DictConfig

from core.base.runs import RunDir
from core.data.pool import Pool
from core.data.synthetic import make_synthetic_queries
from core.model.embed import Embeddings, embed_images
from core.pixels.images import make_reader
from core.post import PostProcessor
from core.scoring import labeled_scores, post_applied, score_synthetic
from core.vectors.metrics import HIT_KEYS
from core.vectors.stats import embedding_stats

log = logging.getLogger(__name__)


def monitoring_pool(pool: Pool, size: int, seed: int) -> list[int]:
    """Pool rows to embed: every labeled image, then a seeded random fill up to ``size`` rows."""
    labeled = sorted({i for s in pool.labeled for q, ts in zip(s.queries, s.targets, strict=True) for i in (q, *ts)})
    rest = np.setdiff1d(np.arange(len(pool)), labeled)
    fill = max(0, size - len(labeled))
    chosen = np.random.default_rng(seed).choice(rest, size=min(fill, len(rest)), replace=False) if fill else []
    return sorted([*labeled, *(int(i) for i in chosen)])


class EvalMonitor(pl.Callback):
    def __init__(self, recipe: DictConfig, run: RunDir, pool: Pool):
        self.recipe = recipe
        self.run = run
        self.pool = pool
        self.every = int(recipe.monitor.every_n_epochs)
        self.rows = monitoring_pool(pool, int(recipe.monitor.pool_size), int(recipe.seed))
        self.queries = None
        self.history: list[dict] = []
        self._losses: dict[str, list[float]] = {}

    def _prepare(self, encoder) -> None:
        if self.queries is not None or int(self.recipe.synthetic.num_queries) <= 0:
            return
        reader = make_reader(self.recipe.data, encoder.img_size)
        self.queries = make_synthetic_queries([self.pool.paths[i] for i in self.rows],
                                              [self.pool.names[i] for i in self.rows],
                                              int(self.recipe.synthetic.num_queries), int(self.recipe.synthetic.seed),
                                              self.run.path / "monitor" / "synthetic", reader,
                                              str(self.recipe.synthetic.style))

    def evaluate(self, pl_module: pl.LightningModule, epoch: int, step: int, loss: float | None,
                 logged: dict | None = None) -> dict:
        """Score ``pl_module``'s exported encoder; append the record to metrics.jsonl and return it."""
        started = time.perf_counter()
        encoder = pl_module.export_encoder().to(pl_module.device)
        self._prepare(encoder)
        cfg = self.recipe.embed
        reader = make_reader(self.recipe.data, encoder.img_size)
        emb: Embeddings = embed_images(encoder, [self.pool.paths[i] for i in self.rows],
                                       [self.pool.names[i] for i in self.rows], cfg, reader=reader,
                                       skip_corrupt=self.recipe.data.skip_corrupt, desc=f"monitor epoch {epoch}")
        paths = self.pool.paths_of(emb.names)
        post = PostProcessor(self.recipe)
        processed = post_applied(post, emb, paths)
        per_set, overall = labeled_scores(self.pool, emb, processed) if self.pool.labeled else ({}, None)
        synthetic = (score_synthetic(encoder, self.queries, emb, cfg, post=post, pool_paths=paths).figures
                     if self.queries else None)
        stats = embedding_stats(emb.vectors, emb.norms)
        record = {"epoch": epoch, "step": step, "loss": loss, **(logged or {}),
                  "synthetic": synthetic, "overall": overall,
                  "sets": {name: {k: v for k, v in f.items() if k != "subsets"} for name, f in per_set.items()},
                  "effective_rank": stats["effective_rank"], "nn_margin_mean": stats.get("nn_margin_mean"),
                  "monitor_pool": len(emb), "eval_s": round(time.perf_counter() - started, 1),
                  "time": time.time()}
        self.run.append_metrics_line(record)
        self.history.append(record)
        flat = {"eval/effective_rank": stats["effective_rank"]}
        for name, figures in (("synthetic", synthetic), ("labeled", overall)):
            if figures:
                flat.update({f"eval/{name}_{k}": figures[k] for k in HIT_KEYS})
                flat.update({f"eval/{name}_raw_{k}": v for k, v in figures.get("raw", {}).items() if k in HIT_KEYS})
        if pl_module.logger is not None:
            pl_module.logger.log_metrics({**flat, "epoch": epoch}, step=step)
        log.info("epoch %d: %s", epoch, ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in flat.items()
                                                  if "@3" in k or "rank" in k))
        return record

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After a checkpoint is restored (on_fit_start comes before it), so current_epoch is right.
        if not trainer.is_global_zero:
            return
        # A resumed run keeps the records of the epochs its checkpoint holds, and only those (an
        # evaluation written after the last checkpoint belongs to an epoch that runs again).
        kept = [r for r in self.run.read_metrics_lines() if r["epoch"] <= trainer.current_epoch]
        self.run.write_metrics_lines(kept)
        self.history = kept
        if self.every and trainer.current_epoch == 0 and not kept:
            self.evaluate(pl_module, 0, 0, None)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._losses = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        # A method may return its loss's parts beside it (DINO: dino_loss, koleo).
        for key, value in (outputs if isinstance(outputs, dict) else {"loss": outputs}).items():
            self._losses.setdefault(key, []).append(float(value))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        last = epoch == trainer.max_epochs
        if not self.every or not trainer.is_global_zero or (epoch % self.every and not last):
            return
        means = {k: float(np.mean(v)) for k, v in self._losses.items()}
        loss = means.pop("loss", None)
        # The schedules' values at the epoch's last step (learning rates, DINO's teacher momentum).
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("lr", "head_lr", "momentum")}
        self.evaluate(pl_module, epoch, trainer.global_step, loss, {**means, **logged})
