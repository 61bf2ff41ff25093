import warnings

import cv2
import numpy as np
import pytest
import torch

from core.base.errors import RecipeError
from core.pixels.images import decode_image, list_images
from core.recipe import load_recipe
from ssl.augment import FrameAndWall, PalePadding, QuarterTurn, view_maker, visitor_photo
from ssl.config import PretrainRecipe
from tests.conftest import ROOT, run_cli


@pytest.fixture(autouse=True)
def strict_albumentations():
    # albumentations 2.x ignores unknown (1.x) argument names with only a warning: make it fail here.
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=r"Argument\(s\) .* are not valid")
        yield


def _painting(h: int = 150, w: int = 110) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


def test_dino_views_have_the_promised_shapes_and_are_reproducible():
    recipe = load_recipe(ROOT / "recipes" / "dino.yaml", ["views.global_size=112", "dino.local_size=42",
                                                          "dino.n_local=3"], PretrainRecipe)
    maker = view_maker(recipe, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    views = maker(_painting(), seed=7)
    assert [tuple(v.shape) for v in views] == [(3, 112, 112)] * 2 + [(3, 42, 42)] * 3
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
    again = maker(_painting(), seed=7)
    assert all(torch.equal(a, b) for a, b in zip(views, again, strict=True))
    other = maker(_painting(), seed=8)
    assert not torch.equal(views[1], other[1])
    # Normalised with the given mean/std: uint8 0..255 maps into [-2, 2].
    assert min(float(v.min()) for v in views) >= -2.0 and max(float(v.max()) for v in views) <= 2.0


def test_simclr_views_are_a_pair_of_the_global_size():
    recipe = load_recipe(ROOT / "recipes" / "simclr.yaml", ["views.global_size=96"], PretrainRecipe)
    views = view_maker(recipe)(_painting(), seed=0)
    assert [tuple(v.shape) for v in views] == [(3, 96, 96)] * 2


def test_visitor_photo_degrades_the_painting_and_frame_and_wall_enlarge_it():
    painting = _painting(200, 160)
    framed = FrameAndWall(fill_range=(0.5, 0.5), frame_range=(0.05, 0.05), p=1.0)(image=painting)["image"]
    # The painting fills half of each side: the canvas is about twice as large, wall around it.
    assert framed.shape[0] == pytest.approx(2 * (200 + 2 * 8), abs=2)
    assert framed.shape[1] == pytest.approx(2 * (160 + 2 * 8), abs=2)
    pipeline = visitor_photo(96, (0.5, 1.0))
    pipeline.set_random_seed(3)
    photo = pipeline(image=painting)["image"]
    assert photo.shape == (96, 96, 3) and photo.dtype == np.uint8


def test_view_grid_command_writes_a_png(tmp_path, sample_root):
    out = tmp_path / "views.png"
    result = run_cli("ssl.augment", "recipes/dino.yaml", "views.global_size=64", "dino.local_size=32",
                     "--images", str(sample_root / "images" / "studio"), "--count", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    image = decode_image(out)
    assert image.shape[0] > 100 and image.shape[1] > 300
    assert len(list_images(tmp_path)) == 1


def test_quarter_turns_at_the_queries_mix_and_pale_padding_around_a_tilt():
    image = _painting()
    turn = QuarterTurn(p=1.0)
    seen = {90: 0, 180: 0, 270: 0}
    for seed in range(400):
        turn.set_random_seed(seed)
        out = turn(image=image)["image"]
        k = next(k for k in (1, 2, 3) if np.array_equal(out, np.rot90(image, -k)))
        seen[90 * k] += 1
    assert seen[180] > seen[270] > seen[90] > 0 and abs(seen[180] / 400 - 29 / 44) < 0.08
    padding = PalePadding(p=1.0)
    padding.set_random_seed(0)
    padded = padding(image=image)["image"]
    assert padded.shape[0] > image.shape[0] and padded.shape[1] > image.shape[1]
    assert padded[:3, :3].min() > 190  # pale, not the painting or black


def test_training_conditions_are_off_by_default_and_reach_the_visitor_view():
    recipe = load_recipe(ROOT / "recipes" / "simclr.yaml", ["views.photo_p=1.0"], PretrainRecipe)
    assert recipe.views.turn_p == 0 and recipe.views.padding_p == 0
    names = lambda maker: [type(t).__name__ for t in maker.photo[0].transforms if t.p > 0]  # noqa: E731
    assert "QuarterTurn" not in names(view_maker(recipe))
    turned = load_recipe(ROOT / "recipes" / "simclr.yaml", ["views.turn_p=1.0", "views.padding_p=0.5"], PretrainRecipe)
    assert {"QuarterTurn", "PalePadding"} <= set(names(view_maker(turned)))
    with pytest.raises(RecipeError, match="views.turn_p"):
        load_recipe(ROOT / "recipes" / "simclr.yaml", ["views.turn_p=1.5"], PretrainRecipe)


def test_cross_domain_makes_the_second_global_view_always_a_visitor_photo():
    base = ["views.global_size=48", "dino.local_size=24", "dino.n_local=2"]

    def views(seed: int, *overrides: str) -> list[torch.Tensor]:
        recipe = load_recipe(ROOT / "recipes" / "dino.yaml", [*base, *overrides], PretrainRecipe)
        return view_maker(recipe)(_painting(), seed=seed)

    for seed in range(4):
        studio = views(seed, "views.photo_p=0.0")
        crossed = views(seed, "views.photo_p=0.0", "dino.cross_domain=true")
        photo = views(seed, "views.photo_p=1.0")
        # Only view 1 changes, and it is exactly the visitor photo the same seed draws.
        assert torch.equal(crossed[0], studio[0]) and not torch.equal(crossed[1], studio[1])
        assert torch.equal(crossed[1], photo[1])
        assert all(torch.equal(a, b) for a, b in zip(crossed[2:], studio[2:], strict=True))
    with pytest.raises(RecipeError, match="dino.koleo_weight"):
        load_recipe(ROOT / "recipes" / "dino.yaml", ["dino.koleo_weight=-0.1"], PretrainRecipe)


def test_hard_photos_are_dim_low_resolution_or_zoomed_in_one_at_a_time(sample_root):
    from core.recipe import load_recipe
    from ssl.augment import hard_photo
    from ssl.config import PretrainRecipe

    hard = load_recipe(None, ["views.hard.p=1.0", "views.hard.low_side=[40,48]"], PretrainRecipe).views.hard
    image = decode_image(list_images(sample_root / "images" / "studio")[0])
    pipeline = hard_photo(64, hard, padding_p=0.0)  # padding would brighten a dark painting
    dim = blurred = 0
    sharpness = cv2.Laplacian(cv2.cvtColor(cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA),
                                           cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
    for seed in range(24):
        pipeline.set_random_seed(seed)
        view = pipeline(image=image)["image"]
        assert view.shape == (64, 64, 3) and view.dtype == np.uint8
        dim += view.mean() < 0.75 * image.mean()
        blurred += cv2.Laplacian(cv2.cvtColor(view, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() < 0.5 * sharpness
    assert 3 <= dim <= 16 and blurred >= 3  # each of the three conditions drawn about a third of the time
