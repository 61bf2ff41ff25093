"""Training data: images decoded once per step, turned into views with per-sample seeds.

Every random choice of an epoch (which images, in which order, which augmentation) is a function of
the recipe's seed and the epoch number, not of process-wide random state. An interrupted run that
resumes at an epoch boundary therefore sees exactly the batches the uninterrupted run saw.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from core.base.errors import ImageDecodeError
from core.pixels.images import ImageReader
from ssl.augment import ViewMaker

log = logging.getLogger(__name__)


class EpochSampler(Sampler[int]):
    """A seeded shuffle (or a random subset of ``per_epoch`` images) that changes with the epoch.

    It yields ``epoch * n + index`` so the dataset knows the epoch of every request, even inside
    worker processes forked before the epoch began. Lightning calls :meth:`set_epoch`.
    """

    def __init__(self, n: int, seed: int, per_epoch: int | None = None):
        self.n, self.seed = n, seed
        self.per_epoch = min(per_epoch or n, n)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_epoch

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)[: self.per_epoch]
        return iter((self.epoch * self.n + order).tolist())


class ViewDataset(Dataset):
    """Image ``i`` of ``paths`` as a list of view tensors (see :class:`ViewMaker`)."""

    def __init__(self, paths: Sequence[Path], reader: ImageReader, views: ViewMaker, seed: int,
                 skip_corrupt: bool = False, with_index: bool = False):
        self.paths = list(paths)
        self.reader = reader
        self.views = views
        self.seed = seed
        self.skip_corrupt = skip_corrupt
        # The image's row of ``paths`` after its views (for methods with per-image targets).
        self.with_index = with_index

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int) -> list[torch.Tensor]:
        epoch, index = divmod(int(key), len(self.paths))
        for attempt in range(len(self.paths)):
            # A corrupt file is replaced by the next image (deterministically) when skipping is on.
            i = (index + attempt) % len(self.paths)
            try:
                image = self.reader(self.paths[i])
            except ImageDecodeError:
                if not self.skip_corrupt:
                    raise
                log.warning("skipped undecodable image %s", self.paths[i])
                continue
            seed = int(np.random.SeedSequence([self.seed, epoch, i]).generate_state(1)[0])
            return [*self.views(image, seed), torch.tensor(i)] if self.with_index else self.views(image, seed)
        raise ImageDecodeError(f"none of the {len(self.paths)} training images could be decoded")
