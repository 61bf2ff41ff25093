"""How much a DINO teacher's targets say: entropy, peak and view agreement, before and after a run.

DINO's student learns only as much as the teacher's (centred, sharpened) distributions over the
head's K prototypes tell it. Targets near the uniform distribution (entropy near ln K) carry almost
no signal, and the loss then sits at ~ln K. This measures, on the same fixed batch of global view
pairs, the teacher of a fresh DINO module (as a recipe builds it) and, given a run, the teacher
saved in its last checkpoint (with the loss's running centre). Fresh teachers are measured with
random and with data prototypes (``dino.prototypes``), centred where the loss's centre tends to
(their mean output on the batch).

    CURATOR_SHARED=../shared python -m benchmarks.dino_targets [RUN_DIR ...] [--images 64] [key=value ...]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from core.backbone import EncoderSpec, build_encoder
from core.images import make_reader
from core.pool import recipe_pool
from core.recipe import load_recipe
from core.tuning import configure_tuning
from ssl.augment import view_maker
from ssl.config import PROTOTYPES, PretrainRecipe
from ssl.dataset import ViewDataset
from ssl.methods import DINOModule
from ssl.pretrain import init_prototypes


def teacher_targets(module: DINOModule, views: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """Target statistics of ``module``'s teacher on two global views of the same images."""
    temp = float(module.dino_cfg.teacher_temp)
    with torch.no_grad():
        logits = [module.teacher_head(module.teacher(v)) for v in views]
        probs = [torch.softmax((t - module.criterion.center.reshape(1, -1)) / temp, dim=1) for t in logits]
        student = torch.log_softmax(module.head(module.encoder(views[1])) / float(module.dino_cfg.student_temp), 1)
    p = probs[0]
    return {
        "entropy": float(-(p * p.clamp_min(1e-12).log()).sum(1).mean()),
        "ln_k": math.log(p.shape[1]),
        "top_prob": float(p.max(1).values.mean()),
        "same_top": float((probs[0].argmax(1) == probs[1].argmax(1)).float().mean()),
        "cross_entropy": float(-(p * student).sum(1).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("items", nargs="*", metavar="RUN_DIR | key=value",
                        help="DINO run directories (their checkpoints/last.ckpt); overrides for the fresh recipe")
    parser.add_argument("--recipe", default="recipes/dino.yaml", help="recipe of the fresh module")
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    overrides = [item for item in args.items if "=" in item]
    runs = [Path(item) for item in args.items if "=" not in item]
    torch.manual_seed(0)
    fresh = load_recipe(args.recipe, overrides, PretrainRecipe)
    # One batch for every teacher: the fresh recipe's pool and views, every 7th image.
    pool = recipe_pool(fresh)
    spec = build_encoder(EncoderSpec.from_config(fresh.model)).spec  # mean and std come with the weights
    data = ViewDataset(pool.paths, make_reader(fresh.data, int(fresh.views.max_side)),
                       view_maker(fresh, spec.mean, spec.std), int(fresh.seed), True)
    items = [data[i] for i in range(0, min(len(data), 7 * args.images), 7)]
    batch = (torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items]))
    setups = [(f"fresh, {init} prototypes", args.recipe, [*overrides, f"dino.prototypes={init}"], None)
              for init in PROTOTYPES]
    setups += [(str(run), run / "recipe.yaml", [], run / "checkpoints" / "last.ckpt") for run in runs]
    rows = []
    for label, recipe_path, extra, ckpt in setups:
        recipe = load_recipe(recipe_path, extra, PretrainRecipe)
        encoder = configure_tuning(build_encoder(EncoderSpec.from_config(recipe.model)), recipe.tune)
        module = DINOModule(encoder, recipe)
        if ckpt is not None:
            module.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
        else:
            if recipe.dino.prototypes == "data":
                init_prototypes(recipe, module, encoder, pool)
            # The loss's centre starts at 0 and tends to the mean teacher output within a few
            # dozen steps: measure a fresh teacher as it looks once centred.
            with torch.no_grad():
                module.criterion.center.copy_(torch.cat([module.teacher_head(module.teacher(v)) for v in batch])
                                              .mean(0).reshape(module.criterion.center.shape))
        rows.append((label, teacher_targets(module.eval(), batch)))
    print(f"{len(batch[0])} images, two global views each (studio, visitor photo)\n")
    print("| teacher | K | entropy | ln K | mean top prob | same top prototype for both views | student CE |")
    print("|---|---|---|---|---|---|---|")
    for label, r in rows:
        print(f"| {label} | {round(math.exp(r['ln_k']))} | {r['entropy']:.3f} | {r['ln_k']:.3f} | {r['top_prob']:.4f} "
              f"| {r['same_top']:.2f} | {r['cross_entropy']:.3f} |")


if __name__ == "__main__":
    main()
