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
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, InterpolationResolutionError, OmegaConfBaseException

from core.base.errors import MissingInputError, RecipeError
from core.base.options import check_ranges, check_sections, option
from core.data.pool import DataConfig
from core.data.synthetic import SyntheticConfig
from core.model.backbone import ModelConfig
from core.model.embed import EmbedConfig
from core.pixels.verify import VerifyConfig
from core.post import PostConfig


@dataclass
class Recipe:
    """The sections every command reads; each options class lives beside the code it configures and
    checks its own section (``check``), and the training recipes add theirs (``ssl.config``)."""

    name: str = "run"
    seed: int = option(0, ge=0)
    run_dir: str | None = None
    submission: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    post: PostConfig = field(default_factory=PostConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)


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
    check_sections(cfg, schema)
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
