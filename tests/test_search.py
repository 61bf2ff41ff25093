import numpy as np
import pytest

from core.vectors.search import faiss_available, mutual_nearest_neighbours, resolve_backend, topk


def _unit(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute(q, db, k, self_search):
    s = q @ db.T
    if self_search:
        np.fill_diagonal(s, -np.inf)
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, idx, 1), idx


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("self_search", [True, False])
def test_topk_matches_brute_force(backend, self_search):
    if backend == "faiss" and not faiss_available():
        pytest.skip("faiss is not installed (pip install '.[faiss]')")
    db = _unit(300, 16)
    q = db if self_search else _unit(37, 16, seed=1)
    sims, idx = topk(q, None if self_search else db, k=5, backend=backend, chunk=64)
    ref_s, ref_i = _brute(q, db, 5, self_search)
    np.testing.assert_allclose(sims, ref_s, atol=1e-5)
    np.testing.assert_array_equal(idx, ref_i)
    if self_search:
        assert not (idx == np.arange(len(q))[:, None]).any()


BACKENDS = ["torch"] + (["faiss"] if faiss_available() else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_go_to_the_lower_index_on_every_backend(backend):
    # Rows 1..6 are the same vector: every query ties between them, also across the k-th place.
    x = np.zeros((8, 4), np.float32)
    x[0], x[1:7], x[7] = [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]
    q = np.array([[0, 1, 0, 0], [0.6, 0.8, 0, 0]], np.float32)
    for k in (1, 3, 6, 7):
        sims, idx = topk(q, x, k=k, backend=backend)
        assert idx[0].tolist() == ([1, 2, 3, 4, 5, 6, 0] if k == 7 else list(range(1, k + 1)))
        assert idx[1].tolist()[: min(k, 6)] == list(range(1, min(k, 6) + 1))
    sims, idx = topk(x, None, k=3, backend=backend)  # self search: a duplicate is not itself
    assert idx[3].tolist() == [1, 2, 4] and idx[0].tolist() == [1, 2, 3]
    pairs, _ = mutual_nearest_neighbours(x, backend=backend)
    assert pairs.tolist() == [[1, 2]]


def test_auto_backend_follows_the_environment(monkeypatch):
    monkeypatch.setenv("CURATOR_SEARCH", "torch")
    assert resolve_backend("auto") == "torch" and resolve_backend("faiss") == "faiss"
    monkeypatch.setenv("CURATOR_SEARCH", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        resolve_backend("auto")


def test_self_search_with_exact_duplicates_never_returns_self():
    x = _unit(10, 8)
    x[3] = x[7]
    for backend in ["torch"] + (["faiss"] if faiss_available() else []):
        sims, idx = topk(x, None, k=2, backend=backend)
        assert idx[3, 0] == 7 and idx[7, 0] == 3
        assert not (idx == np.arange(10)[:, None]).any()


def test_mutual_nearest_neighbours_finds_planted_pairs():
    base = _unit(20, 32)
    noisy = base + 0.05 * _unit(20, 32, seed=5)
    x = np.concatenate([base, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)])
    pairs, sims = mutual_nearest_neighbours(x)
    assert sorted(map(tuple, pairs.tolist())) == [(i, i + 20) for i in range(20)]
    assert (sims > 0.9).all()


def test_bad_arguments():
    x = _unit(5, 4)
    with pytest.raises(ValueError, match="k=5"):
        topk(x, None, k=5)
    with pytest.raises(ValueError, match="4-d but the database is 3-d"):
        topk(x, _unit(5, 3), k=1)
