import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, run_cli, run_main
from PIL import Image

from core.model.embed import Embeddings
from eval.submit import SubmissionError, validate_submission, write_submission


def _folder(tmp_path, n=30):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
        # Odd but valid images the competition folder may hold.
        img = {0: img.convert("RGBA"), 1: img.convert("L"), 2: img.convert("CMYK")}.get(i, img)
        img.save(folder / (f"{i:05d}.jpg" if i == 2 else f"{i:05d}.png"))
    return folder


def test_submit_cli_writes_a_valid_file(tmp_path):
    folder = _folder(tmp_path)
    out = tmp_path / "sub" / "submission.csv"
    result = run_cli("eval.submit", "recipes/tiny.yaml", f"data.root={folder}", f"submission={out}",
                     f"run_dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out, dtype={"image_name": str})
    files = sorted(p.name for p in folder.iterdir())
    assert list(table.columns[:3]) == ["ID", "image_name", "feature_0"] and table.shape == (30, 2 + 64)
    # ID = image_name, as in the competition's sample submission (00001.png,00001.png,...).
    assert table["image_name"].tolist() == files and table["ID"].tolist() == files
    features = table.iloc[:, 2:].to_numpy(np.float64)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1, atol=1e-6)
    saved = Embeddings.load(tmp_path / "run" / "embeddings")
    np.testing.assert_array_equal(features.astype(np.float32), saved.vectors)  # exact float32 round trip
    assert not list(out.parent.glob("*.tmp"))


def test_submit_needs_a_folder(tmp_path):
    result = run_cli("eval.submit", "recipes/tiny.yaml", f"run_dir={tmp_path / 'r'}")
    assert result.returncode == 2 and "data.root is not set" in result.stderr


def _emb(n=4, d=3):
    v = np.random.default_rng(1).normal(size=(n, d)).astype(np.float32)
    return Embeddings([f"{i}.png" for i in range(n)], v / np.linalg.norm(v, axis=1, keepdims=True),
                      np.ones(n, np.float32))


def test_validation_catches_each_defect(tmp_path):
    path = write_submission(_emb(), tmp_path / "s.csv")
    assert validate_submission(path, expected_names=[f"{i}.png" for i in range(4)], dim=3) == {"rows": 4, "dim": 3}
    with pytest.raises(SubmissionError, match="4 rows for 5 images"):
        validate_submission(path, expected_names=[f"{i}.png" for i in range(5)])
    with pytest.raises(SubmissionError, match="expected 8"):
        validate_submission(path, dim=8)

    def broken(edit):
        table = edit(pd.read_csv(path, dtype={"image_name": str}))
        table.to_csv(tmp_path / "bad.csv", index=False)
        return tmp_path / "bad.csv"

    with pytest.raises(SubmissionError, match="NaN"):
        validate_submission(broken(lambda t: t.assign(feature_1=np.nan)))
    with pytest.raises(SubmissionError, match="duplicated"):
        validate_submission(broken(lambda t: t.assign(image_name="same.png")))
    with pytest.raises(SubmissionError, match="not L2-normalised"):
        validate_submission(broken(lambda t: t.assign(feature_0=t["feature_0"] + 0.5)))
    with pytest.raises(SubmissionError, match="header"):
        validate_submission(broken(lambda t: t.rename(columns={"ID": "id"})))
    with pytest.raises(SubmissionError, match="4 rows whose ID is not their image_name"):
        validate_submission(broken(lambda t: t.assign(ID=range(4))))
    with pytest.raises(SubmissionError, match="no rows"):
        validate_submission(broken(lambda t: t.iloc[:0]))


def test_names_with_any_character_round_trip(tmp_path):
    emb = _emb(2)
    emb.names = ["comma,name.png", "line\nbreak.png"]
    path = write_submission(emb, tmp_path / "s.csv")
    assert validate_submission(path, expected_names=emb.names, dim=3) == {"rows": 2, "dim": 3}


def _submit(tmp_path, folder, *extra):
    return run_cli("eval.submit", "recipes/tiny.yaml", f"data.root={folder}", f"run_dir={tmp_path / 'run'}", *extra)


def test_a_folder_of_undecodable_images_is_an_error_not_an_empty_file(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(b"not a png")
    out = tmp_path / "submission.csv"
    result = _submit(tmp_path, folder, f"submission={out}", "data.skip_corrupt=true")
    assert result.returncode == 2 and "none of the 3 images could be decoded" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
    result = run_cli("eval", "recipes/tiny.yaml", f"data.distractors=[{folder}]", "data.skip_corrupt=true",
                     f"run_dir={tmp_path / 'eval'}")
    assert result.returncode == 2 and "none of the 3 images could be decoded" in result.stderr
    assert "Traceback" not in result.stderr


def test_folder_links_give_each_image_one_row(tmp_path):
    folder = _folder(tmp_path, n=4)
    (folder / "sub").mkdir()
    (folder / "sub" / "loop").symlink_to("..", target_is_directory=True)
    (folder / "self").symlink_to(".", target_is_directory=True)
    out = tmp_path / "submission.csv"
    result = _submit(tmp_path, folder, f"submission={out}")
    assert result.returncode == 0, result.stderr
    assert pd.read_csv(out)["image_name"].tolist() == [f"{i:05d}.{'jpg' if i == 2 else 'png'}" for i in range(4)]


@pytest.mark.parametrize("case", ["parent is a file", "a folder", "cannot be created"])
def test_an_unwritable_submission_fails_before_embedding(tmp_path, case, capsys):
    folder = _folder(tmp_path, n=2)
    (tmp_path / "file").write_text("x")
    target = {"parent is a file": tmp_path / "file" / "submission.csv", "a folder": tmp_path,
              # /proc takes no new files, even from root (who may write into read-only folders).
              "cannot be created": "/proc/curator-test/submission.csv"}[case]
    result = run_main(capsys, "eval.submit", "recipes/tiny.yaml", f"data.root={folder}", f"run_dir={tmp_path / 'run'}",
                      f"submission={target}")
    assert result.returncode == 2 and f"submission={target}" in result.stderr and "Fix:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "embeddings").exists()  # nothing was embedded


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the /proc case covers root")
def test_a_read_only_folder_fails_before_embedding(tmp_path):
    folder, locked = _folder(tmp_path, n=2), tmp_path / "locked"
    locked.mkdir(mode=0o555)
    result = _submit(tmp_path, folder, f"submission={locked / 'submission.csv'}")
    assert result.returncode == 2 and "Permission denied" in result.stderr


def test_stale_temporary_files_are_removed(tmp_path):
    folder = _folder(tmp_path, n=2)
    out = tmp_path / "out" / "submission.csv"
    out.parent.mkdir()
    dead = out.parent / ".submission.csv.4194305.abc123.tmp"  # above Linux's largest PID: no such process
    alive = out.parent / f".submission.csv.{os.getpid()}.def456.tmp"  # a writer still at work
    dead.write_text("half a file")
    alive.write_text("half a file")
    result = _submit(tmp_path, folder, f"submission={out}")
    assert result.returncode == 0, result.stderr
    assert not dead.exists() and alive.exists() and out.is_file()


def test_sigterm_during_a_write_leaves_no_temporary_file(tmp_path):
    script = (
        "import os, signal, sys\n"
        "from core.base.atomic import atomic_path\n"
        "from core.base.errors import command_line\n"
        "@command_line\n"
        "def main(argv):\n"
        "    with atomic_path(sys.argv[1]) as tmp:\n"
        "        tmp.write_text('half')\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        tmp.write_text('whole')\n"
        "    return 0\n"
        "sys.exit(main([]))\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out.csv")], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 130 and "interrupted" in result.stderr
    assert list(tmp_path.iterdir()) == []
