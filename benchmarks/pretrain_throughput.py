"""Training throughput of a stage-1 step: full augmentation pipeline versus pre-made tensors.

Runs the same Lightning training steps twice, side by side: once reading, decoding and augmenting
real images in DataLoader workers, once on views made in advance and held in memory. The ratio
(full / tensors) near 1 means the data pipeline keeps up with the model.

    CURATOR_SHARED=../shared python -m benchmarks.pretrain_throughput [RECIPE] [--steps N] [key=value ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from core.model.backbone import EncoderSpec, build_encoder
from core.pixels.images import list_images, make_reader
from core.pixels.sample import ensure_sample
from core.recipe import load_recipe
from ssl.augment import view_maker
from ssl.config import PretrainRecipe
from ssl.dataset import EpochSampler, ViewDataset
from ssl.methods import METHODS
from ssl.tuning import configure_tuning


class Premade(Dataset):
    """The first ``len(items)`` views of the real dataset, made once and served from memory."""

    def __init__(self, items: list, length: int):
        self.items, self.length = items, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        return self.items[i % len(self.items)]


def _time_steps(recipe, loader: DataLoader, steps: int) -> float:
    encoder = configure_tuning(build_encoder(EncoderSpec.from_config(recipe.model)), recipe.tune)
    module = METHODS[recipe.method](encoder, recipe)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", precision=recipe.trainer.precision, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    start = time.perf_counter()
    trainer.fit(module, loader)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", nargs="?", default="recipes/dino.yaml")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    # The backbone trains from the first step here (no head warm-up), as in the epochs that matter.
    recipe = load_recipe(args.recipe, ["train.head_warmup_epochs=0", *args.overrides], PretrainRecipe)
    shared = Path("../shared/data/mcv-museum/images")
    folder = shared if shared.is_dir() else ensure_sample(recipe.data.sample_dir) / "images"
    paths = list_images(folder)
    torch.set_num_threads(2)
    spec_encoder = build_encoder(EncoderSpec.from_config(recipe.model))
    views = view_maker(recipe, spec_encoder.spec.mean, spec_encoder.spec.std)
    dataset = ViewDataset(paths, make_reader(recipe.data, int(recipe.views.max_side)), views, int(recipe.seed))
    batch, workers = int(recipe.train.batch_size), int(recipe.train.num_workers)
    total = args.steps * batch
    full = DataLoader(dataset, batch_size=batch, sampler=EpochSampler(len(dataset), 0, total), drop_last=True,
                      num_workers=workers)
    premade = DataLoader(Premade([dataset[i] for i in range(batch)], total), batch_size=batch, drop_last=True)
    t_tensors = _time_steps(recipe, premade, args.steps)
    t_full = _time_steps(recipe, full, args.steps)
    print(f"{recipe.method}, {recipe.model.arch}, views {recipe.views.global_size}/{recipe.dino.local_size} px "
          f"x{2 + (recipe.dino.n_local if recipe.method == 'dino' else 0)}, tune={recipe.tune.mode}, "
          f"{recipe.trainer.precision}, batch {batch}, {workers} workers, {args.steps} steps, {len(paths)} images")
    print(f"pre-made tensors: {total / t_tensors:6.2f} img/s")
    print(f"full pipeline   : {total / t_full:6.2f} img/s")
    print(f"ratio full / tensors: {t_tensors / t_full:.2f}")


if __name__ == "__main__":
    main()
