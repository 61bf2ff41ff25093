"""python -m ssl.pretrain [RECIPE.yaml] [key=value ...] | --resume RUN_DIR [key=value ...]

Stage 1: adapt a pretrained timm backbone to the photo-versus-studio gap without labels (DINO or
SimCLR on painting-specific views), evaluating it before and after every epoch. The run directory
gets the recipe snapshot, logs/version_N/metrics.csv (per step, Lightning), metrics.jsonl (per evaluation),
curves.png, checkpoints/last.ckpt and encoder.pt, which ``python -m eval`` and
``model.weights=...`` load directly. With no data given it trains on the sample museum.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader

from core.backbone import EncoderSpec, build_encoder
from core.errors import CuratorError, MissingInputError
from core.images import make_reader
from core.pool import recipe_pool
from core.recipe import cli_parser, load_recipe, recipe_from_args, to_dict
from core.runs import RunDir
from core.tuning import configure_tuning
from eval.curves import plot_training_curves
from eval.monitor import EvalMonitor
from ssl.config import PretrainRecipe, view_maker
from ssl.dataset import EpochSampler, ViewDataset
from ssl.methods import METHODS

log = logging.getLogger(__name__)

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "dino.yaml"


def _trainer(recipe, run: RunDir, callbacks: list[pl.Callback]) -> pl.Trainer:
    t = recipe.trainer
    devices = int(t.devices) if str(t.devices).isdigit() else t.devices
    # Head warm-up leaves the backbone out of the graph on purpose: DDP must expect unused weights.
    strategy = "ddp_find_unused_parameters_true" if t.strategy == "ddp" else t.strategy
    return pl.Trainer(
        max_epochs=int(recipe.train.epochs), accelerator=t.accelerator, devices=devices, strategy=strategy,
        precision=t.precision, default_root_dir=run.path, log_every_n_steps=int(t.log_every_n_steps),
        # logs/version_N/metrics.csv: a resumed run starts a new version instead of deleting the old.
        logger=CSVLogger(run.path, name="logs"), gradient_clip_val=float(recipe.train.clip_grad) or None,
        callbacks=[*callbacks, ModelCheckpoint(dirpath=run.path / "checkpoints", save_last="link", save_top_k=1),
                   *([TQDMProgressBar(refresh_rate=1)] if recipe.embed.progress else [])],
        enable_progress_bar=bool(recipe.embed.progress), enable_model_summary=False, num_sanity_val_steps=0,
    )


def pretrain(recipe, resume: bool = False, callbacks: tuple[pl.Callback, ...] = ()) -> dict:
    """Train as ``recipe`` says (resuming from RUN/checkpoints/last.ckpt); return the run summary.

    ``callbacks``: extra Lightning callbacks (early stopping, custom logging...).
    """
    started = time.perf_counter()
    run = RunDir.create(recipe)
    last_ckpt = run.path / "checkpoints" / "last.ckpt"
    if resume and not last_ckpt.is_file():
        raise MissingInputError(f"{last_ckpt} does not exist: nothing to resume. Fix: start the run without --resume")
    with run.logging_to_file(), warnings.catch_warnings():
        # Known and harmless: lightly's DINO head uses the old weight_norm; the DINO teacher is in
        # eval mode on purpose (Lightning warns about any module not in train mode).
        warnings.filterwarnings("ignore", message=".*weight_norm.*is deprecated")
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        pl.seed_everything(int(recipe.seed), workers=True, verbose=False)
        pool = recipe_pool(recipe)
        encoder = configure_tuning(build_encoder(EncoderSpec.from_config(recipe.model)), recipe.tune)
        module = METHODS[recipe.method](encoder, recipe)
        views = view_maker(recipe, encoder.spec.mean, encoder.spec.std)
        dataset = ViewDataset(pool.paths, make_reader(recipe.data, int(recipe.views.max_side)), views,
                              int(recipe.seed), bool(recipe.data.skip_corrupt))
        per_epoch = recipe.train.images_per_epoch
        workers = int(recipe.train.num_workers)
        loader = DataLoader(dataset, batch_size=int(recipe.train.batch_size), drop_last=True,
                            sampler=EpochSampler(len(dataset), int(recipe.seed), per_epoch),
                            num_workers=workers, persistent_workers=workers > 0)
        if len(loader) == 0:
            raise MissingInputError(f"{len(dataset)} images make no full batch of train.batch_size="
                                    f"{recipe.train.batch_size}. Fix: lower train.batch_size or add images")
        monitor = EvalMonitor(recipe, run, pool)
        trainer = _trainer(recipe, run, [monitor, *callbacks])
        log.info("%s on %d images, %d steps per epoch, %d epochs%s", recipe.method, len(dataset), len(loader),
                 recipe.train.epochs, f", resuming from {last_ckpt}" if resume else "")
        trainer.fit(module, loader, ckpt_path=str(last_ckpt) if resume else None)
        if not trainer.is_global_zero:
            return {}
        encoder_path = run.path / "encoder.pt"
        module.export_encoder().save(encoder_path)
        history = monitor.history
        if history:
            plot_training_curves(history, run.path / "curves.png", title=f"{recipe.name} ({recipe.method})")
        eval_s = sum(r.get("eval_s", 0.0) for r in history)
        total_s = time.perf_counter() - started
        images = len(loader) * int(recipe.train.batch_size) * int(recipe.train.epochs)
        summary = {
            "method": recipe.method, "encoder": str(encoder_path), "epochs": int(recipe.train.epochs),
            "images": len(dataset), "first": history[0] if history else None, "last": history[-1] if history else None,
            "time_s": {"total": round(total_s, 1), "evaluation": round(eval_s, 1)},
            "backbone": module.export_encoder().describe(), "recipe": to_dict(recipe), "run_dir": str(run.path),
        }
        if not resume:
            summary["train_images_per_s"] = round(images / max(total_s - eval_s, 1e-9), 2)
        run.write_metrics(summary)
        log.info("wrote %s (%.0f s in all, %.0f s evaluating)", encoder_path, total_s, eval_s)
        return summary


def _format(summary: dict) -> str:
    lines = []
    for label, record in (("before", summary["first"]), ("after", summary["last"])):
        if not record:
            continue
        parts = [f"epoch {record['epoch']:>3}"]
        if record.get("synthetic"):
            parts.append(f"synthetic Hit@3 {record['synthetic']['hit@3']:.3f}")
        if record.get("overall"):
            o = record["overall"]
            parts.append(f"labeled Hit@1/3/10 {o['hit@1']:.3f}/{o['hit@3']:.3f}/{o['hit@10']:.3f}")
        parts.append(f"effective rank {record['effective_rank']:.1f}")
        lines.append(f"{label:<7}" + ", ".join(parts))
    lines.append(f"encoder: {summary['encoder']}  ({summary['time_s']['total']:.0f} s)")
    resize = summary["recipe"]["model"]["resize"]
    lines.append(f"evaluate it: python -m eval {summary['encoder']} model.resize={resize} [data.labeled=[...]]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = cli_parser("python -m ssl.pretrain", __doc__.strip().split("\n\n")[1].split("\n")[0])
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue an interrupted run from RUN_DIR/checkpoints/last.ckpt, with its recipe")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_float32_matmul_precision("high")
    try:
        if args.resume:
            snapshot = Path(args.resume) / "recipe.yaml"
            if not snapshot.is_file():
                raise MissingInputError(f"{snapshot} not found. Fix: --resume takes a run directory of ssl.pretrain")
            overrides = [a for a in args.args if "=" in a]
            recipe = load_recipe(snapshot, [*overrides, f"run_dir={args.resume}"], PretrainRecipe)
        else:
            recipe = recipe_from_args(args.args, schema=PretrainRecipe, default=DEFAULT_RECIPE)
        summary = pretrain(recipe, resume=bool(args.resume))
    except CuratorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary:
        print(_format(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
