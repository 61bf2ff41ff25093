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

from core.registry import Registry

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


def eval_transform(size: int, policy: str, mean: Sequence[float], std: Sequence[float]
                   ) -> Callable[[np.ndarray], torch.Tensor]:
    """RGB uint8 (H, W, 3) -> normalised float tensor (3, size, size)."""
    normalize = A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0, p=1.0)
    shrink = A.Compose([*resize_ops(size, policy, mean, cv2.INTER_AREA), normalize])
    # Area interpolation degenerates to nearest neighbour when enlarging: small images get cubic.
    enlarge = A.Compose([*resize_ops(size, policy, mean, cv2.INTER_CUBIC), normalize])

    def apply(image: np.ndarray) -> torch.Tensor:
        pipeline = enlarge if min(image.shape[:2]) < size else shrink
        out = pipeline(image=image)["image"]
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))

    return apply
