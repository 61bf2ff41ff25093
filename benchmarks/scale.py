"""The chain at the competition's scale: a generated folder, the whole chain per size, growth exponents.

    python -m benchmarks.scale make OUT [--images 20000] [--workers 2]
    python -m benchmarks.scale chain OUT [RECIPE] [key=value ...] [--sizes 2500 5000 10000 20000]
    python -m benchmarks.scale steps [--sizes 2500 5000 10000 20000] [--dim 384]

``make`` writes OUT/images/00001.png ... at the competition's shape (PNGs of 512-1,024 px: per 20
images 1 visitor photo made the way the real queries look, 10 procedural paintings, 9 distractors,
names shuffled) and OUT/truth.csv (image, kind, target). Every prefix of 20 x n images in generation
order has the same shape, so ``chain`` runs each size on a folder of links to such a prefix.

``chain`` runs ``python -m eval.chain`` as a user would on each size, samples the memory of
its process tree (loader workers included; PSS, which splits shared pages among the processes, and
the RSS sum, which counts them once per process) every 0.5 s, and prints per stage the seconds,
peak memory and images/s, the submission's Hit@k on the generated photos, and the exponent b of
seconds ~ images^b per stage (least squares over the sizes: 1 is linear). Results: OUT/scale.csv, which keeps
the rows of sizes measured by earlier calls (one size per session fits where a session is short).

``steps`` times, on synthetic embeddings of the backbone's width, the steps that may grow faster than
linearly: mutual nearest neighbours (stage 2's mining, learned whitening's pairs), the k-NN graph
(fusion and neighbour averaging), PCA and learned whitening, the diffusion block at the recipe's
default k, gamma, alpha and rank (once per size), and counts the pairs each would
verify (verification costs the same per pair at any size, so its time follows the pair count).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from core.base.atomic import atomic_write_text
from core.pixels.photosim import simulate_query
from core.pixels.sample import make_distractor, make_painting
from core.post import Whitening, pseudo_pairs
from core.post.diffusion import DiffusionConfig
from core.vectors.diffusion import knn_graph, spectral_embedding
from core.vectors.metrics import summarize, target_ranks
from core.vectors.search import mutual_nearest_neighbours, topk

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 20  # per block: 1 photo, 10 paintings, 9 distractors (the competition's 1,000 / 10,000 / 9,000)
PAINTINGS, PHOTOS = 10, 1


def _kind(item: int) -> tuple[str, int | None]:
    """What generation item ``item`` is: ("photo", painting item), ("painting", None) or ("distractor", None)."""
    block, slot = divmod(item, BLOCK)
    if slot < PAINTINGS:
        return "painting", None
    if slot < PAINTINGS + PHOTOS:
        # The photographed painting: a fixed, seed-independent choice inside the same block.
        return "photo", block * BLOCK + (block * 7) % PAINTINGS
    return "distractor", None


def _painting(seed: int, item: int, min_side: int, max_side: int) -> np.ndarray:
    return make_painting(np.random.default_rng([seed, item]), min_side, max_side)


def _render(job: tuple[int, int, int, int, Path]) -> None:
    """Write generation item ``item`` (each from its own seed: same bytes in any worker order)."""
    seed, item, min_side, max_side, path = job
    kind, target = _kind(item)
    rng = np.random.default_rng([seed, item])
    if kind == "painting":
        img = _painting(seed, item, min_side, max_side)
    elif kind == "photo":
        img, _ = simulate_query(_painting(seed, target, min_side, max_side), rng)
        scale = max_side / max(img.shape[:2])  # the frame and padding may take it past max_side
        if scale < 1:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    else:
        img = make_distractor(rng, min_side, max_side)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def make(out: Path, images: int, seed: int = 0, min_side: int = 512, max_side: int = 1024, workers: int = 2) -> None:
    """OUT/images (``images`` PNGs named 00001.png ... in shuffled order) and OUT/truth.csv."""
    if images % BLOCK:
        raise SystemExit(f"--images must be a multiple of {BLOCK} (the competition's proportions per block)")
    if out.exists():
        raise SystemExit(f"{out} already exists: name a new folder (it is made whole or not at all)")
    names = [f"{n:05d}.png" for n in np.random.default_rng(seed).permutation(images) + 1]
    tmp = out.parent / f".{out.name}.partial"
    (tmp / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(seed, i, min_side, max_side, tmp / "images" / names[i]) for i in range(images)]
    with Pool(workers) as pool:
        for _ in tqdm(pool.imap_unordered(_render, jobs, chunksize=8), total=images, unit="img", desc="generate"):
            pass
    with open(tmp / "truth.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "kind", "target", "item"])
        for i, name in enumerate(names):
            kind, target = _kind(i)
            writer.writerow([name, kind, names[target] if target is not None else "", i])
    tmp.rename(out)


def subset(out: Path, size: int) -> Path:
    """A folder of links to the first ``size`` generated images (the whole folder at full size)."""
    truth = pd.read_csv(out / "truth.csv", keep_default_na=False)
    if size > len(truth) or size % BLOCK:
        raise SystemExit(f"size {size} must be a multiple of {BLOCK} and at most {len(truth)}")
    if size == len(truth):
        return out / "images"
    folder = out / "subsets" / str(size)
    if not folder.is_dir():
        tmp = folder.parent / f".{size}.partial"
        tmp.mkdir(parents=True, exist_ok=True)
        for name in truth.loc[truth["item"] < size, "image"]:
            (tmp / name).symlink_to((out / "images" / name).resolve())
        tmp.rename(folder)
    return folder


def tree_memory_bytes(pid: int) -> tuple[int, int]:
    """(RSS, PSS) summed over ``pid`` and all its descendants (Linux /proc).

    The RSS sum counts every page the processes share (the libraries, the parent's memory that
    DataLoader workers inherit) once per process, so it overstates what the tree holds, by about 2x
    with two workers; PSS splits each shared page among its sharers, so its sum is the tree's memory.
    """
    rss = pss = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                rss += int(f.read().split()[1]) * 4096
            with open(f"/proc/{p}/smaps_rollup") as f:
                pss += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
            for task in Path(f"/proc/{p}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, ValueError, StopIteration):
            continue
    return rss, pss


def exponent(sizes: list[int], values: list[float]) -> float:
    """b in value ~ size^b, least squares in log-log.

    >>> round(exponent([1000, 2000, 4000], [1.0, 4.0, 16.0]), 3)
    2.0
    """
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


STAGE_LINE = re.compile(r"chain \[\d+/\d+\] (\w+): (starting|done in)")


def run_chain(out: Path, size: int, recipe: str, overrides: list[str]) -> list[dict]:
    """One chain run on the first ``size`` images: per stage seconds, peak tree memory and images/s."""
    folder, run = subset(out, size), out / "runs" / str(size)
    if run.exists():
        # eval.chain would keep the finished stages: their time would not be measured again.
        raise SystemExit(f"{run} exists from an earlier run: delete it to measure {size} images again")
    command = [sys.executable, "-m", "eval.chain", recipe, f"data.root={folder}", f"run_dir={run}",
               f"submission={run / 'submission.csv'}", *overrides]
    print(" ".join(command), flush=True)
    run.mkdir(parents=True, exist_ok=True)
    stage, rows = None, {}

    def follow(stream, log) -> None:
        """Which stage runs now, from the chain's own lines: the memory samples are charged to it."""
        nonlocal stage
        for line in stream:
            log.write(line)
            match = STAGE_LINE.search(line)
            if match and match[2] == "done in":
                stage = None
            elif match:
                # The row exists before the sampler in the main thread can see its stage.
                rows[match[1]] = {"size": size, "stage": match[1], "peak_pss_gb": 0.0, "peak_rss_sum_gb": 0.0}
                stage = match[1]
            if match:
                print(line.rstrip(), flush=True)

    with open(run.parent / f"{size}.log", "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        reader = threading.Thread(target=follow, args=(proc.stdout, log))
        reader.start()
        while proc.poll() is None:
            current = stage
            if current is not None:
                rss, pss = tree_memory_bytes(proc.pid)
                row = rows[current]
                row["peak_pss_gb"] = max(row["peak_pss_gb"], pss / 2**30)
                row["peak_rss_sum_gb"] = max(row["peak_rss_sum_gb"], rss / 2**30)
            time.sleep(0.5)
        reader.join()
    if proc.returncode != 0:
        raise SystemExit(f"eval.chain failed on {size} images (exit {proc.returncode}): see {run.parent}/{size}.log")
    seconds = json.loads((run / "metrics.json").read_text())["stage_seconds"]
    for row in rows.values():
        row["seconds"] = seconds[row["stage"]]
        row["images_per_s"] = size / row["seconds"]
    return list(rows.values())


def submission_hits(out: Path, size: int) -> dict:
    """Hit@k of the generated photos against their paintings over the size's submission."""
    sub = pd.read_csv(out / "runs" / str(size) / "submission.csv")
    vectors = sub.filter(like="feature_").to_numpy(np.float32)
    row = {name: i for i, name in enumerate(sub["image_name"])}
    truth = pd.read_csv(out / "truth.csv", keep_default_na=False)
    photos = truth[(truth["kind"] == "photo") & (truth["item"] < size)]
    return summarize(target_ranks(vectors, [row[n] for n in photos["image"]], [[row[t]] for t in photos["target"]]))


def chain(out: Path, sizes: list[int], recipe: str, overrides: list[str]) -> None:
    """Run the chain per size; OUT/scale.csv keeps the rows of sizes measured by earlier calls (a
    20,000-image chain on 2 cores is a session of its own), and the exponents use every size in it."""
    path = out / "scale.csv"
    table = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    for size in sizes:
        stages = run_chain(out, size, recipe, overrides)
        hits = submission_hits(out, size)
        total = sum(r["seconds"] for r in stages)
        rows = stages + [{"size": size, "stage": "chain", "seconds": total, "images_per_s": size / total,
                          "peak_pss_gb": max(r["peak_pss_gb"] for r in stages),
                          "peak_rss_sum_gb": max(r["peak_rss_sum_gb"] for r in stages),
                          **{k: hits[k] for k in ("hit@1", "hit@3", "hit@10")}}]
        kept = table[table["size"] != size] if len(table) else table
        table = pd.concat([kept, pd.DataFrame(rows)], ignore_index=True).sort_values("size", kind="stable")
        atomic_write_text(path, table.to_csv(index=False))  # after every size: a long run stopped keeps its rows
        print(table.to_string(index=False, float_format="%.3f"), flush=True)
    if table["size"].nunique() > 1:
        print("exponent b in seconds ~ images^b:")
        for name, group in table.groupby("stage", sort=False):
            print(f"  {name:<12}{exponent(list(group['size']), list(group['seconds'])):.2f}")


def synthetic_vectors(size: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors at the competition's shape: paintings, photos near their painting, distractors."""
    rng = np.random.default_rng(seed)
    blocks = size // BLOCK
    paintings = rng.normal(size=(blocks * PAINTINGS, dim))
    photos = paintings[::PAINTINGS][:blocks] + rng.normal(scale=0.8, size=(blocks, dim))
    distractors = rng.normal(size=(size - len(paintings) - len(photos), dim))
    x = np.concatenate([paintings, photos, distractors]).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


DIFFUSION = DiffusionConfig()


def _timed(fn, repeat: int = 3) -> tuple[float, object]:
    """Fastest of ``repeat`` calls (this machine is shared: the minimum is the least disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def steps(sizes: list[int], dim: int, k: int) -> None:
    rows = []
    warm = synthetic_vectors(sizes[0], dim)  # BLAS and the search backend start up outside the timings
    Whitening.fit_pairs(warm, pseudo_pairs(warm)[0])
    for size in sizes:
        x = synthetic_vectors(size, dim)
        t_mnn, (mutual, _) = _timed(lambda: mutual_nearest_neighbours(x))  # noqa: B023
        t_knn, _ = _timed(lambda: topk(x, None, k=k))  # noqa: B023
        t_pca, _ = _timed(lambda: Whitening.fit(x).apply(x))  # noqa: B023
        t_pairs, (pairs, _, _) = _timed(lambda: pseudo_pairs(x))  # noqa: B023
        t_fit, _ = _timed(lambda: Whitening.fit_pairs(x, pairs).apply(x))  # noqa: B023
        # Once: the eigenpairs take minutes at 20,000 images.
        t_diffusion, _ = _timed(lambda: spectral_embedding(knn_graph(x, DIFFUSION.k, DIFFUSION.gamma),  # noqa: B023
                                                           DIFFUSION.alpha, DIFFUSION.rank), repeat=1)
        rows.append({"images": size, "mutual NN s": t_mnn, f"{k}-NN graph s": t_knn, "PCA whitening s": t_pca,
                     "learned whitening s": t_pairs + t_fit, f"diffusion rank {DIFFUSION.rank} s": t_diffusion,
                     "mutual pairs": len(mutual),
                     f"fusion pairs ({k}-NN)": size * k})
        print(pd.DataFrame(rows).to_string(index=False, float_format="%.3f"), flush=True)
    table = pd.DataFrame(rows)
    print("exponent b in value ~ images^b:")
    for column in table.columns[1:]:
        print(f"  {column:<24}{exponent(list(table['images']), list(table[column])):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make")
    p.add_argument("out", type=Path)
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-side", type=int, default=512)
    p.add_argument("--max-side", type=int, default=1024)
    p.add_argument("--workers", type=int, default=2)
    for name in ("chain", "steps"):
        p = sub.add_parser(name)
        p.add_argument("--sizes", type=int, nargs="+", default=[2500, 5000, 10000, 20000])
    p = sub.choices["chain"]
    p.add_argument("out", type=Path)
    p.add_argument("recipe", nargs="?", default="recipes/chain.yaml")
    p.add_argument("overrides", nargs="*")
    p = sub.choices["steps"]
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    if args.command == "chain" and "=" in args.recipe:  # no recipe named: the first word is an override
        args.recipe, args.overrides = "recipes/chain.yaml", [args.recipe, *args.overrides]
    if args.command == "make":
        make(args.out, args.images, args.seed, args.min_side, args.max_side, args.workers)
    elif args.command == "chain":
        chain(args.out, args.sizes, args.recipe, args.overrides)
    else:
        steps(args.sizes, args.dim, args.k)


if __name__ == "__main__":
    main()
