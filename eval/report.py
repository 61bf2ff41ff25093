"""python -m eval.report RUN_DIR [--k 5] [--max-queries N]

A self-contained HTML page (every image inlined, one file to open or send) of what a run's model
retrieves: for each query of each labeled set, the query, its top-k with similarity, each marked
as a hit (green) or a miss (red), failures first, with the missed target and its rank beside them;
then the images that are among the most other images' top-k (hubs). PNG grids of the first failures
and of the hubs are written next to it. Works on any run of ``python -m eval``.

``--synthetic CONDITION`` reports the run's synthetic photos that show CONDITION (rot180, zoom, dim...;
``all`` for every one) instead, ranked as eval scored them: joined to the pool before its post steps.
"""

from __future__ import annotations

import argparse
import base64
import html
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.base.atomic import atomic_write_text
from core.base.errors import ImageDecodeError, MissingInputError, command_line
from core.base.figures import plt, save_png
from core.data.pool import Pool, recipe_pool
from core.data.synthetic import load_synthetic_queries
from core.model.embed import Embeddings, gate_margin
from core.pixels.images import ImageReader, shrink_to
from core.pixels.photosim import CONDITIONS
from core.post import PostProcessor
from core.recipe import load_recipe
from core.scoring import rows_of
from core.vectors.metrics import target_ranks
from core.vectors.search import topk
from core.vectors.stats import hubness

THUMB = 160


@dataclass
class QueryResult:
    set_name: str
    subset: str
    query: int  # rows of the embeddings
    targets: list[int]
    neighbours: list[int]
    similarities: list[float]
    first_target_rank: int | None  # 0-based; None when the query has no target in the pool

    @property
    def hit(self) -> bool:
        return self.first_target_rank is not None and self.first_target_rank < len(self.neighbours)


class Thumbnails:
    """JPEG thumbnails of pool images, made once each, as data URIs and as arrays."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.reader = ImageReader(min_side=THUMB)
        self._cache: dict[int, np.ndarray] = {}
        self._uris: dict[int, str] = {}

    def array(self, row: int) -> np.ndarray:
        if row not in self._cache:
            try:
                self._cache[row] = shrink_to(self.reader(self.paths[row]), THUMB)
            except ImageDecodeError:
                self._cache[row] = np.full((THUMB, THUMB, 3), 128, np.uint8)
        return self._cache[row]

    def uri(self, row: int) -> str:
        if row not in self._uris:
            bgr = cv2.cvtColor(self.array(row), cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])
            assert ok
            self._uris[row] = "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()
        return self._uris[row]


def _run_inputs(run: Path) -> tuple[Pool, Embeddings, list[Path]]:
    if not (run / "recipe.yaml").is_file():
        raise MissingInputError(f"{run} has no recipe.yaml. Fix: give a run directory of python -m eval")
    folder = run / "post" / "embeddings" if (run / "post" / "embeddings").is_dir() else run / "embeddings"
    if not Embeddings.saved_in(folder):
        raise MissingInputError(f"{run} has no embeddings/ of its whole pool (training runs keep only their "
                                f"encoder). Fix: python -m eval {run}/encoder.pt ... and report on that run")
    pool = recipe_pool(load_recipe(run / "recipe.yaml"))
    if not pool.labeled:
        raise MissingInputError(f"{run} was evaluated without a labeled set: there is nothing to mark as hit or "
                                "miss. Fix: evaluate with data.labeled=[SET]")
    emb = Embeddings.load(folder)
    return pool, emb, pool.paths_of(emb.names)


def rank_queries(emb: Embeddings, queries: list[tuple[str, str, int, list[int]]], k: int) -> list[QueryResult]:
    """Each (set name, subset, query row, target rows)'s top-k: failures first (worst first), then hits,
    then queries with no target."""
    sims, idx = topk(emb.vectors, None, k=min(k, len(emb) - 1))
    results = []
    for set_name, subset, qr, targets in queries:
        ranks = target_ranks(emb.vectors, [qr], [targets])[0]
        results.append(QueryResult(set_name, subset, qr, targets, idx[qr].tolist(), sims[qr].tolist(),
                                   int(ranks[0]) if len(ranks) else None))
    return sorted(results, key=lambda r: (2, 0) if r.first_target_rank is None else (int(r.hit), -r.first_target_rank))


def query_results(pool: Pool, emb: Embeddings, k: int) -> list[QueryResult]:
    """Every labeled query's top-k (see :func:`rank_queries`)."""
    queries = [(labeled.name, subset, q, ts) for labeled in pool.labeled
               for q, ts, subset in zip(*rows_of(labeled, pool, emb), strict=True)]
    return rank_queries(emb, queries, k)


def synthetic_results(run: Path, condition: str, k: int) -> tuple[Embeddings, list[Path], list[QueryResult]]:
    """The run's synthetic photos showing ``condition`` ("all": every one), ranked in the pool they
    were scored in: the pool and the photos together, gated and post-processed as eval did."""
    if condition != "all" and condition not in CONDITIONS:
        raise MissingInputError(f"--synthetic {condition!r} is not a condition. Fix: one of all, "
                                f"{', '.join(CONDITIONS)}")
    recipe = load_recipe(run / "recipe.yaml")
    for folder in (run / "embeddings", run / "synthetic" / "embeddings"):
        if not Embeddings.saved_in(folder):
            raise MissingInputError(f"{run} has no {folder.relative_to(run)}/. Fix: give a run of python -m eval "
                                    "made with synthetic.num_queries > 0")
    emb = Embeddings.load(run / "embeddings")
    queries = load_synthetic_queries(run / "synthetic", emb.names)
    paths = [*recipe_pool(recipe).paths_of(emb.names), *queries.paths]
    joint = Embeddings.concat([emb, Embeddings.load(run / "synthetic" / "embeddings")]).gated(gate_margin(recipe.embed))
    post = PostProcessor(recipe, None)
    joint = post.apply(joint, paths, save=False) if post.active else joint
    shown = [(n, c) for n, c in enumerate(queries.conditions) if condition == "all" or condition in c]
    if not shown:
        raise MissingInputError(f"none of the run's {len(queries.names)} synthetic photos shows {condition!r}")
    results = rank_queries(joint, [("synthetic", ";".join(c), len(emb) + n, [queries.sources[n]])
                                   for n, c in shown], k)
    return joint, paths, results


def _cell(thumbs: Thumbnails, names: list[str], row: int, caption: str, css: str) -> str:
    title = html.escape(names[row])
    return (f'<figure class="{css}"><img src="{thumbs.uri(row)}" alt="{title}" title="{title}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def render_html(run: Path, results: list[QueryResult], hubs: dict, names: list[str], thumbs: Thumbnails,
                k: int) -> str:
    n_hit = sum(r.hit for r in results)
    matched = [r for r in results if r.targets]
    rows = []
    for r in results:
        cells = [_cell(thumbs, names, r.query, f"query · {r.subset}", "query")]
        for rank, (nb, sim) in enumerate(zip(r.neighbours, r.similarities, strict=True)):
            css = "hit" if nb in r.targets else "miss"
            cells.append(_cell(thumbs, names, nb, f"#{rank + 1} · {sim:.3f}", css))
        if not r.hit and r.targets:
            cells.append(_cell(thumbs, names, r.targets[0], f"target · rank {r.first_target_rank + 1}", "target"))
        status = "no target in pool" if not r.targets else ("hit" if r.hit else "MISS")
        heading = f"{html.escape(names[r.query])} — {status} <small>({html.escape(r.set_name)})</small>"
        rows.append(f'<section class="{"ok" if r.hit else "fail"}"><h3>{heading}</h3>'
                    f'<div class="row">{"".join(cells)}</div></section>')
    hub_cells = "".join(_cell(thumbs, names, h["row"], f"in {h['k_occurrence']} top-{hubs['hub_k']} lists", "hub")
                        for h in hubs["top_hubs"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Curator report: {html.escape(run.name)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; background: #fafafa; }}
.row {{ display: flex; flex-wrap: wrap; gap: 6px; }}
figure {{ margin: 0; padding: 3px; border: 4px solid #ccc; background: white; width: {THUMB}px; }}
figure img {{ max-width: {THUMB}px; max-height: {THUMB}px; display: block; margin: auto; }}
figcaption {{ font-size: 11px; text-align: center; }}
.query {{ border-color: #3060c0; }} .hit {{ border-color: #2a9d2a; }} .miss {{ border-color: #d03030; }}
.target {{ border-color: #e0a000; border-style: dashed; }} .hub {{ border-color: #888; }}
section.fail h3 {{ color: #b00; }} h3 {{ font-size: 14px; margin: 1em 0 0.3em; }}
</style></head><body>
<h1>{html.escape(run.name)}</h1>
<p>{len(results)} queries ({len(matched)} with a target in the pool): Hit@{k} {n_hit}/{len(matched)}.
Failures first. Green: a correct match; red: a wrong one; dashed: the missed target and its rank.
Images loaded: <span id="loaded">not yet</span>.</p>
<h2>Hubs: the images in most other images' top-{hubs['hub_k']}</h2><div class="row">{hub_cells}</div>
<h2>Queries</h2>
{"".join(rows)}
<script>
window.addEventListener("load", () => {{
  const images = Array.from(document.images);
  const ok = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.getElementById("loaded").textContent = ok + "/" + images.length;
}});
</script>
</body></html>
"""


def _grid(rows: list[list[tuple[int, str, str]]], thumbs: Thumbnails, out: Path, title: str) -> Path:
    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.7 * cols, 1.9 * len(rows)), squeeze=False)
    colours = {"query": "#3060c0", "hit": "#2a9d2a", "miss": "#d03030", "target": "#e0a000", "hub": "#888888"}
    for ax_row, cells in zip(axes, rows, strict=True):
        for ax in ax_row:
            ax.axis("off")
        for ax, (img_row, caption, css) in zip(ax_row, cells, strict=False):
            ax.imshow(thumbs.array(img_row))
            ax.set_title(caption, fontsize=7, color=colours[css])
            for spine in ax.spines.values():
                spine.set(visible=True, color=colours[css], linewidth=3)
    fig.suptitle(title, fontsize=9)
    save_png(fig, out, dpi=100)
    return out


def write_report(run: Path, k: int = 5, max_queries: int | None = None, out_dir: Path | None = None,
                 synthetic: str | None = None) -> Path:
    """Write ``report.html`` (and ``failures.png``, ``hubs.png``) under ``out_dir`` (RUN/report, or
    RUN/report-synthetic-CONDITION for the synthetic photos showing ``synthetic``)."""
    if synthetic:
        emb, paths, results = synthetic_results(run, synthetic, k)
        out_dir = out_dir or run / f"report-synthetic-{synthetic.replace('/', '-').replace(' ', '-')}"
    else:
        pool, emb, paths = _run_inputs(run)
        results = query_results(pool, emb, k)
    results = results[:max_queries]
    hubs = hubness(topk(emb.vectors, None, k=min(k, len(emb) - 1))[1], emb.names, top=8)
    thumbs = Thumbnails(paths)
    out_dir = out_dir or run / "report"
    page = out_dir / "report.html"
    atomic_write_text(page, render_html(run, results, hubs, emb.names, thumbs, k))
    failures = [r for r in results if not r.hit and r.targets][:12]
    if failures:
        _grid([[(r.query, "query", "query"),
                *((nb, f"{s:.3f}", "hit" if nb in r.targets else "miss")
                  for nb, s in zip(r.neighbours, r.similarities, strict=True)),
                (r.targets[0], f"target #{r.first_target_rank + 1}", "target")] for r in failures],
              thumbs, out_dir / "failures.png", f"{run.name}: first failures (query, top-{k}, missed target)")
    _grid([[(h["row"], f"{h['k_occurrence']}x", "hub") for h in hubs["top_hubs"]]], thumbs, out_dir / "hubs.png",
          f"{run.name}: hubs")
    return page


@command_line
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.report", description=__doc__.split("\n\n")[1])
    parser.add_argument("run", type=Path, help="a run directory of python -m eval")
    parser.add_argument("--k", type=int, default=5, help="neighbours shown per query")
    parser.add_argument("--max-queries", type=int, default=None, help="show only the first N (failures first)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default RUN/report)")
    parser.add_argument("--synthetic", metavar="CONDITION", default=None,
                        help=f"report the synthetic photos showing CONDITION instead: all, {', '.join(CONDITIONS)}")
    args = parser.parse_args(argv)
    page = write_report(args.run, args.k, args.max_queries, args.out, args.synthetic)
    print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
