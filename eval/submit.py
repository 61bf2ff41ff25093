"""python -m eval.submit RECIPE [key=value ...]: the competition's submission.csv for a folder.

    python -m eval.submit recipes/zeroshot.yaml data.root=DIR submission=FILE

One row per image of ``data.root``: ``ID,image_name,feature_0..feature_{D-1}``, ``ID`` equal to
``image_name`` (as in the competition's sample submission: ``00001.png,00001.png,...``), the file name
(the relative path in a nested folder), L2-normalised float32 features. The output location is checked
before any image is embedded; the file is written atomically, then read back and validated.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from core.base.atomic import atomic_path, check_writable
from core.base.errors import CuratorError, OutputError, RecipeError, command_line
from core.base.runs import RunDir, is_run_folder
from core.base.seeding import seed_everything
from core.data.pool import row_index
from core.model.backbone import EncoderSpec, build_encoder
from core.model.embed import Embeddings, embed_images, recipe_reader
from core.pixels.images import list_images, looks_like_image, unique_files
from core.post import PostProcessor
from core.recipe import parse_cli
from eval.evaluate import keep_orientation

log = logging.getLogger(__name__)

# Nine significant digits round-trip float32 exactly.
FLOAT_FORMAT = "%.9g"
NORM_TOLERANCE = 1e-4


class SubmissionError(CuratorError, ValueError):
    """A submission file that breaks the format."""


def write_submission(emb: Embeddings, path: str | Path) -> Path:
    """Write ``emb`` as a submission CSV (atomically: a crash never leaves a truncated file)."""
    table = pd.DataFrame(emb.vectors.astype(np.float32), columns=[f"feature_{i}" for i in range(emb.dim)])
    table.insert(0, "image_name", emb.names)
    table.insert(0, "ID", emb.names)
    path = Path(path)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format=FLOAT_FORMAT)
    return path


def validate_submission(path: str | Path, expected_names: list[str] | None = None,
                        dim: int | None = None) -> dict:
    """Check a submission file; raise SubmissionError saying what is wrong. Returns rows and dim."""
    path = Path(path)
    table = pd.read_csv(path, dtype={"ID": str, "image_name": str}, keep_default_na=False)
    columns = list(table.columns)
    d = len(columns) - 2
    expected_cols = ["ID", "image_name", *[f"feature_{i}" for i in range(max(d, 0))]]
    if d < 1 or columns != expected_cols:
        raise SubmissionError(f"{path}: header must be ID,image_name,feature_0..feature_N; got {columns[:5]}...")
    if table.empty:
        raise SubmissionError(f"{path}: no rows. A submission needs one row per image of the folder")
    if dim is not None and d != dim:
        raise SubmissionError(f"{path}: {d} features per row, expected {dim}")
    names = table["image_name"].tolist()
    duplicates = table["image_name"][table["image_name"].duplicated()].unique().tolist()
    if duplicates:
        raise SubmissionError(f"{path}: {len(duplicates)} duplicated image names, e.g. {duplicates[:3]}")
    if expected_names is not None:
        missing = sorted(set(expected_names) - set(names))
        extra = sorted(set(names) - set(expected_names))
        if missing or extra or len(names) != len(expected_names):
            raise SubmissionError(f"{path}: {len(names)} rows for {len(expected_names)} images; missing "
                                  f"{missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {extra[:3]}")
    # Empty or non-numeric cells become NaN, reported below with the rows they are in.
    features = table.iloc[:, 2:].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    finite = np.isfinite(features).all(axis=1)
    if not finite.all():
        raise SubmissionError(f"{path}: {int((~finite).sum())} rows with NaN or infinite values, e.g. "
                              f"{table['image_name'][~finite].tolist()[:3]}")
    norms = np.linalg.norm(features, axis=1)
    off = np.abs(norms - 1) > NORM_TOLERANCE
    if off.any():
        raise SubmissionError(f"{path}: {int(off.sum())} rows are not L2-normalised (norms "
                              f"{norms[off][:3].round(4).tolist()}...)")
    differs = table["ID"] != table["image_name"]
    if differs.any():
        raise SubmissionError(f"{path}: {int(differs.sum())} rows whose ID is not their image_name (e.g. ID "
                              f"{table['ID'][differs].iloc[0]!r} for {table['image_name'][differs].iloc[0]!r}); "
                              "the competition expects ID = image_name")
    return {"rows": len(table), "dim": d}


def check_submission_path(path: str | Path) -> Path:
    """:func:`core.base.atomic.check_writable`, and never over a file that is not a submission: an existing file
    at ``path`` must be a CSV (an image given as the output, say, is refused before any work)."""
    path = Path(path)
    if path.is_file() and (path.suffix.lower() != ".csv" or looks_like_image(path)):
        raise OutputError(f"submission={path} already exists and is not a CSV file: writing the submission would "
                          "replace it. Fix: set submission to a new .csv path, e.g. submission=submission.csv")
    return check_writable(path, "submission")


def every_name(emb: Embeddings, names: list[str], first: list[int]) -> Embeddings:
    """``emb`` (one row per file) with a row for every name: a name that reaches a file already embedded
    under another name (``first``, from :func:`core.pixels.images.unique_files`) gets that row's embedding."""
    row = row_index(emb.names)
    kept = [i for i, f in enumerate(first) if names[f] in row]
    rows = [row[names[first[i]]] for i in kept]
    skipped = [names[i] for i, f in enumerate(first) if names[f] not in row]
    return Embeddings([names[i] for i in kept], emb.vectors[rows], emb.norms[rows], skipped)


def submit(recipe: DictConfig) -> dict:
    """Embed every image of ``data.root`` and write the recipe's submission file: one row per file name."""
    if not recipe.data.root:
        raise RecipeError("data.root is not set. Fix: python -m eval.submit RECIPE data.root=DIR [submission=FILE]")
    started = time.perf_counter()
    seed_everything(int(recipe.seed))
    if recipe.submission:
        check_submission_path(recipe.submission)
    with RunDir.create(recipe, "submit") as run, run.logging_to_file():
        root = Path(recipe.data.root)
        paths = list_images(root, skip_folder=is_run_folder)
        names = [p.relative_to(root).as_posix() for p in paths]
        first = unique_files(paths)
        unique = [i for i, f in enumerate(first) if f == i]
        if len(unique) < len(paths):
            log.info("%d file names are links to files listed under another name: each gets that file's row",
                     len(paths) - len(unique))
        encoder = build_encoder(EncoderSpec.from_config(recipe.model))
        reader = recipe_reader(recipe, encoder)
        emb = embed_images(encoder, [paths[i] for i in unique], [names[i] for i in unique], recipe.embed,
                           reader=reader, skip_corrupt=recipe.data.skip_corrupt, desc="embed")
        emb.save(run.embeddings_dir)
        emb_forwards = emb.forwards_per_image
        post = PostProcessor(recipe, run.path / "post")
        if post.active:
            row = row_index(names)
            emb = post.apply(emb, [paths[row[n]] for n in emb.names])
        emb = every_name(emb, names, first)
        out = Path(recipe.submission or run.path / "submission.csv")
        write_submission(emb, out)
        if emb.skipped:
            log.warning("%d undecodable images have NO row in %s (see the log): the submission is incomplete",
                        len(emb.skipped), out)
        checked = validate_submission(out, expected_names=emb.names, dim=emb.dim)
        summary = {"submission": str(out), **checked, "skipped": emb.skipped,
                   "time_s": round(time.perf_counter() - started, 2)}
        run.write_metrics({**summary, "backbone": encoder.describe(), "orientation": keep_orientation(encoder, run),
                           "forwards_per_image": emb_forwards})
        return summary


@command_line
def main(argv: list[str]) -> int:
    recipe = parse_cli(argv, "python -m eval.submit", "Write submission.csv for the images of data.root.")
    summary = submit(recipe)
    print(f"wrote {summary['submission']}: {summary['rows']} rows x {summary['dim']} features, "
          f"validated, in {summary['time_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
