"""Export the student of finished DINO runs: RUN/student.pt beside the teacher's RUN/encoder.pt.

A DINO run exports its EMA teacher (``train.export: teacher``). To score the student of the same
run without training again, this rebuilds the module from the run's recipe, loads its last
checkpoint and writes the student as an encoder file that ``model.weights=RUN/student.pt`` loads.
It prints how far the student has moved from the teacher (the largest weight difference).

    python -m benchmarks.export_student RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from core.backbone import EncoderSpec, build_encoder
from core.errors import MissingInputError, command_line
from core.recipe import load_recipe
from core.tuning import configure_tuning
from ssl.config import PretrainRecipe
from ssl.methods import DINOModule
from ssl.training import quiet_known_warnings


def export_student(run: Path) -> tuple[Path, float]:
    """Write ``run``'s student to RUN/student.pt; return the path and max |teacher - student| weight."""
    checkpoint = run / "checkpoints" / "last.ckpt"
    if not (run / "recipe.yaml").is_file() or not checkpoint.is_file():
        raise MissingInputError(f"{run} has no recipe.yaml or no {checkpoint.relative_to(run)}. Fix: give the "
                                "directory of a DINO run of python -m ssl.pretrain")
    # Prototypes come from the checkpoint: skip the data initialisation a fresh module would do.
    recipe = load_recipe(run / "recipe.yaml", ["train.export=student", "dino.prototypes=random"], PretrainRecipe)
    if recipe.method != "dino":
        raise MissingInputError(f"{run} is a {recipe.method} run: only DINO runs have a student beside the "
                                "exported encoder. Fix: give a DINO run directory")
    with quiet_known_warnings():
        module = DINOModule(configure_tuning(build_encoder(EncoderSpec.from_config(recipe.model)), recipe.tune),
                            recipe)
    module.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    path = run / "student.pt"
    module.export_encoder().save(path)
    with torch.no_grad():
        gap = max(float((t - s).abs().max())
                  for t, s in zip(module.teacher.parameters(), module.encoder.parameters(), strict=True))
    return path, gap


@command_line
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="DINO run directories")
    for run in parser.parse_args(argv).runs:
        path, gap = export_student(run)
        print(f"{path}: max |teacher - student| weight {gap:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
