"""Time and peak memory of python -m eval.submit on a generated folder of 20,000 tiny images.

    python -m benchmarks.submit_20k [--images 20000] [--side 32] [RECIPE] [key=value ...]

Generates the folder (procedural PNGs), runs the submission command as a user would, samples the
memory of its whole process tree (DataLoader workers included; PSS, and the RSS sum) every 0.1 s, and checks the
file it wrote. The default recipe is the tiny test model: this measures Curator's own overhead
(listing, decoding, batching, CSV writing and validation), not a backbone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from core.sample import make_distractor
from eval.submit import validate_submission

ROOT = Path(__file__).resolve().parents[1]


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("recipe", nargs="?", default="recipes/tiny.yaml")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for i in range(args.images):
            img = make_distractor(rng, args.side, args.side)
            cv2.imwrite(str(folder / f"{i:05d}.png"), img)
        print(f"generated {args.images} images of {args.side} px in {time.perf_counter() - start:.1f} s")
        out = Path(tmp) / "submission.csv"
        command = [sys.executable, "-m", "eval.submit", args.recipe, f"data.root={folder}",
                   f"submission={out}", f"run_dir={Path(tmp) / 'run'}", "embed.progress=false", *args.overrides]
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak = (0, 0)
        while proc.poll() is None:
            peak = tuple(map(max, peak, tree_memory_bytes(proc.pid)))
            time.sleep(0.1)
        seconds = time.perf_counter() - start
        output = proc.stdout.read()
        if proc.returncode != 0:
            sys.exit(f"eval.submit failed:\n{output}")
        checked = validate_submission(out, expected_names=sorted(p.name for p in folder.iterdir()))
        print(output.strip().splitlines()[-1])
        print(f"eval.submit on {args.images} images: {seconds:.1f} s wall ({args.images / seconds:.0f} img/s "
              f"end to end), peak memory of the process tree {peak[1] / 2**20:.0f} MiB PSS "
              f"({peak[0] / 2**20:.0f} MiB summing RSS), "
              f"file {out.stat().st_size / 2**20:.1f} MiB, {checked['rows']} rows x {checked['dim']} validated")


if __name__ == "__main__":
    main()
