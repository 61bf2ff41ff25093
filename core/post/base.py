"""What every post step shares: the processor that runs a recipe's steps, the step registry, unit rows."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from core.base.registry import Registry
from core.model.embed import Embeddings
from core.pixels.verify import Verifier


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm, as float32."""
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class PostProcessor:
    """Applies a recipe's ``post`` steps; keeps what is worth keeping between calls (local features,
    the other models of a concatenation) and writes its artefacts to ``out_dir``."""

    def __init__(self, recipe: DictConfig, out_dir: str | Path | None = None):
        self.recipe = recipe
        self.cfg = recipe.post
        self.out_dir = Path(out_dir) if out_dir else None
        self.verifier: Verifier | None = None
        self.timings: dict[str, float] = {}
        self.verified_pairs = 0
        self.learned_pairs = 0

    @property
    def active(self) -> bool:
        return bool(self.cfg.steps)

    def verified(self) -> Verifier:
        """The geometric verifier of the recipe's ``verify`` section, made once and shared by the steps
        (it caches each image's local features)."""
        if self.verifier is None:
            self.verifier = Verifier.from_config(self.recipe.verify)
        return self.verifier

    def apply(self, emb: Embeddings, paths: Sequence[Path], save: bool = True) -> Embeddings:
        """``emb`` (rows = ``paths``) after every step; same names, same order, unit norms."""
        vectors = emb.vectors
        for step in self.cfg.steps:
            start = time.perf_counter()
            vectors = POST_STEPS[step](self, emb, vectors, paths, save)
            self.timings[step] = round(self.timings.get(step, 0.0) + time.perf_counter() - start, 3)
        return Embeddings(emb.names, vectors, emb.norms, emb.skipped)


# A step: ``fn(processor, embeddings, vectors so far, paths, save) -> new vectors`` (same rows, unit
# norms); its options, if it has any, are the dataclass registered with it, the recipe's ``post.<name>``.
PostStep = Callable[[PostProcessor, Embeddings, np.ndarray, Sequence[Path], bool], np.ndarray]
POST_STEPS: Registry[PostStep] = Registry("post step")
STEP_OPTIONS: dict[str, type] = {}


def register_step(name: str, options: type | None = None) -> Callable[[PostStep], PostStep]:
    """Register ``fn`` as post step ``name``, with ``options`` (a dataclass) as its ``post.<name>`` section.

    A new step is one file in ``core/post/`` holding its options and its function under this decorator,
    and one import line in ``core/post/__init__.py``.
    """

    def register(fn: PostStep) -> PostStep:
        POST_STEPS.add(name, fn)
        if options is not None:
            STEP_OPTIONS[name] = options
        return fn

    return register


