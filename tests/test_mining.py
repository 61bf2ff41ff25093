import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from adapt.config import PseudolabelRecipe
from adapt.mining import MiningConfig, accounting, mine_pairs
from adapt.pseudolabel import DEFAULT_RECIPE, pseudolabel
from core.model.backbone import load_encoder
from core.recipe import load_recipe
from tests.conftest import run_cli


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _planted(seed: int = 0) -> np.ndarray:
    """Rows 0-4 are paintings, 5-9 their photos (close to them), 10 a copy of row 0, 11-12 a weak pair."""
    rng = np.random.default_rng(seed)
    paintings = np.zeros((5, 32))
    paintings[:, :16] = rng.normal(size=(5, 16))
    paintings = _unit(paintings)
    photos = paintings.copy()
    photos[:, :16] += 0.1 * rng.normal(size=(5, 16))
    # The weak pair lives in dimensions of its own, so it is a mutual-NN pair with cosine 0.3.
    weak = np.zeros((2, 32))
    weak[0, 16], weak[1, 16], weak[1, 17] = 1.0, 0.3, np.sqrt(1 - 0.09)
    return _unit(np.vstack([paintings, _unit(photos), paintings[:1], weak]))


def test_mining_finds_planted_pairs_and_filters_drop_the_false_ones():
    v = _planted()
    names = [f"img{i}" for i in range(len(v))]
    table = mine_pairs(v, names, [Path(n) for n in names], MiningConfig(min_similarity=0.5))
    kept = {(int(a), int(b)) for a, b in zip(table.loc[table["kept"], "a"], table.loc[table["kept"], "b"], strict=True)}
    assert {(1, 6), (2, 7), (3, 8), (4, 9)} <= kept  # painting i with photo i + 5
    reasons = dict(zip(zip(table["a"], table["b"], strict=True), table["reason"], strict=True))
    assert reasons[(0, 10)] == "near-duplicate"  # an exact copy is not a pair worth learning
    assert reasons[(11, 12)] == "low similarity"
    truth = {(i, i + 5) for i in range(5)}
    acc = accounting(table, truth)
    assert acc["kept_true"] == 4 and acc["kept_wrong"] == 0 and acc["precision"] == 1.0 and acc["recall"] == 0.8


def test_margin_and_k_reciprocal_filters():
    v = _planted()
    names = [f"img{i}" for i in range(len(v))]
    strict = mine_pairs(v, names, [Path(n) for n in names], MiningConfig(min_similarity=0.0, min_margin=1.5))
    assert not strict["kept"].any() and set(strict["reason"]) <= {"low margin", "near-duplicate"}
    knn = mine_pairs(v, names, [Path(n) for n in names], MiningConfig(min_similarity=0.0, k_reciprocal=3,
                                                                          min_shared=1.01))
    assert not knn["kept"].any() and "few shared neighbours" in set(knn["reason"])


class Inliers:
    """Stands in for core.pixels.verify.Verifier: the inlier count of each pair of file names."""

    min_inliers = 25

    def __init__(self, counts: dict[tuple[str, str], int]):
        self.counts = counts

    def inliers(self, a: Path, b: Path) -> int:
        return self.counts.get((a.name, b.name), 0)


def test_unverified_candidates_are_kept_only_when_enough_of_them_verify():
    v = _planted()
    names = [f"img{i}" for i in range(len(v))]
    paths = [Path(n) for n in names]
    # Candidates past the filters: (1, 6) ... (4, 9); verification passes two of the four.
    verifier = Inliers({("img1", "img6"): 200, ("img2", "img7"): 90})

    def kept(share_needed, **kwargs):
        cfg = MiningConfig(verify=True, trust_unverified_at=share_needed)
        table = mine_pairs(v, names, paths, cfg, verifier, **kwargs)
        assert table.attrs["verified_share"] == 0.5
        return {(int(a), int(b)) for a, b in zip(table.loc[table["kept"], "a"], table.loc[table["kept"], "b"],
                                                  strict=True)}, table.attrs["trust_unverified"]

    assert kept(None) == ({(1, 6), (2, 7)}, False)  # the default: verified candidates only
    assert kept(0.6) == ({(1, 6), (2, 7)}, False)
    assert kept(0.5) == ({(1, 6), (2, 7), (3, 8), (4, 9)}, True)
    assert kept(0.5, trust_unverified=False) == ({(1, 6), (2, 7)}, False)  # round 1's decision rules later rounds


@pytest.mark.slow
def test_a_round_runs_end_to_end_and_accounts_for_its_pairs(tmp_path, sample_root):
    tiny = ["model.arch=test_vit", "model.weights=none", "model.img_size=32", "views.global_size=32",
            "views.max_side=96", "train.batch_size=4", "train.num_workers=0", "embed.num_workers=0",
            "embed.progress=false", "synthetic.num_queries=5", "trainer.precision=32-true", "train.epochs=2",
            "mining.min_similarity=0.0", "rounds=1", "mining.verify=true", "verify.min_inliers=0"]
    result = run_cli("adapt.pseudolabel", *tiny, f"data.labeled=[{sample_root}]", f"run_dir={tmp_path / 'pl'}")
    assert result.returncode == 0, result.stderr[-3000:]
    pairs = pd.read_csv(tmp_path / "pl" / "round1" / "pairs.csv")
    assert {"similarity", "margin", "inliers", "kept", "reason", "true_pair"} <= set(pairs.columns)
    assert (pairs.loc[pairs["kept"], "inliers"] >= 0).all()
    metrics = json.loads((tmp_path / "pl" / "metrics.json").read_text())
    mining = metrics["rounds"][0]["mining"]
    assert mining["kept"] == int(pairs["kept"].sum())
    assert mining["kept_true"] == int((pairs["kept"] & pairs["true_pair"]).sum())
    assert mining["precision"] == pytest.approx(mining["kept_true"] / mining["kept"])
    # The pool is the labeled set alone: the labels judge every pair.
    assert mining["kept_unjudged"] == 0 and mining["labeled_precision"] == mining["precision"]
    assert "labeled" in result.stdout and "unjudged" in result.stdout
    assert (tmp_path / "pl" / "round1" / "encoder.pt").is_file() and metrics["pool_after"]["n_queries"] == 10
    # Scored after the recipe's whitening, the raw figures beside (pseudolabel.yaml inherits post.steps).
    assert set(metrics["pool_after"]["raw"]) == {"hit@1", "hit@3", "hit@10", "map"} and "raw)" in result.stdout


def test_a_round_without_trustworthy_pairs_stops_and_says_so(tmp_path, sample_root):
    tiny = ["model.arch=test_vit", "model.weights=none", "model.img_size=32", "embed.num_workers=0",
            "embed.progress=false", "mining.min_similarity=1.0", "mining.verify=false"]
    result = run_cli("adapt.pseudolabel", *tiny, f"data.labeled=[{sample_root}]", f"run_dir={tmp_path / 'pl'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "nothing to refine" in result.stderr
    metrics = json.loads((tmp_path / "pl" / "metrics.json").read_text())
    assert len(metrics["rounds"]) == 1 and metrics["rounds"][0]["refined"] is False
    assert metrics["rounds"][0]["mining"]["kept"] == 0 and metrics["encoder"] == "none"


def test_refinement_is_contrastive_only(tmp_path):
    result = run_cli("adapt.pseudolabel", "method=dino")
    assert result.returncode == 2 and "simclr" in result.stderr


def test_accounting_separates_pairs_the_labels_cannot_judge():
    # Rows 0-9 are labeled (query i pairs with reference i + 5); rows 20-21 are two unlabeled images.
    table = pd.DataFrame({"a": [0, 1, 20, 2], "b": [5, 7, 21, 6], "kept": [True, True, True, False]})
    acc = accounting(table, {(i, i + 5) for i in range(5)}, labeled=set(range(10)))
    assert (acc["kept"], acc["kept_true"], acc["kept_wrong"], acc["kept_unjudged"]) == (3, 1, 2, 1)
    assert acc["precision"] == pytest.approx(1 / 3) and acc["labeled_precision"] == 0.5
    assert acc["recall"] == pytest.approx(1 / 5)
    assert "kept_unjudged" not in accounting(table, {(0, 5)})


class Interrupt(pl.Callback):
    """Raises at the second epoch of the second round (each round's fit starts at epoch 0)."""

    def __init__(self):
        self.fits = 0

    def on_train_start(self, trainer, pl_module):
        self.fits += 1

    def on_train_epoch_start(self, trainer, pl_module):
        if self.fits == 2 and trainer.current_epoch == 1:
            raise RuntimeError("power cut")


@pytest.mark.slow
def test_an_interrupted_run_resumes_mid_round_and_ends_where_the_uninterrupted_run_ends(tmp_path, sample_root):
    # Data-loader workers as the shipped recipes have them.
    tiny = ["model.arch=test_vit", "model.weights=none", "model.img_size=32", "views.global_size=32",
            "views.max_side=96", "train.batch_size=4", "train.num_workers=2", "embed.num_workers=0",
            "embed.progress=false", "synthetic.num_queries=5", "trainer.precision=32-true", "train.epochs=2",
            "train.head_warmup_epochs=0", "mining.verify=false", "mining.min_similarity=0.0", "rounds=2",
            f"data.labeled=[{sample_root}]"]
    straight = pseudolabel(load_recipe(DEFAULT_RECIPE, [*tiny, f"run_dir={tmp_path / 'a'}"], PseudolabelRecipe))
    with pytest.raises(RuntimeError, match="power cut"):
        pseudolabel(load_recipe(DEFAULT_RECIPE, [*tiny, f"run_dir={tmp_path / 'b'}"], PseudolabelRecipe),
                    callbacks=(Interrupt(),))
    run = tmp_path / "b"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert (run / "round2" / "checkpoints" / "last.ckpt").is_file() and not (run / "round2" / "encoder.pt").exists()
    result = run_cli("adapt.pseudolabel", "--resume", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    assert straight["encoder"] == str(tmp_path / "a" / "round2" / "encoder.pt")
    a = load_encoder(straight["encoder"]).state_dict()
    b = load_encoder(run / "round2" / "encoder.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rounds = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2] and rounds[1]["mining"] == straight["rounds"][1]["mining"]


def test_later_rounds_follow_round_1_on_unverified_pairs_and_an_unlabeled_pool_is_not_embedded_again(
        tmp_path, sample_root, monkeypatch):
    # Nothing could score the final model on an unlabeled pool: a pass over it after the last round
    # would be wasted.
    import adapt.pseudolabel as stage2

    passes, trust = [], []
    full_pool, mine = stage2._full_pool, stage2.mine_pairs
    monkeypatch.setattr(stage2, "_full_pool", lambda *a: passes.append(a[3]) or full_pool(*a))
    monkeypatch.setattr(stage2, "mine_pairs", lambda *a: trust.append(a[-1]) or mine(*a))
    tiny = ["model.arch=test_vit", "model.weights=none", "model.img_size=32", "views.global_size=32",
            "views.max_side=96", "train.batch_size=4", "train.num_workers=0", "embed.num_workers=0",
            "embed.progress=false", "synthetic.num_queries=5", "trainer.precision=32-true", "train.epochs=1",
            "train.head_warmup_epochs=0", "mining.min_similarity=0.0", "rounds=2", "mining.verify=true",
            "verify.min_inliers=0", "mining.trust_unverified_at=0.5",
            f"data.root={sample_root / 'images'}", f"run_dir={tmp_path / 'pl'}"]
    summary = pseudolabel(load_recipe(DEFAULT_RECIPE, tiny, PseudolabelRecipe))
    assert [r["refined"] for r in summary["rounds"]] == [True, True] and summary["pool_after"] is None
    assert passes == ["round 1: embed pool", "round 2: embed pool"]
    assert trust == [None, True]  # round 1 decides (every candidate verifies at min_inliers=0), round 2 follows
    assert all(r["mining"]["trust_unverified"] and r["mining"]["verified_share"] == 1.0 for r in summary["rounds"])
