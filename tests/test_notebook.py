"""examples/kaggle_submission.ipynb executed as Kaggle would, with its parameters cell replaced
(as papermill does) by the sample museum and the tiny chain, so the notebook cannot rot."""
from pathlib import Path

import pytest
from conftest import ROOT, tiny_chain

from core.pixels.sample import ensure_sample
from eval.submit import validate_submission

pytestmark = pytest.mark.slow  # whole commands in subprocesses, tens of seconds each

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the dev extras (nbformat, nbclient)")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs the dev extras (nbformat, nbclient)")
NOTEBOOK = ROOT / "examples" / "kaggle_submission.ipynb"


def execute(folder: Path, **params) -> None:
    """Run the notebook in ``folder`` with ``params`` set right after its "parameters" cell."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items())))
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}}).execute()


def test_the_kaggle_notebook_writes_a_valid_submission_offline(tmp_path):
    images = ensure_sample(tmp_path / "museum") / "images"
    work = tmp_path / "working"
    execute(tmp_path, CURATOR_SRC=str(ROOT), WHEELS=None, WEIGHTS=None, IMAGES=str(images), WORK=str(work),
            RECIPE=str(tiny_chain(tmp_path)), OVERRIDES=[])
    names = sorted(p.relative_to(images).as_posix() for p in images.rglob("*") if p.is_file())
    assert validate_submission(work / "submission.csv", expected_names=names)["rows"] == len(names)
    assert (work / "runs" / "chain" / "pseudolabel" / "round2" / "encoder.pt").is_file()


def test_the_kaggle_notebook_names_a_wrong_image_folder_before_any_work(tmp_path):
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="is not a folder of images"):
        execute(tmp_path, CURATOR_SRC=str(ROOT), WHEELS=None, WEIGHTS=None, IMAGES=str(tmp_path / "nowhere"),
                WORK=str(tmp_path / "working"), RECIPE=None, OVERRIDES=[])
    assert not (tmp_path / "working").exists()
