"""Careless and hostile inputs (benchmarks/hostile_inputs.py prints them as a table): run folders that would
run code, inputs that would be overwritten, rows that would leak in or go missing, nonsense numbers."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import ROOT

from adapt.config import PseudolabelRecipe
from adapt.pseudolabel import DEFAULT_RECIPE as STAGE2_RECIPE
from adapt.pseudolabel import main as pseudolabel_main
from adapt.pseudolabel import pseudolabel
from benchmarks.hostile_inputs import TRAIN, chain_recipe, write_images
from core.base.errors import OutputError, RecipeError
from core.base.options import numeric_fields
from core.base.runs import RunDir, hold, release
from core.pixels.images import list_images
from core.recipe import Recipe, load_recipe
from eval.chain import ChainRecipe
from eval.chain import main as chain_main
from eval.compare import main as compare_main
from eval.evaluate import evaluate
from eval.submit import main as submit_main
from ssl.config import PretrainRecipe
from ssl.pretrain import main as pretrain_main
from ssl.pretrain import pretrain

TINY = str(ROOT / "recipes" / "tiny.yaml")


def _submit(*args: str) -> int:
    return submit_main([TINY, "embed.progress=false", *args])


class Evil:
    """Unpickling this runs a shell command: what a hostile checkpoint would hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A finished stage-1 run (SimCLR) and a finished one-round stage-2 run from its encoder, one epoch each."""
    root = tmp_path_factory.mktemp("trained")
    images = root / "images"
    write_images(images, 12)
    stage1 = pretrain(load_recipe(ROOT / "recipes" / "simclr.yaml", [*TRAIN, f"data.root={images}",
                                                                      f"run_dir={root / 'stage1'}"], PretrainRecipe))
    pseudolabel(load_recipe(STAGE2_RECIPE, [*TRAIN, f"data.root={images}", f"run_dir={root / 'stage2'}", "rounds=1",
                                            "mining.verify=false", "mining.min_similarity=-1",
                                            f"model.weights={stage1['encoder']}"], PseudolabelRecipe))
    return {"stage1": root / "stage1", "stage2": root / "stage2", "images": images}


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns(".lock"))
    return to


def test_a_checkpoint_that_would_run_code_is_refused_before_anything_runs(trained, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    stage1 = _copy(trained["stage1"], tmp_path / "stage1")
    torch.save({"state_dict": Evil(marker)}, stage1 / "checkpoints" / "last.ckpt")
    assert pretrain_main(["--resume", str(stage1)]) == 2
    stage2 = _copy(trained["stage2"], tmp_path / "stage2")
    (stage2 / "metrics.json").unlink()
    (stage2 / "metrics.jsonl").write_text("")  # round 1 interrupted: its checkpoint is what resumes
    torch.save({"state_dict": Evil(marker)}, stage2 / "round1" / "checkpoints" / "last.ckpt")
    assert pseudolabel_main(["--resume", str(stage2)]) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert err.count("holds objects other than tensors and plain data") == 2 and "Traceback" not in err
    assert not (stage2 / "round1" / "embeddings").exists() and "round 1: embed pool" not in err


def test_a_checkpoint_of_another_run_or_a_damaged_one_is_refused_naming_why(trained, tmp_path, capsys):
    stage2 = _copy(trained["stage2"], tmp_path / "stage2")
    (stage2 / "metrics.json").unlink()
    (stage2 / "metrics.jsonl").write_text("")
    shutil.copy(trained["stage1"] / "checkpoints" / "last.ckpt", stage2 / "round1" / "checkpoints" / "last.ckpt")
    assert pseudolabel_main(["--resume", str(stage2)]) == 2
    assert "was written by a pretrain run, not by this refine run" in capsys.readouterr().err

    other = _copy(trained["stage1"], tmp_path / "other-method")
    recipe = (other / "recipe.yaml").read_text()
    (other / "recipe.yaml").write_text(recipe.replace("method: simclr", "method: dino"))
    assert pretrain_main(["--resume", str(other), "dino.local_size=16"]) == 2
    assert "written with another recipe (method: 'simclr' -> 'dino'" in capsys.readouterr().err

    bigger = _copy(trained["stage1"], tmp_path / "bigger")
    assert pretrain_main(["--resume", str(bigger), "model.img_size=48", "views.global_size=48"]) == 2
    assert "model.img_size: 32 -> 48" in capsys.readouterr().err

    truncated = _copy(trained["stage1"], tmp_path / "truncated")
    ckpt = truncated / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    assert pretrain_main(["--resume", str(truncated)]) == 2
    err = capsys.readouterr().err
    assert "is damaged or not a checkpoint" in err and "Fix:" in err and "Traceback" not in err


def test_no_weights_is_an_error_and_random_weights_are_asked_for_by_name(tmp_path, capsys, caplog):
    folder = tmp_path / "imgs"
    write_images(folder, 3)
    assert submit_main([f"data.root={folder}", f"submission={tmp_path / 's.csv'}", "model.img_size=28"]) == 2
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert submit_main([str(empty), f"data.root={folder}", f"submission={tmp_path / 's.csv'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("model.weights is not set") == 2 and not (tmp_path / "s.csv").exists()
    assert _submit(f"data.root={folder}", f"submission={tmp_path / 's.csv'}") == 0  # tiny.yaml: weights none
    assert "model.weights=none: test_vit starts from random weights" in caplog.text


def test_an_output_that_is_an_input_or_any_other_file_is_refused_before_work(tmp_path, capsys):
    folder = tmp_path / "imgs"
    images = write_images(folder, 3)
    before = images[0].read_bytes()
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for target in (images[0], notes):
        assert _submit(f"data.root={folder}", f"submission={target}", f"run_dir={tmp_path / 'run'}") == 2
    err = capsys.readouterr().err
    assert err.count("already exists and is not a CSV file") == 2 and "Fix:" in err
    assert images[0].read_bytes() == before and notes.read_text() == "mine"
    assert not (tmp_path / "run" / "embeddings").exists()


def test_links_out_of_the_folder_are_left_out_and_every_name_in_it_gets_a_row(tmp_path, caplog):
    write_images(tmp_path / "parent-images", 2, seed=3)
    folder = tmp_path / "inner"
    write_images(folder, 5)
    (folder / "up").symlink_to("..")
    os.link(folder / "g0.png", folder / "hard.png")
    (folder / "soft.png").symlink_to("g1.png")
    (folder / "outside.png").symlink_to(tmp_path / "parent-images" / "g0.png")
    out = tmp_path / "s.csv"
    assert _submit(f"data.root={folder}", f"submission={out}") == 0
    table = pd.read_csv(out).drop(columns="ID").set_index("image_name")
    assert sorted(table.index) == ["g0.png", "g1.png", "g2.png", "g3.png", "g4.png", "hard.png", "soft.png"]
    assert (table.loc["hard.png"] == table.loc["g0.png"]).all() and (table.loc["soft.png"] == table.loc["g1.png"]).all()
    assert "left out 2 link(s) that lead outside the folder" in caplog.text and "outside.png" in caplog.text


def test_only_regular_files_are_read_so_a_fifo_cannot_hang_the_listing(tmp_path, caplog):
    write_images(tmp_path, 2)
    os.mkfifo(tmp_path / "x.jpg")
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("listing the folder hung on the FIFO"))
    signal.alarm(10)
    try:
        names = [p.name for p in list_images(tmp_path)]
    finally:
        signal.alarm(0)
    assert names == ["g0.png", "g1.png"] and "not regular files" in caplog.text and "x.jpg" in caplog.text


def test_run_folders_inside_the_data_are_left_out_of_the_pool(tmp_path, caplog):
    folder = tmp_path / "pool"
    write_images(folder, 6)
    common = ["embed.progress=false", f"data.root={folder}", "synthetic.num_queries=3"]
    first = evaluate(load_recipe(TINY, [*common, f"run_dir={folder / 'run1'}"]))
    second = evaluate(load_recipe(TINY, [*common, f"run_dir={folder / 'run2'}"]))
    assert first["pool_size"] == second["pool_size"] == 6
    assert "folder(s) of earlier runs" in caplog.text and "run1" in caplog.text


def test_every_number_of_every_schema_has_a_range():
    for schema in (Recipe, PretrainRecipe, PseudolabelRecipe, ChainRecipe):
        missing = [key for key, field in numeric_fields(schema) if not field.metadata.get("range")]
        assert not missing, f"{schema.__name__}: numbers without a range: {missing}"


@pytest.mark.parametrize("override", ["data.cache_max_side=-5", "model.img_size=0", "model.gem_p=-1",
                                      "model.img_size=-64", "embed.num_workers=-1", "post.whiten.dim=-3",
                                      "post.concat.models=[{arch: test_vit, weights: none, weight: -1}]"])
def test_numbers_out_of_range_are_refused_when_the_recipe_loads(override):
    key = override.split("=")[0].replace("post.concat.models", "post.concat.models[i].weight")
    with pytest.raises(RecipeError, match=rf"{re.escape(key)}=\S+ is out of range: it must be"):
        load_recipe(TINY, [override])
    for schema in (PretrainRecipe, PseudolabelRecipe):
        with pytest.raises(RecipeError, match="train.batch_size=1 is out of range: it must be >= 2"):
            load_recipe(None, ["train.batch_size=1"], schema)


def test_a_bad_override_or_a_section_given_a_value_names_its_key(tmp_path, monkeypatch):
    with pytest.raises(RecipeError, match=r"the override 'embed.turns=\[0,180' is not a valid value .*Fix:"):
        load_recipe(TINY, ["embed.turns=[0,180"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: 3\n")
    with pytest.raises(RecipeError, match=r"model in .*r.yaml is a section of keys, not a single value"):
        load_recipe(recipe)
    recipe.write_text("run_dir: ${oc.env:CURATOR_UNSET_VARIABLE}\n")
    monkeypatch.delenv("CURATOR_UNSET_VARIABLE", raising=False)
    with pytest.raises(RecipeError, match=r"recipe key 'run_dir' .* cannot be resolved: .*CURATOR_UNSET_VARIABLE"):
        load_recipe(recipe)


def test_compare_names_a_missing_run_an_existing_file_as_out_and_a_damaged_metrics_file(tmp_path, capsys):
    run = tmp_path / "run"
    evaluate(load_recipe(TINY, ["embed.progress=false", f"data.root={write_images(tmp_path / 'i', 3)[0].parent}",
                                f"run_dir={run}", "synthetic.num_queries=0"]))
    assert compare_main([str(run), str(tmp_path / "typo"), "--out", str(tmp_path / "cmp")]) == 2
    existing = tmp_path / "a-file"
    existing.write_text("mine\n")
    assert compare_main([str(run), "--out", str(existing)]) == 2
    broken = _copy(run, tmp_path / "broken")
    (broken / "metrics.json").write_text('{"kind": "evaluate", "hit')
    assert compare_main([str(run), str(broken), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert f"no such run folder: {tmp_path / 'typo'}" in err and "--out=" in err and existing.read_text() == "mine\n"
    assert f"{broken / 'metrics.json'} is damaged" in err and "Traceback" not in err


def test_a_run_folder_in_use_is_refused_and_a_dead_commands_hold_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from core.base.runs import hold; hold(Path(sys.argv[1])); print('held', flush=True); "
                               "time.sleep(60)", str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        recipe = load_recipe(TINY, [f"run_dir={folder}", "embed.progress=false"])
        with pytest.raises(OutputError, match=rf"{folder} is in use by another Curator command \(process "
                                              rf"{holder.pid} on .*Fix: wait"):
            RunDir.create(recipe, "evaluate")
        assert not (folder / "recipe.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    with RunDir.create(recipe, "evaluate") as run:  # the killed command's hold is taken over
        assert str(os.getpid()) in (run.path / ".lock").read_text()
        hold(run.path)  # holds nest within a process
        release(run.path)


@pytest.mark.slow
def test_two_chains_on_one_folder_train_once(tmp_path, capsys):
    images = tmp_path / "images"
    write_images(images, 12)
    recipe = chain_recipe(tmp_path / "chain.yaml", images, epochs=3)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "eval.chain", str(recipe), f"run_dir={run}"]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while "pretrain: starting" not in first.stdout.readline() and first.poll() is None:
        pass
    second = chain_main([str(recipe), f"run_dir={run}"])  # while the first one trains stage 1
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    refused = capsys.readouterr().err
    assert second == 2 and "is in use by another Curator command" in refused and "Traceback" not in refused
    rounds = [json.loads(x)["round"] for x in (run / "pseudolabel" / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [1] and not list(run.rglob("*-v1.ckpt"))
    assert len(pd.read_csv(run / "submission.csv")) == 12

    (run / "pretrain" / "metrics.json").write_text("{")  # damaged: named, not a traceback
    assert chain_main([str(recipe), f"run_dir={run}"]) == 2
    assert f"{run / 'pretrain' / 'metrics.json'} is damaged" in capsys.readouterr().err
