import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_cli, tiny_chain

from core.model.backbone import load_encoder
from eval.submit import validate_submission

pytestmark = pytest.mark.slow  # whole commands in subprocesses, tens of seconds each


def _mtimes(run: Path) -> dict[str, float]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("encoder.pt")}


def test_the_chain_runs_every_stage_then_keeps_them_and_resumes_an_interrupted_one(tmp_path):
    recipe, run = tiny_chain(tmp_path), tmp_path / "run"
    first = run_cli("eval.chain", str(recipe), f"run_dir={run}")
    assert first.returncode == 0, first.stderr[-3000:]
    for line in ("zero-shot", "stage 1 (pretrain)", "stage 2 (pseudolabel, 2 rounds)", "submission:"):
        assert line in first.stdout
    # No data given: the stages train on the sample museum, the submission covers all its images.
    images = sorted(p.relative_to(tmp_path / "museum" / "images").as_posix()
                    for p in (tmp_path / "museum" / "images").rglob("*") if p.is_file())
    assert validate_submission(run / "submission.csv", expected_names=images)["rows"] == len(images)
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["kind"] == "chain" and summary["encoder"] == str(run / "pseudolabel" / "round2" / "encoder.pt")
    assert [r["model"] for r in summary["figures"]][0] == "zero-shot"
    assert set(summary["stage_seconds"]) == {"pretrain", "pseudolabel", "submit"}
    made, submitted = _mtimes(run), (run / "submission.csv").read_bytes()

    again = run_cli("eval.chain", str(recipe), f"run_dir={run}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished before, kept") == 3
    assert json.loads((run / "metrics.json").read_text())["stage_seconds"] == {}
    assert _mtimes(run) == made and (run / "submission.csv").read_bytes() == submitted

    # The chain folder moved as a whole (another disk, a copy from another machine) resumes where it is now.
    shutil.move(run, tmp_path / "moved")
    run = tmp_path / "moved"
    # Stage 2 interrupted after its first round (its summary and round 2 never written), the
    # submission never made: the chain keeps stage 1 and round 1 and makes the rest again.
    final = load_encoder(run / "pseudolabel" / "round2" / "encoder.pt").state_dict()
    (run / "pseudolabel" / "metrics.json").unlink()
    lines = (run / "pseudolabel" / "metrics.jsonl").read_text().splitlines()
    (run / "pseudolabel" / "metrics.jsonl").write_text(lines[0] + "\n")
    shutil.rmtree(run / "pseudolabel" / "round2")
    (run / "submit" / "metrics.json").unlink()
    (run / "submission.csv").unlink()
    resumed = run_cli("eval.chain", str(recipe), f"run_dir={run}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "pretrain: finished before, kept" in resumed.stdout and "pseudolabel: resuming" in resumed.stdout
    after = _mtimes(run)
    assert {k: after[k] for k in ("pretrain/encoder.pt", "pseudolabel/round1/encoder.pt")} == \
           {k: made[k] for k in ("pretrain/encoder.pt", "pseudolabel/round1/encoder.pt")}
    again = load_encoder(run / "pseudolabel" / "round2" / "encoder.pt").state_dict()
    assert all(torch.equal(final[k], again[k]) for k in final)
    assert (run / "submission.csv").read_bytes() == submitted


def test_a_changed_recipe_or_a_bad_output_is_refused_before_any_work(tmp_path):
    recipe, run = tiny_chain(tmp_path), tmp_path / "run"
    (run / "pretrain").mkdir(parents=True)
    (run / "pretrain" / "recipe.yaml").write_text("seed: 5\n")
    result = run_cli("eval.chain", str(recipe), f"run_dir={run}")
    assert result.returncode == 2 and "made with another recipe" in result.stderr and "Fix:" in result.stderr
    assert "Traceback" not in result.stderr and not (run / "recipe.yaml").exists()

    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli("eval.chain", str(recipe), f"run_dir={tmp_path / 'other'}", f"submission={blocker / 'sub.csv'}")
    assert result.returncode == 2 and "submission" in result.stderr and not (tmp_path / "other").exists()

    result = run_cli("eval.chain", str(recipe), f"data.labeled=[{tmp_path / 'museum'}]")
    assert result.returncode == 2 and "data.root" in result.stderr

    result = run_cli("eval.chain", str(recipe), "stages.pretrain.recipe=nope.yaml")
    assert result.returncode == 2 and "stages.pretrain.recipe=nope.yaml not found" in result.stderr


@pytest.mark.parametrize("stage", ["pretrain", "submit"])
def test_a_stage_can_be_left_out(tmp_path, stage):
    recipe, run = tiny_chain(tmp_path), tmp_path / "run"
    result = run_cli("eval.chain", str(recipe), f"run_dir={run}", f"stages.{stage}.recipe=null")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (run / stage).exists() and (run / "submission.csv").is_file() == (stage != "submit")
