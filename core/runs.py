"""Run directories: one folder per run with the recipe snapshot, a log, metrics and embeddings.

Layout::

    RUN/recipe.yaml      the fully resolved recipe that produced the run
    RUN/log.txt          everything logged during the run (skipped files, timings...)
    RUN/metrics.json     the final figures, headed by the run's ``kind`` and the layout's ``schema``
    RUN/metrics.jsonl    one line per epoch or round, for runs that train
    RUN/queries.csv      each scored query's best target rank, after and before the post steps (eval runs)
    RUN/embeddings/      embeddings.npy, norms.npy, names.json
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

from core.atomic import atomic_write_text
from core.errors import OutputError
from core.recipe import to_yaml

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What wrote a run: python -m eval, eval.submit, ssl.pretrain, one round of adapt.pseudolabel, the
# whole adapt.pseudolabel, eval.chain. Readers (eval.compare) choose how to read a run by it.
KINDS = ("evaluate", "submit", "pretrain", "refine", "pseudolabel", "chain")
# The layout of metrics.json. 2: "kind" and "schema" recorded; runs without them are layout 1.
METRICS_SCHEMA = 2


def _new_folder(base: Path) -> Path:
    """Create ``base``, or ``base-2``, ``base-3``... whichever is free first.

    mkdir either creates a folder or fails, so two runs started in the same second never share one.
    """
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = base, 2
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            candidate, n = base.with_name(f"{base.name}-{n}"), n + 1


class RunDir:
    def __init__(self, path: str | Path, kind: str | None = None):
        if kind is not None and kind not in KINDS:
            raise ValueError(f"run kind {kind!r} is not one of {KINDS}")
        self.path = Path(path)
        self.kind = kind
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def create(cls, recipe: DictConfig, kind: str, root: str | Path = "runs") -> RunDir:
        """The recipe's ``run_dir``, or a new ``runs/NAME-YYYYmmdd-HHMMSS[-N]`` (written back into the
        recipe, so the snapshot says where it lives); snapshot the recipe there.

        A folder that cannot be made or written is an OutputError, raised before any work starts.
        """
        try:
            if not recipe.run_dir:
                recipe.run_dir = str(_new_folder(Path(root) / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"))
            run = cls(recipe.run_dir, kind)
            atomic_write_text(run.path / "recipe.yaml", to_yaml(recipe))
        except OutputError:
            raise
        except OSError as e:
            where = e.filename or recipe.run_dir
            raise OutputError(f"cannot write the run folder {recipe.run_dir} ({where}: {e.strerror or e}). "
                              "Fix: set run_dir=DIR to a folder you can write to") from None
        return run

    @property
    def embeddings_dir(self) -> Path:
        return self.path / "embeddings"

    @contextmanager
    def logging_to_file(self, level: int = logging.INFO) -> Iterator[None]:
        """While inside, send the process's log records to ``log.txt`` (and the console).

        Detached on exit, so runs made one after another in one process (a training loop that
        evaluates every epoch) each keep their own log.
        """
        root = logging.getLogger()
        root.setLevel(level)
        handler = logging.FileHandler(self.path / "log.txt", encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
        if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                   for h in root.handlers):
            console = logging.StreamHandler()
            console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
            root.addHandler(console)
        try:
            yield
        finally:
            root.removeHandler(handler)
            handler.close()

    def write_metrics(self, metrics: dict) -> Path:
        """Write ``metrics.json``: the run's kind, the layout version, then ``metrics``."""
        if self.kind is None:
            raise ValueError(f"{self.path}: a run opened for reading has no kind to write metrics under")
        path = self.path / "metrics.json"
        payload = {"kind": self.kind, "schema": METRICS_SCHEMA, **metrics}
        atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")
        return path

    @property
    def queries_file(self) -> Path:
        """Where an evaluation keeps its per-query ranks (``core.scoring.query_table``)."""
        return self.path / "queries.csv"

    def append_metrics_line(self, record: dict) -> None:
        """Append one JSON line to ``metrics.jsonl`` (the per-epoch history of a training run).

        A whole line is written with one call, so an interrupted run leaves complete lines only.
        """
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def write_metrics_lines(self, records: list[dict]) -> None:
        """Replace ``metrics.jsonl`` with ``records`` (atomic)."""
        atomic_write_text(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))

    def read_metrics_lines(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
