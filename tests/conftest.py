import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.pixels.sample import SampleSpec, ensure_sample

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CURATOR_SHARED", ROOT.parent / "shared"))
# A smaller museum than the demo default keeps the suite fast.
SMALL = SampleSpec(paintings=24, photos=10, unmatched_photos=2, distractors=8, min_side=64, max_side=120)


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    return ensure_sample(tmp_path_factory.mktemp("sample") / "museum", SMALL)


@pytest.fixture
def shared() -> Path:
    if not (SHARED / "weights").is_dir():
        pytest.skip(f"needs ../shared (weights and data), not found at {SHARED}; set CURATOR_SHARED")
    return SHARED


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m ...`` from the repository root, as a user would."""
    full_env = {**os.environ, "CURATOR_SHARED": str(SHARED), **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=600)


def run_main(capsys, module: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m module args`` in this process, for the error cases: a user error returns 2 with its
    message on stderr as the command line would, anything else raises (a traceback fails the test). A new
    interpreter costs seconds per call (torch and timm load again), so whole runs keep ``run_cli``."""
    main = importlib.import_module("eval.__main__" if module == "eval" else module).main
    capsys.readouterr()
    here = Path.cwd()
    os.chdir(ROOT)  # from the repository root, as run_cli runs commands
    try:
        code = main(list(args))
    finally:
        os.chdir(here)
    out = capsys.readouterr()
    return subprocess.CompletedProcess([module, *args], code, out.out, out.err)


TRAIN = ("train.epochs=1, train.head_warmup_epochs=0, train.warmup_epochs=0, views.global_size=32, "
         "views.max_side=96, train.batch_size=8, train.num_workers=0, trainer.precision=32-true, "
         "monitor.pool_size=60, synthetic.num_queries=10, embed.num_workers=0, embed.progress=false, "
         "embed.precision=fp32")


def tiny_chain(folder: Path) -> Path:
    """recipes/chain.yaml with a tiny random model, one short epoch per stage, the sample museum in ``folder``."""
    path = folder / "tiny-chain.yaml"
    path.write_text(f"""defaults: [{ROOT / 'recipes' / 'chain'}]
model: {{arch: test_vit, weights: none, img_size: 32}}
data: {{sample_dir: {folder / 'museum'}}}
stages:
  pretrain:
    overrides: [{TRAIN}, train.images_per_epoch=32]
  pseudolabel:
    overrides: [{TRAIN}, rounds=2, mining.verify=false]
  submit:
    overrides: [embed.num_workers=0, embed.progress=false, embed.precision=fp32]
""")
    return path
