"""The pool: labeled sets (``images/`` + ``pairs.csv``), distractor folders, an unlabeled root.

Every image of every source is one row of the pool and is ranked against all others, as in the
competition. Pool names are ``SOURCE/relative/path`` so the same file name in two sources stays
distinct; a file reached twice (say a labeled set inside ``data.root``) is kept once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.base.errors import MissingInputError
from core.base.options import option
from core.base.runs import is_run_folder
from core.pixels.images import file_key, list_images
from core.pixels.sample import ensure_sample

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    # An unlabeled image folder (flat or nested): the submission folder, or extra pool images.
    root: str | None = None
    # Labeled sets (images/ + pairs.csv) and extra distractor folders, all searched together.
    labeled: list[str] = field(default_factory=list)
    distractors: list[str] = field(default_factory=list)
    # Skip undecodable images (listed in the run log) instead of stopping at the first one.
    skip_corrupt: bool = False
    # Folder for a resized copy of every decoded image; null disables the cache.
    cache_dir: str | None = None
    cache_max_side: int = option(512, ge=32)
    # With no data given, run on the synthetic sample museum generated here.
    sample_dir: str = "${oc.env:CURATOR_CACHE,.curator}/sample-museum"


def row_index(names: Sequence[str]) -> dict[str, int]:
    """Each name's row in ``names`` (the one map from a pool or embedding name to its row).

    >>> row_index(["a/x.png", "b/y.png"])["b/y.png"]
    1
    """
    return {name: i for i, name in enumerate(names)}


@dataclass
class LabeledSet:
    """A labeled evaluation set: query -> targets (pool indices), and each query's ``set`` tag."""

    name: str
    queries: list[int] = field(default_factory=list)
    targets: list[list[int]] = field(default_factory=list)
    subsets: list[str] = field(default_factory=list)
    unmatched: int = 0


@dataclass
class Pool:
    paths: list[Path] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    labeled: list[LabeledSet] = field(default_factory=list)
    _index: dict[Path, int] = field(default_factory=dict, repr=False)
    _files: dict[tuple[int, int] | Path, int] = field(default_factory=dict, repr=False)
    _source_names: set[str] = field(default_factory=set, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    def _unique_source(self, base: str) -> str:
        name, n = base, 2
        while name in self._source_names:
            name, n = f"{base}-{n}", n + 1
        self._source_names.add(name)
        return name

    def add_folder(self, folder: str | Path, source: str | None = None) -> str:
        """Add every image under ``folder`` but those in run folders of earlier runs; returns the source
        name used as the names' prefix.

        A file is one row however many names reach it (a labeled set inside ``data.root``, a hard or
        symbolic link beside it): its other names are left out, with a warning that names them.
        """
        folder = Path(folder)
        source = self._unique_source(source or folder.resolve().name or "pool")
        aliases = []
        for path in list_images(folder, skip_folder=is_run_folder):
            key, identity = path.resolve(), file_key(path)
            row = self._index.get(key, self._files.get(identity))
            if row is not None:
                self._index.setdefault(key, row)
                aliases.append(f"{path} (the same file as {self.paths[row]})")
                continue
            self._index[key] = self._files[identity] = len(self.paths)
            self.paths.append(path)
            self.names.append(f"{source}/{path.relative_to(folder).as_posix()}")
            self.sources.append(source)
        if aliases:
            log.warning("left out %d name(s) of files already in the pool: %s%s", len(aliases), ", ".join(aliases[:3]),
                        ", ..." if len(aliases) > 3 else "")
        return source

    def paths_of(self, names: Sequence[str]) -> list[Path]:
        """The files behind pool ``names`` (e.g. the rows an embedding kept), in their order."""
        row = row_index(self.names)
        return [self.paths[row[name]] for name in names]

    def index_of(self, path: Path) -> int | None:
        return self._index.get(path.resolve())

    def add_labeled(self, folder: str | Path) -> LabeledSet:
        """Add a labeled set's images and resolve its ``pairs.csv`` to pool indices."""
        folder = Path(folder)
        pairs_file = folder / "pairs.csv"
        if not (folder / "images").is_dir() or not pairs_file.is_file():
            raise MissingInputError(
                f"{folder} is not a labeled set: it needs images/ and pairs.csv (query,target[,set]). "
                "Fix: pass such a folder in data.labeled, or an unlabeled folder in data.distractors")
        labeled = LabeledSet(name=self.add_folder(folder / "images", source=folder.resolve().name))
        try:
            table = pd.read_csv(pairs_file, dtype=str, keep_default_na=False)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
            raise MissingInputError(f"{pairs_file} is not a readable CSV ({' '.join(str(e).split())}). Fix: write it "
                                    "with the header query,target[,set] and one pair per line") from None
        missing_cols = {"query", "target"} - set(table.columns)
        if missing_cols:
            raise MissingInputError(f"{pairs_file} lacks the column(s) {sorted(missing_cols)}; "
                             "expected header query,target[,set]")
        by_query: dict[int, int] = {}
        for row in table.itertuples(index=False):
            q = self._resolve(folder, row.query, pairs_file)
            if q not in by_query:
                by_query[q] = len(labeled.queries)
                labeled.queries.append(q)
                labeled.targets.append([])
                labeled.subsets.append(getattr(row, "set", "") or "all")
            if row.target:
                labeled.targets[by_query[q]].append(self._resolve(folder, row.target, pairs_file))
        labeled.unmatched = sum(1 for t in labeled.targets if not t)
        self.labeled.append(labeled)
        return labeled

    def _resolve(self, folder: Path, relative: str, pairs_file: Path) -> int:
        index = self.index_of(folder / relative)
        if index is None:
            raise MissingInputError(f"{pairs_file} names {relative}, which is not an image under "
                                    f"{folder / 'images'}. Fix: correct the path in pairs.csv "
                                    "(paths are relative to the set's folder)")
        return index


def build_pool(labeled: list[str], distractors: list[str], root: str | None = None) -> Pool:
    """The pool of a recipe's ``data`` section."""
    pool = Pool()
    for folder in labeled:
        pool.add_labeled(folder)
    for folder in distractors:
        pool.add_folder(folder)
    if root:
        pool.add_folder(root)
    return pool


def recipe_pool(recipe) -> Pool:
    """The pool of a recipe's ``data`` section; with no data given, the sample museum (made if missing)."""
    data = recipe.data
    labeled, distractors, root = list(data.labeled), list(data.distractors), data.root
    if not (labeled or distractors or root):
        sample = ensure_sample(data.sample_dir)
        log.info("no data given: using the sample museum at %s", sample)
        labeled = [str(sample)]
    pool = build_pool(labeled, distractors, root)
    log.info("pool: %d images from %d labeled set(s), %d distractor folder(s)%s", len(pool),
             len(pool.labeled), len(distractors), ", and data.root" if root else "")
    return pool
