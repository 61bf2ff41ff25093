"""python -m ssl.pretrain [RECIPE.yaml] [key=value ...] | --resume RUN_DIR [key=value ...]

Stage 1: adapt a pretrained timm backbone to the photo-versus-studio gap without labels (DINO or
SimCLR on painting-specific views), evaluating it before and after every epoch. The run directory
gets the recipe snapshot, logs/version_N/metrics.csv (per step, Lightning), metrics.jsonl (per evaluation),
curves.png, checkpoints/last.ckpt and encoder.pt, which ``python -m eval`` and
``model.weights=...`` load directly. With no data given it trains on the sample museum.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from core.base.atomic import atomic_write_text
from core.base.errors import MissingInputError, command_line
from core.base.runs import RunDir
from core.data.pool import Pool, recipe_pool
from core.model.backbone import Encoder, EncoderSpec, build_encoder
from core.model.embed import Embeddings, embed_images
from core.pixels.images import make_reader
from core.recipe import cli_parser, resumable_recipe, to_dict
from core.vectors.metrics import HITS_LABEL, format_hits
from ssl.augment import view_maker
from ssl.config import PretrainRecipe
from ssl.dataset import ViewDataset
from ssl.methods import METHODS, DINOModule
from ssl.monitor import EvalMonitor
from ssl.training import checkpoint_identity, finish, fit, quiet_known_warnings, resume_epoch
from ssl.tuning import configure_tuning

log = logging.getLogger(__name__)

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "dino.yaml"
# method: distill's targets made by the run (without distill.targets), and what they were made from.
TARGETS_DIR = "distill-targets"
TARGETS_STAMP = "made_from.json"
# embed.* keys that change how fast the targets are made, not what they are.
RUNNING_KEYS = ("batch_size", "num_workers", "progress", "device")


def init_prototypes(recipe, module: DINOModule, encoder: Encoder, pool: Pool) -> None:
    """``dino.prototypes=data``: aim the head's first prototypes at random pool images."""
    count = min(len(pool), int(recipe.dino.prototype_images), int(recipe.dino.out_dim))
    rows = torch.randperm(len(pool), generator=torch.Generator().manual_seed(int(recipe.seed)))[:count].tolist()
    emb = embed_images(encoder, [pool.paths[i] for i in rows], [pool.names[i] for i in rows], recipe.embed,
                       reader=make_reader(recipe.data, encoder.img_size), skip_corrupt=bool(recipe.data.skip_corrupt),
                       desc="prototype images")
    # The head sees the encoder's raw pooled output: give the embedding its norm back.
    features = torch.from_numpy(emb.vectors * emb.norms[:, None])
    log.info("dino.prototypes=data: %d of %d prototypes from pool images", module.init_prototypes(features),
             int(recipe.dino.out_dim))


def distill_targets(recipe, encoder: Encoder, pool: Pool, run: RunDir) -> torch.Tensor:
    """``method: distill``'s targets, one row per pool image: the starting model's embedding of each clean
    image with the ``distill`` views, read from ``distill.targets`` (an eval run of this pool) or made here
    (:func:`made_targets`)."""
    d = recipe.distill
    if d.targets:
        folder = Path(d.targets) / "embeddings"
        if not Embeddings.saved_in(folder):
            raise MissingInputError(f"distill.targets={d.targets} holds no saved embeddings ({folder}). Fix: give "
                                    "the folder of an eval run of this pool, or null to embed the targets here")
        emb = Embeddings.load(folder)
    else:
        emb = made_targets(recipe, encoder, pool, run.path / TARGETS_DIR)
    row = {n: i for i, n in enumerate(emb.names)}
    missing = [n for n in pool.names if n not in row]
    if len(missing) > len(emb.skipped):
        raise MissingInputError(f"distill.targets={d.targets} lacks {len(missing)} of the pool's images (e.g. "
                                f"{missing[:2]}). Fix: an eval run of the same data.* folders")
    targets = torch.zeros(len(pool), emb.dim)
    found = [i for i, n in enumerate(pool.names) if n in row]
    targets[found] = torch.from_numpy(emb.vectors[[row[pool.names[i]] for i in found]])
    return targets


def made_targets(recipe, encoder: Encoder, pool: Pool, folder: Path) -> Embeddings:
    """The targets embedded here, kept in ``folder`` (RUN/distill-targets) with what they were made from.

    Embedding every pool image with eight views costs as much as a submission, so a resumed run, or a
    chain that starts its interrupted stage 1 again, reads them back where the model, the views, the
    reader and the pool's folders are the same, instead of embedding them again.
    """
    embed_cfg = OmegaConf.merge(recipe.embed, {"turns": list(recipe.distill.turns), "crop": bool(recipe.distill.crop),
                                               "combine": "mean"})
    embed = {k: v for k, v in to_dict(embed_cfg).items() if k not in RUNNING_KEYS}
    made_from = json.loads(json.dumps({"model": to_dict(recipe.model), "embed": embed, "data": to_dict(recipe.data)}))
    stamp = folder / TARGETS_STAMP
    if Embeddings.saved_in(folder) and stamp.is_file():
        saved = json.loads(stamp.read_text(encoding="utf-8"))
        if saved.get("made_from") == made_from:
            emb = Embeddings.load(folder)
            emb.skipped = list(saved.get("skipped", []))
            log.info("distillation targets: the %d embedded before, read from %s", len(emb), folder)
            return emb
    emb = embed_images(encoder, pool.paths, pool.names, embed_cfg, reader=make_reader(recipe.data, encoder.img_size),
                       skip_corrupt=bool(recipe.data.skip_corrupt), desc="distillation targets")
    # DDP's other processes embed the same targets; one writer keeps their temporary files apart.
    if rank_zero_only.rank == 0:
        stamp.unlink(missing_ok=True)  # never a stamp over the arrays of other targets, should the save stop
        emb.save(folder)
        atomic_write_text(stamp, json.dumps({"made_from": made_from, "skipped": emb.skipped}, ensure_ascii=False))
    return emb


def pretrain(recipe, resume: bool = False, callbacks: tuple[pl.Callback, ...] = ()) -> dict:
    """Train as ``recipe`` says (resuming from RUN/checkpoints/last.ckpt); return the run summary.

    ``callbacks``: extra Lightning callbacks (early stopping, custom logging...).
    """
    started = time.perf_counter()
    with RunDir.create(recipe, "pretrain") as run, run.logging_to_file(), quiet_known_warnings():
        identity = checkpoint_identity(recipe, "pretrain")
        start_epoch = resume_epoch(run, identity) if resume else None  # before any work
        pl.seed_everything(int(recipe.seed), workers=True, verbose=False)
        pool = recipe_pool(recipe)
        encoder = build_encoder(EncoderSpec.from_config(recipe.model))
        extra = (distill_targets(recipe, encoder, pool, run),) if recipe.method == "distill" else ()
        encoder = configure_tuning(encoder, recipe.tune)
        module = METHODS[recipe.method](encoder, recipe, *extra)
        if recipe.method == "dino" and recipe.dino.prototypes == "data" and not resume:
            init_prototypes(recipe, module, encoder, pool)
        views = view_maker(recipe, encoder.spec.mean, encoder.spec.std)
        dataset = ViewDataset(pool.paths, make_reader(recipe.data, int(recipe.views.max_side)), views,
                              int(recipe.seed), bool(recipe.data.skip_corrupt), with_index=module.needs_index)
        monitor = EvalMonitor(recipe, run, pool)
        trainer, images = fit(recipe, run, module, dataset, [monitor, *callbacks], identity, start_epoch)
        if not trainer.is_global_zero:
            return {}
        return finish(recipe, run, module, monitor.history, started, images, resume)


def _format(summary: dict) -> str:
    lines = []
    for label, record in (("before", summary["first"]), ("after", summary["last"])):
        if not record:
            continue
        parts = [f"epoch {record['epoch']:>3}"]
        if record.get("synthetic"):
            parts.append(f"synthetic Hit@3 {record['synthetic']['hit@3']:.3f}")
        if record.get("overall"):
            parts.append(f"labeled {HITS_LABEL} {format_hits(record['overall'])}")
        parts.append(f"effective rank {record['effective_rank']:.1f}")
        lines.append(f"{label:<7}" + ", ".join(parts))
    lines.append(f"encoder: {summary['encoder']}  ({summary['time_s']['total']:.0f} s)")
    resize = summary["recipe"]["model"]["resize"]
    lines.append(f"evaluate it: python -m eval {summary['encoder']} model.resize={resize} [data.labeled=[...]]")
    return "\n".join(lines)


@command_line
def main(argv: list[str]) -> int:
    parser = cli_parser("python -m ssl.pretrain", __doc__.strip().split("\n\n")[1].split("\n")[0])
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue an interrupted run from RUN_DIR/checkpoints/last.ckpt, with its recipe")
    args = parser.parse_args(argv)
    torch.set_float32_matmul_precision("high")
    recipe = resumable_recipe(args.args, args.resume, PretrainRecipe, DEFAULT_RECIPE, "ssl.pretrain")
    summary = pretrain(recipe, resume=bool(args.resume))
    if summary:
        print(_format(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
