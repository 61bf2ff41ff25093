"""The stage-2 recipe: the pretraining recipe plus rounds and mining."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from adapt.mining import MiningConfig
from core.errors import RecipeError
from ssl.config import PretrainRecipe


@dataclass
class PseudolabelRecipe(PretrainRecipe):
    rounds: int = 2
    mining: MiningConfig = field(default_factory=MiningConfig)

    @staticmethod
    def validate(cfg: DictConfig) -> None:
        PretrainRecipe.validate(cfg)
        if cfg.method != "simclr":
            raise RecipeError(f"method={cfg.method!r}: stage 2 refines with the contrastive (simclr) loss on pairs")
        if cfg.rounds < 1:
            raise RecipeError("rounds must be at least 1")
