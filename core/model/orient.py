"""Orientation learned without labels: which quarter turn brings an image upright (RotNet on a backbone).

Paintings have an up, and nearly every image of a pool is shown upright (the studio images, the
distractors, most photos). So a pool supplies its own training data: each of a seeded sample of its
images is embedded in all four quarter turns, and a linear head on the encoder's (L2-normalised)
features learns to say by how much an image is turned. A part of the sample is held out to measure the
head's accuracy and calibration and to choose, without labels, the confidence below which an image is
not trusted to the head (the lowest confidence at which held-out predictions are still right at least
``embed.orient_accuracy`` of the time). The few turned photos among the sampled images are label noise.

At embedding time (``embed.orient``, ``core.model.embed``) an image is embedded as it is, the head predicts
its turn, and a confident image is embedded (with its localised painting) at its upright turn only;
the others fall back to the mean of all the recipe's turns.

The head travels with its encoder: :class:`Orientation` is saved in the encoder file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.base.options import check_auto_or_number, option

log = logging.getLogger(__name__)

# Class k of the head: the image is turned k quarter turns clockwise from upright.
QUARTERS = (0, 90, 180, 270)


@dataclass
class OrientConfig:
    """The recipe's ``embed.orient`` section."""

    # Embed each image as it is, predict its quarter turn, then embed it (and its localised painting) at
    # its upright turn only; an image the head is unsure of falls back to the mean of embed.turns.
    enabled: bool = False
    # Where the encoder has no head yet, fit one on this many images of the pool being embedded, each in
    # its four turns, holding out this share of them to measure it and to set the threshold.
    images: int = option(1000, ge=8)
    held_out: float = option(0.2, gt=0, lt=1)
    # auto: the lowest confidence at which the held-out predictions are right at least `accuracy` of the
    # time; or a confidence in [0, 1] (1: every image falls back).
    threshold: str = "auto"
    accuracy: float = option(0.99, gt=0, le=1)

    @staticmethod
    def check(section, key: str) -> None:
        check_auto_or_number(f"{key}.threshold", section.threshold, 0, 1, "a confidence in [0, 1], e.g. 0.9")


@dataclass
class OrientationReport:
    """How the head did on the held-out images, each in its four turns."""

    images: int
    held_out: int
    accuracy: float
    # Expected calibration error over 10 confidence bins: |accuracy - confidence|, weighted by bin size.
    calibration_error: float
    threshold: float
    # Share of held-out views below the threshold (they would fall back to the mean of the turns), and
    # the accuracy of the rest.
    fallback: float
    confident_accuracy: float
    per_turn: dict[int, float]

    def line(self) -> str:
        return (f"orientation head: {self.accuracy:.3f} of {self.held_out} held-out images x 4 turns right "
                f"(calibration error {self.calibration_error:.3f}); threshold {self.threshold:.3f}: "
                f"{self.fallback:.1%} fall back, {self.confident_accuracy:.3f} right above it")


class Orientation(nn.Module):
    """A linear quarter-turn classifier on normalised features, with its confidence threshold."""

    def __init__(self, dim: int, threshold: float = 1.0):
        super().__init__()
        self.linear = nn.Linear(dim, len(QUARTERS))
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Turn probabilities (B, 4) of (B, D) features (normalised here)."""
        return F.softmax(self.linear(F.normalize(features.float(), dim=-1)), dim=-1)

    @torch.no_grad()
    def upright_turns(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: the clockwise turn (degrees) that brings it upright, and whether the head is sure.

        >>> head = Orientation(2)
        >>> _ = head.linear.weight.data.copy_(torch.tensor([[9., 0], [0, 9], [-9, 0], [0, -9]]))
        >>> _ = head.linear.bias.data.zero_(), head.threshold.fill_(0.5)
        >>> turns, sure = head.upright_turns(torch.tensor([[1., 0], [0, 1]]))
        >>> turns.tolist(), sure.tolist()  # the second image is turned 90 clockwise: 270 more brings it back
        ([0, 270], [True, True])
        """
        probs = self(features)
        confidence, turned = probs.max(dim=-1)
        return (4 - turned) % 4 * 90, confidence >= self.threshold


def sample_rows(n: int, images: int) -> np.ndarray:
    """The rows of a pool of ``n`` images a head is fitted on: ``images`` of them, seeded, sorted.

    >>> sample_rows(10, 3).tolist()
    [5, 6, 9]
    """
    return np.sort(np.random.default_rng(0).choice(n, min(images, n), replace=False))


def fit_orientation(views: np.ndarray, held_out: float, accuracy: float, threshold: float | None = None,
                    seed: int = 0, steps: int = 300) -> tuple[Orientation, OrientationReport]:
    """Train a head on ``views`` (N images x 4 turns in ``QUARTERS`` order x D, normalised) and report it.

    A ``held_out`` share of the images (all their turns) is kept out of training; the threshold is
    ``threshold`` or, when None, the lowest held-out confidence above which at least ``accuracy`` of
    the held-out predictions are right (1.0, everything falls back, where none is).
    """
    n, turns, dim = views.shape
    if turns != len(QUARTERS):
        raise ValueError(f"views must hold the {len(QUARTERS)} quarter turns of each image, got {turns}")
    order = np.random.default_rng(seed).permutation(n)
    test_n = min(n - 1, max(1, int(round(n * held_out))))
    test, train = order[:test_n], order[test_n:]
    labels = torch.arange(len(QUARTERS))

    def split(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(views[rows].reshape(-1, dim)).float(), labels.repeat(len(rows))

    x, y = split(train)
    torch.manual_seed(seed)
    head = Orientation(dim)
    optimizer = torch.optim.AdamW(head.linear.parameters(), lr=0.05, weight_decay=1e-4)
    # Normalised features are small: the logits need a large weight scale, which full-batch Adam reaches.
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.nll_loss(torch.log(head(x) + 1e-12), y)
        loss.backward()
        optimizer.step()
    xt, yt = split(test)
    with torch.no_grad():
        probs = head(xt)
    confidence, predicted = probs.max(dim=-1)
    right = (predicted == yt).numpy()
    confidence = confidence.numpy()
    chosen = choose_threshold(confidence, right, accuracy) if threshold is None else float(threshold)
    head.threshold.fill_(chosen)
    sure = confidence >= chosen
    report = OrientationReport(
        images=n, held_out=len(test), accuracy=float(right.mean()),
        calibration_error=calibration_error(confidence, right), threshold=chosen, fallback=float(1 - sure.mean()),
        confident_accuracy=float(right[sure].mean()) if sure.any() else float("nan"),
        per_turn={t: float(right[yt.numpy() == i].mean()) for i, t in enumerate(QUARTERS)})
    log.info(report.line())
    return head.eval(), report


def choose_threshold(confidence: np.ndarray, right: np.ndarray, accuracy: float) -> float:
    """The lowest confidence c such that the predictions at confidence >= c are right at least ``accuracy``
    of the time (1.0 where no such c exists), as the held-out images measure it.

    >>> choose_threshold(np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, True, False, True]), 0.75)
    0.6
    >>> choose_threshold(np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, True, False, True]), 0.9)
    0.8
    """
    order = np.argsort(-confidence, kind="stable")
    running = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(running >= accuracy)
    return float(confidence[order][ok[-1]]) if len(ok) else 1.0


def calibration_error(confidence: np.ndarray, right: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: |accuracy - mean confidence| per confidence bin, weighted by its size."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    return float(sum(abs(right[which == b].mean() - confidence[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))
