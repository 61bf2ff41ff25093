"""The gated view (core.vectors.gate) and painting localisation (core.pixels.localise), alone and through embedding."""

import cv2
import numpy as np
import pytest
import torch

from core.base.errors import RecipeError
from core.model.backbone import EncoderSpec, build_encoder
from core.model.embed import embed_images
from core.pixels.images import decode_image
from core.pixels.localise import find_paintings, painting_crops
from core.recipe import load_recipe
from core.vectors.gate import AUTO_Z, gate_views
from core.vectors.stats import robust_threshold


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _pool(n=60, dim=32, seed=0):
    """Random 4-view images; returns (views, rng). Views 1-3 are unrelated to view 0."""
    rng = np.random.default_rng(seed)
    return _unit(rng.normal(size=(n, 4, dim))), rng


def test_a_turned_photo_takes_the_view_that_finds_its_studio_image():
    views, rng = _pool()
    # Image 0 is a photo turned by 180 degrees of studio image 1: its view 2 shows image 1 upright.
    views[0, 2] = _unit(views[1, 0] + 0.1 * rng.normal(size=views.shape[2]))
    chosen, margin = gate_views(views)
    assert chosen[0] == 2 and (chosen[1:] == 0).all()
    assert 0 < margin < 0.9


def test_a_photo_and_its_studio_image_never_both_turn():
    views, rng = _pool()
    noise = lambda: 0.05 * rng.normal(size=views.shape[2])  # noqa: E731
    # Photo 0 is studio image 1 turned by 180: each one's view 2 looks like the other's view 0, so
    # both gain alike; switching both would leave them apart again.
    views[0, 2] = _unit(views[1, 0] + noise())
    views[1, 2] = _unit(views[0, 0] + noise())
    chosen, _ = gate_views(views)
    assert sorted(chosen[:2].tolist()) == [0, 2] and (chosen[2:] == 0).all()
    final = views[np.arange(len(views)), chosen]
    assert final[0] @ final[1] > 0.9


def test_margins_decide_and_auto_sits_above_chance():
    views, rng = _pool()
    views[0, 1] = _unit(views[5, 0] + 0.6 * rng.normal(size=views.shape[2]))  # a weak, real gain
    weak_gain = float(views[0, 1] @ views[5, 0])
    assert gate_views(views, margin=0.0)[0].sum() > 1  # no margin: chance gains switch too
    assert (gate_views(views, margin=2.0)[0] == 0).all()
    chosen, margin = gate_views(views, margin=None)
    gains = np.random.default_rng(1).normal(0, 0.02, 1000)
    assert robust_threshold(gains, AUTO_Z) == pytest.approx(6 * 0.02, abs=0.02)
    assert chosen[0] == (1 if weak_gain - 0.4 > margin else 0)  # only a gain above the margin switches


def _painting(rng, size=(200, 150)):
    return cv2.resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), size, interpolation=cv2.INTER_NEAREST)


def _hang(photo, painting, corners):
    """``photo`` with ``painting`` warped onto the quadrilateral ``corners`` (tl, tr, br, bl)."""
    h, w = painting.shape[:2]
    warp = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), np.float32(corners))
    return cv2.warpPerspective(painting, warp, photo.shape[1::-1], dst=photo, borderMode=cv2.BORDER_TRANSPARENT)


def _scene(rng, tilt=6.0, size=(300, 400)):
    """A textured 'painting' tilted inside pale padding on a grey wall; returns the photo and its corners."""
    h, w = size
    corners = np.float32([[100, 75], [300, 75], [300, 225], [100, 225]])
    turned = cv2.transform(corners[None], cv2.getRotationMatrix2D((200, 150), tilt, 1.0))[0]
    return _hang(np.full((h, w, 3), 225, np.uint8), _painting(rng), turned), turned


def _two_paintings(rng):
    """Two paintings side by side on a pale wall, and the two paintings."""
    left, right = _painting(rng, (150, 200)), _painting(rng, (130, 170))
    photo = _hang(np.full((300, 480, 3), 225, np.uint8), left, [[40, 50], [190, 50], [190, 250], [40, 250]])
    return _hang(photo, right, [[290, 65], [420, 65], [420, 235], [290, 235]]), left, right


def test_localisation_finds_a_tilted_painting_in_pale_padding():
    photo, truth = _scene(np.random.default_rng(0))
    found = find_paintings(photo)
    assert len(found) == 1
    corners = found[0]
    # The tilt is undone within a few pixels at each corner (tl, tr, br, bl after a small turn).
    order = np.argsort([np.arctan2(*(c - truth.mean(0))[::-1]) for c in truth])
    found = np.argsort([np.arctan2(*(c - corners.mean(0))[::-1]) for c in corners])
    assert np.abs(corners[found] - truth[order]).max() < 8
    [crop] = painting_crops(photo)
    assert abs(crop.shape[1] / crop.shape[0] - 200 / 150) < 0.08


def test_localisation_finds_paintings_side_by_side_largest_first():
    photo, left, right = _two_paintings(np.random.default_rng(2))
    found = find_paintings(photo)
    assert len(found) == 2 and len(find_paintings(photo, max_paintings=1)) == 1
    assert found[0][:, 0].max() < 240 < found[1][:, 0].min()  # the larger, left one first
    crops = painting_crops(photo)
    assert len(crops) == 2
    for crop, painting in zip(crops, (left, right), strict=True):
        assert abs(crop.shape[1] / crop.shape[0] - painting.shape[1] / painting.shape[0]) < 0.08


def test_no_crop_where_the_image_is_the_painting():
    rng = np.random.default_rng(1)
    studio = cv2.resize(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), (320, 240), interpolation=cv2.INTER_CUBIC)
    assert find_paintings(np.full((120, 160, 3), 200, np.uint8)) == []  # nothing to find
    assert [c.shape for c in painting_crops(np.full((120, 160, 3), 200, np.uint8))] == [(120, 160, 3)]
    assert all(cv2.contourArea(c) < 0.85 * 320 * 240 for c in find_paintings(studio))


def _cfg(*overrides):
    return load_recipe(None, ["embed.num_workers=0", "embed.progress=false", *overrides]).embed


def test_gate_through_embedding_turns_back_only_the_turned_photo(tmp_path):
    torch.manual_seed(0)
    encoder = build_encoder(EncoderSpec(weights="none", arch="test_vit", img_size=64))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(40):
        image = cv2.resize(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8), (64, 64), interpolation=cv2.INTER_CUBIC)
        if i == 39:  # a photo of image 3, turned by 180 degrees
            image = cv2.imread(str(paths[3]))[::-1, ::-1]
        paths.append(tmp_path / f"{i:02d}.png")
        cv2.imwrite(str(paths[-1]), np.ascontiguousarray(image))
    names = [p.name for p in paths]
    plain = embed_images(encoder, paths, names, _cfg())
    gated = embed_images(encoder, paths, names, _cfg("embed.turns=[0,90,180,270]", "embed.combine=gate"))
    assert gated.view_names == ["0", "90", "180", "270"] and gated.views.shape == (40, 4, plain.dim)
    changed = np.flatnonzero(np.abs(gated.vectors - plain.vectors).max(axis=1) > 1e-5)
    assert changed.tolist() in ([39], [3])  # one of the pair turns, nothing else
    assert gated.vectors[39] @ gated.vectors[3] > 0.999 > plain.vectors[39] @ plain.vectors[3]
    with_crop = embed_images(encoder, paths, names, _cfg("embed.crop=true", "embed.combine=gate"))
    assert with_crop.view_names == ["0", "crop"]


def test_the_crop_view_of_two_paintings_is_their_normalised_sum(tmp_path):
    torch.manual_seed(0)
    encoder = build_encoder(EncoderSpec(weights="none", arch="test_vit", img_size=64))
    photo, _, _ = _two_paintings(np.random.default_rng(2))
    files = {"photo.png": photo, **{f"crop{i}.png": c for i, c in enumerate(painting_crops(photo))}}
    for name, image in files.items():
        cv2.imwrite(str(tmp_path / name), image)
    paths = [tmp_path / n for n in files]
    plain = embed_images(encoder, paths, list(files), _cfg())
    views = embed_images(encoder, paths[:1], ["photo.png"], _cfg("embed.crop=true", "embed.combine=gate",
                                                                 "embed.turns=[0,180]", "embed.max_paintings=3"))
    both = plain.vectors[1] + plain.vectors[2]
    np.testing.assert_allclose(views.views[0, 2], both / np.linalg.norm(both), atol=1e-5)  # view "crop"
    np.testing.assert_allclose(views.views[0, 0], plain.vectors[0], atol=1e-5)
    largest = embed_images(encoder, paths[:1], ["photo.png"], _cfg("embed.crop=true", "embed.combine=gate",
                                                                   "embed.turns=[0,180]"))  # the default: 1
    np.testing.assert_allclose(largest.views[0, 2], plain.vectors[1], atol=1e-5)


def test_gate_recipe_checks():
    with pytest.raises(RecipeError, match="must start with 0"):
        _cfg("embed.combine=gate")
    with pytest.raises(RecipeError, match="must start with 0"):
        _cfg("embed.combine=gate", "embed.turns=[180,0]")
    with pytest.raises(RecipeError, match="gate_margin"):
        _cfg("embed.combine=gate", "embed.turns=[0,180]", "embed.gate_margin=wide")
    assert _cfg("embed.combine=gate", "embed.turns=[0,180]", "embed.gate_margin=0.15").gate_margin == "0.15"
    with pytest.raises(RecipeError, match="max_paintings"):
        _cfg("embed.crop=true", "embed.max_paintings=0")


def test_an_images_outline_does_not_depend_on_what_was_localised_before(sample_root):
    photo = decode_image(sorted((sample_root / "images").rglob("*.png"))[-1])
    first = find_paintings(photo)
    for other in sorted((sample_root / "images").rglob("*.png"))[:5]:
        find_paintings(decode_image(other))  # GrabCut draws from OpenCV's process-wide random generator
    again = find_paintings(photo)
    assert len(first) == len(again) and all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
