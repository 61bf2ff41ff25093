"""The training loop shared by stage 1 and stage 2: a Lightning Trainer over a view dataset."""

from __future__ import annotations

import logging
import pickle
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from core.base.errors import MissingInputError
from core.base.runs import RunDir
from core.model.embed import native_bf16
from core.recipe import flat_keys, to_dict
from ssl.curves import plot_training_curves
from ssl.dataset import EpochSampler
from ssl.methods import SSLModule

log = logging.getLogger(__name__)


@contextmanager
def quiet_known_warnings() -> Iterator[None]:
    """Silence known, harmless warnings: lightly's DINO head uses the old weight_norm; the DINO
    teacher is in eval mode on purpose (Lightning warns about any module not in train mode);
    Lightning's own LeafSpec deprecation; small datasets have fewer batches than the log interval."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight_norm.*is deprecated")
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        warnings.filterwarnings("ignore", message=r"The number of training batches .* logging interval")
        yield


def trainer_precision(precision: str, accelerator: str) -> str:
    """Lightning's precision for ``trainer.precision``: ``auto`` is bf16-mixed where the accelerator
    runs bf16 natively (``core.model.embed.native_bf16``), else 32-true."""
    if precision != "auto":
        return precision
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if native_bf16(torch.device("cuda" if gpu else "cpu")) else "32-true"


def make_trainer(recipe, run: RunDir, callbacks: list[pl.Callback]) -> pl.Trainer:
    """A Trainer as the recipe's ``trainer`` and ``train`` sections say, logging and checkpointing in ``run``."""
    t = recipe.trainer
    devices = int(t.devices) if str(t.devices).isdigit() else t.devices
    # Head warm-up leaves the backbone out of the graph on purpose: DDP must expect unused weights.
    strategy = "ddp_find_unused_parameters_true" if t.strategy == "ddp" else t.strategy
    return pl.Trainer(
        max_epochs=int(recipe.train.epochs), accelerator=t.accelerator, devices=devices, strategy=strategy,
        precision=trainer_precision(t.precision, t.accelerator), default_root_dir=run.path,
        log_every_n_steps=int(t.log_every_n_steps),
        # logs/version_N/metrics.csv: a resumed run starts a new version instead of deleting the old.
        logger=CSVLogger(run.path, name="logs"), gradient_clip_val=float(recipe.train.clip_grad) or None,
        callbacks=[*callbacks, ModelCheckpoint(dirpath=run.path / "checkpoints", save_last="link", save_top_k=1),
                   *([TQDMProgressBar(refresh_rate=1)] if recipe.embed.progress else [])],
        enable_progress_bar=bool(recipe.embed.progress), enable_model_summary=False, num_sanity_val_steps=0,
    )


def make_loader(recipe, dataset: Dataset, epoch: int = 0) -> DataLoader:
    """Shuffled (per epoch, from the seed) batches of ``dataset``, ``train.images_per_epoch`` per epoch,
    from ``epoch`` on."""
    workers = int(recipe.train.num_workers)
    sampler = EpochSampler(len(dataset), int(recipe.seed), recipe.train.images_per_epoch)
    sampler.set_epoch(epoch)
    loader = DataLoader(dataset, batch_size=int(recipe.train.batch_size), drop_last=True, sampler=sampler,
                        num_workers=workers, persistent_workers=workers > 0)
    if len(loader) == 0:
        raise MissingInputError(f"{len(dataset)} training items make no full batch of train.batch_size="
                                f"{recipe.train.batch_size}. Fix: lower train.batch_size or add images")
    return loader


# A checkpoint resumes only the run that wrote it: the same kind of run, with the same values of the
# recipe keys that shape training, its method's own section included (the paths of the start weights
# and the loader workers may change).
_IDENTITY_SECTIONS = ("method", "seed", "model", "tune", "train", "views")
# Keys that do not change what trains: a finished run resumed with another train.export writes that network.
_IDENTITY_FREE = ("model.weights", "train.num_workers", "train.export")


def checkpoint_identity(recipe, kind: str) -> dict:
    """What a run's checkpoints record of it (plain data): its kind and the recipe keys that shape training."""
    sections = (*_IDENTITY_SECTIONS, str(recipe.method))
    keys = {k: v for k, v in flat_keys(to_dict(recipe)).items()
            if k.split(".")[0] in sections and k not in _IDENTITY_FREE}
    return {"kind": kind, "recipe": keys}


class CheckpointIdentity(pl.Callback):
    """Writes :func:`checkpoint_identity` into every checkpoint, for :func:`resume_epoch` to check."""

    def __init__(self, identity: dict):
        self.identity = identity

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint["curator"] = self.identity


def last_checkpoint(run: RunDir) -> Path:
    return run.path / "checkpoints" / "last.ckpt"


def resume_epoch(run: RunDir, identity: dict) -> int:
    """The epoch at which ``run`` resumes from its last checkpoint, once the checkpoint is found safe and its own.

    The checkpoint is read as tensors and plain data only (``weights_only``): a pickle that would run
    code or build other objects is refused, and so is a damaged file or one another run wrote (another
    kind of run, method, model or training recipe), each with a MissingInputError, before any work.
    """
    path = last_checkpoint(run)
    if not path.is_file():
        raise MissingInputError(f"{path} does not exist: nothing to resume. Fix: start the run without --resume")
    fix = f"Fix: delete {path.parent} to start that run from its beginning, or restore the file"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        reason = " ".join(str(e).split("\n\n")[-1].split())[:200]
        raise MissingInputError(f"{path} holds objects other than tensors and plain data, which loading it could run "
                                f"as code ({reason}); it was not loaded. {fix}") from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise MissingInputError(f"{path} is damaged or not a checkpoint ({' '.join(str(e).split())[:200]}). "
                                f"{fix}") from None
    recorded = state.get("curator") if isinstance(state, dict) else None
    if not isinstance(recorded, dict) or recorded.get("kind") != identity["kind"]:
        what = f"a {recorded.get('kind')} run" if isinstance(recorded, dict) else "another program or an older Curator"
        raise MissingInputError(f"{path} was written by {what}, not by this {identity['kind']} run. {fix}")
    before, now = recorded.get("recipe", {}), identity["recipe"]
    differ = sorted((k for k in before.keys() | now.keys() if k not in _IDENTITY_FREE and before.get(k) != now.get(k)),
                    key=lambda k: (k != "method", k))
    if differ:
        shown = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in differ[:4])
        raise MissingInputError(f"{path} was written with another recipe ({shown}{', ...' if len(differ) > 4 else ''}"
                                f"): resuming it would not continue this run. {fix}")
    try:
        return int(state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError):
        raise MissingInputError(f"{path} records no training progress: not a checkpoint of a run. {fix}") from None


def fit(recipe, run: RunDir, module: SSLModule, dataset: Dataset, callbacks: list[pl.Callback], identity: dict,
        start_epoch: int | None = None) -> tuple[pl.Trainer, int]:
    """Train ``module`` on ``dataset``, from scratch or (``start_epoch``, from :func:`resume_epoch`) from the
    run's last checkpoint; returns the trainer and the number of items trained on."""
    # The sampler must know the resumed epoch before the trainer restores the checkpoint: Lightning
    # makes the loader's first iterator (to count the steps for the schedules) before it restores and
    # names the epoch, and worker processes prefetch at once, so they would replay epoch 0.
    loader = make_loader(recipe, dataset, start_epoch or 0)
    trainer = make_trainer(recipe, run, [*callbacks, CheckpointIdentity(identity)])
    resume = start_epoch is not None
    log.info("%s on %d items, %d steps per epoch, %d epochs%s", recipe.method, len(dataset), len(loader),
             recipe.train.epochs, f", resuming from {last_checkpoint(run)}" if resume else "")
    trainer.fit(module, loader, ckpt_path=str(last_checkpoint(run)) if resume else None, weights_only=True)
    return trainer, len(loader) * int(recipe.train.batch_size) * int(recipe.train.epochs)


def finish(recipe, run: RunDir, module: SSLModule, history: list[dict], started: float, images: int,
           resumed: bool) -> dict:
    """Save the encoder and the curves; write and return the run summary (``metrics.json``).

    ``history``: the monitor's evaluation records (epoch 0 first); ``images``: items trained on.
    """
    encoder = module.export_encoder()
    encoder_path = run.path / "encoder.pt"
    encoder.save(encoder_path)
    if history:
        plot_training_curves(history, run.path / "curves.png", title=f"{recipe.name} ({recipe.method})")
    eval_s = sum(r.get("eval_s", 0.0) for r in history)
    total_s = time.perf_counter() - started
    summary = {
        "method": recipe.method, "encoder": str(encoder_path), "epochs": int(recipe.train.epochs),
        "first": history[0] if history else None, "last": history[-1] if history else None,
        "time_s": {"total": round(total_s, 1), "evaluation": round(eval_s, 1)},
        "backbone": encoder.describe(), "recipe": to_dict(recipe), "run_dir": str(run.path),
    }
    if not resumed:  # a resumed run's wall time covers only part of its training
        summary["train_images_per_s"] = round(images / max(total_s - eval_s, 1e-9), 2)
    run.write_metrics(summary)
    log.info("wrote %s (%.0f s in all, %.0f s evaluating)", encoder_path, total_s, eval_s)
    return summary
