"""Evaluation-time preprocessing: a resize policy to a square input, then the model's normalisation.

Policies:
- ``squash``: resize to size x size, ignoring the aspect ratio (keeps the whole painting).
- ``letterbox``: fit the longer side, pad the rest with the normalisation mean (zeros after
  normalising), so nothing is distorted or cut.
- ``center-crop``: fit the shorter side, cut the centre square (timm's evaluation default).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from core.base.registry import Registry

ResizeOps = Callable[[int, Sequence[float], int], list[A.BasicTransform]]

# The policies ``model.resize`` may name: ``fn(size, mean, interpolation) -> albumentations ops`` that
# bring any RGB image to size x size. A new one is a function and one ``@register_resize`` line.
RESIZE_POLICIES: Registry[ResizeOps] = Registry("resize policy")
register_resize = RESIZE_POLICIES.register


@register_resize("squash")
def _squash(size: int, mean: Sequence[float], interpolation: int) -> list[A.BasicTransform]:
    return [A.Resize(size, size, interpolation=interpolation, p=1.0)]


@register_resize("letterbox")
def _letterbox(size: int, mean: Sequence[float], interpolation: int) -> list[A.BasicTransform]:
    fill = tuple(int(round(m * 255)) for m in mean)
    return [A.LongestMaxSize(max_size=size, interpolation=interpolation, p=1.0),
            A.PadIfNeeded(size, size, border_mode=cv2.BORDER_CONSTANT, fill=fill, p=1.0)]


@register_resize("center-crop")
def _center_crop(size: int, mean: Sequence[float], interpolation: int) -> list[A.BasicTransform]:
    return [A.SmallestMaxSize(max_size=size, interpolation=interpolation, p=1.0), A.CenterCrop(size, size, p=1.0)]


def resize_ops(size: int, policy: str, mean: Sequence[float], down: int = cv2.INTER_AREA
               ) -> list[A.BasicTransform]:
    """Albumentations ops that bring any RGB image to ``size`` x ``size`` under ``policy``.

    ``down`` is the interpolation flag (area by default: it averages when shrinking, no aliasing).
    """
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize policy {policy!r} is not one of {tuple(RESIZE_POLICIES)}")
    return RESIZE_POLICIES[policy](size, mean, down)


# Light normalisations (``embed.light``): ``fn(RGB uint8) -> RGB uint8``, applied to every image (and
# crop) before it is resized, so a photo taken in dim or coloured light and its studio image meet halfway.
# A new one is a function and one ``@register_light`` line.
LIGHTS: Registry[Callable[[np.ndarray], np.ndarray]] = Registry("light normalisation")
register_light = LIGHTS.register


@register_light("none")
def _no_light(image: np.ndarray) -> np.ndarray:
    return image


@register_light("clahe")
def clahe(image: np.ndarray) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of the lightness (CIELAB L), colours kept."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


@register_light("grey-world")
def grey_world(image: np.ndarray) -> np.ndarray:
    """Each channel scaled so that its mean is the image's mean: a colour cast removed.

    >>> grey_world(np.dstack([np.full((2, 2), v, np.uint8) for v in (60, 120, 180)]))[0, 0].tolist()
    [120, 120, 120]
    """
    x = image.astype(np.float32)
    means = x.reshape(-1, 3).mean(axis=0)
    return np.clip(x * (means.mean() / np.maximum(means, 1.0)), 0, 255).astype(np.uint8)


@register_light("gamma")
def auto_gamma(image: np.ndarray) -> np.ndarray:
    """A gamma that brings the mean lightness to mid-grey: dim images brightened, bright ones darkened.

    >>> int(auto_gamma(np.full((4, 4, 3), 32, np.uint8)).mean()) in range(120, 136)
    True
    """
    mean = float(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).mean()) / 255.0
    gamma = np.log(0.5) / np.log(min(max(mean, 1e-3), 1 - 1e-3))
    table = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma, 0, 255).astype(np.uint8)
    return cv2.LUT(image, table)


# Below this mean lightness an image counts as dim ("dim-gamma"); the studio images and most photos are above.
DIM_LIGHTNESS = 0.35


@register_light("dim-gamma")
def dim_gamma(image: np.ndarray) -> np.ndarray:
    """``gamma`` for dim images only (mean lightness below ``DIM_LIGHTNESS``); others are left as they are.

    >>> bright = np.full((4, 4, 3), 180, np.uint8)
    >>> bool((dim_gamma(bright) == bright).all()), int(dim_gamma(np.full((4, 4, 3), 40, np.uint8)).mean()) > 100
    (True, True)
    """
    if cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).mean() / 255.0 >= DIM_LIGHTNESS:
        return image
    return auto_gamma(image)


def eval_transform(size: int, policy: str, mean: Sequence[float], std: Sequence[float], light: str = "none"
                   ) -> Callable[[np.ndarray], torch.Tensor]:
    """RGB uint8 (H, W, 3) -> normalised float tensor (3, size, size), after the ``light`` normalisation."""
    normalize = A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0, p=1.0)
    shrink = A.Compose([*resize_ops(size, policy, mean, cv2.INTER_AREA), normalize])
    # Area interpolation degenerates to nearest neighbour when enlarging: small images get cubic.
    enlarge = A.Compose([*resize_ops(size, policy, mean, cv2.INTER_CUBIC), normalize])
    lighten = LIGHTS[light]

    def apply(image: np.ndarray) -> torch.Tensor:
        pipeline = enlarge if min(image.shape[:2]) < size else shrink
        out = pipeline(image=lighten(image))["image"]
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))

    return apply
