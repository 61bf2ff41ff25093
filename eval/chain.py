"""python -m eval.chain [RECIPE.yaml] [key=value ...]: the whole label-free chain on one folder.

    python -m eval.chain recipes/chain.yaml data.root=DIR submission=FILE

Stage 1 (``ssl.pretrain``) -> stage 2 (``adapt.pseudolabel``, from stage 1's encoder) -> the
submission (``eval.submit``, with stage 2's encoder and its recipe's post steps). Each stage runs the
recipe the chain names under ``stages`` (composed as usual, the stage's ``overrides`` on top) in
RUN/<stage>; the chain's ``data``, ``seed`` and ``model`` go to every stage (a stage's overrides
win). Re-running the same command skips the stages that finished and resumes the interrupted one
from its checkpoints; a stage whose recipe changed since it ran is an error, never a silent mix.
With no data given, the stages train on the sample museum and the submission covers its images.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from adapt.config import PseudolabelRecipe
from adapt.pseudolabel import pseudolabel
from core.base.errors import RecipeError, command_line
from core.base.options import option
from core.base.runs import RunDir, moved, read_metrics
from core.data.pool import DataConfig
from core.pixels.sample import ensure_sample
from core.recipe import Recipe, cli_parser, flat_keys, load_recipe, recipe_from_args, to_dict
from core.vectors.metrics import HITS_LABEL, format_hits
from eval.submit import check_submission_path, submit
from ssl.config import PretrainRecipe
from ssl.pretrain import pretrain

log = logging.getLogger(__name__)

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
DEFAULT_RECIPE = RECIPES / "chain.yaml"


@dataclass
class StageConfig:
    # A recipe file: absolute, or in the chain recipe's folder, or in Curator's recipes/; null skips
    # the stage.
    recipe: str | None = None
    overrides: list[str] = field(default_factory=list)


@dataclass
class StagesConfig:
    pretrain: StageConfig = field(default_factory=lambda: StageConfig("simclr.yaml"))
    pseudolabel: StageConfig = field(default_factory=lambda: StageConfig("pseudolabel.yaml"))
    submit: StageConfig = field(default_factory=lambda: StageConfig("submission.yaml"))


@dataclass
class ChainRecipe:
    name: str = "chain"
    seed: int = option(0, ge=0)
    # The parent of every stage's run; null: runs/<name>-<data.root's folder name>, the same folder
    # for the same command, so that running it again resumes.
    run_dir: str | None = None
    # null: RUN/submission.csv.
    submission: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    # Model keys every stage gets (e.g. arch, img_size, weights of the start); stages after the first
    # start from the previous stage's encoder.
    model: dict[str, Any] = field(default_factory=dict)
    stages: StagesConfig = field(default_factory=StagesConfig)

    @staticmethod
    def validate(cfg: DictConfig) -> None:
        data = cfg.data
        if cfg.stages.submit.recipe and not data.root and (data.labeled or data.distractors):
            raise RecipeError("the submission stage embeds the images of data.root, and none is set. Fix: set "
                              "data.root=DIR (labeled sets and distractors join the training pool), or "
                              "stages.submit.recipe=null to stop after training")


# The stages in the order they run, each with its recipe schema; a stage's name is the kind of run it writes.
STAGES = (("pretrain", PretrainRecipe), ("pseudolabel", PseudolabelRecipe), ("submit", Recipe))


def resolve_stage_recipes(chain: DictConfig, folder: Path) -> None:
    """Make each stage's recipe an absolute path, or raise: a relative one is looked for in ``folder``
    (the chain recipe's), then among Curator's recipes."""
    for name, _ in STAGES:
        stage = chain.stages[name]
        if not stage.recipe:
            continue
        candidates = [Path(stage.recipe)] if Path(stage.recipe).is_absolute() else \
            [folder / stage.recipe, RECIPES / stage.recipe]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise RecipeError(f"stages.{name}.recipe={stage.recipe} not found (looked for "
                              f"{', '.join(map(str, candidates))}). Fix: name a recipe file there, an absolute "
                              "path, or null to skip the stage")
        stage.recipe = str(found.resolve())


def chain_dir(chain: DictConfig) -> Path:
    """The chain's run folder: ``run_dir``, else a name the same command always gives."""
    if chain.run_dir:
        return Path(chain.run_dir)
    data = chain.data
    label = Path(data.root).resolve().name if data.root else "pool" if data.labeled or data.distractors \
        else "sample-museum"
    return Path("runs") / f"{chain.name}-{label}"


def stage_recipe(chain: DictConfig, name: str, schema: type, run: Path, weights: str | None) -> DictConfig:
    """Stage ``name``'s recipe: its file, then the chain's shared sections, then its overrides."""
    stage = chain.stages[name]
    model = {**to_dict(chain.model), **({"weights": weights} if weights else {})}
    shared = {"seed": chain.seed, "data": to_dict(chain.data), "run_dir": str(run / name), "model": model}
    if name == "submit":
        root = chain.data.root or str(ensure_sample(chain.data.sample_dir) / "images")
        shared["data"] = {**shared["data"], "root": root}
        shared["submission"] = chain.submission or str(run / "submission.csv")
    return load_recipe(stage.recipe, list(stage.overrides), schema, over=shared)


def _in_chain(recipe: dict) -> dict:
    """A stage recipe's keys, with paths inside its chain folder (the parent of its run_dir) relative to it:
    a chain folder moved as a whole still compares equal to its snapshots."""
    flat = flat_keys(recipe)
    if not flat.get("run_dir"):
        return flat
    chain = str(Path(flat["run_dir"]).parent).rstrip("/") + "/"
    return {k: v.replace(chain, "CHAIN/", 1) if isinstance(v, str) and v.startswith(chain) else v
            for k, v in flat.items()}


def check_unchanged(recipe: DictConfig, schema: type, folder: Path, ignore: tuple[str, ...] = ()) -> None:
    """A stage folder made with another recipe cannot be resumed or reused: say which keys differ
    (``ignore``: keys not compared)."""
    snapshot = folder / "recipe.yaml"
    if not snapshot.is_file():
        return
    before = _in_chain(to_dict(load_recipe(snapshot, schema=schema)))
    now = _in_chain(to_dict(recipe))
    differ = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k) and k not in ignore)
    if differ:
        shown = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in differ[:4])
        raise RecipeError(f"{folder} was made with another recipe ({shown}{', ...' if len(differ) > 4 else ''}). "
                          f"Fix: give the chain another run_dir, or delete {folder} to run that stage again")


def _finished(folder: Path, name: str) -> dict | None:
    """The summary a stage wrote when it finished (its metrics.json), its encoder's path where the stage's
    folder is now; None where it has not finished."""
    metrics = read_metrics(folder)
    if metrics is None:
        return None
    if name == "submit" and not Path(metrics.get("submission", "")).is_file():
        return None  # the file was removed since: write it again
    if "encoder" in metrics and "run_dir" in metrics:
        metrics["encoder"] = moved(metrics["encoder"], metrics["run_dir"], folder)
    return metrics


def _resumable(name: str, folder: Path) -> bool:
    """Whether stage ``name`` left something to resume in ``folder`` (a submission starts again)."""
    if name == "pretrain":
        return (folder / "checkpoints" / "last.ckpt").is_file()
    return name == "pseudolabel" and folder.is_dir()


def _run(name: str, recipe: DictConfig, resume: bool) -> dict:
    if name == "pretrain":
        return pretrain(recipe, resume=resume)
    if name == "pseudolabel":
        return pseudolabel(recipe, resume=resume)
    return submit(recipe)


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m{s:02d}s" if minutes >= 60 else f"{minutes}m{s:02d}s"


def run_chain(chain: DictConfig) -> dict:
    """Run (or resume) every stage the chain names; write RUN/metrics.json and return the summary."""
    started = time.perf_counter()
    run = chain_dir(chain)
    chain.run_dir = str(run)
    if chain.stages.submit.recipe:
        check_submission_path(chain.submission or run / "submission.csv")
    active = [(n, s) for n, s in STAGES if chain.stages[n].recipe]
    # Every stage's recipe is composed and checked before the first one starts (the weights a stage
    # starts from are only known once the stage before it has run: they are filled in and compared then).
    planned = {n: stage_recipe(chain, n, s, run, None) for n, s in active}
    for name, schema in active:
        check_unchanged(planned[name], schema, run / name, ignore=("model.weights",))
    with RunDir.create(chain, "chain") as parent:
        weights, summaries, seconds = None, {}, {}
        print(f"chain {run}: {', '.join(n for n, _ in active)} (run the same command again to resume)", flush=True)
        for i, (name, schema) in enumerate(active, 1):
            recipe = stage_recipe(chain, name, schema, run, weights) if weights else planned[name]
            folder = run / name
            check_unchanged(recipe, schema, folder)
            summary = _finished(folder, name)
            if summary is not None:
                print(f"chain [{i}/{len(active)}] {name}: finished before, kept ({folder})", flush=True)
            else:
                resume = _resumable(name, folder)
                print(f"chain [{i}/{len(active)}] {name}: {'resuming' if resume else 'starting'} in {folder}; "
                      f"its progress bars give its ETA", flush=True)
                stage_started = time.perf_counter()
                summary = _run(name, recipe, resume)
                seconds[name] = round(time.perf_counter() - stage_started, 1)
                print(f"chain [{i}/{len(active)}] {name}: done in {_duration(seconds[name])} "
                      f"(chain so far {_duration(time.perf_counter() - started)})", flush=True)
            summaries[name] = summary
            weights = summary.get("encoder", weights)
        result = {"stages": summaries, "figures": stage_figures(summaries), "encoder": weights,
                  "submission": summaries.get("submit", {}).get("submission"),
                  "time_s": round(time.perf_counter() - started, 1),
                  # Seconds of the stages run by this command (a kept stage's time is in its own run).
                  "stage_seconds": seconds, "recipe": to_dict(chain), "run_dir": str(run)}
        parent.write_metrics(result)
    return result


def stage_figures(summaries: dict) -> list[dict]:
    """Per model the chain made (zero-shot first): the training monitor's synthetic and labeled figures."""
    rows = []
    first = summaries.get("pretrain") or {}
    rounds = (summaries.get("pseudolabel") or {}).get("rounds") or []
    start = first.get("first") or (rounds[0].get("monitor_before") if rounds else None)
    if start:
        rows.append({"model": "zero-shot", **_figures(start)})
    if first.get("last"):
        rows.append({"model": "stage 1 (pretrain)", **_figures(first["last"])})
    refined = [r for r in rounds if r.get("refined")]
    if refined:
        rows.append({"model": f"stage 2 (pseudolabel, {len(refined)} rounds)",
                     **_figures(refined[-1]["monitor_after"])})
    return rows


def _figures(record: dict) -> dict:
    out = {}
    for key in ("synthetic", "overall"):
        figures = record.get(key)
        if figures:
            out[key] = {k: v for k, v in figures.items() if k.startswith("hit@")}
            out[f"{key}_raw"] = {k: v for k, v in figures.get("raw", {}).items() if k.startswith("hit@")}
    return out


def _format(result: dict) -> str:
    lines = [f"{'model':<34}{'synthetic Hit@3 (raw)':<24}labeled {HITS_LABEL} (raw)"]
    for row in result["figures"]:
        syn = f"{row['synthetic']['hit@3']:.3f} ({row['synthetic_raw']['hit@3']:.3f})" if "synthetic" in row else "-"
        lab = (f"{format_hits(row['overall'])} ({format_hits(row['overall_raw'])})" if "overall" in row else "-")
        lines.append(f"{row['model']:<34}{syn:<24}{lab}")
    lines.append("(each stage's training monitor: its monitoring pool, one view, after the recipe's post steps)")
    submitted = result["stages"].get("submit")
    if submitted:
        lines.append(f"submission: {submitted['submission']} ({submitted['rows']} rows x {submitted['dim']} "
                     f"features, validated)")
    lines.append(f"encoder: {result['encoder']}; chain folder {result['run_dir']} ({_duration(result['time_s'])})")
    return "\n".join(lines)


@command_line
def main(argv: list[str]) -> int:
    args = cli_parser("python -m eval.chain", __doc__.strip().split("\n\n")[0].split(": ", 1)[1]).parse_args(argv).args
    chain = recipe_from_args(args, schema=ChainRecipe, default=DEFAULT_RECIPE)
    named = Path(args[0]) if args and "=" not in args[0] else DEFAULT_RECIPE
    resolve_stage_recipes(chain, named.resolve().parent)
    print(_format(run_chain(chain)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
