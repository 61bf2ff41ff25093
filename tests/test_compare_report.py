import json
import re
import shutil
import subprocess
import warnings

import pandas as pd
import pytest

from core.data.pool import recipe_pool
from core.model.embed import Embeddings
from core.recipe import load_recipe
from eval.compare import compare_runs, plot_curves
from eval.evaluate import evaluate
from eval.report import query_results, synthetic_results, write_report
from tests.conftest import ROOT, run_cli, run_main


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, sample_root):
    root = tmp_path_factory.mktemp("runs")
    common = [f"data.labeled=[{sample_root}]", "synthetic.num_queries=5"]
    for name, extra in (("plain", []), ("whitened", ["post.steps=[whiten]"])):
        evaluate(load_recipe(ROOT / "recipes" / "tiny.yaml", [*common, *extra, f"run_dir={root / name}"]))
    return root


def test_compare_tabulates_what_differs_and_writes_csv_markdown_and_plots(two_runs, tmp_path):
    (tmp_path / "not-a-run").mkdir()  # what a shell glob (runs/*) may also match: left out
    result = run_cli("eval.compare", str(two_runs / "plain"), str(two_runs / "whitened"), str(tmp_path / "not-a-run"),
                     "--out", str(tmp_path), "--sort", "synthetic hit@3")
    assert result.returncode == 0, result.stderr
    table = compare_runs([two_runs / "plain", two_runs / "whitened"])
    assert list(table["run"]) == sorted(table["run"], key=lambda r: -table.set_index("run").loc[r, "hit@3"])
    differs = dict(zip(table["run"], table["differs"], strict=True))
    assert "post.steps=['whiten']" in differs["whitened"] and "post.steps=[]" in differs["plain"]
    metrics = json.loads((two_runs / "plain" / "metrics.json").read_text())
    assert table.set_index("run").loc["plain", "museum hit@3"] == pytest.approx(metrics["sets"]["museum"]["hit@3"])
    md = (tmp_path / "compare.md").read_text()
    assert md.startswith("| run") and "whitened" in md
    assert (tmp_path / "compare.csv").read_text().count("\n") == 3
    assert (tmp_path / "hit3.png").stat().st_size > 5_000


def test_compare_reads_each_run_by_its_kind(two_runs, tmp_path):
    evaluated = json.loads((two_runs / "plain" / "metrics.json").read_text())
    assert evaluated["kind"] == "evaluate" and evaluated["schema"] == 2
    last = {"overall": {"hit@1": 0.1, "hit@3": 0.2, "hit@10": 0.3, "raw": {"hit@3": 0.15}},
            "synthetic": {"hit@3": 0.4, "raw": {"hit@3": 0.25}},
            "sets": {"museum": {"hit@1": 0.1, "hit@3": 0.2, "hit@10": 0.3}}, "effective_rank": 5.0,
            "monitor_pool": 70}
    after = {"hit@1": 0.5, "hit@3": 0.6, "hit@10": 0.7}
    runs = {"trained": {"kind": "pretrain", "schema": 2, "last": last},
            "stage2": {"kind": "pseudolabel", "schema": 2, "rounds": [], "pool_after": after},
            "old-stage2": {"rounds": [], "pool_after": after},  # written before kinds: refused
            "submitted": {"kind": "submit", "schema": 2, "submission": "s.csv"}}
    for name, metrics in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    table = compare_runs([two_runs / "plain", *(tmp_path / n for n in ("trained", "stage2"))])
    rows = table.set_index("run")
    assert rows.loc["trained", "kind"] == "pretrain" and rows.loc["trained", "hit@3"] == 0.2
    assert rows.loc["trained", "synthetic hit@3"] == 0.4 and rows.loc["trained", "pool"] == 70
    assert rows.loc["trained", "raw hit@3"] == 0.15 and rows.loc["trained", "raw synthetic hit@3"] == 0.25
    assert pd.isna(rows.loc["stage2", "raw hit@3"])  # no post steps recorded: no raw column to fill
    assert rows.loc["stage2", "hit@3"] == 0.6 and rows.loc["plain", "kind"] == "evaluate"
    result = run_cli("eval.compare", str(tmp_path / "old-stage2"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "names no kind of run" in result.stderr
    result = run_cli("eval.compare", str(tmp_path / "submitted"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "submit run, which has no scores" in result.stderr


def test_queries_csv_holds_every_scored_query_and_compare_pairs_runs_with_a_baseline(two_runs, tmp_path):
    runs = {name: two_runs / name for name in ("plain", "whitened")}
    tables = {name: pd.read_csv(run / "queries.csv") for name, run in runs.items()}
    for name, run in runs.items():
        metrics, table = json.loads((run / "metrics.json").read_text()), tables[name]
        labeled, synthetic = table[table["kind"] == "labeled"], table[table["kind"] == "synthetic"]
        assert len(labeled) == metrics["n_queries"] + 2 and len(synthetic) == 5
        assert labeled["rank"].isna().sum() == 2  # the sample's two photos of paintings not in the pool
        labeled = labeled.dropna(subset=["rank"])
        # The ranks give back the headline figures, after the post steps and (where steps ran) before.
        assert (labeled["rank"] < 3).mean() == pytest.approx(metrics["hit@3"])
        assert (synthetic["rank"] < 3).mean() == pytest.approx(metrics["synthetic"]["hit@3"])
    assert tables["plain"]["raw_rank"].isna().all()
    labeled = tables["whitened"][tables["whitened"]["kind"] == "labeled"].dropna(subset=["rank"])
    whitened = json.loads((runs["whitened"] / "metrics.json").read_text())
    assert (labeled["raw_rank"] < 3).mean() == pytest.approx(whitened["raw"]["hit@3"])

    old = tmp_path / "old"  # an evaluation written before queries.csv existed
    shutil.copytree(runs["plain"], old)
    (old / "queries.csv").unlink()
    table = compare_runs([runs["plain"], runs["whitened"], old], baseline=runs["plain"]).set_index("run")
    assert table.loc["plain", "vs base hit@3"] == "baseline" and table.loc["old", "vs base hit@3"] == "no queries.csv"
    paired = table.loc["whitened", "vs base hit@3"]
    diff, gained, lost = re.fullmatch(r"([+-][\d.]+) \[.*\] \+(\d+)/-(\d+) p=.*", paired).groups()
    n = len(labeled)
    assert float(diff) == pytest.approx(table.loc["whitened", "hit@3"] - table.loc["plain", "hit@3"], abs=5e-4)
    assert (int(gained) - int(lost)) / n == pytest.approx(float(diff), abs=5e-4)
    assert table.loc["whitened", "vs base synthetic hit@3"].endswith(tuple("0123456789"))
    # Per condition of the photos too: each photo counted under each condition it shows, its turn first.
    synthetic = tables["whitened"][tables["whitened"]["kind"] == "synthetic"]
    turns = synthetic["conditions"].str.split(";").str[0].value_counts()
    for turn, n in turns.items():
        assert table.loc["whitened", f"vs base {turn} hit@3 (n={n})"].endswith(tuple("0123456789"))

    reseeded = tmp_path / "reseeded"  # other synthetic photos under the same names: not paired
    shutil.copytree(runs["whitened"], reseeded)
    recipe = (reseeded / "recipe.yaml").read_text()
    (reseeded / "recipe.yaml").write_text(re.sub(r"(synthetic:\n(?:  .*\n)*?  seed: )0", r"\g<1>7", recipe))
    metrics = json.loads((reseeded / "metrics.json").read_text())
    (reseeded / "metrics.json").write_text(json.dumps({**metrics, "pool_size": metrics["pool_size"] + 1}))
    table = compare_runs([reseeded], baseline=runs["plain"]).set_index("run")
    assert table.loc["reseeded", "vs base synthetic hit@3"].startswith("other photos")
    n_pool = metrics["pool_size"]
    assert table.loc["reseeded", "vs base hit@3"] == f"{paired} (pool {n_pool + 1} vs {n_pool})"

    result = run_cli("eval.compare", str(runs["whitened"]), "--baseline", str(old), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "no queries.csv" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("eval.compare", str(runs["plain"]), str(runs["whitened"]), "--baseline", str(runs["plain"]),
                     "--k", "1", "--out", str(tmp_path / "o"))
    assert result.returncode == 0 and "vs base hit@1" in result.stdout, result.stderr


def test_compare_rejects_a_folder_without_metrics(tmp_path, capsys):
    result = run_main(capsys, "eval.compare", str(tmp_path))
    assert result.returncode == 2 and "metrics.json" in result.stderr


def test_report_puts_failures_first_and_marks_hits(two_runs):
    pool = recipe_pool(load_recipe(two_runs / "plain" / "recipe.yaml"))
    results = query_results(pool, Embeddings.load(two_runs / "plain" / "embeddings"), k=3)
    order = [2 if not r.targets else int(r.hit) for r in results]
    assert order == sorted(order) and order[-1] == 2  # failures, hits, then queries without a target
    for r in results:
        assert r.hit == (r.first_target_rank is not None and r.first_target_rank < 3)
        assert not r.hit or set(r.neighbours) & set(r.targets)


def test_report_on_synthetic_photos_of_one_condition(two_runs):
    run = two_runs / "whitened"
    emb, paths, results = synthetic_results(run, "all", k=3)
    assert len(results) == 5 and len(paths) == len(emb)
    syn_rows = {r.query for r in results}
    assert all(paths[q].parent == run / "synthetic" / "images" for q in syn_rows)
    turn = results[0].subset.split(";")[0]  # every photo carries its turn first
    assert all(turn in r.subset for r in synthetic_results(run, turn, k=3)[2])
    page = write_report(run, k=3, synthetic=turn)
    assert page.parent.name == f"report-synthetic-{turn}" and "synthetic" in page.read_text()
    result = run_cli("eval.report", str(run), "--synthetic", "sideways")
    assert result.returncode == 2 and "not a condition" in result.stderr and "Traceback" not in result.stderr


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("headless Chromium is not installed: `apt-get install chromium` (Debian's package; .ci/run "
                    "installs it) to render the report page")
    return found


@pytest.mark.browser
def test_report_renders_in_headless_chromium_with_every_image(two_runs, tmp_path):
    page = write_report(two_runs / "whitened", k=3)
    images = len(re.findall(r"<img ", page.read_text()))
    assert images > 10
    chromium = _chromium()
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert f'<span id="loaded">{images}/{images}</span>' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "report.png"
    subprocess.run([*common, "--window-size=1200,900", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120)
    assert shot.stat().st_size > 20_000
    assert (page.parent / "hubs.png").is_file()


def test_curves_plot_training_epochs_and_skip_stage2_round_records(tmp_path):
    trained, rounds = tmp_path / "trained", tmp_path / "rounds"
    for folder, records in ((trained, [{"epoch": 0, "loss": None, "synthetic": {"hit@3": 0.3}},
                                       {"epoch": 1, "loss": 1.2, "synthetic": {"hit@3": 0.4}}]),
                            (rounds, [{"round": 1, "mining": {"kept": 3}}])):
        folder.mkdir()
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert plot_curves([rounds], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. matplotlib's "no artists with labels" for an empty legend
        out = plot_curves([trained, rounds], tmp_path / "curves.png")
    assert out.stat().st_size > 5_000
