"""Careless and hostile inputs, as a user would try them: the command, its exit code and its message.

Each case builds what it needs in a scratch folder (the tiny recipe, a few generated images, short
runs of the training commands) and runs one command line as a user would, from the repository root.
A row: the case, the command (scratch paths shortened to ``$T``), the exit code, whether a Python
traceback was printed, and the first line of the message (or of what went wrong: a file overwritten,
rows that leaked in or went missing, a marker file written by a checkpoint's pickle).

    python -m benchmarks.hostile_inputs [--out runs/benchmarks/hostile_inputs.csv] [--only 1 3 ...]

Every case is also a test (tests/test_hostile_inputs.py); this prints them side by side as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes" / "tiny.yaml")
# One short epoch of the tiny recipe's random ViT on the images of a scratch folder.
TRAIN = ["train.epochs=1", "train.head_warmup_epochs=0", "train.warmup_epochs=0", "views.global_size=32",
         "views.max_side=96", "train.batch_size=4", "train.num_workers=0", "trainer.precision=32-true",
         "monitor.pool_size=12", "synthetic.num_queries=0", "embed.num_workers=0", "embed.progress=false",
         "embed.precision=fp32", "model.arch=test_vit", "model.weights=none", "model.img_size=32"]


def write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` small random PNGs ``g0.png``... in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"g{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, (40 + 4 * i, 48, 3), dtype=np.uint8))
        paths.append(path)
    return paths


class Bench:
    def __init__(self, scratch: Path):
        self.t = scratch
        self.rows: list[dict] = []

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "CURATOR_CACHE": str(self.t / "cache")}
        try:
            return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, -9, "", f"(killed after {timeout:.0f} s: hung)")

    def record(self, case: str, result: subprocess.CompletedProcess, outcome: str = "") -> None:
        message = next((line for line in result.stderr.splitlines() if line.startswith("error:")), "")
        if not message and result.returncode not in (0, 2):
            message = (result.stderr.strip().splitlines() or [""])[-1]
        args = [str(a) for a in result.args]
        args = args[2:] if args[0] == sys.executable else args  # [python, -m, module, ...]
        command = " ".join(args).replace(str(self.t), "$T").replace(str(ROOT) + "/", "")
        self.rows.append({"case": case, "command": f"python -m {command}", "exit": result.returncode,
                          "traceback": "Traceback" in result.stderr,
                          "outcome": outcome or message[:200]
                          or (result.stdout.strip().splitlines() or [""])[-1][:200]})
        print(f"[{case}] exit {result.returncode}: {self.rows[-1]['outcome']}", flush=True)

    def pretrain_run(self, name: str, method: str = "simclr") -> Path:
        run = self.t / name
        if not (run / "checkpoints" / "last.ckpt").exists():
            data = self.t / "train-images"
            if not data.exists():
                write_images(data, 12)
            result = self.run("ssl.pretrain", str(ROOT / "recipes" / f"{method}.yaml"), *TRAIN, "dino.local_size=16",
                              f"data.root={data}", f"run_dir={run}")
            assert result.returncode == 0, result.stderr[-2000:]
        return run


def case_malicious_checkpoint(b: Bench) -> None:
    run = b.pretrain_run("evil-run")
    marker = b.t / "PWNED"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"state_dict": Evil()}, run / "checkpoints" / "last.ckpt")
    result = b.run("ssl.pretrain", "--resume", str(run))
    b.record("1 checkpoint runs code", result, f"marker file written: {marker.exists()}; "
             + next((line for line in result.stderr.splitlines() if line.startswith("error:")), "")[:150])


def case_no_weights(b: Bench) -> None:
    data = b.t / "plain"
    write_images(data, 3)
    result = b.run("eval.submit", f"data.root={data}", f"submission={b.t / 's.csv'}", "embed.progress=false",
                   "model.img_size=28", "embed.num_workers=0")
    b.record("2 no recipe: random weights", result)
    empty = b.t / "empty.yaml"
    empty.write_text("")
    result = b.run("eval.submit", str(empty), f"data.root={data}", f"submission={b.t / 's2.csv'}",
                   "embed.progress=false", "model.img_size=28", "embed.num_workers=0")
    b.record("2 empty recipe: random weights", result)


def case_output_is_input(b: Bench) -> None:
    data = b.t / "overwrite"
    images = write_images(data, 3)
    before = images[0].read_bytes()
    result = b.run("eval.submit", TINY, f"data.root={data}", f"submission={images[0]}")
    b.record("3 submission= an input image", result,
             f"image overwritten: {images[0].read_bytes() != before}; "
             + next((line for line in result.stderr.splitlines() if line.startswith("error:")), "")[:150])


def _rows(csv: Path) -> list[str]:
    return pd.read_csv(csv, usecols=["image_name"])["image_name"].tolist() if csv.is_file() else []


def case_links(b: Bench) -> None:
    outside = b.t / "links"
    write_images(outside / "parent-images", 2, seed=3)
    data = outside / "inner"
    write_images(data, 3)
    (data / "up").symlink_to("..")
    out = b.t / "links.csv"
    result = b.run("eval.submit", TINY, f"data.root={data}", f"submission={out}")
    leaked = [n for n in _rows(out) if n.startswith("up/")]
    b.record("4 link up out of data.root", result, f"exit {result.returncode}, rows from outside: {len(leaked)}; "
             f"warning: {'outside' in result.stderr}")
    data = b.t / "aliases"
    write_images(data, 5)
    os.link(data / "g0.png", data / "hard.png")
    (data / "soft.png").symlink_to("g1.png")
    out = b.t / "aliases.csv"
    result = b.run("eval.submit", TINY, f"data.root={data}", f"submission={out}")
    b.record("5 hard link + symlink beside originals", result,
             f"7 names, {len(_rows(out))} rows; missing {sorted({p.name for p in data.iterdir()} - set(_rows(out)))}")


def case_foreign_checkpoint(b: Bench) -> None:
    stage1 = b.pretrain_run("stage1")
    data = b.t / "train-images"
    run = b.t / "stage2"
    result = b.run("adapt.pseudolabel", str(ROOT / "recipes" / "pseudolabel.yaml"), *TRAIN, f"data.root={data}",
                   f"run_dir={run}", "rounds=1", "mining.verify=false", "mining.min_similarity=-1",
                   f"model.weights={stage1 / 'encoder.pt'}")
    assert result.returncode == 0, result.stderr[-2000:]
    (run / "metrics.json").unlink()
    (run / "metrics.jsonl").write_text("")
    shutil.copy(stage1 / "checkpoints" / "last.ckpt", run / "round1" / "checkpoints" / "last.ckpt")
    result = b.run("adapt.pseudolabel", "--resume", str(run))
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    b.record("6 stage-1 checkpoint in a stage-2 round", result,
             f"exit {result.returncode}; round 1 trained: {bool(lines and lines[0].get('refined'))}; "
             + next((line for line in result.stderr.splitlines() if line.startswith("error:")), "")[:150])


def case_ranges(b: Bench) -> None:
    data = b.t / "ranges"
    write_images(data, 3)
    for override in ("data.cache_max_side=-5", "model.img_size=0", "model.gem_p=-1", "model.img_size=-64",
                     "embed.num_workers=-1", "post.whiten.dim=-3"):
        extra = [f"data.cache_dir={b.t / 'cache-dir'}"] if "cache" in override else []
        extra += ["post.steps=[whiten]"] if "whiten" in override else []
        result = b.run("eval.submit", TINY, f"data.root={data}", f"submission={b.t / 'r.csv'}", override, *extra)
        b.record(f"7 {override}", result)


def case_tracebacks(b: Bench) -> None:
    data = b.t / "ranges"
    result = b.run("eval.submit", TINY, f"data.root={data}", f"submission={b.t / 'r.csv'}", "embed.turns=[0,180")
    b.record("8 unclosed override", result)
    run = b.pretrain_run("truncated")
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    b.record("8 truncated checkpoint", b.run("ssl.pretrain", "--resume", str(run)))
    other = b.pretrain_run("other-method", method="dino")
    run = b.pretrain_run("other-method-target")
    shutil.copy(other / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")
    b.record("8 other-method checkpoint", b.run("ssl.pretrain", "--resume", str(run)))
    evaluated = b.t / "eval-run"
    result = b.run("eval", TINY, f"data.root={data}", f"run_dir={evaluated}", "synthetic.num_queries=0")
    assert result.returncode == 0, result.stderr[-2000:]
    existing = b.t / "a-file"
    existing.write_text("mine\n")
    b.record("8 compare --out an existing file", b.run("eval.compare", str(evaluated), "--out", str(existing)))
    broken = b.t / "broken-run"
    shutil.copytree(evaluated, broken)
    (broken / "metrics.json").write_text('{"kind": "evaluate", "hit')
    b.record("8 truncated metrics.json (compare)", b.run("eval.compare", str(evaluated), str(broken),
                                                          "--out", str(b.t / "cmp")))


def chain_recipe(path: Path, data: Path, epochs: int = 1) -> Path:
    """A chain recipe at ``path``: the tiny model, one short round per stage, on the images of ``data``."""
    path.write_text(f"""defaults: [{ROOT / 'recipes' / 'chain'}]
model: {{arch: test_vit, weights: none, img_size: 32}}
data: {{root: {data}}}
stages:
  pretrain:
    overrides: [{', '.join(TRAIN)}, train.images_per_epoch=8, train.epochs={epochs}]
  pseudolabel:
    overrides: [{', '.join(TRAIN)}, rounds=1, mining.verify=false]
  submit:
    overrides: [embed.num_workers=0, embed.progress=false, embed.precision=fp32]
""")
    return path


def case_chain(b: Bench) -> None:
    data = b.t / "chain-images"
    write_images(data, 12)
    recipe = chain_recipe(b.t / "chain.yaml", data)
    run = b.t / "chain-run"
    env = {**os.environ, "CURATOR_CACHE": str(b.t / "cache")}
    args = [sys.executable, "-m", "eval.chain", str(recipe), f"run_dir={run}"]
    first = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    out, err = first.communicate()
    rounds = [json.loads(x)["round"] for x in (run / "pseudolabel" / "metrics.jsonl").read_text().splitlines()
              if x.strip()] if (run / "pseudolabel" / "metrics.jsonl").is_file() else []
    b.record("9 two chains on one run_dir", second,
             f"first exit {first.returncode}, second exit {second.returncode}; rounds in metrics.jsonl {rounds}; "
             + next((line for line in second.stderr.splitlines() if line.startswith("error:")), "")[:150])
    metrics = run / "pretrain" / "metrics.json"
    kept = metrics.read_text()
    metrics.write_text("{")
    b.record("8 truncated metrics.json (chain)", b.run("eval.chain", str(recipe), f"run_dir={run}"))
    metrics.write_text(kept)
    moved = b.t / "chain-moved"
    shutil.move(run, moved)
    (moved / "submit" / "metrics.json").unlink()
    b.record("minor: chain folder moved, run again", b.run("eval.chain", str(recipe), f"run_dir={moved}"))


def case_fifo(b: Bench) -> None:
    data = b.t / "fifo"
    write_images(data, 3)
    os.mkfifo(data / "x.jpg")
    b.record("10 a FIFO named x.jpg", b.run("eval.submit", TINY, f"data.root={data}", f"submission={b.t / 'f.csv'}",
                                            timeout=60))


def case_pool_runs(b: Bench) -> None:
    data = b.t / "pool"
    write_images(data, 6)
    for name in ("run1", "run2"):
        result = b.run("eval", TINY, f"data.root={data}", f"run_dir={data / name}", "synthetic.num_queries=3")
    pool = json.loads((data / "run2" / "metrics.json").read_text())["pool_size"] if result.returncode == 0 else None
    b.record("11 run folders inside data.root", result, f"exit {result.returncode}; run 2's pool: {pool} images "
             f"(the folder holds 6); warning: {'earlier runs' in result.stderr}")


def case_compare_typo(b: Bench) -> None:
    evaluated = b.t / "eval-run-12"
    data = b.t / "compare-images"
    write_images(data, 3)
    result = b.run("eval", TINY, f"data.root={data}", f"run_dir={evaluated}", "synthetic.num_queries=0")
    assert result.returncode == 0, result.stderr[-2000:]
    b.record("12 compare a missing run", b.run("eval.compare", str(evaluated), str(b.t / "typo"),
                                               "--out", str(b.t / "cmp2")))


def case_messages(b: Bench) -> None:
    data = b.t / "ranges"
    bad = b.t / "model3.yaml"
    bad.write_text("model: 3\n")
    b.record("minor: model: 3", b.run("eval.submit", str(bad), f"data.root={data}", f"submission={b.t / 'm.csv'}"))
    env_recipe = b.t / "env.yaml"
    env_recipe.write_text("defaults: [" + str(ROOT / "recipes" / "tiny") + "]\nrun_dir: ${oc.env:CURATOR_UNSET_VAR}\n")
    b.record("minor: ${oc.env:UNSET}", b.run("eval.submit", str(env_recipe), f"data.root={data}",
                                             f"submission={b.t / 'e.csv'}"))


CASES: dict[str, Callable[[Bench], None]] = {
    "1": case_malicious_checkpoint, "2": case_no_weights, "3": case_output_is_input, "4": case_links,
    "6": case_foreign_checkpoint, "7": case_ranges, "8": case_tracebacks, "9": case_chain, "10": case_fifo,
    "11": case_pool_runs, "12": case_compare_typo, "minor": case_messages,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/hostile_inputs.csv"))
    parser.add_argument("--only", nargs="+", choices=list(CASES), help="run only these cases")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-") as scratch:
        bench = Bench(Path(scratch))
        for key in args.only or CASES:
            try:
                CASES[key](bench)
            except Exception as e:  # a case that could not be set up is a row too
                bench.rows.append({"case": key, "command": "(setup)", "exit": None, "traceback": True,
                                   "outcome": f"setup failed: {type(e).__name__}: {e}"[:200]})
                print(bench.rows[-1], flush=True)
        table = pd.DataFrame(bench.rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(table.to_markdown(index=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
