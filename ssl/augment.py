"""Painting-specific training views (albumentations): clean studio crops and simulated visitor photos.

The gap Curator must close is between a clean studio image of a painting and a visitor's phone photo
of it. The visitor-photo view simulates that photo, one physical cause per transform:

======================  ===============================================================================
transform               why
======================  ===============================================================================
FrameAndWall            visitors photograph the painting in its frame on a wall, smaller than the shot
PalePadding             the competition's queries: the painting tilted 2-10 degrees inside pale padding
RandomResizedCrop       partial crops (a detail, a cut-off edge) and zoom-ins; brings the view to its
                        size first so everything after it is cheap
Perspective             the camera is rarely square to the canvas: keystone tilt
Rotate (small)          hand-held phones roll a few degrees
RandomSunFlare /        light sources reflected by varnish or glass: flares and a specular blob
SpecularHighlight
RandomShadow            frames, visitors and lamps cast shadows across the canvas
RandomBrightnessContrast, RandomGamma
                        galleries are dim; phones under- or over-expose
PlanckianJitter         warm tungsten or cold LED light: colour temperature casts
MotionBlur / Defocus / GaussianBlur
                        hand shake in low light, missed focus
Downscale               small sensors, digital zoom, far-away shots
GaussNoise / ISONoise   sensor noise at high ISO
ImageCompression        the phone's JPEG (and messaging apps re-compressing it)
QuarterTurn             a phone held sideways or upside down: 44% of the competition's queries are
                        turned (180 degrees most often, then 270, then 90)
======================  ===============================================================================

Zoom-ins are the crops of RandomResizedCrop (``views.global_scale``). PalePadding and QuarterTurn are
off by default (``views.padding_p``, ``views.turn_p``) until a measurement shows that training with
them helps after whitening.

It is deliberately a different simulator from ``core.pixels.photosim`` (OpenCV), which makes the held-out
synthetic queries of ``eval``: a model is never scored on the exact distortions it was trained on.

DINO takes a studio global view, a second global view that is a visitor photo with ``views.photo_p``
(always with ``dino.cross_domain``) and several small local views; SimCLR takes a studio view and a
visitor view of the same image. ``python -m ssl.augment`` draws them as a grid.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch

from core.base.errors import command_line
from core.pixels.images import ImageReader, list_images, shrink_to
from core.pixels.sample import ensure_sample
from core.recipe import load_recipe
from ssl.config import PretrainRecipe
from ssl.methods import METHODS

FRAME_COLOURS = ((45, 32, 20), (125, 90, 45), (195, 165, 95), (25, 25, 25), (235, 232, 225), (90, 60, 40))
REFLECT = cv2.BORDER_REFLECT_101


class FrameAndWall(A.ImageOnlyTransform):
    """Put the painting in a frame of random width and colour, smaller than the shot, on a lit wall."""

    def __init__(self, fill_range: tuple[float, float] = (0.6, 0.95), frame_range: tuple[float, float] = (0.0, 0.08),
                 p: float = 0.5):
        super().__init__(p=p)
        self.fill_range = fill_range
        self.frame_range = frame_range

    def get_params(self) -> dict:
        rng = self.random_generator
        wall = rng.uniform(120, 240) * np.array([1.0, rng.uniform(0.92, 1.04), rng.uniform(0.8, 1.02)])
        return {"fill": rng.uniform(*self.fill_range), "frame": rng.uniform(*self.frame_range),
                "frame_colour": np.array(FRAME_COLOURS[rng.integers(len(FRAME_COLOURS))]) * rng.uniform(0.8, 1.2),
                "wall": wall, "ramp": (rng.uniform(0.75, 1.0), rng.uniform(0.9, 1.15)),
                "offset": rng.uniform(0.2, 1.8, size=2)}

    def apply(self, img: np.ndarray, fill: float, frame: float, frame_colour: np.ndarray, wall: np.ndarray,
              ramp: tuple[float, float], offset: np.ndarray, **params) -> np.ndarray:
        width = int(round(min(img.shape[:2]) * frame))
        colour = tuple(float(c) for c in np.clip(frame_colour, 0, 255))
        framed = cv2.copyMakeBorder(img, width, width, width, width, cv2.BORDER_CONSTANT, value=colour)
        fh, fw = framed.shape[:2]
        out_h, out_w = int(round(fh / fill)), int(round(fw / fill))
        shade = np.linspace(ramp[0], ramp[1], out_h, dtype=np.float32)[:, None, None]
        canvas = np.clip(np.broadcast_to(wall.astype(np.float32), (out_h, out_w, 3)) * shade, 0, 255).astype(np.uint8)
        y, x = (int((out_h - fh) / 2 * offset[0]), int((out_w - fw) / 2 * offset[1]))
        canvas[y:y + fh, x:x + fw] = framed
        return canvas

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("fill_range", "frame_range")


class PalePadding(A.ImageOnlyTransform):
    """The painting inside pale padding (5-20% of its shorter side), turned 2-10 degrees either way."""

    def __init__(self, angle_range: tuple[float, float] = (2.0, 10.0), p: float = 0.5):
        super().__init__(p=p)
        self.angle_range = angle_range

    def get_params(self) -> dict:
        rng = self.random_generator
        return {"pad": rng.uniform(0.05, 0.2), "shade": rng.uniform(215, 245) * np.array([1.0, 0.985, 0.95]),
                "angle": rng.uniform(*self.angle_range) * rng.choice([-1.0, 1.0])}

    def apply(self, img: np.ndarray, pad: float, shade: np.ndarray, angle: float, **params) -> np.ndarray:
        width = max(1, int(round(min(img.shape[:2]) * pad)))
        colour = tuple(float(c) for c in np.clip(shade, 0, 255))
        padded = cv2.copyMakeBorder(img, width, width, width, width, cv2.BORDER_CONSTANT, value=colour)
        h, w = padded.shape[:2]
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        return cv2.warpAffine(padded, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=colour)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("angle_range",)


class QuarterTurn(A.ImageOnlyTransform):
    """Turn the view by 90, 180 or 270 degrees clockwise, 180 most often (the queries' 4:29:11 mix)."""

    TURNS = {90: 4 / 44, 180: 29 / 44, 270: 11 / 44}

    def get_params(self) -> dict:
        return {"turn": int(self.random_generator.choice(list(self.TURNS), p=list(self.TURNS.values())))}

    def apply(self, img: np.ndarray, turn: int, **params) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(img, k=-turn // 90))


class SpecularHighlight(A.ImageOnlyTransform):
    """A soft, elongated, near-white blob: a lamp reflected by varnish or protective glass."""

    def __init__(self, strength_range: tuple[float, float] = (0.35, 0.9), p: float = 0.5):
        super().__init__(p=p)
        self.strength_range = strength_range

    def get_params(self) -> dict:
        rng = self.random_generator
        return {"centre": rng.uniform(0.1, 0.9, size=2), "axes": rng.uniform(0.04, 0.25, size=2),
                "angle": rng.uniform(0, np.pi), "strength": rng.uniform(*self.strength_range)}

    def apply(self, img: np.ndarray, centre: np.ndarray, axes: np.ndarray, angle: float, strength: float,
              **params) -> np.ndarray:
        h, w = img.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        dx, dy = xx / w - centre[0], yy / h - centre[1]
        u, v = dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)
        blob = strength * np.exp(-0.5 * ((u / axes[0]) ** 2 + (v / axes[1]) ** 2))[..., None]
        return np.clip(img * (1 - blob) + 255.0 * blob, 0, 255).astype(np.uint8)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("strength_range",)


class UnevenDim(A.ImageOnlyTransform):
    """Dim, uneven light: the image times a gain in ``gain_range``, along a ramp of +-30% in a random direction."""

    def __init__(self, gain_range: tuple[float, float] = (0.45, 0.65), p: float = 1.0):
        super().__init__(p=p)
        self.gain_range = gain_range

    def get_params(self) -> dict:
        rng = self.random_generator
        return {"gain": rng.uniform(*self.gain_range), "angle": rng.uniform(0, 2 * np.pi), "slope": rng.uniform(0, 0.3)}

    def apply(self, img: np.ndarray, gain: float, angle: float, slope: float, **params) -> np.ndarray:
        h, w = img.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = np.cos(angle) * (xx / w - 0.5) + np.sin(angle) * (yy / h - 0.5)
        return np.clip(img * (gain * (1 + 2 * slope * ramp))[..., None], 0, 255).astype(np.uint8)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("gain_range",)


class LowResolution(A.ImageOnlyTransform):
    """The longer side brought down to a size in ``side_range`` (a far-away or thumbnail shot)."""

    def __init__(self, side_range: tuple[int, int] = (200, 300), p: float = 1.0):
        super().__init__(p=p)
        self.side_range = side_range

    def get_params(self) -> dict:
        return {"side": int(self.random_generator.integers(self.side_range[0], self.side_range[1] + 1))}

    def apply(self, img: np.ndarray, side: int, **params) -> np.ndarray:
        return shrink_to(img, side)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("side_range",)


def studio_view(size: int, scale: tuple[float, float]) -> A.Compose:
    """A clean view: a crop of the image with mild colour jitter, as a studio shot would vary."""
    return A.Compose([
        A.RandomResizedCrop(size=(size, size), scale=scale, ratio=(0.75, 1.333), interpolation=cv2.INTER_AREA),
        A.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.0, p=0.5),
    ])


def visitor_photo(size: int, scale: tuple[float, float], wall_p: float = 0.6, turn_p: float = 0.0,
                  padding_p: float = 0.0) -> A.Compose:
    """A simulated visitor photo of a clean painting (see the module docstring for each step)."""
    return A.Compose([
        FrameAndWall(p=wall_p),
        PalePadding(p=padding_p),
        A.RandomResizedCrop(size=(size, size), scale=scale, ratio=(0.75, 1.333), interpolation=cv2.INTER_AREA),
        A.Perspective(scale=(0.02, 0.09), border_mode=REFLECT, p=0.7),
        A.Rotate(limit=8, border_mode=REFLECT, p=0.5),
        A.OneOf([
            A.RandomSunFlare(flare_roi=(0, 0, 1, 1), src_radius=max(8, size // 4), num_flare_circles_range=(1, 4)),
            SpecularHighlight(),
        ], p=0.4),
        A.RandomShadow(num_shadows_limit=(1, 2), shadow_intensity_range=(0.2, 0.5), p=0.3),
        A.RandomBrightnessContrast(brightness_limit=(-0.35, 0.1), contrast_limit=(-0.3, 0.1), p=0.7),
        A.RandomGamma(gamma_limit=(80, 150), p=0.4),
        A.PlanckianJitter(mode="blackbody", p=0.5),
        A.OneOf([A.MotionBlur(blur_limit=(3, 9)), A.Defocus(radius=(1, 3), alias_blur=(0.1, 0.3)),
                 A.GaussianBlur(sigma_limit=(0.3, 1.2))], p=0.5),
        A.Downscale(scale_range=(0.35, 0.8), p=0.3),
        A.OneOf([A.GaussNoise(std_range=(0.02, 0.06)), A.ISONoise(intensity=(0.05, 0.2))], p=0.4),
        A.ImageCompression(quality_range=(35, 90), p=0.6),
        QuarterTurn(p=turn_p),
    ])


def hard_photo(size: int, hard, padding_p: float = 0.5) -> A.Compose:
    """A visitor photo in one of the hard conditions (``views.hard``): uneven dim light with shadows and
    glare, low resolution with blur and JPEG, or a zoom-in window; tilted in pale padding with ``padding_p``."""
    window = tuple(float(w) ** 2 for w in hard.zoom_window)  # a share of the sides, as a share of the area
    return A.Compose([
        PalePadding(p=padding_p),
        A.OneOf([
            A.Sequential([UnevenDim(tuple(hard.dim_gain)),
                          A.RandomShadow(num_shadows_limit=(1, 2), shadow_intensity_range=(0.2, 0.5), p=0.5),
                          SpecularHighlight(p=0.4), A.ISONoise(intensity=(0.05, 0.2), p=0.5)], p=1.0),
            A.Sequential([LowResolution(tuple(int(v) for v in hard.low_side)),
                          A.GaussianBlur(sigma_limit=(0.3, 1.0), p=0.5),
                          A.ImageCompression(quality_range=tuple(int(q) for q in hard.jpeg_quality), p=1.0)], p=1.0),
            A.RandomResizedCrop(size=(size, size), scale=window, ratio=(0.75, 1.333), interpolation=cv2.INTER_AREA),
        ], p=1.0),  # OneOf draws its children by their p: equal p, equal shares
        A.Resize(size, size, interpolation=cv2.INTER_CUBIC),
        A.Rotate(limit=8, border_mode=REFLECT, p=0.5),
    ])


class ViewMaker:
    """Turns one RGB image into the method's views: normalised (3, s, s) float tensors.

    View ``i`` is a visitor photo with probability ``photo_p[i]``, else a studio view (the methods
    keep view 0 a studio view: ``photo_p[0] = 0``). Views are reproducible: ``seed`` fixes them all.
    ``turn_p`` and ``padding_p``: a visitor photo's chance of a quarter turn and of pale padding.
    """

    def __init__(self, sizes: Sequence[int], scales: Sequence[tuple[float, float]], mean: Sequence[float],
                 std: Sequence[float], photo_p: Sequence[float], max_side: int = 448, turn_p: float = 0.0,
                 padding_p: float = 0.0, hard=None):
        if not sizes or not len(sizes) == len(scales) == len(photo_p):
            raise ValueError(f"{len(sizes)} view sizes, {len(scales)} crop scales and {len(photo_p)} photo "
                             "probabilities: give one of each per view")
        self.sizes = list(sizes)
        self.studio = [studio_view(s, tuple(sc)) for s, sc in zip(sizes, scales, strict=True)]
        self.photo = [visitor_photo(s, tuple(sc), turn_p=turn_p, padding_p=padding_p)
                      for s, sc in zip(sizes, scales, strict=True)]
        # A visitor-photo view is a hard photo (views.hard) with this probability.
        self.hard_p = float(hard.p) if hard is not None else 0.0
        self.hard = [hard_photo(s, hard) for s in sizes] if self.hard_p else []
        self.photo_p = list(photo_p)
        self.max_side = max_side
        self.normalize = A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0, p=1.0)

    def images(self, image: np.ndarray, seed: int) -> list[np.ndarray]:
        """The views as uint8 RGB images (for pictures); :meth:`__call__` gives tensors."""
        # Shrinking first bounds the cost of every transform, whatever the source resolution.
        image = shrink_to(image, self.max_side)
        seeds = np.random.SeedSequence(seed).generate_state(2 * len(self.sizes) + 1)
        coin, hard = np.random.default_rng(seeds[-1]).random((2, len(self.sizes)))
        views = []
        for i in range(len(self.sizes)):
            photo = self.hard[i] if hard[i] < self.hard_p else self.photo[i]
            pipeline = photo if coin[i] < self.photo_p[i] else self.studio[i]
            pipeline.set_random_seed(int(seeds[2 * i]))
            views.append(pipeline(image=image)["image"])
        return views

    def __call__(self, image: np.ndarray, seed: int) -> list[torch.Tensor]:
        return [torch.from_numpy(np.ascontiguousarray(self.normalize(image=v)["image"].transpose(2, 0, 1)))
                for v in self.images(image, seed)]


def dino_views(global_size: int, local_size: int, n_local: int, global_scale: Sequence[float],
               local_scale: Sequence[float], mean: Sequence[float], std: Sequence[float], photo_p: float,
               max_side: int, turn_p: float = 0.0, padding_p: float = 0.0, cross_domain: bool = False,
               hard=None) -> ViewMaker:
    """DINO multi-crop: two global views (studio, then visitor photo with ``photo_p``) and ``n_local``
    small views (each a visitor photo with ``photo_p``). ``cross_domain``: the second global view is
    always a visitor photo, so every teacher target crosses the studio-photo gap. ``hard``: the recipe's
    ``views.hard`` (a photo view is a hard photo with ``hard.p``)."""
    sizes = [global_size] * 2 + [local_size] * n_local
    scales = [tuple(global_scale)] * 2 + [tuple(local_scale)] * n_local
    photo = [0.0, 1.0 if cross_domain else photo_p] + [photo_p] * n_local
    return ViewMaker(sizes, scales, mean, std, photo, max_side, turn_p, padding_p, hard)


def pair_views(size: int, scale: Sequence[float], mean: Sequence[float], std: Sequence[float], photo_p: float,
               max_side: int, turn_p: float = 0.0, padding_p: float = 0.0, hard=None) -> ViewMaker:
    """SimCLR: a studio view and (with ``photo_p``) a visitor photo of the same image (a hard photo with
    ``hard.p``)."""
    return ViewMaker([size, size], [tuple(scale)] * 2, mean, std, [0.0, photo_p], max_side, turn_p, padding_p,
                     hard)


def view_maker(recipe, mean: Sequence[float] = (0.5,) * 3, std: Sequence[float] = (0.5,) * 3) -> ViewMaker:
    """The views of the recipe's method, normalised with ``mean``/``std`` (the backbone's)."""
    v = recipe.views
    if METHODS[recipe.method].multi_crop:
        d = recipe.dino
        return dino_views(v.global_size, d.local_size, d.n_local, v.global_scale, d.local_scale, mean, std,
                          v.photo_p, v.max_side, v.turn_p, v.padding_p, bool(d.cross_domain or d.clean_teacher),
                          v.hard)
    return pair_views(v.global_size, v.global_scale, mean, std, v.photo_p, v.max_side, v.turn_p, v.padding_p,
                      v.hard)


def write_view_grid(paths: Sequence[Path], maker: ViewMaker, out: Path, seed: int = 0,
                    reader: ImageReader | None = None) -> Path:
    """Draw each image beside its views (one row per image) into the PNG ``out``."""
    from core.base.figures import plt, save_png

    reader = reader or ImageReader(min_side=maker.max_side)
    columns = 1 + len(maker.sizes)
    fig, axes = plt.subplots(len(paths), columns, figsize=(1.8 * columns, 1.9 * len(paths)), squeeze=False)
    for row, path in enumerate(paths):
        image = reader(path)
        panels = [image, *maker.images(image, seed + row)]
        for col, (ax, panel) in enumerate(zip(axes[row], panels, strict=True)):
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("source" if col == 0 else f"view {col - 1} ({maker.sizes[col - 1]} px)", fontsize=7)
        axes[row][0].set_ylabel(path.name[:18], fontsize=6)
    save_png(fig, out)
    return out


@command_line
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssl.augment",
                                     description="Draw the training views of a recipe as a PNG grid.")
    parser.add_argument("recipe", nargs="?", default=None, help="a pretraining recipe (default: recipes/dino.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. dino.n_local=2")
    parser.add_argument("--images", help="folder of images (default: the sample museum's studio images)")
    parser.add_argument("--count", type=int, default=6, help="how many images (rows)")
    parser.add_argument("--out", default="views.png", help="output PNG")
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe or "recipes/dino.yaml", args.overrides, PretrainRecipe)
    folder = Path(args.images) if args.images else ensure_sample(recipe.data.sample_dir) / "images" / "studio"
    paths = list_images(folder)
    chosen = np.random.default_rng(recipe.seed).choice(len(paths), min(args.count, len(paths)), replace=False)
    out = write_view_grid([paths[i] for i in sorted(chosen)], view_maker(recipe), Path(args.out), recipe.seed)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
