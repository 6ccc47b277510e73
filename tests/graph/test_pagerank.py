"""Personalized PageRank: hand-computed cases, networkx, the dict reference, and the contract
every propagation algorithm must meet."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

from graph.propagation import personalized_pagerank
from graph.propagation.pagerank import _personalized_pagerank_python
from loaders import ParameterError


def path3() -> sp.csr_matrix:
    return sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))


def test_hand_computed_path() -> None:
    # x0 = 1/2 + x1/4, x1 = (x0 + x2)/2, x2 = x1/4  =>  x = (7, 4, 1) / 12
    r = personalized_pagerank(path3(), np.array([1.0, 0, 0]), alpha=0.5, tol=1e-14)
    assert r.converged
    assert r.scores == pytest.approx([7 / 12, 4 / 12, 1 / 12], abs=1e-12)


def test_dangling_walkers_restart_at_the_seeds() -> None:
    A = sp.csr_matrix(np.array([[0, 1], [0, 0]], dtype=float))  # 0 -> 1, 1 dangles
    r = personalized_pagerank(A, np.array([1.0, 0.0]), alpha=0.5, tol=1e-14)
    # x1 = alpha x0, x0 = (1 - alpha) + alpha x1  =>  x0 = 1/(1 + alpha) = 2/3
    assert r.scores == pytest.approx([2 / 3, 1 / 3], abs=1e-12)


def random_graph(seed: int, n: int = 40, p: float = 0.08) -> tuple[nx.DiGraph, sp.csr_matrix]:
    rng = np.random.default_rng(seed)
    G = nx.gnp_random_graph(n, p, seed=seed, directed=True)
    for u, v in G.edges:
        G[u][v]["weight"] = float(rng.uniform(0.1, 3.0))
    A = sp.csr_matrix(nx.to_scipy_sparse_array(G, nodelist=range(n), weight="weight"))
    return G, A


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("alpha", [0.5, 0.85])
def test_agrees_with_networkx(seed: int, alpha: float) -> None:
    G, A = random_graph(seed)
    seeds = {0: 1.0, 5: 0.5, 7: 2.0}
    s = np.zeros(A.shape[0])
    for k, v in seeds.items():
        s[k] = v
    ours = personalized_pagerank(A, s, alpha=alpha, tol=1e-13, max_iter=2000)
    ref = nx.pagerank(G, alpha=alpha, personalization=seeds, weight="weight", tol=1e-14, max_iter=5000)
    assert ours.converged
    assert ours.scores == pytest.approx([ref[i] for i in range(A.shape[0])], abs=1e-9)


@pytest.mark.parametrize("seed", [4, 5])
def test_agrees_with_the_reference_implementation(seed: int) -> None:
    G, A = random_graph(seed, n=25, p=0.15)
    edges = {u: {v: d["weight"] for v, d in G[u].items()} for u in G}
    seeds = {1: 1.0, 2: 3.0}
    s = np.zeros(25)
    s[1], s[2] = 1.0, 3.0
    ours = personalized_pagerank(A, s, alpha=0.85, tol=1e-13, max_iter=2000).scores
    assert ours == pytest.approx(_personalized_pagerank_python(edges, 25, seeds, alpha=0.85), abs=1e-9)


def test_several_seed_vectors_at_once_equal_one_at_a_time() -> None:
    _, A = random_graph(6)
    S = np.zeros((A.shape[0], 3))
    S[0, 0] = 1
    S[[3, 4], 1] = 1
    S[:, 2] = 1
    together = personalized_pagerank(A, S, tol=1e-12).scores
    for k in range(3):
        alone = personalized_pagerank(A, S[:, k], tol=1e-12).scores
        assert together[:, k] == pytest.approx(alone, abs=1e-11)


def test_reports_non_convergence() -> None:
    _, A = random_graph(7)
    s = np.zeros(A.shape[0])
    s[0] = 1
    r = personalized_pagerank(A, s, alpha=0.99, max_iter=3)
    assert not r.converged and r.n_iter == 3 and r.residual > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 1.5}, "must be in \\(0, 1\\). Got 1.5 instead"),
        ({"alpha": 0.0}, "alpha"),
        ({"tol": 0.0}, "tol"),
        ({"max_iter": 0}, "max_iter"),
    ],
)
def test_parameter_errors(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        personalized_pagerank(path3(), np.array([1.0, 0, 0]), **kwargs)


def test_seed_errors() -> None:
    with pytest.raises(ParameterError, match="no seed"):
        personalized_pagerank(path3(), np.zeros(3))
    with pytest.raises(ParameterError, match="3 rows"):
        personalized_pagerank(path3(), np.ones(4))
    with pytest.raises(ParameterError, match="finite"):
        personalized_pagerank(path3(), np.array([np.nan, 1, 0]))
    with pytest.raises(ParameterError, match="square"):
        personalized_pagerank(sp.csr_matrix((3, 2)), np.ones(3))


# The contract every propagation algorithm must meet is in test_propagation_contract.py.


@pytest.mark.parametrize("k", [1, 3])
def test_dangling_self_keeps_walkers_and_is_linear_in_the_seeds(k: int) -> None:
    # 0 -> 1, 1 has no out-edges: with dangling="self", x1 = alpha x0 + alpha x1 and x0 = 1 - alpha
    A = sp.csr_matrix(np.array([[0, 1.0], [0, 0]]))
    S = np.tile(np.array([[1.0], [0.0]]), (1, k))
    x = personalized_pagerank(A, S if k > 1 else S[:, 0], alpha=0.5, tol=1e-14, dangling="self").scores
    x = x.reshape(2, -1)
    assert x[:, 0] == pytest.approx([0.5, 0.5])
    _, B = random_graph(3)
    a, b = np.zeros(B.shape[0]), np.zeros(B.shape[0])
    a[1], b[4] = 1.0, 1.0
    mix = personalized_pagerank(B, a + 3 * b, tol=1e-14, dangling="self").scores
    parts = [personalized_pagerank(B, v, tol=1e-14, dangling="self").scores for v in (a, b)]
    assert mix == pytest.approx((parts[0] + 3 * parts[1]) / 4, abs=1e-10)


@pytest.mark.parametrize("k", [1, 2])
def test_row_blocks_on_several_threads_give_the_same_scores(k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import graph.propagation.pagerank as pr

    monkeypatch.setattr(pr, "_PARALLEL_MIN", 0)  # split even this small graph
    _, A = random_graph(5)
    S = np.random.default_rng(0).random((A.shape[0], k))
    one = personalized_pagerank(A, S, tol=1e-13, threads=1)
    three = personalized_pagerank(A, S, tol=1e-13, threads=3)
    assert len(pr._row_blocks(pr.transition_transpose(A)[0].indptr, 3)) == 3
    assert three.n_iter == one.n_iter
    assert three.scores == pytest.approx(one.scores, abs=1e-15)
    with pytest.raises(ParameterError, match="threads"):
        personalized_pagerank(A, S, threads=0)


def _reversible_graph(seed: int, n: int = 60) -> sp.csr_matrix:
    """A symmetric weighted graph with isolated nodes (they dangle), as a reversible walk."""
    rng = np.random.default_rng(seed)
    G = nx.gnp_random_graph(n - 5, 0.06, seed=seed)
    A = sp.lil_matrix((n, n))
    for u, v in G.edges:
        A[u, v] = A[v, u] = float(rng.uniform(0.1, 3.0))
    return sp.csr_matrix(A)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dangling", ["seeds", "self"])
def test_chebyshev_on_a_reversible_walk_agrees_with_power_iteration_in_fewer_steps(seed: int, dangling: str) -> None:
    from graph.propagation import transition_transpose
    from graph.propagation.result import Transition

    A = _reversible_graph(seed)
    s = np.zeros(A.shape[0])
    s[[0, 3, 7, 58]] = [1.0, 2.0, 1.0, 1.0]  # node 58 is isolated
    PT, mask = transition_transpose(A)
    T = Transition(PT, mask, reversible=True)
    exact = personalized_pagerank(A, s, alpha=0.95, tol=1e-14, max_iter=5000, method="power", dangling=dangling)
    power = personalized_pagerank(A, s, alpha=0.95, tol=1e-9, transition=T, method="power", dangling=dangling)
    cheb = personalized_pagerank(A, s, alpha=0.95, tol=1e-9, transition=T, dangling=dangling)  # auto: Chebyshev
    assert cheb.converged and cheb.residual < 1e-9
    assert cheb.n_iter < power.n_iter
    # the same stopping rule: both within the bound the tolerance gives (tol * alpha / (1 - alpha))
    bound = 1e-9 * 0.95 / 0.05
    assert np.abs(cheb.scores - exact.scores).sum() < bound and np.abs(power.scores - exact.scores).sum() < bound
    assert cheb.scores.sum() == pytest.approx(exact.scores.sum(), abs=1e-12)


def test_walk_transition_is_reversible_and_gets_chebyshev_steps() -> None:
    from graph import GraphConfig, project, walk_matrix, walk_transition
    from loaders import read_tables
    from tests.conftest import KEY, tiny_frames

    p = project(read_tables(tiny_frames(), key=KEY), GraphConfig())
    W, T = walk_matrix(p), walk_transition(p)
    s = np.zeros(W.shape[0])
    s[0] = 1.0
    exact = personalized_pagerank(W, s, alpha=0.85, tol=1e-15, max_iter=5000)
    assert T.reversible
    cheb = personalized_pagerank(W, s, alpha=0.85, tol=1e-10, transition=T, method="chebyshev")
    assert np.abs(cheb.scores - exact.scores).sum() < 1e-10 * 0.85 / 0.15


def test_chebyshev_needs_a_reversible_walk_and_one_seed_vector() -> None:
    from graph.propagation import transition_transpose
    from graph.propagation.result import Transition

    A = path3()
    with pytest.raises(ParameterError, match="reversible walk"):
        personalized_pagerank(A, np.array([1.0, 0, 0]), method="chebyshev")
    with pytest.raises(ParameterError, match="one seed vector"):
        personalized_pagerank(A, np.eye(3), method="chebyshev", transition=Transition(*transition_transpose(A), reversible=True))
    with pytest.raises(ParameterError, match="'method'"):
        personalized_pagerank(A, np.array([1.0, 0, 0]), method="krylov")
    # a plain transition pair: "auto" is power iteration, step for step
    plain = personalized_pagerank(A, np.array([1.0, 0, 0]), transition=transition_transpose(A))
    assert plain.n_iter == personalized_pagerank(A, np.array([1.0, 0, 0]), method="power").n_iter


def test_a_walk_wrongly_called_reversible_falls_back_to_power_steps() -> None:
    from graph.propagation import transition_transpose
    from graph.propagation.result import Transition

    # a directed 12-cycle: eigenvalues on the unit circle, far from real
    n = 12
    A = sp.csr_matrix((np.ones(n), (np.arange(n), (np.arange(n) + 1) % n)), shape=(n, n))
    s = np.zeros(n)
    s[0] = 1.0
    exact = personalized_pagerank(A, s, alpha=0.99, tol=1e-14, max_iter=20000)
    r = personalized_pagerank(A, s, alpha=0.99, tol=1e-10, max_iter=20000, transition=Transition(*transition_transpose(A), reversible=True))
    assert r.converged and np.abs(r.scores - exact.scores).sum() < 1e-10 * 99
