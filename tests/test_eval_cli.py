"""python -m eval end to end on the sample museum with the tiny recipe, as a user runs it."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, run_cli, run_main

from core.model.embed import Embeddings


@pytest.fixture(scope="module")
def tiny_run(sample_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    result = run_cli("eval", "recipes/tiny.yaml", f"data.labeled=[{sample_root}]", f"run_dir={run_dir}",
                     "synthetic.num_queries=12")
    assert result.returncode == 0, result.stderr
    return run_dir, result


def test_metrics_file_layout(tiny_run, sample_root):
    run_dir, result = tiny_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("hit@1", "hit@3", "hit@10", "map", "mrr"):
        assert 0.0 <= metrics[key] <= 1.0
    pairs = pd.read_csv(sample_root / "pairs.csv", keep_default_na=False)
    assert metrics["n_queries"] == (pairs["target"] != "").sum()
    museum = metrics["sets"]["museum"]
    assert set(museum["subsets"]) == {"cropped", "wall"}
    assert sum(s["n_queries"] for s in museum["subsets"].values()) == museum["n_queries"]
    assert museum["n_unmatched"] == 2
    assert metrics["synthetic"]["n_queries"] == 12
    assert metrics["pool_size"] == len(list((sample_root / "images").rglob("*.*")))
    assert metrics["backbone"]["arch"] == "test_vit" and metrics["recipe"]["model"]["img_size"] == 64
    assert metrics["time_s"]["total"] > 0
    assert {"effective_rank", "norm_cv", "nn_margin_mean"} <= set(metrics["stats"])
    assert "overall" in result.stdout and "museum/wall" in result.stdout
    assert (run_dir / "recipe.yaml").is_file() and "log.txt" in {p.name for p in run_dir.iterdir()}
    assert len(list((run_dir / "synthetic" / "images").glob("*.jpg"))) == 12


def test_metrics_agree_with_saved_embeddings(tiny_run, sample_root):
    """Recompute Hit@3 by brute force from the saved embeddings and the raw pairs.csv."""
    run_dir, _ = tiny_run
    emb = Embeddings.load(run_dir / "embeddings")
    row = {n: i for i, n in enumerate(emb.names)}
    pairs = pd.read_csv(sample_root / "pairs.csv", keep_default_na=False)
    pairs = pairs[pairs["target"] != ""]
    hits = []
    for q, t in zip(pairs["query"], pairs["target"], strict=True):
        qi, ti = row["museum/" + q.removeprefix("images/")], row["museum/" + t.removeprefix("images/")]
        sims = emb.vectors @ emb.vectors[qi]
        sims[qi] = -np.inf
        hits.append(ti in np.argsort(-sims, kind="stable")[:3])
    assert json.loads((run_dir / "metrics.json").read_text())["hit@3"] == pytest.approx(np.mean(hits))


def test_encoder_file_evaluates_directly(tmp_path, sample_root):
    from core.model.backbone import EncoderSpec, build_encoder

    build_encoder(EncoderSpec(weights="none", arch="test_vit", img_size=64, pooling="gem")).save(tmp_path / "enc.pt")
    result = run_cli("eval", str(tmp_path / "enc.pt"), f"data.labeled=[{sample_root}]",
                     f"run_dir={tmp_path / 'run'}", "synthetic.num_queries=0", "embed.progress=false",
                     f"data.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["backbone"]["pooling"] == "gem" and metrics["synthetic"] is None
    # One resized cache entry per pool image.
    assert len(list((tmp_path / "cache").rglob("*.png"))) == metrics["pool_size"]


def test_corrupt_image_stops_with_its_name_or_is_skipped(tmp_path, sample_root):
    folder = tmp_path / "extra"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    common = ["recipes/tiny.yaml", f"data.labeled=[{sample_root}]", f"data.distractors=[{folder}]",
              "synthetic.num_queries=0"]
    failed = run_cli("eval", *common, f"run_dir={tmp_path / 'a'}")
    assert failed.returncode == 2
    assert "broken.jpg" in failed.stderr and "data.skip_corrupt=true" in failed.stderr
    ok = run_cli("eval", *common, f"run_dir={tmp_path / 'b'}", "data.skip_corrupt=true")
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["skipped"] == ["extra/broken.jpg"]
    assert "skipped undecodable image extra/broken.jpg" in (tmp_path / "b" / "log.txt").read_text()


def test_bad_inputs_exit_2_with_a_message(tmp_path, capsys):
    unknown = run_main(capsys, "eval", "recipes/tiny.yaml", "model.pooling_typo=gem")
    assert unknown.returncode == 2 and "model.pooling_typo" in unknown.stderr and "model.pooling" in unknown.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = run_main(capsys, "eval", "recipes/tiny.yaml", f"data.distractors=[{empty}]", f"run_dir={tmp_path / 'r'}")
    assert missing.returncode == 2 and f"no images in {empty}" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_default_data_is_the_sample_museum(tmp_path):
    result = run_cli("eval", "recipes/tiny.yaml", f"run_dir={tmp_path / 'r'}", "synthetic.num_queries=4",
                     env={"CURATOR_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert list(metrics["sets"]) == ["sample-museum"] and metrics["n_queries"] == 24
    assert (ROOT / "recipes" / "tiny.yaml").is_file()


def test_runs_in_one_process_keep_separate_logs(tmp_path, sample_root):
    from core.recipe import load_recipe
    from eval.evaluate import evaluate

    common = [f"data.labeled=[{sample_root}]", "synthetic.num_queries=0"]
    evaluate(load_recipe(ROOT / "recipes" / "tiny.yaml", [*common, f"run_dir={tmp_path / 'a'}"]))
    evaluate(load_recipe(ROOT / "recipes" / "tiny.yaml", [*common, f"run_dir={tmp_path / 'b'}",
                                                          f"data.distractors=[{sample_root / 'images' / 'studio'}]"]))
    first, second = (tmp_path / "a" / "log.txt").read_text(), (tmp_path / "b" / "log.txt").read_text()
    assert "1 distractor folder" in second and "1 distractor folder" not in first
    assert first.count("core.data.pool: pool:") == 1 and second.count("core.data.pool: pool:") == 1


def test_the_recipe_seed_fixes_random_weights(tmp_path, sample_root):
    runs = [run_cli("eval", "recipes/tiny.yaml", f"data.labeled=[{sample_root}]", "synthetic.num_queries=0",
                    f"run_dir={tmp_path / name}", *extra) for name, extra in (("a", ()), ("b", ()), ("c", ("seed=1",)))]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    a, b, c = (Embeddings.load(tmp_path / name / "embeddings").vectors for name in "abc")
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("content", ["model: {arch: [x\n", "model:\n\tarch: x\n", "- a list\n", b"\x89PNG\r\n\x1a\n"])
def test_a_recipe_that_is_not_yaml_is_named_without_a_traceback(tmp_path, content, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = run_main(capsys, "eval", str(recipe), f"run_dir={tmp_path / 'r'}")
    assert result.returncode == 2 and f"recipe {recipe}" in result.stderr and "Fix:" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_empty_pairs_file_is_named(tmp_path, sample_root, capsys):
    labeled = tmp_path / "set"
    labeled.mkdir()
    (labeled / "images").symlink_to(sample_root / "images", target_is_directory=True)
    (labeled / "pairs.csv").write_bytes(b"")
    result = run_main(capsys, "eval", "recipes/tiny.yaml", f"data.labeled=[{labeled}]", f"run_dir={tmp_path / 'r'}")
    assert result.returncode == 2 and f"{labeled / 'pairs.csv'} is not a readable CSV" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_error_in_a_loader_worker_is_one_paragraph(tmp_path, sample_root):
    folder = tmp_path / "extra"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"garbage")
    result = run_cli("eval", "recipes/tiny.yaml", f"data.distractors=[{folder}]", "embed.num_workers=2",
                     "synthetic.num_queries=0", f"run_dir={tmp_path / 'r'}")
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]  # after the log lines
    assert error.startswith(f"error: cannot read image {folder / 'broken.png'}") and "Fix:" in error
    assert "Traceback" not in result.stderr and "worker" not in result.stderr


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    from core.base import runs
    from core.recipe import load_recipe

    monkeypatch.setattr(runs.time, "strftime", lambda fmt: "20261123-101500")
    recipes = [load_recipe(ROOT / "recipes" / "tiny.yaml") for _ in range(3)]
    made = [runs.RunDir.create(recipe, "evaluate", root=tmp_path).path for recipe in recipes]
    assert [p.name for p in made] == ["tiny-20261123-101500", "tiny-20261123-101500-2", "tiny-20261123-101500-3"]
    assert all(f"run_dir: {p}" in (p / "recipe.yaml").read_text() for p in made)
