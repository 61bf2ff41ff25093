"""Training-free, transductive post-processing of a whole pool's embeddings (recipe ``post``).

The competition scores the submitted embeddings with plain cosine similarity and nobody knows which
images are queries, so every step here lives inside the embeddings and treats every image alike.
Steps run in the order of ``post.steps``:

- ``concat`` (core/post/concat.py): append other models' (or poolings') embeddings as weighted blocks.
- ``whiten``, ``learned_whiten`` (core/post/whiten.py): PCA whitening fitted on the pool, and whitening
  learned from its label-free pseudo pairs.
- ``dba``, ``qe`` (core/post/neighbours.py): neighbourhood averaging.
- ``fusion`` (core/post/fusion.py): verified-match fusion (reads pixels; off by default).
- ``diffusion`` (core/post/diffusion.py): a Fast Spectral Ranking block appended to each embedding.

Every step keeps the number and order of rows and returns unit-norm rows. A step is one file here: its
options dataclass and its function under ``@register_step(name, options)``, imported below; the
recipe's ``post`` section (``PostConfig``) is made from what is registered.
"""

from __future__ import annotations

from dataclasses import field, make_dataclass

from core.base.errors import RecipeError
from core.post import concat, diffusion, fusion, neighbours, whiten  # noqa: F401 (the steps register)
from core.post.base import POST_STEPS, STEP_OPTIONS, PostProcessor, PostStep, register_step, unit_rows
from core.post.concat import ConcatBlock, ConcatConfig, concat_blocks
from core.post.fusion import FusionConfig, fuse_verified, verified_neighbours
from core.post.neighbours import NeighbourConfig, neighbour_average
from core.post.whiten import LearnedWhitenConfig, WhitenConfig, Whitening, ledoit_wolf, pool_covariance, pseudo_pairs


def _check_steps(section, key: str) -> None:
    steps = list(section.steps)
    if any(s not in POST_STEPS for s in steps) or len(set(steps)) != len(steps):
        raise RecipeError(f"{key}.steps={steps}: each step once, from {', '.join(POST_STEPS)}")
    if "concat" in steps and (steps[0] != "concat" or not section.concat.models):
        raise RecipeError(f"{key}.steps: 'concat' must come first and needs {key}.concat.models (other models)")


# The recipe's post section: the steps to run, then one section per registered step with options.
PostConfig = make_dataclass(
    "PostConfig", [("steps", list[str], field(default_factory=list)),
                   *((name, options, field(default_factory=options)) for name, options in STEP_OPTIONS.items())],
    namespace={"__doc__": "Training-free steps on the whole pool's embeddings, run in the order of ``steps``.",
               "check": staticmethod(_check_steps)})

__all__ = ["POST_STEPS", "STEP_OPTIONS", "ConcatBlock", "ConcatConfig", "FusionConfig", "LearnedWhitenConfig",
           "NeighbourConfig", "PostConfig", "PostProcessor", "PostStep", "WhitenConfig", "Whitening",
           "concat_blocks", "fuse_verified", "ledoit_wolf", "neighbour_average", "pool_covariance",
           "pseudo_pairs", "register_step", "unit_rows", "verified_neighbours"]
