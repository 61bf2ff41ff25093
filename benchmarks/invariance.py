"""Where a stage-1 run learned the hard conditions: in the retrieval embedding, or (DINO) only in its head.

N pool images of an eval run, each clean and as one hard synthetic photo per condition (the yardstick's
``core.pixels.photosim.simulate_hard_query``, its quarter turn undone), one forward pass each, no views
and no whitening. Per encoder and condition: the mean cosine between an image and its photo, and how
often the photo's nearest clean image of the N is its own (Hit@1), in the embedding retrieval uses.

For a DINO run (``--dino RUN``), the same for its student and its EMA teacher, and what DINO's loss asks
for: how often the student's top prototype for the photo is the teacher's for the clean image, with the
heads as they ended and as they started (rebuilt from the run's recipe and seed, as ``ssl.pretrain``
built them). Agreement that rises while the embedding's Hit@1 stays put means the invariance was
learned in the head, which retrieval discards.

    CURATOR_SHARED=../shared python -m benchmarks.invariance EVAL_RUN [--images 200] \
        [--encoders NAME=ENCODER ...] [--dino RUN] [--out CSV]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from core.base.atomic import atomic_write_text, check_writable
from core.data.pool import recipe_pool
from core.data.synthetic import SOURCE_MAX_SIDE
from core.model.backbone import Encoder, EncoderSpec, build_encoder, load_encoder
from core.model.embed import Embeddings
from core.model.orient import sample_rows
from core.pixels.images import ImageReader, shrink_to
from core.pixels.photosim import TURN_CONDITIONS, simulate_hard_query
from core.pixels.preprocess import eval_transform
from core.recipe import load_recipe
from ssl.config import PretrainRecipe
from ssl.methods import DINOModule
from ssl.pretrain import init_prototypes
from ssl.tuning import configure_tuning

KINDS = ("dim", "low resolution", "zoom")
TURN_OF = {name: turn for turn, name in TURN_CONDITIONS.items()}


def hard_photos(images: list[np.ndarray], seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Per condition of ``KINDS``: one synthetic photo of each image, turned back upright."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    for i, image in enumerate(images):
        for k, kind in enumerate(KINDS):
            photo, conditions = simulate_hard_query(image, np.random.default_rng([seed, i, k]), kind)
            out[kind].append(np.ascontiguousarray(np.rot90(photo, k=TURN_OF[conditions[0]] // 90)))
    return out


@torch.no_grad()
def features(encoder: Encoder, images: list[np.ndarray]) -> torch.Tensor:
    """(N, D) raw pooled outputs (what a DINO head reads; normalise for retrieval), one forward pass each."""
    encoder.eval()
    transform = eval_transform(encoder.img_size, encoder.spec.resize, encoder.spec.mean, encoder.spec.std)
    return torch.cat([encoder(torch.stack([transform(im) for im in images[i:i + 32]]))
                      for i in range(0, len(images), 32)])


def invariance(clean: torch.Tensor, photo: torch.Tensor) -> dict[str, float]:
    """Mean cosine of each image with its photo, and the share of photos whose nearest clean image is theirs.

    >>> x = torch.eye(3)
    >>> invariance(x, x)
    {'cosine': 1.0, 'hit@1': 1.0}
    """
    c, p = F.normalize(clean.float(), dim=1), F.normalize(photo.float(), dim=1)
    hits = (p @ c.T).argmax(1) == torch.arange(len(c))
    return {"cosine": round(float((c * p).sum(1).mean()), 4), "hit@1": round(float(hits.float().mean()), 4)}


def agreement(teacher_clean: torch.Tensor, student_photo: torch.Tensor) -> float:
    """Share of images whose photo's top prototype (student head) is the clean image's (teacher head)."""
    return round(float((teacher_clean.argmax(1) == student_photo.argmax(1)).float().mean()), 4)


def dino_module(run: Path, ended: bool) -> DINOModule:
    """A DINO run's module as ``ssl.pretrain`` built it from the run's recipe and seed (heads included, the
    prototypes aimed at pool images where the recipe says so), or as its last checkpoint left it."""
    recipe = load_recipe(run / "recipe.yaml", ["embed.progress=false"], PretrainRecipe)
    pl.seed_everything(int(recipe.seed), workers=True, verbose=False)
    pool = recipe_pool(recipe)
    encoder = configure_tuning(build_encoder(EncoderSpec.from_config(recipe.model)), recipe.tune)
    module = DINOModule(encoder, recipe)
    if ended:
        # Tensors and plain data only, as ssl.training reads a checkpoint to resume it.
        module.load_state_dict(torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu",
                                          weights_only=True)["state_dict"])
    elif recipe.dino.prototypes == "data":
        init_prototypes(recipe, module, encoder, pool)
    return module.eval()


@torch.no_grad()
def dino_rows(run: Path, clean: list[np.ndarray], photos: dict[str, list[np.ndarray]]) -> list[dict]:
    """The DINO rows: the student's and the teacher's embeddings, and the heads' prototype agreement."""
    rows = []
    for ended in (False, True):
        module = dino_module(run, ended)
        when = "ended" if ended else "started"
        teacher_clean = features(module.teacher, clean)
        prototypes = module.teacher_head(teacher_clean)
        for name, enc in (("student", module.encoder), ("teacher", module.teacher)):
            if not ended and name == "teacher":
                continue  # at the start both are the pretrained encoder
            # At the start the student is the teacher: its clean images are the teacher's.
            own_clean = features(enc, clean) if ended and name == "student" else teacher_clean
            for kind, images in photos.items():
                photo = features(enc, images)
                row = {"encoder": f"DINO {name}, {when}", "condition": kind, **invariance(own_clean, photo)}
                if name == "student":
                    row["prototype agreement"] = agreement(prototypes, module.head(photo))
                    row["prototypes used"] = int(prototypes.argmax(1).unique().numel())
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an eval run (its recipe and pool)")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--encoders", nargs="*", default=[], metavar="NAME=ENCODER",
                        help="encoder files to measure beside the run's model, e.g. distill=runs/x/encoder.pt")
    parser.add_argument("--dino", type=Path, help="a DINO stage-1 run (its recipe, checkpoints/last.ckpt)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/invariance.csv"))
    args = parser.parse_args()
    check_writable(args.out, "--out")  # before the half hour of forward passes
    recipe = load_recipe(args.run / "recipe.yaml", ["embed.progress=false"])
    zero_shot = build_encoder(EncoderSpec.from_config(recipe.model))
    paths = recipe_pool(recipe).paths_of(Embeddings.load(args.run / "embeddings").names)
    # The yardstick's sources: decoded and shrunk as core.data.synthetic does before simulating a photo.
    reader = ImageReader(min_side=SOURCE_MAX_SIDE)
    clean = [shrink_to(reader(paths[r]), SOURCE_MAX_SIDE) for r in sample_rows(len(paths), args.images)]
    photos = hard_photos(clean)
    start = time.perf_counter()
    rows = []
    for name, encoder in [("zero-shot", zero_shot),
                          *((n, load_encoder(p)) for n, p in (e.split("=", 1) for e in args.encoders))]:
        own = features(encoder, clean)
        rows += [{"encoder": name, "condition": kind, **invariance(own, features(encoder, images))}
                 for kind, images in photos.items()]
    if args.dino:
        rows += dino_rows(args.dino, clean, photos)
    table = pd.DataFrame(rows)
    atomic_write_text(args.out, table.to_csv(index=False))
    print(table.to_markdown(index=False))
    print(f"{len(clean)} images, {len(KINDS)} conditions, {time.perf_counter() - start:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
