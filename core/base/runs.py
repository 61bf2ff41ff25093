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
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from core.base.atomic import atomic_write_text
from core.base.errors import MissingInputError, OutputError

try:
    import fcntl
except ImportError:  # Windows: no flock, so run folders are not held
    fcntl = None

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What wrote a run: python -m eval, eval.submit, ssl.pretrain, one round of adapt.pseudolabel, the
# whole adapt.pseudolabel, eval.chain. Readers (eval.compare) choose how to read a run by it.
KINDS = ("evaluate", "submit", "pretrain", "refine", "pseudolabel", "chain")
# The layout of metrics.json (2: "kind" and "schema" recorded).
METRICS_SCHEMA = 2


RECIPE_FILE = "recipe.yaml"
# Besides the recipe snapshot, a run folder holds at least one of these once its command has started.
_RUN_FILES = ("log.txt", "metrics.json", "metrics.jsonl")


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` is a run folder of a Curator command (its images are outputs, never inputs)."""
    return (folder / RECIPE_FILE).is_file() and any((folder / f).is_file() for f in _RUN_FILES)


LOCK_FILE = ".lock"
# The run folders this process holds: each one's open lock file and how many holds are on it.
_HELD: dict[Path, list[int]] = {}


def hold(folder: Path) -> None:
    """Hold ``folder`` for this process, or raise an OutputError naming the command that holds it.

    Two commands writing one run folder would both train every stage, interleave their metrics and
    save each other's checkpoints as ``-v1``. The hold is an exclusive ``flock`` on ``folder/.lock``,
    which the operating system releases when its process ends, however it ends: the lock of a killed
    command is taken over at once. Holds nest within a process (:func:`release` the same number of
    times); every rank but the first of a multi-process (DDP) run leaves the hold to the first.
    """
    key = folder.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        return
    if fcntl is None or os.environ.get("LOCAL_RANK", "0") != "0":
        return
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise OutputError(f"{folder} is in use by another Curator command ({holder}). Fix: wait until it "
                          "finishes (running the same command then resumes or keeps its work), or give this "
                          "command another run_dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"process {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
             .encode())
    _HELD[key] = [fd, 1]


def release(folder: Path) -> None:
    """Undo one :func:`hold` of ``folder``; the last one unlocks it."""
    key = folder.resolve()
    if key in _HELD:
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            os.close(_HELD.pop(key)[0])  # closing the file releases the flock


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

        A folder that cannot be made or written, or that another command holds, is an OutputError, raised
        before any work starts. The folder is held (:func:`hold`) until the ``with`` block the run is used
        in ends, or else until the process ends.
        """
        try:
            if not recipe.run_dir:
                recipe.run_dir = str(_new_folder(Path(root) / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"))
            run = cls(recipe.run_dir, kind)
            hold(run.path)
            run.snapshot(recipe)
        except OutputError:
            raise
        except OSError as e:
            where = e.filename or recipe.run_dir
            raise OutputError(f"cannot write the run folder {recipe.run_dir} ({where}: {e.strerror or e}). "
                              "Fix: set run_dir=DIR to a folder you can write to") from None
        return run

    def snapshot(self, recipe: DictConfig) -> None:
        """Write ``recipe.yaml``: the fully resolved recipe the run is made with."""
        atomic_write_text(self.path / RECIPE_FILE, OmegaConf.to_yaml(recipe, resolve=True))

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        """Leaving a ``with RunDir.create(...)`` block releases the hold :meth:`create` took."""
        release(self.path)

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
        return [_read_json(path, line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_metrics(folder: str | Path) -> dict | None:
    """A run folder's ``metrics.json`` (None where the run has not finished); a damaged file is a
    MissingInputError."""
    path = Path(folder) / "metrics.json"
    return _read_json(path, path.read_text(encoding="utf-8")) if path.is_file() else None


def _read_json(path: Path, text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        value = e
    if not isinstance(value, dict):
        raise MissingInputError(f"{path} is damaged ({value if isinstance(value, Exception) else 'not a JSON object'})."
                                f" Fix: delete it (and run that command again), or restore it from a copy")
    return value


def moved(path: str, was: str | Path, now: str | Path) -> str:
    """``path``, written by a run that lived in folder ``was``, for the same run now in folder ``now``.

    >>> moved("/old/run/round1/encoder.pt", "/old/run", "/new/run")
    '/new/run/round1/encoder.pt'
    >>> moved("../shared/weights/w.safetensors", "/old/run", "/new/run")
    '../shared/weights/w.safetensors'
    """
    try:
        return str(Path(now) / Path(path).relative_to(was))
    except ValueError:
        return path
