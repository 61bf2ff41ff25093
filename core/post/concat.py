"""Concatenation (``concat``): other models' (or poolings') embeddings appended as blocks, each
L2-normalised and scaled by its weight, so the cosine becomes a weighted sum of the blocks' cosines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.base.options import option
from core.model.backbone import EncoderSpec, ModelConfig, build_encoder
from core.model.embed import Embeddings, embed_images, recipe_reader
from core.post.base import PostProcessor, register_step, unit_rows


@dataclass
class ConcatBlock(ModelConfig):
    """Another model (or pooling) whose embedding is appended, normalised, scaled by weight."""

    weight: float = option(1.0, ge=0)


@dataclass
class ConcatConfig:
    # Weight of the recipe's own model, the first block.
    weight: float = option(1.0, ge=0)
    # The other models, each a block after it.
    models: list[ConcatBlock] = field(default_factory=list)

    @staticmethod
    def check(section, key: str) -> None:
        for n, model in enumerate(section.models):
            ModelConfig.check(model, f"{key}.models[{n}]")


def concat_blocks(blocks: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Blocks (same rows) side by side, each normalised and scaled by its weight, then normalised."""
    if len({len(b) for b in blocks}) != 1:
        raise ValueError(f"blocks have different row counts: {[len(b) for b in blocks]}")
    return unit_rows(np.concatenate([unit_rows(b) * w for b, w in zip(blocks, weights, strict=True)], axis=1))


@register_step("concat", ConcatConfig)
def concat_step(post: PostProcessor, emb: Embeddings, vectors: np.ndarray, paths: Sequence[Path],
                save: bool) -> np.ndarray:
    """The recipe's model, then every ``post.concat`` model, each block weighted (first step only)."""
    blocks, weights = [emb.vectors], [float(post.cfg.concat.weight)]
    for n, block in enumerate(post.cfg.concat.models):
        encoder = build_encoder(EncoderSpec.from_config(block))
        other = embed_images(encoder, paths, emb.names, post.recipe.embed,
                             reader=recipe_reader(post.recipe, encoder), desc=f"embed concat block {n + 1}")
        if other.names != emb.names:
            raise ValueError(f"concat block {n + 1} could not embed every image ({len(other.skipped)} skipped)")
        blocks.append(other.vectors)
        weights.append(float(block.weight))
    return concat_blocks(blocks, weights)
