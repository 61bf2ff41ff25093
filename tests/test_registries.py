"""Every registered extension works through the front door: a registry entry is a usable recipe
value, and behaves as its kind promises (a new pooling, resize policy, tuning mode, post step,
SSL method or metric is checked here without a test of its own)."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from core.base.errors import RecipeError
from core.model.backbone import POOLINGS, EncoderSpec, build_encoder
from core.model.embed import Embeddings
from core.pixels.preprocess import LIGHTS, RESIZE_POLICIES, eval_transform
from core.post import POST_STEPS, PostProcessor
from core.recipe import load_recipe
from core.vectors.metrics import METRICS, summarize
from ssl.config import PretrainRecipe
from ssl.methods import METHODS
from ssl.tuning import TUNE_MODES, TuneConfig, configure_tuning


@pytest.mark.parametrize("pooling", sorted(POOLINGS))
def test_each_pooling_gives_its_declared_width(pooling):
    encoder = build_encoder(EncoderSpec(weights="none", arch="test_vit", pooling=pooling, img_size=32))
    out = encoder(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, encoder.dim) and encoder.dim == POOLINGS[pooling].dim(64)
    assert torch.isfinite(out).all() and load_recipe(None, [f"model.pooling={pooling}"]).model.pooling == pooling


@pytest.mark.parametrize("policy", sorted(RESIZE_POLICIES))
def test_each_resize_policy_makes_a_square_input(policy):
    for shape in ((40, 100, 3), (100, 40, 3), (10, 12, 3)):
        out = eval_transform(32, policy, (0.5,) * 3, (0.5,) * 3)(np.full(shape, 200, np.uint8))
        assert out.shape == (3, 32, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize("light", sorted(LIGHTS))
def test_each_light_normalisation_keeps_an_image_an_image_and_lifts_a_dim_one(light):
    rng = np.random.default_rng(0)
    dim = (rng.integers(0, 256, (40, 60, 3)) * 0.3).astype(np.uint8)  # a photo at 30% of the light
    out = LIGHTS[light](dim)
    assert out.shape == dim.shape and out.dtype == np.uint8
    # grey-world moves colour, not light; the others lift a dim photo
    assert (out.mean() > dim.mean() + 10) == (light in ("clahe", "gamma", "dim-gamma"))
    assert load_recipe(None, [f"embed.light={light}"]).embed.light == light
    assert eval_transform(32, "squash", (0.5,) * 3, (0.5,) * 3, light)(dim).shape == (3, 32, 32)


@pytest.mark.parametrize("mode", sorted(TUNE_MODES))
def test_each_tuning_mode_leaves_something_to_train_and_something_frozen_unless_full(mode):
    encoder = configure_tuning(build_encoder(EncoderSpec(weights="none", arch="test_vit", img_size=32)),
                               TuneConfig(mode=mode))
    trainable = [p.requires_grad for p in encoder.parameters()]
    assert any(trainable) and (mode == "full") == all(trainable)
    assert encoder(torch.randn(1, 3, 32, 32)).shape == (1, encoder.dim)


# Steps that need more than vectors: concat embeds images with other models, fusion reads pixels.
NEEDS_IMAGES = {"concat", "fusion"}


@pytest.mark.parametrize("step", sorted(POST_STEPS))
def test_each_post_step_keeps_rows_and_unit_norms(step, tmp_path):
    if step in NEEDS_IMAGES:
        pytest.skip(f"{step} needs images: tests/test_postprocess.py runs it on real files")
    vectors = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    emb = Embeddings([f"n{i}" for i in range(40)], vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
                     np.ones(40, np.float32))
    out = PostProcessor(load_recipe(None, [f"post.steps=[{step}]"]), tmp_path).apply(
        emb, [Path(f"{i}.png") for i in range(40)])
    assert out.names == emb.names and len(out.vectors) == 40
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1, atol=1e-5)


def test_unregistered_choices_are_refused_with_the_registered_ones():
    with pytest.raises(RecipeError, match=re.escape(", ".join(POOLINGS))):
        load_recipe(None, ["model.pooling=max"])
    with pytest.raises(RecipeError, match=re.escape(", ".join(TUNE_MODES))):
        load_recipe(None, ["tune.mode=bitfit"], PretrainRecipe)
    with pytest.raises(RecipeError, match=re.escape(", ".join(METHODS))):
        load_recipe(None, ["method=byol"], PretrainRecipe)


def test_distillation_refuses_a_head_warmup_and_names_the_fix():
    with pytest.raises(RecipeError, match=re.escape("train.head_warmup_epochs=0")):
        load_recipe(None, ["method=distill", "train.head_warmup_epochs=1"], PretrainRecipe)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_is_a_recipe_choice_with_views(method):
    from ssl.augment import view_maker

    # distillation trains the embedding itself: it has no head to warm up (the test above names that error)
    recipe = load_recipe(None, [f"method={method}", "views.global_size=32", "dino.local_size=16",
                                "train.head_warmup_epochs=0"], PretrainRecipe)
    views = view_maker(recipe)(np.full((60, 80, 3), 128, np.uint8), seed=0)
    assert len(views) == (2 + recipe.dino.n_local if METHODS[method].multi_crop else 2)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_each_metric_is_perfect_for_first_place_and_lower_otherwise(name):
    assert summarize([np.array([0]), np.array([0, 1])])[name] == 1.0
    assert summarize([np.array([40]), np.array([0])])[name] < 1.0
    assert OmegaConf.create(summarize([np.array([3])]))  # plain JSON-able values
