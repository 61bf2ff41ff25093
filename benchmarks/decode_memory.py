"""Peak memory of ``python -m eval.submit`` on a folder holding one huge PNG, against one small PNG.

    CURATOR_SHARED=../shared python -m benchmarks.decode_memory [--side 15000] [--recipe recipes/zeroshot.yaml]

Each run is a fresh process; its peak RSS (``wait4``: the process and the loader workers it waited
for) is printed beside the small-image baseline, for 0 and 2 data-loader workers. The difference is
what decoding the big image costs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _write_png(path: Path, side: int) -> None:
    """A smooth RGB gradient (it compresses well, so the file stays small while its pixels do not)."""
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    image = np.empty((side, side, 3), np.uint8)
    image[..., 0] = ramp[:, None].astype(np.uint8)
    image[..., 1] = ramp[None, :].astype(np.uint8)
    image[..., 2] = ((ramp[:, None] + ramp[None, :]) / 2).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def peak_rss(command: list[str]) -> tuple[float, float, int]:
    """(peak RSS in GB, seconds, exit code) of ``command`` run from the repository root."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        print(process.stderr.read().decode()[-2000:], file=sys.stderr)
    return usage.ru_maxrss / 1024**2, time.perf_counter() - started, process.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=15_000, help="side of the huge square PNG")
    parser.add_argument("--recipe", default="recipes/zeroshot.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folders = {"small (512 px)": Path(tmp) / "small", f"huge ({args.side} px)": Path(tmp) / "huge"}
        _write_png(folders["small (512 px)"] / "small.png", 512)
        _write_png(folders[f"huge ({args.side} px)"] / "huge.png", args.side)
        print(f"{'folder':<20}{'workers':>8}{'peak RSS GB':>13}{'seconds':>9}")
        for workers in (0, 2):
            rss = {}
            for label, folder in folders.items():
                command = [sys.executable, "-m", "eval.submit", args.recipe, f"data.root={folder}",
                           f"submission={Path(tmp) / 'submission.csv'}", f"run_dir={Path(tmp) / 'run'}",
                           f"embed.num_workers={workers}", "embed.progress=false"]
                rss[label], seconds, code = peak_rss(command)
                print(f"{label:<20}{workers:>8}{rss[label]:>13.2f}{seconds:>9.1f}" + ("  FAILED" if code else ""))
            small, huge = rss.values()
            print(f"{'':<20}{'':>8}  huge - small = {huge - small:.2f} GB, huge / small = {huge / small:.2f}")


if __name__ == "__main__":
    main()
