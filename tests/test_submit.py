import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from PIL import Image

from core.embed import Embeddings
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
    assert table["image_name"].tolist() == files and table["ID"].tolist() == list(range(30))
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
