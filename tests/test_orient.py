"""Orientation learned without labels: the head, its threshold, and embedding at the upright turn."""

import numpy as np
import pytest
import torch

from core.base.errors import RecipeError
from core.model.backbone import EncoderSpec, build_encoder, load_encoder
from core.model.embed import embed_images
from core.model.orient import calibration_error, choose_threshold, fit_orientation
from core.recipe import load_recipe
from ssl.tuning import TuneConfig, configure_tuning
from tests.conftest import ROOT

TINY = ROOT / "recipes" / "tiny.yaml"


def _turnable_views(n: int, dim: int = 16, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """n images x 4 turns x dim: each turn moves the features along its own direction, so the turn can be told."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 1, dim))
    turn_dirs = np.eye(dim)[:4][None] * 3.0
    views = base + turn_dirs + noise * rng.normal(size=(n, 4, dim))
    return (views / np.linalg.norm(views, axis=-1, keepdims=True)).astype(np.float32)


def test_a_head_learns_turns_it_can_see_and_its_threshold_keeps_the_held_out_accuracy():
    head, report = fit_orientation(_turnable_views(200), held_out=0.25, accuracy=0.99)
    assert report.held_out == 50 and report.accuracy > 0.95 and set(report.per_turn) == {0, 90, 180, 270}
    assert report.confident_accuracy >= 0.99 and 0 <= report.fallback < 0.5
    # Turned 90 clockwise (class 1): 270 more brings it upright.
    turns, sure = head.upright_turns(torch.from_numpy(_turnable_views(20, seed=1)[:, 1]))
    assert (turns[sure] == 270).float().mean() > 0.95
    # Where the turn cannot be seen (pure noise), nothing is sure enough and every image falls back.
    _, blind = fit_orientation(np.random.default_rng(2).normal(size=(200, 4, 16)).astype(np.float32), 0.25, 0.99)
    assert blind.accuracy < 0.5 and blind.threshold == 1.0 and blind.fallback == 1.0


def test_threshold_and_calibration_from_held_out_predictions():
    confidence = np.array([0.95, 0.9, 0.8, 0.7, 0.6])
    right = np.array([True, True, True, False, False])
    assert choose_threshold(confidence, right, 0.99) == 0.8
    assert choose_threshold(confidence, right, 0.6) == 0.6
    assert choose_threshold(np.array([0.9]), np.array([False]), 0.5) == 1.0
    assert calibration_error(np.array([0.95, 0.95]), np.array([True, True])) == pytest.approx(0.05)


def _paths(sample_root, n=24):
    return sorted((sample_root / "images").rglob("*.png"))[:n]


@pytest.mark.parametrize("threshold", ["0", "1"])
def test_oriented_images_take_their_upright_turn_or_fall_back_to_every_turn(sample_root, threshold):
    paths = _paths(sample_root)
    names = [p.name for p in paths]
    common = ["embed.turns=[0,90,180,270]", "embed.crop=true", "embed.num_workers=0"]
    full = load_recipe(TINY, common)
    oriented = load_recipe(TINY, [*common, "embed.orient.enabled=true", "embed.orient.images=16",
                                  f"embed.orient.threshold={threshold}"])
    encoder = build_encoder(EncoderSpec.from_config(full.model))
    eight = embed_images(encoder, paths, names, full.embed)
    emb = embed_images(encoder, paths, names, oriented.embed)
    assert encoder.orientation is not None and encoder.orientation_report.images == 16
    assert eight.forwards_per_image == 8.0
    if threshold == "1":  # unsure of every image: the mean of the eight views, at the same cost
        assert (emb.upright == -1).all() and emb.forwards_per_image == 8.0
        np.testing.assert_allclose(emb.vectors, eight.vectors, atol=1e-6)
        return
    assert (emb.upright >= 0).all() and emb.forwards_per_image < 3.5
    # An image taken at its upright turn u is the mean of the view at u and its crop at u: what
    # Embeddings.oriented derives from the views a gated run of the same images kept.
    kept = embed_images(encoder, paths, names, load_recipe(TINY, [*common, "embed.combine=gate"]).embed)
    derived = kept.oriented(encoder.orientation, (0, 90, 180, 270), crop=True)
    np.testing.assert_array_equal(derived.upright, emb.upright)
    np.testing.assert_allclose(derived.vectors, emb.vectors, atol=1e-5)
    assert len({str(t) for t in emb.upright}) > 1  # the random head turns some images, not all alike


def test_the_head_is_saved_with_its_encoder_and_dropped_by_training(sample_root, tmp_path):
    paths = _paths(sample_root, 12)
    cfg = load_recipe(TINY, ["embed.orient.enabled=true", "embed.orient.images=12", "embed.num_workers=0"])
    encoder = build_encoder(EncoderSpec.from_config(cfg.model))
    embed_images(encoder, paths, [p.name for p in paths], cfg.embed)
    encoder.save(tmp_path / "enc.pt")
    loaded = load_encoder(tmp_path / "enc.pt")
    assert loaded.spec.orientation and torch.equal(loaded.orientation.linear.weight, encoder.orientation.linear.weight)
    assert float(loaded.orientation.threshold) == float(encoder.orientation.threshold)
    trained = configure_tuning(loaded, TuneConfig())
    assert trained.orientation is None and not trained.spec.orientation


def test_orientation_and_the_gate_are_not_combined():
    with pytest.raises(RecipeError, match="combine=gate and embed.orient.enabled=true"):
        load_recipe(TINY, ["embed.turns=[0,180]", "embed.combine=gate", "embed.orient.enabled=true"])
    with pytest.raises(RecipeError, match="embed.orient.threshold='high' must be auto or a confidence"):
        load_recipe(TINY, ["embed.orient.threshold=high"])
