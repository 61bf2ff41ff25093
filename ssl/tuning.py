"""Which weights an adaptation run may change, and how fast: the guard rails around pretrained features.

Modes (``tune.mode``):

- ``last-blocks`` (default): only the last ``tune.last_blocks`` layer groups of timm's
  ``group_matcher`` train (for a ViT, its final blocks; the final norm belongs to the last one).
  Frozen groups run without gradients, so they cost a forward pass only: the CPU-friendly mode.
- ``full``: every weight trains, with layer-wise learning-rate decay.
- ``lora``: the backbone stays frozen; low-rank adapters (peft) on the linear and conv layers of the
  last ``tune.last_blocks`` groups train, and are merged into the weights at export, so the encoder
  file is a plain timm model again.
- ``head``: the backbone stays frozen; a linear map after pooling (identity at the start) trains.

In every mode the learning rate of layer group ``i`` of ``n`` is ``lr * layer_decay ** (n - 1 - i)``
(timm's ``param_groups_layer_decay``): the top adapts most, the bottom least.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from timm.models import group_parameters
from timm.optim import param_groups_layer_decay
from torch import nn

from core.base.errors import RecipeError
from core.base.options import option
from core.base.registry import Registry
from core.model.backbone import Encoder

log = logging.getLogger(__name__)


@dataclass
class TuneConfig:
    """Which weights a training stage may change (``tune.mode`` is one of ``TUNE_MODES`` below)."""

    mode: str = "last-blocks"
    # Layer groups trained from the top (timm's group_matcher: a ViT block, its final norm with the
    # last one); also where LoRA adapters go. 0 with mode=lora/last-blocks is refused.
    last_blocks: int = option(2, ge=0)
    # Learning-rate factor per layer group going down (1.0: the same rate everywhere).
    layer_decay: float = option(0.75, gt=0, le=1)
    lora_rank: int = option(8, ge=1)
    lora_alpha: float = option(16.0, gt=0)



def layer_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names of ``model`` by layer group, bottom to top (timm's fine-grained groups)."""
    groups = group_parameters(model, model.group_matcher(coarse=False))
    return [groups[k] for k in sorted(groups)]


def _top_groups(model: nn.Module, k: int) -> list[str]:
    groups = layer_groups(model)
    if not 1 <= k <= len(groups):
        raise RecipeError(f"tune.last_blocks={k} is outside 1..{len(groups)} (the layer groups of this model)")
    return [name for group in groups[-k:] for name in group]


def _inject_lora(model: nn.Module, params: list[str], rank: int, alpha: float) -> None:
    # Imported here: peft pulls in transformers, which takes seconds to import and only LoRA needs.
    from peft import LoraConfig, inject_adapter_in_model

    modules = sorted({n.rsplit(".", 1)[0] for n in params})
    targets = [m for m in modules if isinstance(model.get_submodule(m), nn.Linear | nn.Conv2d)]
    if not targets:
        raise RecipeError("tune.mode=lora found no linear or conv layer in the last tune.last_blocks groups. "
                          "Fix: raise tune.last_blocks or use tune.mode=last-blocks")
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0), model)
    log.info("LoRA rank %d on %d layers, e.g. %s", rank, len(targets), targets[:2])


# How a mode marks what trains: ``fn(encoder, tune_cfg) -> encoder`` (the same one, or a copy with
# more parts). A new mode is a function and one ``@register_tune_mode`` line.
TuneMode = Callable[[Encoder, Any], Encoder]
TUNE_MODES: Registry[TuneMode] = Registry("tuning mode")
register_tune_mode = TUNE_MODES.register


@register_tune_mode("full")
def _full(encoder: Encoder, tune_cfg) -> Encoder:
    return encoder.requires_grad_(True)


@register_tune_mode("last-blocks")
def _last_blocks(encoder: Encoder, tune_cfg) -> Encoder:
    encoder.requires_grad_(False)
    names = set(_top_groups(encoder.model, int(tune_cfg.last_blocks)))
    for name, p in encoder.model.named_parameters():
        p.requires_grad_(name in names)
    return encoder


@register_tune_mode("lora")
def _lora(encoder: Encoder, tune_cfg) -> Encoder:
    encoder.requires_grad_(False)
    _inject_lora(encoder.model, _top_groups(encoder.model, int(tune_cfg.last_blocks)), int(tune_cfg.lora_rank),
                 float(tune_cfg.lora_alpha))
    for name, p in encoder.model.named_parameters():
        p.requires_grad_("lora_" in name)
    return encoder


@register_tune_mode("head")
def _head(encoder: Encoder, tune_cfg) -> Encoder:
    if not encoder.spec.proj:
        with_proj = Encoder(encoder.model, replace(encoder.spec, proj=True))
        with_proj.gem.load_state_dict(encoder.gem.state_dict())
        encoder = with_proj
    encoder.requires_grad_(False)
    assert encoder.proj is not None
    encoder.proj.requires_grad_(True)
    return encoder


def configure_tuning(encoder: Encoder, tune_cfg) -> Encoder:
    """Set which of ``encoder``'s weights train under ``tune_cfg`` (the recipe's ``tune``).

    Returns the encoder to train: the same one, or for ``head`` a copy with a projection added.
    """
    mode = tune_cfg.mode
    if mode not in TUNE_MODES:
        raise RecipeError(f"tune.mode={mode!r} is not one of {', '.join(TUNE_MODES)}")
    if encoder.orientation is not None:
        log.info("the start encoder's orientation head is dropped: training changes the features it read")
        encoder.attach(None)
    encoder = TUNE_MODES[mode](encoder, tune_cfg)
    trainable = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    total = sum(p.numel() for p in encoder.parameters())
    log.info("tune.mode=%s: %d of %d weights train (%.1f%%)", mode, trainable, total, 100 * trainable / total)
    return encoder


def param_groups(encoder: Encoder, lr: float, weight_decay: float, layer_decay: float) -> list[dict]:
    """Optimizer groups of the trainable weights, each with its own ``lr`` (layer-wise decay).

    Biases and norm weights get no weight decay (timm's rule for 1-d tensors).
    """
    groups = param_groups_layer_decay(encoder.model, weight_decay=weight_decay, layer_decay=layer_decay)
    extra = [p for name, p in encoder.named_parameters() if p.requires_grad and not name.startswith("model.")]
    if extra:  # pooling and projection: on top of the model, so at the full rate
        groups.append({"params": extra, "weight_decay": 0.0, "lr_scale": 1.0})
    for group in groups:
        group["lr"] = lr * group.pop("lr_scale", 1.0)
    return [g for g in groups if g["params"]]


def merged_copy(encoder: Encoder) -> Encoder:
    """A copy of ``encoder`` with any LoRA adapters merged into their layers (a plain timm model)."""
    copied = copy.deepcopy(encoder).float()
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # without peft there can be no adapters
        return copied
    for name, module in list(copied.model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(copied.model.get_submodule(parent) if parent else copied.model, child, module.get_base_layer())
    copied.requires_grad_(False)
    return copied.eval()
