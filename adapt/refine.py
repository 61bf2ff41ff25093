"""Contrastive refinement on mined pairs: SimCLR's NT-Xent where the two views are the two images.

Each training item is a kept pair (a, b): a view of one image (a simulated visitor photo, with the
recipe's ``views.photo_p``) and a studio view of the other, in random order. The rest of the batch
are the negatives (InfoNCE). Fresh augmentations every epoch keep a few hundred pairs from being
memorised. The module, schedules, freezing options and run directory are stage 1's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from core.pixels.images import ImageReader
from ssl.augment import ViewMaker


class PairViewDataset(Dataset):
    """Item ``n``: [a view of one image of pair n, a view of the other] (see the module docstring)."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]], reader: ImageReader, views: ViewMaker, seed: int):
        if len(views.sizes) != 2:
            raise ValueError("pair refinement needs a two-view maker (ssl.augment.pair_views)")
        self.pairs = list(pairs)
        self.reader, self.views, self.seed = reader, views, seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int) -> list[torch.Tensor]:
        epoch, index = divmod(int(key), len(self.pairs))
        seeds = np.random.SeedSequence([self.seed, epoch, index]).generate_state(3)
        first, second = self.pairs[index]
        if seeds[2] % 2:
            first, second = second, first
        # View 1 of the maker is the visitor photo (with photo_p), view 0 the studio view.
        return [self.views(self.reader(first), int(seeds[0]))[1], self.views(self.reader(second), int(seeds[1]))[0]]
