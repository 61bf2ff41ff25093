"""Diffusion baked into the embeddings (core/vectors/diffusion.py and the ``diffusion`` post step)."""

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from core.model.embed import Embeddings
from core.post import PostProcessor
from core.recipe import load_recipe
from core.vectors.diffusion import knn_graph, spectral_embedding
from core.vectors.search import topk
from tests.test_postprocess import FakeVerifier


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _normalised(graph: sp.csr_matrix) -> np.ndarray:
    d = np.asarray(graph.sum(axis=1)).ravel()
    return graph.toarray() / np.sqrt(np.outer(d, d))


def test_every_eigenpair_gives_the_exact_diffusion_matrix_and_few_give_its_leading_part():
    x = _unit(np.random.default_rng(0).normal(size=(120, 6)))
    graph = knn_graph(x, k=5, gamma=3.0)
    assert (graph != graph.T).nnz == 0 and graph.diagonal().sum() == 0
    alpha, s = 0.9, _normalised(graph)
    exact = (1 - alpha) * np.linalg.inv(np.eye(120) - alpha * s)
    full = spectral_embedding(graph, alpha, rank=130)  # dense solver; a pool under the rank pads zeros
    assert full.shape == (120, 130) and not full[:, 120:].any()
    np.testing.assert_allclose(full @ full.T, exact, atol=1e-4)
    # Lanczos (rank 10 of 120) keeps the same leading eigenpairs a dense solver finds.
    eigval, eigvec = np.linalg.eigh(s)
    leading = eigvec[:, -10:] * np.sqrt((1 - alpha) / (1 - alpha * eigval[-10:]))
    low = spectral_embedding(graph, alpha, rank=10)
    np.testing.assert_allclose(low @ low.T, leading @ leading.T, atol=1e-4)


def test_verified_pairs_become_full_weight_edges_both_ways():
    x = _unit(np.random.default_rng(1).normal(size=(30, 5)))
    plain = knn_graph(x, k=3, gamma=3.0)
    far = int(np.argmin(x[0] @ x.T))
    graph = knn_graph(x, k=3, gamma=3.0, pairs=np.array([[0, far]]))
    assert plain[0, far] == 0 and graph[0, far] == graph[far, 0] == 1
    assert (graph - plain).nnz == 2


def _two_arcs() -> np.ndarray:
    """Rows 0..9 walk in small steps along an arc from row 0 to row 9 (a photo, its painting at the far
    end); rows 10..19 walk along another arc that starts at row 10, closer to row 0 than row 9 is but
    never among the neighbours of row 0's arc (a look-alike with a life of its own); rows 20.. are
    clutter in the other dimensions."""
    def arc(start: float, axis: int) -> np.ndarray:
        rows = np.zeros((10, 16))
        angles = np.linspace(start, start + 1.2, 10)
        rows[:, 0], rows[:, axis] = np.cos(angles), np.sin(angles)
        return rows

    clutter = np.random.default_rng(2).normal(size=(40, 16)) * np.r_[0, 0, 0, np.ones(13)]
    return _unit(np.vstack([arc(0.0, 1), arc(0.6, 2), clutter]))


def test_diffusion_step_ranks_an_image_reached_through_neighbours_above_a_closer_one_elsewhere(tmp_path):
    x = _two_arcs()
    assert x[0] @ x[10] > x[0] @ x[9]  # by cosine, the look-alike wins
    emb = Embeddings([f"n{i}" for i in range(len(x))], x, np.ones(len(x), np.float32))
    recipe = load_recipe(None, ["post.steps=[diffusion]", "post.diffusion.k=2", "post.diffusion.rank=8",
                                "post.diffusion.weight=2.0"])
    out = PostProcessor(recipe, tmp_path).apply(emb, [Path(f"{i}.png") for i in range(len(x))]).vectors
    assert out.shape == (len(x), 16 + 8)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert out[0] @ out[9] > out[0] @ out[10]  # along the graph, the painting wins


def test_diffusion_verifies_the_nearest_neighbours_when_asked(tmp_path):
    x = _two_arcs()
    emb = Embeddings([f"n{i}" for i in range(len(x))], x, np.ones(len(x), np.float32))
    paths = [Path(f"{i}.png") for i in range(len(x))]
    post = PostProcessor(load_recipe(None, ["post.steps=[diffusion]", "post.diffusion.verify=true",
                                            "post.diffusion.verify_k=1"]), tmp_path)
    _, idx = topk(x, None, k=1)
    i, j = sorted((0, int(idx[0, 0])))
    post.verifier = FakeVerifier({(f"{i}.png", f"{j}.png"): 40})
    post.apply(emb, paths)
    assert post.verified_pairs == 1


def test_a_pool_of_one_image_keeps_its_row(tmp_path):
    emb = Embeddings(["n0"], _unit(np.ones((1, 8))), np.ones(1, np.float32))
    out = PostProcessor(load_recipe(None, ["post.steps=[diffusion]", "post.diffusion.rank=4"]), tmp_path).apply(
        emb, [Path("0.png")]).vectors
    assert out.shape == (1, 12)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("bad", ["post.diffusion.alpha=1", "post.diffusion.rank=0", "post.diffusion.gamma=0"])
def test_diffusion_values_out_of_range_are_refused(bad):
    from core.base.errors import RecipeError

    with pytest.raises(RecipeError, match="post.diffusion"):
        load_recipe(None, ["post.steps=[diffusion]", bad])
