"""python -m eval.compare RUN_DIR [RUN_DIR ...] [--sort COLUMN] [--baseline RUN_DIR [--k K]] [--out DIR]

One row per run: what differs between the recipes, Hit@1/3/10 per evaluation set and overall,
synthetic-query Hit@3, embedding statistics and wall time; printed sorted, and written as CSV,
Markdown, a Hit@3 bar chart and (for runs that trained) overlaid training curves.

With ``--baseline``, evaluation runs are also paired query by query with that one (their
``queries.csv``): the Hit@k difference on the labeled and on the synthetic queries, its 95% interval,
the queries gained and lost and McNemar's p (``core.vectors.paired``), e.g. ``+0.036 [+0.007, +0.071] +5/-0
p=0.062``. A few queries of 140 is within what chance moves; the interval says whether it is.

Evaluation runs (``python -m eval``) are scored on their whole pool; training runs
(``python -m ssl.pretrain``) show their last per-epoch evaluation, on the smaller monitoring pool:
the ``pool`` column says which.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from adapt.config import PseudolabelRecipe
from core.base.atomic import atomic_write_text, check_writable
from core.base.errors import CuratorError, MissingInputError, RecipeError, command_line
from core.base.figures import plt, save_png
from core.base.runs import RunDir, read_metrics
from core.pixels.photosim import CONDITIONS
from core.recipe import Recipe, flat_keys, load_recipe, to_dict
from core.vectors.metrics import HIT_KEYS
from core.vectors.paired import paired_difference
from ssl.config import PretrainRecipe

# Recipe keys that differ between any two runs by nature, not by choice.
IGNORED_KEYS = ("run_dir", "name", "submission", "embed.progress")


def run_metrics(path: Path) -> dict:
    """A run's ``metrics.json``, which names the kind of run that wrote it."""
    metrics = read_metrics(path)
    if metrics is None:
        raise MissingInputError(f"{path} has no metrics.json: not a finished run of python -m eval, ssl.pretrain "
                                "or adapt.pseudolabel. Fix: pass run directories, or finish the run (--resume)")
    if "kind" not in metrics:
        raise MissingInputError(f"{path}/metrics.json names no kind of run: it was written by an older Curator. "
                                "Fix: run that command again with this version")
    return metrics


def _scores(metrics: dict) -> tuple[dict, dict | None, dict, int | None]:
    """(figures holding sets/synthetic, overall Hit@k, embedding statistics, pool size) by run kind.

    An evaluation is scored on its whole pool; a training run by its last monitor evaluation (on the
    smaller monitoring pool); stage 2 on its whole pool after the last round.
    """
    kind = metrics["kind"]
    if kind == "evaluate":
        return metrics, metrics, metrics.get("stats", {}), metrics.get("pool_size")
    if kind in ("pretrain", "refine"):
        last = metrics.get("last") or {}
        stats = {"effective_rank": last.get("effective_rank"), "nn_margin_mean": last.get("nn_margin_mean")}
        return last, last.get("overall"), stats, last.get("monitor_pool")
    if kind == "pseudolabel":
        return {}, metrics.get("pool_after"), {}, None
    raise MissingInputError(f"{metrics.get('run_dir') or 'this run'} is a {kind} run, which has no scores to "
                            "compare. Fix: compare runs of python -m eval, ssl.pretrain or adapt.pseudolabel")


def load_run(path: Path) -> dict:
    """A run's figures as one flat row (no recipe columns yet)."""
    metrics = run_metrics(path)
    figures, overall, stats, pool = _scores(metrics)
    row: dict = {"run": path.name, "kind": metrics["kind"], "pool": pool}
    for k in HIT_KEYS:
        row[k] = overall.get(k) if overall else None
    for name, fig in (figures.get("sets") or {}).items():
        for k in HIT_KEYS:
            row[f"{name} {k}"] = fig.get(k)
    synthetic = figures.get("synthetic")
    row["synthetic hit@3"] = synthetic.get("hit@3") if synthetic else None
    # Before the recipe's post steps (absent where none ran): what they add, and what training adds over them.
    row["raw hit@3"] = ((overall or {}).get("raw") or {}).get("hit@3")
    row["raw synthetic hit@3"] = ((synthetic or {}).get("raw") or {}).get("hit@3")
    row["effective_rank"] = stats.get("effective_rank")
    row["nn_margin"] = stats.get("nn_margin_mean")
    row["hub_skew"] = stats.get("hub_skew")
    row["time_s"] = metrics.get("time_s", {}).get("total")
    return row


# The recipe schema each kind of run was made with.
SCHEMAS = {"evaluate": Recipe, "submit": Recipe, "pretrain": PretrainRecipe, "refine": PseudolabelRecipe,
           "pseudolabel": PseudolabelRecipe}


def _recipe(path: Path, kind: str) -> dict:
    """The run's recipe snapshot, completed with today's defaults for keys older snapshots lack."""
    snapshot = path / "recipe.yaml"
    if not snapshot.is_file():
        return {}
    try:
        return flat_keys(to_dict(load_recipe(snapshot, schema=SCHEMAS[kind])))
    except CuratorError:  # a snapshot from an incompatible version: compare what it says
        return flat_keys(OmegaConf.to_container(OmegaConf.load(snapshot)))


def compare_runs(paths: list[Path], sort: str = "hit@3", baseline: Path | None = None, k: int = 3) -> pd.DataFrame:
    """The comparison table, sorted by ``sort`` (best first); with ``baseline``, each run paired with it."""
    rows = [load_run(p) for p in paths]
    recipes = [_recipe(p, row["kind"]) for p, row in zip(paths, rows, strict=True)]
    if baseline is not None:
        pair_with(rows, paths, recipes, baseline, k)
    # Keys every recipe has (training recipes have sections evaluation recipes lack: "kind" says so).
    keys = sorted(set.intersection(*(set(r) for r in recipes))) if recipes else []
    differing = [key for key in keys if not key.startswith(IGNORED_KEYS)
                 and len({json.dumps(r.get(key), sort_keys=True) for r in recipes}) > 1]
    for row, recipe in zip(rows, recipes, strict=True):
        row["differs"] = ", ".join(f"{key}={recipe.get(key)}" for key in differing)
    table = pd.DataFrame(rows)
    table = table[[c for c in table.columns if c != "differs"] + ["differs"]]  # the long column last
    if sort not in table.columns:
        raise MissingInputError(f"--sort {sort!r} is not a column; columns: {', '.join(table.columns)}")
    ascending = sort in ("run", "kind", "differs", "time_s")
    return table.sort_values(sort, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)


def read_queries(path: Path) -> pd.DataFrame | None:
    """An evaluation run's per-query ranks (``queries.csv``), or None where it has none."""
    file = RunDir(path).queries_file
    return pd.read_csv(file, dtype={"set": str, "query": str, "conditions": str}) if file.is_file() else None


# Synthetic photos are named by their order (synthetic/syn_00000.jpg): two runs hold the same photos
# under the same names only where these keys agree.
SYNTHETIC_KEYS = ("synthetic.num_queries", "synthetic.seed", "synthetic.style")


def paired_columns(base: pd.DataFrame, run: pd.DataFrame, k: int, same_photos: bool = True) -> dict[str, str]:
    """``run`` against ``base`` on the queries both ranked, labeled and synthetic apart, Hit@``k``;
    ``same_photos``: whether the two runs' synthetic photos are the same ones."""
    columns = {}
    for kind, label in (("labeled", f"vs base hit@{k}"), ("synthetic", f"vs base synthetic hit@{k}")):
        if kind == "synthetic" and not same_photos:
            columns[label] = "other photos (" + ", ".join(SYNTHETIC_KEYS) + " differ)"
            continue
        both = base[base["kind"] == kind].merge(run[run["kind"] == kind], on=["set", "query"],
                                                suffixes=("_base", "_run")).dropna(subset=["rank_base", "rank_run"])
        if len(both):
            diff = paired_difference(both["rank_base"].to_numpy() < k, both["rank_run"].to_numpy() < k)
            columns[label] = str(diff)
        if kind == "synthetic" and len(both) and "conditions_base" in both:
            # Per condition of the photos (the same photos in both runs): where a model gains or loses.
            shown = both["conditions_base"].fillna("").str.split(";")
            for condition in CONDITIONS:
                mask = shown.map(lambda c, condition=condition: condition in c).to_numpy()
                if mask.any():
                    diff = paired_difference(both["rank_base"].to_numpy()[mask] < k,
                                             both["rank_run"].to_numpy()[mask] < k)
                    columns[f"vs base {condition} hit@{k} (n={int(mask.sum())})"] = str(diff)
    return columns or {f"vs base hit@{k}": "no query in common"}


def pair_with(rows: list[dict], paths: list[Path], recipes: list[dict], baseline: Path, k: int) -> None:
    """Add to each row its run's paired columns against ``baseline`` (query by query); ``recipes``: the
    runs' flat recipes."""
    base_metrics = run_metrics(baseline)
    base_pool, base_recipe = base_metrics.get("pool_size"), _recipe(baseline, base_metrics["kind"])
    base = read_queries(baseline)
    if base is None:
        raise MissingInputError(f"--baseline {baseline} has no queries.csv: only python -m eval runs write one "
                                "(and none made before it did). Fix: evaluate that model again with python -m eval, "
                                "or pass a run that has one")
    for row, path, recipe in zip(rows, paths, recipes, strict=True):
        queries = read_queries(path)
        if path.resolve() == baseline.resolve():
            row.update({f"vs base hit@{k}": "baseline", f"vs base synthetic hit@{k}": "baseline"})
        elif queries is None:
            row[f"vs base hit@{k}"] = "no queries.csv"
        else:
            same_photos = all(recipe.get(key) == base_recipe.get(key) for key in SYNTHETIC_KEYS)
            row.update(paired_columns(base, queries, k, same_photos))
            if row["pool"] != base_pool:  # the same queries against other distractors: say so
                label = f"vs base hit@{k}"
                row[label] = f"{row.get(label, '-')} (pool {row['pool']} vs {base_pool})"


def plot_hit3(table: pd.DataFrame, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(table) + 2), 3.8))
    x = range(len(table))
    ax.bar([i - 0.2 for i in x], table["hit@3"].fillna(0), width=0.4, label="labeled Hit@3", color="tab:green")
    ax.bar([i + 0.2 for i in x], table["synthetic hit@3"].fillna(0), width=0.4, label="synthetic Hit@3",
           color="tab:blue")
    ax.set_xticks(list(x), table["run"], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Hit@3")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, out)
    return out


def plot_curves(paths: list[Path], out: Path) -> Path | None:
    """Loss and synthetic Hit@3 per epoch, one line per training run; None if no run trained."""
    histories = {p.name: RunDir(p).read_metrics_lines() for p in paths if (p / "metrics.jsonl").is_file()}
    # Per-epoch records only: a stage-2 run's metrics.jsonl holds one record per round instead.
    histories = {k: [r for r in v if "epoch" in r] for k, v in histories.items()}
    histories = {k: v for k, v in histories.items() if v}
    if not histories:
        return None
    fig, (ax_loss, ax_hit) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, records in histories.items():
        with_loss = [r for r in records if r.get("loss") is not None]
        ax_loss.plot([r["epoch"] for r in with_loss], [r["loss"] for r in with_loss], "o-", label=name)
        syn = [(r["epoch"], r["synthetic"]["hit@3"]) for r in records if r.get("synthetic")]
        if syn:
            ax_hit.plot(*zip(*syn, strict=True), "o-", label=name)
    ax_loss.set(xlabel="epoch", ylabel="training loss (epoch mean)")
    ax_hit.set(xlabel="epoch (0 = before training)", ylabel="synthetic Hit@3", ylim=(0, 1))
    for ax in (ax_loss, ax_hit):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_png(fig, out)
    return out


def write_outputs(table: pd.DataFrame, paths: list[Path], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "compare.csv", out_dir / "compare.md"]
    atomic_write_text(written[0], table.to_csv(index=False))
    atomic_write_text(written[1], table.to_markdown(index=False, floatfmt=".3f") + "\n")
    written.append(plot_hit3(table, out_dir / "hit3.png"))
    curves = plot_curves(paths, out_dir / "curves.png")
    return written + ([curves] if curves else [])


@command_line
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.compare", description=__doc__.split("\n\n")[1])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (e.g. runs/*)")
    parser.add_argument("--sort", default="hit@3", help="column to sort by (best first), e.g. 'synthetic hit@3'")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"), help="folder for CSV, Markdown, PNGs")
    parser.add_argument("--baseline", type=Path, help="an evaluation run to pair every other run with, query by query")
    parser.add_argument("--k", type=int, default=3, help="the Hit@k that --baseline pairs (default 3)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.runs if not p.exists()]
    if missing:
        raise MissingInputError(f"no such run folder: {', '.join(missing)}. Fix: check the path (python -m eval, "
                                "ssl.pretrain, adapt.pseudolabel and eval.chain print their run folder)")
    # A shell glob (runs/*) also matches files and folders that are not runs: keep the runs.
    paths = [p for p in args.runs if p.is_dir() and ((p / "metrics.json").is_file() or len(args.runs) == 1)]
    if not paths:
        raise MissingInputError(f"none of {[str(p) for p in args.runs]} is a run directory with metrics.json")
    if args.k < 1:
        raise RecipeError(f"--k {args.k}: Hit@k needs k >= 1. Fix: --k 3 (the competition's measure)")
    check_writable(args.out / "compare.csv", "--out")
    table = compare_runs(paths, args.sort, args.baseline, args.k)
    written = write_outputs(table, paths, args.out)
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 60):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
