"""Batched embedding of image files with progress, and test-time augmentation: mirror, scales, quarter turns.

The result is an :class:`Embeddings`: L2-normalised float32 vectors, the image names in the same
order, and the raw descriptor norms (before normalisation) for statistics.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from core.atomic import atomic_path, atomic_write_text
from core.backbone import Encoder
from core.errors import ImageDecodeError
from core.images import ImageReader, make_reader
from core.preprocess import eval_transform

log = logging.getLogger(__name__)

# embed.turns: quarter turns (clockwise degrees) whose embeddings are averaged.
TURNS = (0, 90, 180, 270)
# embed.precision: float32, or bfloat16 autocast (1.5-3x faster on CPUs with native bf16).
PRECISIONS = ("fp32", "bf16")
NAMES_FILE = "names.json"
OLD_NAMES_FILE = "names.txt"


@dataclass
class Embeddings:
    """One L2-normalised float32 row per image, in the order of ``names``."""

    names: list[str]
    vectors: np.ndarray
    norms: np.ndarray
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.vectors) or len(self.norms) != len(self.vectors):
            raise ValueError(f"{len(self.names)} names, {len(self.vectors)} vectors, {len(self.norms)} norms")
        bad = ~np.isfinite(self.vectors).all(axis=1) if len(self.vectors) else np.zeros(0, bool)
        if bad.any():
            first = [self.names[i] for i in np.flatnonzero(bad)[:5]]
            raise ValueError(f"{int(bad.sum())} embeddings are not finite (first: {first}). Fix: check "
                             "the weights, or use embed.precision=fp32 if bf16 overflowed")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def save(self, folder: str | Path) -> None:
        """Write ``embeddings.npy``, ``norms.npy`` and ``names.json`` atomically.

        Names are a JSON list: a file name may hold any character, a newline included.
        """
        folder = Path(folder)
        for name, array in (("embeddings.npy", self.vectors), ("norms.npy", self.norms)):
            with atomic_path(folder / name) as tmp, open(tmp, "wb") as f:
                np.save(f, array)
        atomic_write_text(folder / NAMES_FILE, json.dumps(self.names, ensure_ascii=False))

    @staticmethod
    def saved_in(folder: str | Path) -> bool:
        """Whether ``folder`` holds saved embeddings (of this version or an older one)."""
        return any((Path(folder) / f).is_file() for f in (NAMES_FILE, OLD_NAMES_FILE))

    @classmethod
    def load(cls, folder: str | Path) -> Embeddings:
        folder = Path(folder)
        if (folder / NAMES_FILE).is_file():
            names = json.loads((folder / NAMES_FILE).read_text(encoding="utf-8"))
        else:  # runs written before names.json: one name a line
            names = (folder / OLD_NAMES_FILE).read_text(encoding="utf-8").splitlines()
        return cls(names, np.load(folder / "embeddings.npy"), np.load(folder / "norms.npy"))

    @classmethod
    def concat(cls, parts: Sequence[Embeddings]) -> Embeddings:
        return cls([n for p in parts for n in p.names], np.concatenate([p.vectors for p in parts]),
                   np.concatenate([p.norms for p in parts]), [s for p in parts for s in p.skipped])


class ImageFileDataset(Dataset):
    """Decodes file ``i`` and returns one tensor per scale; ``None`` for a skipped corrupt file."""

    def __init__(self, paths: Sequence[Path], reader: ImageReader,
                 transforms: Sequence[Callable[[np.ndarray], torch.Tensor]], skip_corrupt: bool = False):
        self.paths = list(paths)
        self.reader = reader
        self.transforms = list(transforms)
        self.skip_corrupt = skip_corrupt

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            image = self.reader(self.paths[i])
        except ImageDecodeError:
            if self.skip_corrupt:
                return i, None
            raise
        return i, tuple(t(image) for t in self.transforms)


def _collate(items):
    ok = [(i, views) for i, views in items if views is not None]
    skipped = [i for i, views in items if views is None]
    if not ok:
        return [], [], skipped
    index = [i for i, _ in ok]
    scales = [torch.stack([views[s] for _, views in ok]) for s in range(len(ok[0][1]))]
    return index, scales, skipped


def scale_sizes(encoder: Encoder, scales: Sequence[float]) -> list[int]:
    """Input sides for each TTA scale, rounded to the encoder's patch multiple."""
    m = encoder.size_multiple
    return [max(m, int(round(encoder.img_size * s / m)) * m) for s in scales]


def recipe_reader(recipe, encoder: Encoder) -> ImageReader:
    """The image reader of a recipe's ``data`` section, decoding for the largest TTA input size."""
    return make_reader(recipe.data, max(scale_sizes(encoder, recipe.embed.scales)))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def variant_name(pooling: str, flip: bool) -> str:
    return f"{pooling}+flip" if flip else pooling


def embed_variants(encoder: Encoder, paths: Sequence[Path], names: Sequence[str], *,
                   poolings: Sequence[str] | None = None, flips: Sequence[bool] = (False,),
                   scales: Sequence[float] = (1.0,), turns: Sequence[int] = (0,), batch_size: int = 32,
                   num_workers: int = 2,
                   precision: str = "fp32", device: str = "auto", reader: ImageReader | None = None,
                   skip_corrupt: bool = False, progress: bool = True, desc: str = "embed"
                   ) -> dict[str, Embeddings]:
    """Embed ``paths`` once per (pooling, flip) variant, sharing decoding and forward passes.

    Each variant's descriptor is the mean of the L2-normalised descriptors of its views (every
    scale, every quarter turn in ``turns`` (clockwise degrees), and the mirrored image when flipping),
    normalised again. Keys: ``variant_name``.
    """
    if not turns or any(t not in TURNS for t in turns):
        raise ValueError(f"turns={list(turns)} must be a non-empty list from {TURNS}")
    if len(paths) != len(names):
        raise ValueError(f"{len(paths)} paths but {len(names)} names")
    poolings = tuple(poolings or (encoder.spec.pooling,))
    sizes = scale_sizes(encoder, scales)
    transforms = [eval_transform(s, encoder.spec.resize, encoder.spec.mean, encoder.spec.std) for s in sizes]
    reader = reader or ImageReader(min_side=max(sizes))
    dataset = ImageFileDataset(paths, reader, transforms, skip_corrupt)
    dev = resolve_device(device)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate,
                        pin_memory=dev.type == "cuda")
    encoder = encoder.to(dev).eval()
    autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext())
    keys = [(p, f) for p in poolings for f in flips]
    sums: dict[tuple[str, bool], list[torch.Tensor]] = {k: [] for k in keys}
    norm_sums: dict[tuple[str, bool], list[torch.Tensor]] = {k: [] for k in keys}
    order: list[int] = []
    skipped: list[int] = []
    start = time.perf_counter()
    bar = tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress, dynamic_ncols=True,
               mininterval=1.0)
    with torch.inference_mode(), autocast:
        for index, batches, bad in loader:
            skipped.extend(bad)
            bar.update(len(index) + len(bad))
            if not index:
                continue
            order.extend(index)
            acc = {k: 0.0 for k in keys}
            raw = {k: 0.0 for k in keys}
            for scaled in batches:
                scaled = scaled.to(dev, non_blocking=True)
                for turn in turns:
                    # Inputs are square, so a quarter turn keeps their shape; rot90 turns counter-clockwise.
                    batch = torch.rot90(scaled, k=-turn // 90, dims=(2, 3)) if turn else scaled
                    views = {False: batch, True: torch.flip(batch, dims=[3])} if True in flips else {False: batch}
                    pooled = {f: encoder.forward_poolings(x, poolings) for f, x in views.items()}
                    for p, f in keys:
                        used = [pooled[False][p]] + ([pooled[True][p]] if f else [])
                        for d in used:
                            d = d.float()
                            acc[(p, f)] = acc[(p, f)] + F.normalize(d, dim=-1)
                            raw[(p, f)] = raw[(p, f)] + d.norm(dim=-1) / (len(used) * len(batches) * len(turns))
            for k in keys:
                sums[k].append(F.normalize(acc[k], dim=-1).cpu())
                norm_sums[k].append(raw[k].cpu())
    bar.close()
    elapsed = time.perf_counter() - start
    log.info("%s: %d images in %.1f s (%.1f img/s)%s", desc, len(order), elapsed,
             len(order) / max(elapsed, 1e-9), f", {len(skipped)} skipped" if skipped else "")
    skipped_names = [names[i] for i in sorted(skipped)]
    for name in skipped_names:
        log.warning("skipped undecodable image %s", name)
    if paths and not order:
        raise ImageDecodeError(f"none of the {len(paths)} images could be decoded (first: {skipped_names[:3]}; "
                               "each is named in the log). Fix: re-export or replace them, or point data.* to "
                               "the right folder")
    result = {}
    for p, f in keys:
        vectors = torch.cat(sums[(p, f)]).numpy() if order else np.zeros((0, encoder.pooled_dim(p)), np.float32)
        norms = torch.cat(norm_sums[(p, f)]).numpy() if order else np.zeros(0, np.float32)
        result[variant_name(p, f)] = Embeddings([names[i] for i in order], vectors.astype(np.float32),
                                                norms.astype(np.float32), skipped_names)
    return result


def embed_images(encoder: Encoder, paths: Sequence[Path], names: Sequence[str], embed_cfg, *,
                 reader: ImageReader | None = None, skip_corrupt: bool = False, desc: str = "embed"
                 ) -> Embeddings:
    """Embed ``paths`` with the encoder's pooling and the TTA of ``embed_cfg`` (the recipe's ``embed``)."""
    variants = embed_variants(
        encoder, paths, names, flips=(bool(embed_cfg.flip),), scales=tuple(embed_cfg.scales),
        turns=tuple(int(t) for t in embed_cfg.turns),
        batch_size=embed_cfg.batch_size, num_workers=embed_cfg.num_workers,
        precision=embed_cfg.precision, device=embed_cfg.device, reader=reader,
        skip_corrupt=skip_corrupt, progress=embed_cfg.progress, desc=desc)
    return variants[variant_name(encoder.spec.pooling, bool(embed_cfg.flip))]
