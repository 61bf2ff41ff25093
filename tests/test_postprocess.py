import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.base.errors import RecipeError
from core.model.embed import Embeddings
from core.pixels.images import decode_image, list_images
from core.pixels.verify import count_inliers, extract_features
from core.post import PostProcessor, Whitening, concat_blocks, fuse_verified, ledoit_wolf, neighbour_average
from core.recipe import load_recipe
from core.vectors.search import topk
from tests.conftest import run_cli


def _white(n: int = 500, d: int = 8, seed: int = 0) -> np.ndarray:
    """Rows with exactly zero mean and identity covariance."""
    x = np.random.default_rng(seed).normal(size=(n, d))
    x -= x.mean(axis=0)
    return (x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_whitening_whitens_inverts_and_leaves_a_white_set_alone(tmp_path):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(400, 6)) * [5, 3, 1, 0.5, 0.2, 0.1] + 2.0).astype(np.float32)
    w = Whitening.fit(x, shrinkage=0.0)
    z = (x - w.mean) @ w.projection
    assert np.allclose(np.cov(z, rowvar=False), np.eye(6), atol=1e-3)
    assert np.allclose(w.inverse(z), x, atol=1e-3)
    assert np.allclose(np.linalg.norm(w.apply(x), axis=1), 1, atol=1e-5)
    white = _white()
    assert np.allclose(Whitening.fit(white).apply(white), _unit(white), atol=1e-4)
    loaded = Whitening.load(w.save(tmp_path / "w.npz"))
    assert np.array_equal(loaded.apply(x), w.apply(x))
    truncated = Whitening.fit(x, dim=3)
    assert truncated.apply(x).shape == (400, 3)
    with pytest.raises(ValueError, match="cannot be inverted"):
        truncated.inverse(z[:, :3])


def test_whitening_a_pool_smaller_than_the_dimension_keeps_its_neighbours():
    # 40 paintings (the pool varies along a few directions, as embeddings do) and 40 photos of them,
    # 80 images in 128-d: full whitening spreads them into a regular simplex where every image is
    # equally far from every other; the Ledoit-Wolf estimate keeps who is close to whom.
    rng = np.random.default_rng(6)
    paintings = rng.normal(size=(40, 128)) * np.geomspace(4, 0.1, 128)
    photos = paintings + rng.normal(size=(40, 128)) * 0.3
    x = np.vstack([photos, paintings]).astype(np.float32)

    def hit1(vectors: np.ndarray) -> float:
        _, idx = topk(vectors, None, k=1)
        return float(np.mean(idx[:40, 0] == np.arange(40, 80)))

    full = Whitening.fit(x, shrinkage=0.0).apply(x)
    sims = full @ full.T
    assert np.ptp(sims[~np.eye(80, dtype=bool)]) < 0.05  # every pair at the same cosine: chance
    assert ledoit_wolf(x - x.mean(0)) > 0.05
    assert hit1(Whitening.fit(x).apply(x)) >= max(hit1(_unit(x)), 0.9)
    pairs = np.stack([np.arange(10), np.arange(40, 50)], axis=1)
    assert hit1(Whitening.fit_pairs(x, pairs).apply(x)) >= 0.9


def test_neighbour_averaging_keeps_unit_norms_and_leaves_isolated_points_alone():
    rng = np.random.default_rng(2)
    cluster = _unit(np.hstack([1 + 0.1 * rng.normal(size=(20, 4)), np.zeros((20, 4))]))
    isolated = np.eye(8)[7:8]
    x = np.vstack([cluster, isolated]).astype(np.float32)
    out = neighbour_average(x, k=3, alpha=3.0)
    assert out.shape == x.shape and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert np.allclose(out[-1], isolated[0])
    assert not np.allclose(out[:20], x[:20])
    # Averaging pulls the cluster together: its members end up closer to each other.
    assert (out[:20] @ out[:20].T).mean() > (x[:20] @ x[:20].T).mean()


class FakeVerifier:
    """Stands in for core.pixels.verify.Verifier: the inlier count of each pair of file names."""

    min_inliers = 25

    def __init__(self, inliers: dict):
        self.table = inliers

    def inliers(self, a: Path, b: Path) -> int:
        return self.table.get((a.name, b.name), 0)


def test_fusion_moves_verified_pairs_only():
    rng = np.random.default_rng(3)
    x = _unit(rng.normal(size=(6, 5))).astype(np.float32)
    paths = [Path(f"{i}.jpg") for i in range(6)]
    _, idx = topk(x, None, k=1)
    i, j = sorted((0, int(idx[0, 0])))
    fused, pairs = fuse_verified(x, paths, k=1, weight=0.5,
                                 verifier=FakeVerifier({(f"{i}.jpg", f"{j}.jpg"): 40}))
    assert pairs == [(i, j, 40)]
    others = [r for r in range(6) if r not in (i, j)]
    assert np.array_equal(fused[others], x[others])
    assert fused[i] @ fused[j] > x[i] @ x[j]
    assert np.allclose(np.linalg.norm(fused, axis=1), 1, atol=1e-5)


def test_geometric_verification_accepts_a_warped_copy_and_rejects_another_painting(sample_root):
    studio = list_images(sample_root / "images" / "studio")
    a, other = decode_image(studio[0]), decode_image(studio[5])
    a = cv2.resize(a, (a.shape[1] * 3, a.shape[0] * 3), interpolation=cv2.INTER_CUBIC)
    h, w = a.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = src + np.float32([[0.08 * w, 0.05 * h], [-0.05 * w, 0.02 * h], [-0.02 * w, -0.06 * h], [0.04 * w, 0]])
    warped = cv2.warpPerspective(a, cv2.getPerspectiveTransform(src, dst), (w, h))
    fa, fw = extract_features(a), extract_features(warped)
    fo = extract_features(cv2.resize(other, (w, h), interpolation=cv2.INTER_CUBIC))
    assert count_inliers(fa, fw) >= 25
    assert count_inliers(fa, fo) < 25


def test_postprocessor_keeps_rows_names_and_order(tmp_path):
    recipe = load_recipe(None, ["post.steps=[whiten,dba,qe]", "post.whiten.dim=4"])
    rng = np.random.default_rng(4)
    emb = Embeddings([f"n{i}" for i in range(30)], _unit(rng.normal(size=(30, 8))).astype(np.float32),
                     np.ones(30, np.float32))
    out = PostProcessor(recipe, tmp_path).apply(emb, [Path(f"{i}.jpg") for i in range(30)])
    assert out.names == emb.names and out.vectors.shape == (30, 4)
    assert (tmp_path / "whiten.npz").is_file()


def _photos_and_paintings(seed: int = 5):
    """200 paintings and 100 distractors, and 100 photos of the first paintings that differ from them
    mostly along two 'photo-ness' axes; the photos come first."""
    rng = np.random.default_rng(seed)
    paintings = rng.normal(size=(300, 16))
    photos = paintings[:100] + rng.normal(size=(100, 16)) * np.r_[3.0, 3.0, np.full(14, 0.3)]
    return np.vstack([photos, paintings]).astype(np.float32)


def _photo_hit1(vectors: np.ndarray) -> float:
    _, idx = topk(vectors, None, k=1)
    return float(np.mean(idx[:100, 0] == np.arange(100, 200)))


def test_learned_whitening_damps_what_separates_pseudo_pairs(tmp_path):
    x = _photos_and_paintings()
    emb = Embeddings([f"n{i}" for i in range(len(x))], x, np.ones(len(x), np.float32))
    paths = [Path(f"{i}.jpg") for i in range(len(x))]
    pca = PostProcessor(load_recipe(None, ["post.steps=[whiten]"])).apply(emb, paths).vectors
    post = PostProcessor(load_recipe(None, ["post.steps=[learned_whiten]", "post.learned_whiten.shrinkage=0.2"]),
                         tmp_path)
    learned = post.apply(emb, paths).vectors
    assert post.learned_pairs > 30  # mined without labels, from the PCA-whitened pool
    assert _photo_hit1(learned) > _photo_hit1(pca) + 0.1
    assert np.allclose(np.linalg.norm(learned, axis=1), 1, atol=1e-5)
    saved = load_recipe(None, ["post.steps=[whiten]", f"post.whiten.load={tmp_path / 'learned_whiten.npz'}"])
    assert np.allclose(PostProcessor(saved).apply(emb, paths).vectors, learned, atol=1e-6)
    # All weight on the pool is PCA whitening; dim keeps the leading directions.
    assert np.allclose(Whitening.fit_pairs(x, np.zeros((0, 2), int), shrinkage=1.0).apply(x), pca, atol=1e-4)
    assert Whitening.fit_pairs(x, np.zeros((0, 2), int), dim=5).apply(x).shape == (400, 5)
    with pytest.raises(RecipeError, match="shrinkage"):
        load_recipe(None, ["post.learned_whiten.shrinkage=0"])


def test_concat_weights_blocks():
    a, b = np.eye(3, dtype=np.float32), np.ones((3, 2), np.float32)
    out = concat_blocks([a, b], [1.0, 0.5])
    assert out.shape == (3, 5) and np.allclose(np.linalg.norm(out, axis=1), 1)
    assert out[0, 0] / out[0, 3] == pytest.approx(1 / (0.5 / np.sqrt(2)))


def test_bad_post_steps_are_named():
    with pytest.raises(RecipeError, match="post.steps"):
        load_recipe(None, ["post.steps=[whiten,whitening]"])
    with pytest.raises(RecipeError, match="concat"):
        load_recipe(None, ["post.steps=[whiten,concat]"])


def test_eval_and_submit_apply_the_steps(tmp_path, sample_root):
    common = ["recipes/tiny.yaml", "post.steps=[whiten,dba]", "synthetic.num_queries=5"]
    result = run_cli("eval", *common, f"data.labeled=[{sample_root}]", f"run_dir={tmp_path / 'e'}")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["post"]["steps"] == ["whiten", "dba"] and set(metrics["post"]["time_s"]) == {"whiten", "dba"}
    assert (tmp_path / "e" / "post" / "whiten.npz").is_file()
    result = run_cli("eval.submit", *common, f"data.root={sample_root / 'images'}", f"run_dir={tmp_path / 's'}",
                     f"submission={tmp_path / 'sub.csv'}")
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "sub.csv").read_text().splitlines()
    assert lines[0].startswith("ID,image_name,feature_0") and len(lines) == 1 + len(list_images(sample_root / "images"))
