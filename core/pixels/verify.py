"""Geometric verification of candidate matches: local features, ratio test, RANSAC homography.

Paintings are planar, so two photos of the same painting are related by a homography: many
correspondences that agree with one homography make a near-certain match, whatever the embedding
says. Used to fuse verified neighbours (``core.post``) and to clean mined pairs.

Cost (measured by benchmarks/postprocess.py): SIFT on a 512-px image is tens of milliseconds, a
match plus RANSAC a few; features are computed once per image and kept in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.base.options import option
from core.pixels.images import ImageReader, shrink_to

log = logging.getLogger(__name__)


@dataclass
class LocalFeatures:
    points: np.ndarray  # (N, 2) float32 pixel coordinates
    descriptors: np.ndarray  # (N, 128) float32 SIFT descriptors

    def __len__(self) -> int:
        return len(self.points)


def extract_features(image: np.ndarray, max_side: int = 512, n_features: int = 1000) -> LocalFeatures:
    """SIFT keypoints and descriptors of an RGB image shrunk to ``max_side``."""
    gray = cv2.cvtColor(shrink_to(image, max_side), cv2.COLOR_RGB2GRAY)
    keypoints, descriptors = cv2.SIFT_create(nfeatures=n_features).detectAndCompute(gray, None)
    if descriptors is None:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
    return LocalFeatures(np.float32([k.pt for k in keypoints]), descriptors.astype(np.float32))


def count_inliers(a: LocalFeatures, b: LocalFeatures, ratio: float = 0.8, reproj_px: float = 6.0) -> int:
    """Correspondences (Lowe's ratio test) consistent with one RANSAC homography; 0 if none fits."""
    if len(a) < 4 or len(b) < 4:
        return 0
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(a.descriptors, b.descriptors, k=2)
    good = [m[0] for m in pairs if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    if len(good) < 4:
        return 0
    src = a.points[[m.queryIdx for m in good]]
    dst = b.points[[m.trainIdx for m in good]]
    homography, mask = cv2.findHomography(src, dst, cv2.RANSAC, reproj_px)
    if homography is None or mask is None:
        return 0
    return int(mask.sum())


@dataclass
class VerifyConfig:
    """The recipe's ``verify`` section: how every step or stage that verifies a match does it."""

    # A pair is a match with at least this many RANSAC-homography inliers...
    min_inliers: int = option(25, ge=0)
    # ...between SIFT features of both images shrunk to this longer side.
    max_side: int = option(512, ge=64)


class Verifier:
    """Counts homography inliers between image files, extracting each file's features once; a pair with
    at least ``min_inliers`` is a match."""

    def __init__(self, reader: ImageReader | None = None, max_side: int = 512, n_features: int = 1000,
                 min_inliers: int = 25):
        self.reader = reader or ImageReader(min_side=max_side)
        self.max_side, self.n_features, self.min_inliers = max_side, n_features, min_inliers
        self._features: dict[Path, LocalFeatures] = {}

    @classmethod
    def from_config(cls, cfg) -> Verifier:
        """The verifier of a recipe's ``verify`` section."""
        return cls(max_side=int(cfg.max_side), min_inliers=int(cfg.min_inliers))

    def features(self, path: Path) -> LocalFeatures:
        if path not in self._features:
            self._features[path] = extract_features(self.reader(path), self.max_side, self.n_features)
        return self._features[path]

    def inliers(self, a: Path, b: Path) -> int:
        return count_inliers(self.features(a), self.features(b))
