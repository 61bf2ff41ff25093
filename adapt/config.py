"""The stage-2 recipe: the training recipe both stages share, plus rounds and mining (SimCLR only)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from adapt.mining import MiningConfig
from core.base.errors import RecipeError
from core.base.options import option
from ssl.config import TrainingRecipe


@dataclass
class PseudolabelRecipe(TrainingRecipe):
    rounds: int = option(2, ge=1)
    mining: MiningConfig = field(default_factory=MiningConfig)

    @staticmethod
    def validate(cfg: DictConfig) -> None:
        if cfg.method != "simclr":
            raise RecipeError(f"method={cfg.method!r}: stage 2 refines with the contrastive (simclr) loss on pairs")
