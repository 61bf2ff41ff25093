"""Batched embedding of image files with progress, and test-time augmentation: mirror, scales, views.

An image's views are its quarter turns (``embed.turns``) and, with ``embed.crop``, the same turns
of the painting localised in it (``core.pixels.localise``). ``embed.combine`` makes them one embedding:
``mean`` averages them; ``gate`` keeps the plain view unless another one's nearest neighbour in the
pool is clearly closer (``core.vectors.gate``).

The result is an :class:`Embeddings`: L2-normalised float32 vectors, the image names in the same
order, the raw descriptor norms (before normalisation) for statistics and, for the gate, each view.
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

from core.base.atomic import atomic_path, atomic_write_text
from core.base.errors import ImageDecodeError, RecipeError
from core.base.options import check_auto_or_number, check_choices, option
from core.model.backbone import Encoder
from core.model.orient import QUARTERS, Orientation, OrientConfig, fit_orientation, sample_rows
from core.pixels.images import ImageReader, make_reader
from core.pixels.localise import painting_crops
from core.pixels.preprocess import LIGHTS, eval_transform
from core.vectors.gate import gated_vectors

log = logging.getLogger(__name__)

# embed.turns: quarter turns (clockwise degrees) whose embeddings are averaged.
TURNS = QUARTERS
# embed.precision: float32, bfloat16 autocast (1.5-3x faster where bf16 is native, several times slower
# where it is emulated), or auto: bf16 where native (resolve_precision).
PRECISIONS = ("auto", "fp32", "bf16")
# embed.combine: how an image's views become one embedding.
COMBINES = ("mean", "gate")
NAMES_FILE = "names.json"
VIEWS_FILE, VIEW_NAMES_FILE, UPRIGHT_FILE = "views.npy", "views.json", "upright.npy"


@dataclass
class EmbedConfig:
    batch_size: int = option(32, ge=1)
    num_workers: int = option(2, ge=0)
    flip: bool = False
    scales: list[float] = field(default_factory=lambda: [1.0])
    # Quarter-turn TTA: the mean of the embeddings of these turns (clockwise degrees); [0, 90, 180, 270]
    # makes an embedding blind to quarter turns at 4x the cost.
    turns: list[int] = field(default_factory=lambda: [0])
    # Also embed the painting localised in each image (core.pixels.localise: GrabCut, then the quadrilateral
    # warped upright), at the same turns: the crop is one more view.
    crop: bool = False
    # A photo of several paintings side by side: the crop view is the normalised sum of up to this
    # many paintings' embeddings. 1 (the largest only) measured best for Hit@3 (docs/results/views.md);
    # 3 finds more of a photo's paintings in its top 3.
    max_paintings: int = option(1, ge=1)
    # How an image's views become one embedding: "mean" (averaged), or "gate": the image as it is,
    # unless another view's nearest image in the pool is closer by more than gate_margin (core.vectors.gate).
    combine: str = "mean"
    # A cosine margin, or "auto": median + 6 robust standard deviations of the pool's own gains.
    gate_margin: str = "auto"
    # fp32, bf16, or auto: bf16 where the device runs it natively (core.model.embed.resolve_precision).
    precision: str = "auto"
    device: str = "auto"
    progress: bool = True
    # Orientation learned without labels (core.model.orient): the upright turn only, where it is sure.
    orient: OrientConfig = field(default_factory=OrientConfig)
    # A light normalisation applied to every image before it is resized (core.pixels.preprocess.LIGHTS):
    # none, clahe, grey-world, gamma, or dim-gamma (gamma for dim images only).
    light: str = "none"

    @staticmethod
    def check(section, key: str) -> None:
        """Choices, scales, turns and what the gate needs: what ranges alone cannot say."""
        check_choices(section, (("precision", PRECISIONS), ("combine", COMBINES), ("light", LIGHTS)), key)
        if not section.scales or any(s <= 0 for s in section.scales):
            raise RecipeError(f"{key}.scales={list(section.scales)} must be a non-empty list of positive factors")
        turns = list(section.turns)
        if not turns or any(t not in TURNS for t in turns) or len(set(turns)) != len(turns):
            raise RecipeError(f"{key}.turns={turns} must list distinct quarter turns from {TURNS}, "
                              "e.g. [0] (none) or [0,90,180,270]")
        if section.combine == "gate":
            if turns[0] != 0 or (len(turns) < 2 and not section.crop):
                raise RecipeError(f"{key}.combine=gate chooses among views, and view 0 must be the image as it is: "
                                  f"{key}.turns={turns} must start with 0 and give a second view "
                                  "(e.g. [0,180], or embed.crop=true)")
            check_auto_or_number(f"{key}.gate_margin", section.gate_margin, 0, float("inf"),
                                 "a cosine margin >= 0, e.g. 0.15")
            if section.orient.enabled:
                raise RecipeError(f"{key}.combine=gate and {key}.orient.enabled=true both choose an image's views. "
                                  f"Fix: one of them, e.g. {key}.combine=mean")


@dataclass
class Embeddings:
    """One L2-normalised float32 row per image, in the order of ``names``."""

    names: list[str]
    vectors: np.ndarray
    norms: np.ndarray
    skipped: list[str] = field(default_factory=list)
    # (n, V, d) unit rows, one per view (view_names), kept where the views are gated over a pool.
    views: np.ndarray | None = None
    view_names: list[str] = field(default_factory=list)
    # Oriented embeddings (embed.orient): per row the clockwise turn that was applied, -1 where the
    # orientation head was unsure and the row is the mean of every turn.
    upright: np.ndarray | None = None
    # Forward passes of the model per image it took (a measure of the embedding's cost).
    forwards_per_image: float | None = None

    def __post_init__(self) -> None:
        if len(self.names) != len(self.vectors) or len(self.norms) != len(self.vectors):
            raise ValueError(f"{len(self.names)} names, {len(self.vectors)} vectors, {len(self.norms)} norms")
        if self.views is not None and self.views.shape[:2] != (len(self.vectors), len(self.view_names)):
            raise ValueError(f"views of shape {self.views.shape} for {len(self.vectors)} rows and view names "
                             f"{self.view_names}")
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
        """Write ``embeddings.npy``, ``norms.npy`` and ``names.json`` (and the views, where kept) atomically.

        Names are a JSON list: a file name may hold any character, a newline included.
        """
        folder = Path(folder)
        arrays = [("embeddings.npy", self.vectors), ("norms.npy", self.norms)]
        if self.views is not None:
            arrays.append((VIEWS_FILE, self.views))
            atomic_write_text(folder / VIEW_NAMES_FILE, json.dumps(self.view_names))
        if self.upright is not None:
            arrays.append((UPRIGHT_FILE, self.upright))
        for name, array in arrays:
            with atomic_path(folder / name) as tmp, open(tmp, "wb") as f:
                np.save(f, array)
        atomic_write_text(folder / NAMES_FILE, json.dumps(self.names, ensure_ascii=False))

    @staticmethod
    def saved_in(folder: str | Path) -> bool:
        """Whether ``folder`` holds saved embeddings."""
        return (Path(folder) / NAMES_FILE).is_file()

    @classmethod
    def load(cls, folder: str | Path) -> Embeddings:
        folder = Path(folder)
        names = json.loads((folder / NAMES_FILE).read_text(encoding="utf-8"))
        views, view_names = None, []
        if (folder / VIEWS_FILE).is_file():
            views, view_names = np.load(folder / VIEWS_FILE), json.loads((folder / VIEW_NAMES_FILE).read_text())
        upright = np.load(folder / UPRIGHT_FILE) if (folder / UPRIGHT_FILE).is_file() else None
        return cls(names, np.load(folder / "embeddings.npy"), np.load(folder / "norms.npy"), [], views, view_names,
                   upright)

    @classmethod
    def concat(cls, parts: Sequence[Embeddings]) -> Embeddings:
        """The rows of ``parts`` in order; views (and upright turns) are kept when every part has them."""
        same_views = all(p.views is not None and p.view_names == parts[0].view_names for p in parts)
        oriented = all(p.upright is not None for p in parts)
        return cls([n for p in parts for n in p.names], np.concatenate([p.vectors for p in parts]),
                   np.concatenate([p.norms for p in parts]), [s for p in parts for s in p.skipped],
                   np.concatenate([p.views for p in parts]) if same_views else None,
                   list(parts[0].view_names) if same_views else [],
                   np.concatenate([p.upright for p in parts]) if oriented else None)

    def with_views(self, names: Sequence[str]) -> Embeddings:
        """Only the views ``names``, each row their normalised mean (as if embedded with those views)."""
        views = self.views[:, [self.view_names.index(v) for v in names]]
        vectors = F.normalize(torch.from_numpy(views.sum(axis=1)), dim=-1).numpy()
        return Embeddings(self.names, vectors, self.norms, self.skipped, views, list(names))

    def oriented(self, head: Orientation, turns: Sequence[int], crop: bool) -> Embeddings:
        """What an oriented embedding (``embed.orient``) of these images gives, from the views this one kept:
        each row at its upright turn (with its crop) where the head is sure of its plain view, else the
        mean of the views of ``turns``."""
        upright, sure = head.upright_turns(torch.from_numpy(self.views[:, self.view_names.index(view_name(False, 0))]))
        upright, sure = upright.numpy(), sure.numpy()
        crops = (False, True) if crop else (False,)
        vectors = self.with_views([view_name(c, t) for c in crops for t in turns]).vectors.copy()
        for turn in TURNS:
            rows = sure & (upright == turn)
            if rows.any():
                taken = self.views[rows][:, [self.view_names.index(view_name(c, turn)) for c in crops]].sum(axis=1)
                vectors[rows] = F.normalize(torch.from_numpy(taken), dim=-1).numpy()
        return Embeddings(self.names, vectors, self.norms, self.skipped, upright=np.where(sure, upright, -1))

    def gated(self, margin: float | None = None) -> Embeddings:
        """Each row becomes the view the gate keeps over this whole pool (``core.vectors.gate``); as it is
        without views."""
        if self.views is None:
            return self
        vectors = gated_vectors(self.views, self.view_names, margin)
        return Embeddings(self.names, vectors, self.norms, self.skipped, self.views, self.view_names)


class ImageFileDataset(Dataset):
    """Decodes file ``i`` and returns one tensor per scale and, with ``crop``, one such tuple per
    painting localised in it (the image itself where none is found); ``None`` for a skipped corrupt file."""

    def __init__(self, paths: Sequence[Path], reader: ImageReader,
                 transforms: Sequence[Callable[[np.ndarray], torch.Tensor]], skip_corrupt: bool = False,
                 crop: bool = False, max_paintings: int = 1):
        self.paths = list(paths)
        self.reader = reader
        self.transforms = list(transforms)
        self.skip_corrupt = skip_corrupt
        self.crop = crop
        self.max_paintings = max_paintings

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            image = self.reader(self.paths[i])
        except ImageDecodeError:
            if self.skip_corrupt:
                return i, None, ()
            raise
        crops = painting_crops(image, self.max_paintings) if self.crop else []
        return i, tuple(t(image) for t in self.transforms), tuple(tuple(t(c) for t in self.transforms) for c in crops)


def _collate(items):
    """(dataset rows, one batch per scale, one batch of every crop per scale, each crop's row in the
    batch, skipped dataset rows)."""
    ok = [item for item in items if item[1] is not None]
    skipped = [i for i, scales, _ in items if scales is None]
    index = [i for i, _, _ in ok]
    scales = [torch.stack([item[1][s] for item in ok]) for s in range(len(ok[0][1]))] if ok else []
    crops = [(row, c) for row, item in enumerate(ok) for c in item[2]]
    crop_scales = [torch.stack([c[s] for _, c in crops]) for s in range(len(crops[0][1]))] if crops else []
    owners = torch.tensor([row for row, _ in crops], dtype=torch.long)
    return index, scales, crop_scales, owners, skipped


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


def native_bf16(dev: torch.device) -> bool:
    """Whether ``dev`` computes bfloat16 natively: a GPU that supports it, or a CPU oneDNN runs bf16 on
    (AVX-512 or AMX). Elsewhere bf16 autocast is emulated: 7x slower than float32 on an AVX2-only
    AMD EPYC (ViT-S/14, 1.6 against 10.8 img/s)."""
    if dev.type == "cuda":
        # Emulated bf16 counts as "supported" by default: Kaggle's T4 and P100 (before Ampere) emulate it.
        return torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        return dev.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def resolve_precision(precision: str, dev: torch.device) -> str:
    """``fp32`` or ``bf16``: ``auto`` is bf16 where ``dev`` runs it natively."""
    if precision == "auto":
        return "bf16" if native_bf16(dev) else "fp32"
    return precision


def variant_name(pooling: str, flip: bool) -> str:
    return f"{pooling}+flip" if flip else pooling


def view_name(crop: bool, turn: int) -> str:
    """The name of a view in ``Embeddings.view_names``.

    >>> view_name(False, 0), view_name(True, 180)
    ('0', 'crop+180')
    """
    return f"crop+{turn}" if crop and turn else "crop" if crop else str(turn)


def embed_variants(encoder: Encoder, paths: Sequence[Path], names: Sequence[str], *,
                   poolings: Sequence[str] | None = None, flips: Sequence[bool] = (False,),
                   scales: Sequence[float] = (1.0,), turns: Sequence[int] = (0,), crop: bool = False,
                   max_paintings: int = 1, keep_views: bool = False, orientation: Orientation | None = None,
                   light: str = "none",
                   batch_size: int = 32, num_workers: int = 2, precision: str = "fp32", device: str = "auto",
                   reader: ImageReader | None = None, skip_corrupt: bool = False, progress: bool = True,
                   desc: str = "embed") -> dict[str, Embeddings]:
    """Embed ``paths`` once per (pooling, flip) variant, sharing decoding and forward passes.

    An image's views are its quarter turns ``turns`` (clockwise degrees) and, with ``crop``, the same
    turns of its localised paintings (up to ``max_paintings``; a crop view's descriptor is the
    normalised sum of its paintings'). A view's descriptor is the sum of the L2-normalised descriptors
    of every scale (and of the mirrored image when flipping); an image's vector is the normalised sum
    over its views; its raw norm is that of the image's own descriptors. ``keep_views`` also keeps each
    view, normalised (``Embeddings.views``, in the order of ``view_name``). Keys: ``variant_name``.

    With an ``orientation`` head, each image is embedded as it is first; an image the head is sure of
    then takes only its upright turn (and its crop at that turn), the others every view of ``turns``
    (``Embeddings.upright`` says which: the turn applied, or -1).
    """
    if not turns or any(t not in TURNS for t in turns):
        raise ValueError(f"turns={list(turns)} must be a non-empty list from {TURNS}")
    if len(paths) != len(names):
        raise ValueError(f"{len(paths)} paths but {len(names)} names")
    if orientation is not None and keep_views:
        raise ValueError("an oriented embedding takes different views per image: it keeps none")
    poolings = tuple(poolings or (encoder.spec.pooling,))
    sizes = scale_sizes(encoder, scales)
    transforms = [eval_transform(s, encoder.spec.resize, encoder.spec.mean, encoder.spec.std, light) for s in sizes]
    reader = reader or ImageReader(min_side=max(sizes))
    dataset = ImageFileDataset(paths, reader, transforms, skip_corrupt, crop, max_paintings)
    dev = resolve_device(device)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate,
                        pin_memory=dev.type == "cuda")
    encoder = encoder.to(dev).eval()
    bf16 = resolve_precision(precision, dev) == "bf16"
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    keys = [(p, f) for p in poolings for f in flips]
    crops = (False, True) if crop else (False,)
    # Oriented: any turn may be the upright one, so every turn is a possible view.
    views_of = [(c, t) for c in crops for t in (TURNS if orientation is not None else turns)]
    fallback = torch.tensor([t in turns for _, t in views_of], device=dev)
    sums: dict[tuple[str, bool], list[torch.Tensor]] = {k: [] for k in keys}
    kept: dict[tuple[str, bool], list[torch.Tensor]] = {k: [] for k in keys}
    norm_sums: dict[tuple[str, bool], list[torch.Tensor]] = {k: [] for k in keys}
    upright: list[torch.Tensor] = []
    order: list[int] = []
    skipped: list[int] = []
    forwards = 0
    start = time.perf_counter()
    bar = tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress, dynamic_ncols=True,
               mininterval=1.0)
    with torch.inference_mode(), autocast:
        for index, batches, crop_batches, owners, bad in loader:
            skipped.extend(bad)
            bar.update(len(index) + len(bad))
            if not index:
                continue
            order.extend(index)
            owners = owners.to(dev)
            first = None  # the images as they are, at the first scale: what the orientation head reads
            wanted = fallback.expand(len(index), -1).clone()
            if orientation is not None:
                first = encoder.forward_poolings(batches[0].to(dev), poolings)
                forwards += len(index)
                turn, sure = orientation.upright_turns(first[encoder.spec.pooling])
                chosen = torch.tensor([t for _, t in views_of], device=dev)[None, :] == turn[:, None]
                wanted[sure] = chosen[sure]
                upright.append(torch.where(sure, turn, -1).cpu())
            acc = {k: torch.zeros(len(index), len(views_of), encoder.pooled_dim(k[0]), device=dev) for k in keys}
            raw = {k: torch.zeros(len(index), device=dev) for k in keys}
            own_views = torch.zeros(len(index), device=dev)
            for cropped, scaled_batches in ((False, batches), (True, crop_batches)):
                for s, scaled in enumerate(scaled_batches):
                    scaled = scaled.to(dev, non_blocking=True)
                    for v, (c, turn) in enumerate(views_of):
                        rows = wanted[:, v].nonzero().flatten()
                        if c != cropped or not len(rows):
                            continue
                        # The images that take this view (for crops: every painting found in them).
                        items = torch.isin(owners, rows).nonzero().flatten() if cropped else rows
                        x = scaled if len(items) == len(scaled) else scaled[items]
                        # Inputs are square, so a quarter turn keeps their shape; rot90 turns counter-clockwise.
                        x = torch.rot90(x, k=-turn // 90, dims=(2, 3)) if turn else x
                        inputs = {False: x, True: torch.flip(x, dims=[3])} if True in flips else {False: x}
                        pooled = {}
                        for f, batch in inputs.items():
                            if first is not None and not (cropped or s or turn or f):
                                pooled[f] = {p: d[rows] for p, d in first.items()}  # embedded above
                            else:
                                pooled[f] = encoder.forward_poolings(batch, poolings)
                                forwards += len(batch)
                        if not cropped:
                            own_views[rows] += 1
                        for p, f in keys:
                            used = [pooled[False][p]] + ([pooled[True][p]] if f else [])
                            for d in used:
                                d = d.float()
                                unit = F.normalize(d, dim=-1)
                                if cropped:  # several paintings in one photo: their normalised sum
                                    unit = F.normalize(torch.zeros(len(index), d.shape[1], device=d.device)
                                                       .index_add_(0, owners[items], unit), dim=-1)[rows]
                                else:
                                    raw[(p, f)][rows] += d.norm(dim=-1) / len(used)
                                acc[(p, f)][rows, v] += unit
            for k in keys:
                sums[k].append(F.normalize(acc[k].sum(dim=1), dim=-1).cpu())
                if keep_views:
                    kept[k].append(F.normalize(acc[k], dim=-1).cpu())
                norm_sums[k].append((raw[k] / own_views).cpu())
    bar.close()
    elapsed = time.perf_counter() - start
    per_image = forwards / max(len(order), 1) / len(flips)
    log.info("%s: %d images in %.1f s (%.1f img/s), %.2f forward passes per image%s", desc, len(order), elapsed,
             len(order) / max(elapsed, 1e-9), per_image, f", {len(skipped)} skipped" if skipped else "")
    skipped_names = [names[i] for i in sorted(skipped)]
    for name in skipped_names:
        log.warning("skipped undecodable image %s", name)
    if paths and not order:
        raise ImageDecodeError(f"none of the {len(paths)} images could be decoded (first: {skipped_names[:3]}; "
                               "each is named in the log). Fix: re-export or replace them, or point data.* to "
                               "the right folder")
    turned = torch.cat(upright).numpy().astype(np.int16) if upright else None
    if turned is not None:
        log.info("%s: orientation sure of %d of %d images (%d turned upright), %d fall back to the mean of turns %s",
                 desc, int((turned >= 0).sum()), len(turned), int((turned > 0).sum()), int((turned < 0).sum()),
                 list(turns))
    result = {}
    for p, f in keys:
        dim = encoder.pooled_dim(p)
        vectors = torch.cat(sums[(p, f)]).numpy() if order else np.zeros((0, dim), np.float32)
        norms = torch.cat(norm_sums[(p, f)]).numpy() if order else np.zeros(0, np.float32)
        views = None
        if keep_views:
            views = torch.cat(kept[(p, f)]).numpy() if order else np.zeros((0, len(views_of), dim), np.float32)
        result[variant_name(p, f)] = Embeddings([names[i] for i in order], vectors.astype(np.float32),
                                                norms.astype(np.float32), skipped_names,
                                                None if views is None else views.astype(np.float32),
                                                [view_name(c, t) for c, t in views_of] if keep_views else [],
                                                turned, per_image)
    return result


def embed_images(encoder: Encoder, paths: Sequence[Path], names: Sequence[str], embed_cfg, *,
                 reader: ImageReader | None = None, skip_corrupt: bool = False, desc: str = "embed"
                 ) -> Embeddings:
    """Embed ``paths`` with the encoder's pooling and the TTA of ``embed_cfg`` (the recipe's ``embed``).

    With ``embed.combine=gate`` the views are gated over these images (``Embeddings.gated``) and kept,
    so a caller that joins more images to them can gate the joint pool again.
    """
    gate = embed_cfg.combine == "gate"
    orientation = orientation_of(encoder, paths, names, embed_cfg, reader, skip_corrupt) \
        if embed_cfg.orient.enabled else None
    variants = embed_variants(
        encoder, paths, names, flips=(bool(embed_cfg.flip),), scales=tuple(embed_cfg.scales),
        turns=tuple(int(t) for t in embed_cfg.turns), crop=bool(embed_cfg.crop),
        max_paintings=int(embed_cfg.max_paintings), keep_views=gate, orientation=orientation,
        light=str(embed_cfg.light),
        batch_size=embed_cfg.batch_size, num_workers=embed_cfg.num_workers,
        precision=embed_cfg.precision, device=embed_cfg.device, reader=reader,
        skip_corrupt=skip_corrupt, progress=embed_cfg.progress, desc=desc)
    emb = variants[variant_name(encoder.spec.pooling, bool(embed_cfg.flip))]
    return emb.gated(gate_margin(embed_cfg)) if gate else emb


def orientation_of(encoder: Encoder, paths: Sequence[Path], names: Sequence[str], embed_cfg,
                   reader: ImageReader | None = None, skip_corrupt: bool = False) -> Orientation:
    """The encoder's orientation head, fitted first on these images where it has none (``embed.orient``).

    A seeded sample of ``embed.orient.images`` images is embedded in its four turns (at the first scale,
    as the head reads them), the head is fitted and attached to the encoder (:meth:`Encoder.attach`), so
    every later embedding with this encoder (the synthetic photos of an evaluation, say) uses the same
    head, and saving the encoder saves it. A numeric ``embed.orient.threshold`` overrides the head's.
    """
    cfg = embed_cfg.orient
    if encoder.orientation is None:
        rows = sample_rows(len(paths), int(cfg.images))
        sample = embed_variants(
            encoder, [paths[i] for i in rows], [names[i] for i in rows], scales=tuple(embed_cfg.scales)[:1],
            turns=TURNS, keep_views=True, light=str(embed_cfg.light), batch_size=embed_cfg.batch_size,
            num_workers=embed_cfg.num_workers,
            precision=embed_cfg.precision, device=embed_cfg.device, reader=reader, skip_corrupt=skip_corrupt,
            progress=embed_cfg.progress, desc="orientation: embed sample in 4 turns")[encoder.spec.pooling]
        head, report = fit_orientation(sample.views, float(cfg.held_out), float(cfg.accuracy))
        encoder.attach(head, report)
    if str(cfg.threshold) != "auto":
        encoder.orientation.threshold.fill_(float(cfg.threshold))
    return encoder.orientation


def gate_margin(embed_cfg) -> float | None:
    """``embed.gate_margin`` as a number, or None for the margin the pool sets (``auto``)."""
    return None if str(embed_cfg.gate_margin) == "auto" else float(embed_cfg.gate_margin)


def recipe_views(embed_cfg) -> list[str]:
    """The view names ``embed_cfg`` embeds (:func:`view_name`), in ``Embeddings.view_names`` order."""
    crops = (False, True) if embed_cfg.crop else (False,)
    return [view_name(c, int(t)) for c in crops for t in embed_cfg.turns]


def select_views(emb: Embeddings, embed_cfg) -> Embeddings:
    """``emb`` (which kept its views) as ``embed_cfg`` would have embedded it: its views, then their
    mean or the gate over ``emb``'s rows."""
    subset = emb.with_views(recipe_views(embed_cfg))
    return subset.gated(gate_margin(embed_cfg)) if embed_cfg.combine == "gate" else subset
