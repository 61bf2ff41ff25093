"""Recipes: YAML files over a typed schema, with ``key=value`` overrides (OmegaConf).

A recipe is merged in layers: the schema's defaults, the recipes its ``defaults:`` list names (as
in Hydra: ``defaults: [base]`` is ``base.yaml`` beside it, itself composed the same way), the YAML
file, the command-line overrides. Shared blocks (the model, the training guard rails) live once, in
``recipes/base.yaml`` and ``recipes/training.yaml``. Unknown keys, values of the wrong type and
choices outside the implementations' registries are rejected with an error that names the key, the
file and the valid choices.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, InterpolationResolutionError, OmegaConfBaseException

from core.backbone import POOLINGS, ModelConfig
from core.embed import COMBINES, PRECISIONS, TURNS
from core.errors import MissingInputError, RecipeError
from core.options import check_ranges, option
from core.post import POST_STEPS
from core.preprocess import RESIZE_POLICIES
from core.synthetic import STYLES as SYNTHETIC_STYLES
from core.tuning import TUNE_MODES


@dataclass
class EmbedConfig:
    batch_size: int = option(32, ge=1)
    num_workers: int = option(2, ge=0)
    flip: bool = False
    scales: list[float] = field(default_factory=lambda: [1.0])
    # Quarter-turn TTA: the mean of the embeddings of these turns (clockwise degrees); [0, 90, 180, 270]
    # makes an embedding blind to quarter turns at 4x the cost.
    turns: list[int] = field(default_factory=lambda: [0])
    # Also embed the painting localised in each image (core.localise: GrabCut, then the quadrilateral
    # warped upright), at the same turns: the crop is one more view.
    crop: bool = False
    # A photo of several paintings side by side: the crop view is the normalised sum of up to this
    # many paintings' embeddings. 1 (the largest only) measured best for Hit@3 (README, "Turned and
    # framed photos"); 3 finds more of a photo's paintings in its top 3.
    max_paintings: int = option(1, ge=1)
    # How an image's views become one embedding: "mean" (averaged), or "gate": the image as it is,
    # unless another view's nearest image in the pool is closer by more than gate_margin (core.gate).
    combine: str = "mean"
    # A cosine margin, or "auto": median + 6 robust standard deviations of the pool's own gains.
    gate_margin: str = "auto"
    # fp32, bf16, or auto: bf16 where the device runs it natively (core.embed.resolve_precision).
    precision: str = "auto"
    device: str = "auto"
    progress: bool = True


@dataclass
class DataConfig:
    # An unlabeled image folder (flat or nested): the submission folder, or extra pool images.
    root: str | None = None
    # Labeled sets (images/ + pairs.csv) and extra distractor folders, all searched together.
    labeled: list[str] = field(default_factory=list)
    distractors: list[str] = field(default_factory=list)
    # Skip undecodable images (listed in the run log) instead of stopping at the first one.
    skip_corrupt: bool = False
    # Folder for a resized copy of every decoded image; null disables the cache.
    cache_dir: str | None = None
    cache_max_side: int = option(512, ge=32)
    # With no data given, run on the synthetic sample museum generated here.
    sample_dir: str = "${oc.env:CURATOR_CACHE,.curator}/sample-museum"


@dataclass
class SyntheticConfig:
    # Held-out synthetic visitor photos made from pool images; 0 disables them.
    num_queries: int = option(100, ge=0)
    seed: int = option(0, ge=0)
    # "queries": as the real competition queries look (quarter turns, tilt in pale padding, zoom-ins,
    # dim light, low resolution, a third on walls), with Hit@k per condition; "classic": the wall
    # and frame photos only (what synthetic figures measured before this option used).
    style: str = "queries"


@dataclass
class WhitenConfig:
    # Output dimension (PCA truncation); null keeps every dimension (then whitening is a ZCA map).
    dim: int | None = option(None, ge=1)
    # Weight of the identity against the pool's covariance, for pools small next to the dimension: auto
    # (Ledoit-Wolf's estimate: ~0.003 for 3,437 images in 384-d, 0.05-0.09 for 242) or a number in [0, 1].
    shrinkage: str = "auto"
    # Scale each component by eigenvalue^-power: 0.5 whitens fully, 0 only centres and rotates.
    power: float = option(0.5, ge=0, le=1)
    # A whiten.npz saved by an earlier run: apply it instead of fitting on this pool.
    load: str | None = None


@dataclass
class LearnedWhitenConfig:
    # Weight of the pool's covariance against the pseudo pairs' differences (1: PCA whitening).
    shrinkage: float = option(0.5, gt=0, le=1)
    # Keep the whitened pool's leading principal directions; null keeps every dimension.
    dim: int | None = option(None, ge=1)
    # Pseudo pairs: mutual nearest neighbours after PCA whitening with at least this cosine; auto: 3
    # robust standard deviations above the median nearest-neighbour cosine of unpaired images (chance).
    min_similarity: str = "auto"
    # Keep only pairs with at least min_inliers RANSAC-homography inliers (SIFT at max_side pixels).
    verify: bool = False
    min_inliers: int = option(25, ge=0)
    max_side: int = option(512, ge=64)


@dataclass
class NeighbourConfig:
    # Average each embedding with its k nearest neighbours, weighted by similarity^alpha.
    k: int = option(2, ge=1)
    alpha: float = option(3.0, ge=0)


@dataclass
class FusionConfig:
    # Candidates: each image's k nearest neighbours; a pair is verified with at least min_inliers
    # RANSAC-homography inliers, and then both embeddings move towards each other by weight.
    k: int = option(3, ge=1)
    min_inliers: int = option(25, ge=0)
    weight: float = option(0.5, ge=0, le=1)
    max_side: int = option(512, ge=64)


@dataclass
class DiffusionConfig:
    # The graph: each image's k nearest neighbours, edges weighted max(cosine, 0)^gamma; with verify,
    # each image's verify_k nearest are matched and pairs with at least min_inliers RANSAC inliers
    # (SIFT at max_side pixels) get the full weight 1 (a match per pair: slow, as fusion is).
    k: int = option(10, ge=1)
    gamma: float = option(3.0, gt=0)
    verify: bool = False
    verify_k: int = option(3, ge=1)
    min_inliers: int = option(25, ge=0)
    max_side: int = option(512, ge=64)
    # Diffusion's restart: near 1 spreads further along the graph.
    alpha: float = option(0.99, gt=0, lt=1)
    # Eigenpairs kept: the diffusion block's width (the output grows by this many dimensions).
    rank: int = option(256, ge=1)
    # Weight of the diffusion block against the input embedding's (1.0): cosines add with weight^2.
    weight: float = option(1.0, ge=0)


@dataclass
class ConcatBlock(ModelConfig):
    """Another model (or pooling) whose embedding is appended, normalised, scaled by weight."""

    weight: float = option(1.0, ge=0)


@dataclass
class PostConfig:
    """Training-free steps on the whole pool's embeddings, applied in the order of ``steps``."""

    steps: list[str] = field(default_factory=list)
    # Weight of the recipe's own model in a concatenation.
    weight: float = option(1.0, ge=0)
    concat: list[ConcatBlock] = field(default_factory=list)
    whiten: WhitenConfig = field(default_factory=WhitenConfig)
    learned_whiten: LearnedWhitenConfig = field(default_factory=LearnedWhitenConfig)
    dba: NeighbourConfig = field(default_factory=NeighbourConfig)
    qe: NeighbourConfig = field(default_factory=NeighbourConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)


@dataclass
class TuneConfig:
    """Which weights a training stage may change (see core/tuning.py)."""

    mode: str = "last-blocks"
    # Layer groups trained from the top (timm's group_matcher: a ViT block, its final norm with the
    # last one); also where LoRA adapters go. 0 with mode=lora/last-blocks is refused.
    last_blocks: int = option(2, ge=0)
    # Learning-rate factor per layer group going down (1.0: the same rate everywhere).
    layer_decay: float = option(0.75, gt=0, le=1)
    lora_rank: int = option(8, ge=1)
    lora_alpha: float = option(16.0, gt=0)


@dataclass
class Recipe:
    name: str = "run"
    seed: int = option(0, ge=0)
    run_dir: str | None = None
    submission: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    post: PostConfig = field(default_factory=PostConfig)

    @staticmethod
    def validate(cfg: DictConfig) -> None:
        _choices_check(cfg)


def _valid_keys(schema: type, prefix: str = "") -> list[str]:
    instance = schema()
    keys = []
    for f in dataclasses.fields(schema):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            keys.extend(_valid_keys(type(value), f"{prefix}{f.name}."))
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def check_choices(cfg: DictConfig, choices: tuple[tuple[str, Iterable[str]], ...]) -> None:
    """Raise a :class:`RecipeError` naming the key and the valid values for any value outside them.

    The valid values are the registries of the implementations (``core.backbone.POOLINGS``...), so
    a registered pooling, resize policy, tuning mode or post step is a valid recipe value at once.
    """
    for key, allowed in choices:
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise RecipeError(f"{key}={value!r} is not one of {', '.join(allowed)}")


def _check_auto_or_number(key: str, value: object, low: float, high: float, expected: str) -> None:
    """A RecipeError unless ``value`` is "auto" or a number in [low, high]; ``expected`` describes one."""
    if str(value) == "auto":
        return
    try:
        if low <= float(value) <= high:
            return
    except ValueError:
        pass
    raise RecipeError(f"{key}={value!r} must be auto or {expected}")


def _choices_check(cfg: DictConfig) -> None:
    check_choices(cfg, (("model.resize", RESIZE_POLICIES), ("model.pooling", POOLINGS),
                        ("embed.precision", PRECISIONS), ("embed.combine", COMBINES),
                        ("synthetic.style", SYNTHETIC_STYLES)))
    if "tune" in cfg:  # the training recipes
        check_choices(cfg, (("tune.mode", TUNE_MODES),))
    if not cfg.embed.scales or any(s <= 0 for s in cfg.embed.scales):
        raise RecipeError(f"embed.scales={list(cfg.embed.scales)} must be a non-empty list of positive factors")
    if not cfg.embed.turns or any(t not in TURNS for t in cfg.embed.turns) or len(set(cfg.embed.turns)) != len(
            cfg.embed.turns):
        raise RecipeError(f"embed.turns={list(cfg.embed.turns)} must list distinct quarter turns from {TURNS}, "
                          "e.g. [0] (none) or [0,90,180,270]")
    if cfg.embed.combine == "gate":
        if cfg.embed.turns[0] != 0 or (len(cfg.embed.turns) < 2 and not cfg.embed.crop):
            raise RecipeError(f"embed.combine=gate chooses among views, and view 0 must be the image as it is: "
                              f"embed.turns={list(cfg.embed.turns)} must start with 0 and give a second view "
                              "(e.g. [0,180], or embed.crop=true)")
        _check_auto_or_number("embed.gate_margin", cfg.embed.gate_margin, 0, float("inf"),
                              "a cosine margin >= 0, e.g. 0.15")
    steps = list(cfg.post.steps)
    unknown = [s for s in steps if s not in POST_STEPS]
    if unknown or len(set(steps)) != len(steps):
        raise RecipeError(f"post.steps={steps}: each step once, from {', '.join(POST_STEPS)}")
    _check_auto_or_number("post.whiten.shrinkage", cfg.post.whiten.shrinkage, 0, 1,
                          "a weight in [0, 1] (0: none); auto is Ledoit-Wolf's estimate from the pool")
    _check_auto_or_number("post.learned_whiten.min_similarity", cfg.post.learned_whiten.min_similarity, -1, 1,
                          "a cosine, e.g. 0.4")
    if "concat" in steps and (steps[0] != "concat" or not cfg.post.concat):
        raise RecipeError("post.steps: 'concat' must come first and needs post.concat blocks (other models)")


def _read_yaml(path: Path) -> DictConfig:
    """The mapping a recipe file holds; a file that is not YAML, or not a mapping, is a RecipeError."""
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as e:
        # The parser's message names the line and column; a tab is the usual culprit.
        detail = " ".join(str(e).split())
        raise RecipeError(f"recipe {path} is not valid YAML: {detail}. Fix: correct that line (indent with "
                          "spaces, not tabs; close every bracket and quote)") from None
    except UnicodeDecodeError:
        raise RecipeError(f"recipe {path} is not a text file. Fix: pass a recipe YAML (e.g. recipes/zeroshot.yaml) "
                          "first, then key=value overrides") from None
    if not isinstance(loaded, DictConfig):
        raise RecipeError(f"recipe {path} holds a list, not a mapping of sections. Fix: write "
                          "it as 'section:' lines with indented 'key: value' lines, as in recipes/zeroshot.yaml")
    return loaded


def _compose(path: Path, below: tuple[Path, ...] = ()) -> DictConfig:
    """The recipe at ``path`` merged over the recipes its ``defaults:`` list names, in order."""
    raw = _read_yaml(path)
    names = raw.pop("defaults", None) or []
    if not isinstance(names, list | ListConfig) or not all(isinstance(n, str) for n in names):
        raise RecipeError(f"recipe {path}: defaults must be a list of recipe names, e.g. defaults: [base]")
    merged = OmegaConf.create()
    for name in names:
        parent = path.parent / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
        if not parent.is_file():
            raise RecipeError(f"recipe {path} names {name!r} in defaults, but {parent} does not exist. Fix: name "
                              "a recipe in the same folder, without .yaml")
        if parent.resolve() in below or parent.resolve() == path.resolve():
            raise RecipeError(f"recipe {path}: its defaults lead back to {parent}. Fix: remove the loop")
        merged = OmegaConf.merge(merged, _compose(parent, (*below, path.resolve())))
    return OmegaConf.merge(merged, raw)


def _parse_overrides(overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """``key=value`` overrides as one mapping; an override whose value is not valid YAML is a RecipeError."""
    layer = OmegaConf.create()
    for override in overrides:
        try:
            layer = OmegaConf.merge(layer, OmegaConf.from_dotlist([override]))
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or type(e).__name__
            raise RecipeError(f"the override {override!r} is not a valid value ({problem}). Fix: close every "
                              "bracket and quote, e.g. embed.turns=[0,180], and quote the whole override in "
                              "the shell where it holds spaces") from None
    return layer


def _not_a_section(layer, schema: type, prefix: str = "") -> str | None:
    """The first key of ``layer`` that gives a plain value where ``schema`` has a section (``model: 3``)."""
    if not isinstance(layer, dict | DictConfig):
        return None
    for f in dataclasses.fields(schema):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.name in layer and dataclasses.is_dataclass(default):
            value = layer[f.name]
            if not isinstance(value, dict | DictConfig):
                return f"{prefix}{f.name}"
            found = _not_a_section(value, type(default), f"{prefix}{f.name}.")
            if found:
                return found
    return None


def _section_schema(schema: type, key: str) -> type:
    """The dataclass of section ``key`` (dotted) of ``schema``."""
    for name in key.split("."):
        schema = type(getattr(schema(), name))
    return schema


def _unresolvable_key(cfg: DictConfig, prefix: str = "") -> str | None:
    """The first key of ``cfg`` whose interpolation (``${oc.env:...}``) cannot be resolved."""
    for key in cfg:
        node = cfg._get_node(key)
        full = f"{prefix}{key}"
        if isinstance(node, DictConfig):
            found = _unresolvable_key(node, f"{full}.")
            if found:
                return found
        elif OmegaConf.is_interpolation(cfg, key):
            try:
                cfg[key]
            except OmegaConfBaseException:
                return full
    return None


def load_recipe(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                schema: type = Recipe, over: dict | None = None) -> DictConfig:
    """Merge ``schema`` defaults, the YAML file at ``path``, the mapping ``over`` and ``key=value`` overrides.

    Interpolations such as ``${oc.env:CURATOR_SHARED,../shared}`` are resolved at the end, so the
    returned config holds plain values. Every class of the schema that defines a ``validate(cfg)``
    static method has it run, base classes first: each checks only its own sections.
    """
    cfg = OmegaConf.structured(schema)
    where, layer = "the defaults", None
    try:
        if path is not None:
            path = Path(path)
            where = str(path)
            if not path.is_file():
                raise RecipeError(f"recipe file not found: {path}")
            layer = _compose(path)
            cfg = OmegaConf.merge(cfg, layer)
        if over:
            where, layer = f"{where} with {over}", over
            cfg = OmegaConf.merge(cfg, over)
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise RecipeError(f"overrides must look like key=value, got {bad}")
        where, layer = f"the overrides {list(overrides)}", _parse_overrides(overrides)
        cfg = OmegaConf.merge(cfg, layer)
        OmegaConf.resolve(cfg)
    except ConfigKeyError as e:
        key = getattr(e, "full_key", None) or str(e)
        raise RecipeError(
            f"unknown recipe key {key!r} in {where}. Valid keys: {', '.join(_valid_keys(schema))}"
        ) from None
    except InterpolationResolutionError as e:
        origin = " with ".join(str(x) for x in (path, list(overrides) or None) if x) or "the defaults"
        raise RecipeError(f"recipe key {_unresolvable_key(cfg)!r} ({origin}) cannot be resolved: {e}. Fix: set the "
                          "environment variable it names, or give the key a value") from None
    except OmegaConfBaseException as e:
        section = _not_a_section(layer, schema)
        if section:
            raise RecipeError(f"{section} in {where} is a section of keys, not a single value. Fix: set its keys, "
                              f"e.g. {section}.{next(iter(_valid_keys(_section_schema(schema, section))))}=...") \
                from None
        key = getattr(e, "full_key", None)
        detail = " ".join(str(e.msg if getattr(e, "msg", None) else e).split("full_key:")[0].split())
        raise RecipeError(f"invalid {f'recipe key {key!r}' if key else 'recipe value'} in {where}: {detail}") from None
    check_ranges(cfg, schema)
    for cls in reversed(schema.__mro__):
        if "validate" in vars(cls):
            cls.validate(cfg)
    return cfg


def flat_keys(tree: dict, prefix: str = "") -> dict:
    """A nested mapping (a recipe as :func:`to_dict` gives it) as dotted keys.

    >>> flat_keys({"seed": 0, "model": {"arch": "vit", "img_size": 224}})
    {'seed': 0, 'model.arch': 'vit', 'model.img_size': 224}
    """
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        out.update(flat_keys(v, f"{key}.") if isinstance(v, dict) else {key: v})
    return out


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


MODEL_FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors", ".bin")


def resumable_recipe(args: list[str], resume: str | None, schema: type, default: str | Path, command: str
                     ) -> DictConfig:
    """``--resume RUN_DIR``: the run's recipe snapshot with the key=value overrides of ``args`` (a
    MissingInputError if the folder has no snapshot); else :func:`recipe_from_args`."""
    if not resume:
        return recipe_from_args(args, schema=schema, default=default)
    snapshot = Path(resume) / "recipe.yaml"
    if not snapshot.is_file():
        raise MissingInputError(f"{snapshot} not found. Fix: --resume takes a run directory of python -m {command}")
    return load_recipe(snapshot, [*(a for a in args if "=" in a), f"run_dir={resume}"], schema)


def cli_parser(prog: str, description: str, accept_model_file: bool = False) -> argparse.ArgumentParser:
    """The common ``[RECIPE.yaml | MODEL_FILE] [key=value ...]`` command line; add flags to it freely."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    what = "a recipe YAML" + (" or a model file (.pt/.ckpt/.safetensors/.pth)" if accept_model_file else "")
    parser.add_argument("args", nargs="*", metavar="RECIPE_OR_KEY=VALUE",
                        help=f"{what}, then key=value overrides, e.g. embed.flip=true")
    return parser


def recipe_from_args(args: list[str], accept_model_file: bool = False, schema: type = Recipe,
                     default: str | Path | None = None) -> DictConfig:
    """The recipe named by ``args`` (``[RECIPE | MODEL_FILE] [key=value ...]``), or ``default``.

    A model file (encoder, checkpoint or weights) instead of a recipe means the default recipe with
    ``model.weights`` set to it.
    """
    target = args[0] if args and "=" not in args[0] else None
    overrides = args[1:] if target else args
    if target and accept_model_file and target.endswith(MODEL_FILE_SUFFIXES):
        return load_recipe(default, [f"model.weights={target}", *overrides], schema)
    return load_recipe(target or default, overrides, schema)


def parse_cli(argv: list[str], prog: str, description: str, accept_model_file: bool = False,
              schema: type = Recipe) -> DictConfig:
    """Parse ``[RECIPE.yaml | MODEL_FILE] [key=value ...]`` into a recipe (see :func:`recipe_from_args`)."""
    args = cli_parser(prog, description, accept_model_file).parse_args(argv).args
    return recipe_from_args(args, accept_model_file, schema)
