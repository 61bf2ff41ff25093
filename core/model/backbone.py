"""Backbones: any timm model, its weights (hub, local file or none), pooling, encoder files.

An :class:`Encoder` maps a normalised image batch to one descriptor per image (not L2-normalised,
so statistics can look at the raw norms). It knows its own input size and normalisation, and saves
to a self-describing encoder file that :func:`build_encoder` loads back from ``weights: FILE``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from core.base.atomic import atomic_path
from core.base.errors import MissingInputError, RecipeError
from core.base.options import check_choices, option
from core.base.registry import Registry
from core.model.orient import Orientation, OrientationReport
from core.pixels.preprocess import RESIZE_POLICIES

log = logging.getLogger(__name__)

ENCODER_FORMAT = "curator-encoder/1"


@dataclass
class ModelConfig:
    """What a recipe chooses about the model (its ``model`` section)."""

    arch: str = "vit_small_patch14_dinov2"
    # "hub" (timm's hub weights), "none" (random init, asked for by name), or a file: a timm state dict
    # (.safetensors/.pth/.bin) or a Curator encoder file written by training. Unset is an error.
    weights: str | None = None
    pooling: str = "cls"
    gem_p: float = option(3.0, ge=1)
    # Input side in pixels; null takes the model's pretrained config.
    img_size: int | None = option(None, ge=8)
    resize: str = "squash"

    @staticmethod
    def check(section, key: str) -> None:
        check_choices(section, (("resize", RESIZE_POLICIES), ("pooling", POOLINGS)), key)


@dataclass
class EncoderSpec(ModelConfig):
    """Everything needed to rebuild an encoder and feed it images the way it was meant: the recipe's
    choices plus what training and the model's own config add."""

    # A learned linear map after pooling (head-only adaptation); identity when first made.
    proj: bool = False
    # A quarter-turn head on the pooled features (core.model.orient), fitted on a pool after training.
    orientation: bool = False
    # Filled from the model's pretrained config when the encoder is built.
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())

    @classmethod
    def from_config(cls, model_cfg) -> EncoderSpec:
        """The spec of a recipe's ``model`` section (or any mapping with ModelConfig's keys)."""
        chosen = {f.name: model_cfg[f.name] for f in fields(ModelConfig)}
        weights = None if chosen["weights"] is None else str(chosen["weights"])
        return cls(**{**chosen, "weights": weights, "gem_p": float(chosen["gem_p"])})


class GeM(nn.Module):
    """Generalised-mean pooling over the spatial axis of (B, N, C) tokens: (mean x^p)^(1/p).

    Neither timm nor lightly ships one. Values are clamped to ``eps`` first, as in Radenović et al.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        return tokens.float().clamp(min=self.eps).pow(p).mean(dim=1).pow(1.0 / p)


class Encoder(nn.Module):
    """A timm model without classifier plus the pooling that turns its features into one vector."""

    def __init__(self, model: nn.Module, spec: EncoderSpec):
        super().__init__()
        if spec.pooling not in POOLINGS:
            raise ValueError(f"pooling {spec.pooling!r} is not one of {tuple(POOLINGS)}")
        if spec.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize {spec.resize!r} is not one of {tuple(RESIZE_POLICIES)}")
        self.model = model
        self.spec = spec
        self.gem = GeM(spec.gem_p)
        self.proj: nn.Linear | None = None
        self.orientation: Orientation | None = Orientation(self.pooled_dim(spec.pooling)) if spec.orientation else None
        # How the head did on the held-out images of the pool it was fitted on (only where fitted here).
        self.orientation_report: OrientationReport | None = None
        if spec.proj:
            dim = self.pooled_dim(spec.pooling)
            self.proj = nn.Linear(dim, dim)
            nn.init.eye_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    @property
    def img_size(self) -> int:
        assert self.spec.img_size is not None
        return self.spec.img_size

    @property
    def size_multiple(self) -> int:
        """Input sides should be multiples of this (the patch size of a ViT, 1 otherwise)."""
        patch_embed = getattr(self.model, "patch_embed", None)
        patch = getattr(patch_embed, "patch_size", None)
        return int(patch[0]) if patch else 1

    def spatial_tokens(self, feats: torch.Tensor) -> torch.Tensor:
        """``forward_features`` output as (B, N, C) patch tokens (class and register tokens dropped)."""
        if feats.ndim == 3:  # (B, N, C) tokens: drop class and register tokens
            return feats[:, getattr(self.model, "num_prefix_tokens", 0):]
        if getattr(self.model, "output_fmt", "NCHW") == "NHWC":
            return feats.flatten(1, 2)
        return feats.flatten(2).transpose(1, 2)

    def pool(self, feats: torch.Tensor, pooling: str) -> torch.Tensor:
        """Pool ``forward_features`` output with the registered ``pooling`` (see ``POOLINGS``)."""
        return POOLINGS[pooling].pool(self, feats)

    def attach(self, head: Orientation | None, report: OrientationReport | None = None) -> None:
        """Give the encoder an orientation head fitted on its features (None: take it away, as training
        must: it changes the features the head was fitted on); saving the encoder saves the head."""
        self.orientation, self.orientation_report = head, report
        self.spec = replace(self.spec, orientation=head is not None)

    def forward_poolings(self, x: torch.Tensor, poolings: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Several poolings of one forward pass (used to compare poolings at the cost of one)."""
        feats = self.model.forward_features(x)
        return {p: self._project(p, self.pool(feats, p)) for p in poolings}

    def _project(self, pooling: str, pooled: torch.Tensor) -> torch.Tensor:
        # The projection was learned on the spec's pooling; other poolings are left as they are.
        if self.proj is None or pooling != self.spec.pooling:
            return pooled
        return self.proj(pooled.to(self.proj.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._project(self.spec.pooling, self.pool(self.model.forward_features(x), self.spec.pooling))

    def pooled_dim(self, pooling: str) -> int:
        return POOLINGS[pooling].dim(int(self.model.num_features))

    @property
    def dim(self) -> int:
        return self.pooled_dim(self.spec.pooling)

    def describe(self) -> dict:
        return {**asdict(self.spec), "dim": self.dim,
                "params": sum(p.numel() for p in self.parameters())}

    def save(self, path: str | Path) -> None:
        """Write a self-describing encoder file (atomic)."""
        payload = {"format": ENCODER_FORMAT, "spec": asdict(self.spec), "state_dict": self.state_dict()}
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)


@dataclass(frozen=True)
class Pooling:
    """How features become one vector: ``pool(encoder, features)``, and its width from the model's."""

    pool: Callable[[Encoder, torch.Tensor], torch.Tensor]
    dim: Callable[[int], int]


# The poolings ``model.pooling`` may name. A new one is a function and one ``@register_pooling`` line.
POOLINGS: Registry[Pooling] = Registry("pooling")


def register_pooling(name: str, dim: Callable[[int], int] = lambda width: width):
    """Register ``fn(encoder, features) -> (B, D) tensor`` as pooling ``name`` of width ``dim(width)``."""

    def register(fn: Callable[[Encoder, torch.Tensor], torch.Tensor]):
        POOLINGS.add(name, Pooling(fn, dim))
        return fn

    return register


@register_pooling("cls")
def cls_pooling(encoder: Encoder, feats: torch.Tensor) -> torch.Tensor:
    """The model's own pooled output: the class token of a ViT, global average pooling of a CNN."""
    return encoder.model.forward_head(feats, pre_logits=True).float()


@register_pooling("gem")
def gem_pooling(encoder: Encoder, feats: torch.Tensor) -> torch.Tensor:
    """Generalised-mean over the patch tokens (the encoder's learnable ``p``)."""
    return encoder.gem(encoder.spatial_tokens(feats))


@register_pooling("cls+gem", dim=lambda width: 2 * width)
def cls_gem_pooling(encoder: Encoder, feats: torch.Tensor) -> torch.Tensor:
    """Both, concatenated; each block normalised first, so neither dominates the cosine by its scale."""
    return torch.cat([F.normalize(cls_pooling(encoder, feats), dim=-1),
                      F.normalize(gem_pooling(encoder, feats), dim=-1)], dim=-1)


def _encoder_payload(path: Path) -> dict | None:
    """The contents of a Curator encoder file, or None for any other file."""
    if path.suffix == ".safetensors":
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    return payload if isinstance(payload, dict) and payload.get("format") == ENCODER_FORMAT else None


def _create_timm(arch: str, pretrained: bool, img_size: int | None, **kwargs) -> nn.Module:
    # ViTs take the input size (their position table is resampled at load) and dynamic sizes, which
    # multi-scale test-time augmentation needs; CNNs take neither keyword and any size anyway.
    vit_kwargs = {"dynamic_img_size": True, **({"img_size": img_size} if img_size else {})}
    try:
        return timm.create_model(arch, pretrained=pretrained, num_classes=0, **vit_kwargs, **kwargs)
    except TypeError as e:
        if "img_size" not in str(e) and "dynamic_img_size" not in str(e):
            raise
    return timm.create_model(arch, pretrained=pretrained, num_classes=0, **kwargs)


def _check_arch(arch: str) -> None:
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('.')[0][:12]}*")[:10]
        hint = f" Similar names: {', '.join(close)}." if close else ""
        raise RecipeError(f"model.arch={arch!r} is not a timm model.{hint} Fix: pick a name from "
                         "timm.list_models()")


def _load_weights_file(model: nn.Module, path: Path) -> None:
    """Load a timm state dict strictly (but for the classifier, which features do not use).

    timm's own ``pretrained_cfg_overlay=dict(file=...)`` route loads non-strictly whenever the
    classifier is dropped, so a wrong file would leave a silently random model. This uses the same
    pieces (the model's ``checkpoint_filter_fn``, which resamples ViT position tables) and checks.
    """
    timm_filter = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)

    def without_classifier(state: dict, model: nn.Module) -> dict:
        state = timm_filter(state, model) if timm_filter else state
        return {k: v for k, v in state.items() if not any(k.startswith(f"{h}.") for h in heads)}

    try:
        result = timm.models.load_checkpoint(model, str(path), strict=False, filter_fn=without_classifier)
    except Exception as e:  # a corrupt file or the wrong shapes: both mean the wrong weights
        raise MissingInputError(f"could not load model.weights={path} into {model.pretrained_cfg['architecture']}: "
                                f"{e}. Fix: check that the file holds weights for this architecture") from e
    if result.missing_keys:
        raise MissingInputError(
            f"model.weights={path} lacks {len(result.missing_keys)} of the model's weights (e.g. "
            f"{result.missing_keys[:3]}). Fix: give weights for model.arch={model.pretrained_cfg['architecture']}")
    if result.unexpected_keys:
        log.warning("model.weights=%s has %d keys the model does not use, e.g. %s", path,
                    len(result.unexpected_keys), result.unexpected_keys[:3])


def build_encoder(spec: EncoderSpec) -> Encoder:
    """Build the encoder ``spec`` describes.

    ``spec.weights``: ``hub`` downloads timm's pretrained weights, ``none`` initialises at random,
    a path loads a timm state dict (``.safetensors``/``.pth``) or a Curator encoder file. An encoder
    file carries its own architecture, pooling and input settings; ``spec`` then only chooses what
    the file does not fix (resize policy).
    """
    weights = spec.weights
    if weights is None:
        raise MissingInputError(
            f"model.weights is not set, so {spec.arch} would embed with random weights. Fix: name a recipe that "
            "sets it (e.g. python -m eval.submit recipes/submission.yaml ...), or set model.weights=FILE (a timm "
            "state dict or a Curator encoder file), model.weights=hub, or model.weights=none for a random model")
    if weights not in ("hub", "none"):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MissingInputError(
                f"model.weights={weights!r} is neither 'hub', 'none' nor an existing file. Fix: give a "
                "timm state dict (.safetensors/.pth) or a Curator encoder file, e.g. from ../shared/weights")
        payload = _encoder_payload(path)
        if payload is not None:
            return _encoder_from_payload(payload, path, resize=spec.resize)
    _check_arch(spec.arch)
    if weights == "hub":
        try:
            model = _create_timm(spec.arch, True, spec.img_size)
        except (OSError, RuntimeError) as e:
            raise MissingInputError(
                f"could not get hub weights for {spec.arch}: {e}. Fix: without network access, give a "
                "local file as model.weights (e.g. one of ../shared/weights)") from e
    else:
        model = _create_timm(spec.arch, False, spec.img_size)
        if weights == "none":
            log.warning("model.weights=none: %s starts from random weights; its embeddings mean nothing "
                        "until it is trained", spec.arch)
        else:
            _load_weights_file(model, Path(weights).expanduser())
    cfg = timm.data.resolve_model_data_config(model)
    spec = replace(spec, img_size=spec.img_size or int(cfg["input_size"][-1]),
                   mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    encoder = Encoder(model, spec)
    encoder.eval()
    log.info("encoder %s (%s weights, %s pooling, %d px, %d-d)", spec.arch, weights, spec.pooling,
             spec.img_size, encoder.dim)
    return encoder


def _encoder_from_payload(payload: dict, path: Path, resize: str | None) -> Encoder:
    fields = payload["spec"]
    spec = EncoderSpec(**{**fields, "mean": tuple(fields["mean"]), "std": tuple(fields["std"]),
                          "weights": str(path), **({"resize": resize} if resize else {})})
    encoder = Encoder(_create_timm(spec.arch, False, spec.img_size), spec)
    encoder.load_state_dict(payload["state_dict"])
    return encoder.eval()


def load_encoder(path: str | Path, resize: str | None = None) -> Encoder:
    """Load an encoder file written by :meth:`Encoder.save`."""
    payload = _encoder_payload(Path(path))
    if payload is None:
        raise MissingInputError(f"{path} is not a Curator encoder file ({ENCODER_FORMAT}). Fix: give a file "
                                "written by Encoder.save, or a timm state dict as model.weights")
    return _encoder_from_payload(payload, Path(path), resize)
