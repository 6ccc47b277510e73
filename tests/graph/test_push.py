"""Incremental updates by local push against full recomputes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from graph.propagation import personalized_pagerank
from graph.propagation.push import add_edge, add_seed, push_state
from loaders.errors import ParameterError


def _graph(n: int = 300, m: int = 900, seed: int = 0, dangling: int = 20) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    src, dst = rng.integers(0, n - dangling, m), rng.integers(0, n, m)  # the last nodes have no out-edges
    keep = src != dst
    return sp.csr_matrix((rng.uniform(0.5, 2.0, keep.sum()), (src[keep], dst[keep])), shape=(n, n))


def _exact(A: sp.csr_matrix, seeds: np.ndarray) -> np.ndarray:
    return personalized_pagerank(A, seeds, alpha=0.85, tol=1e-14, max_iter=5000, dangling="self").scores * seeds.sum()


def test_hand_computed_path() -> None:
    # path 0 - 1 - 2, alpha 1/2, seed 0: x0 = 7/12, x1 = 4/12, x2 = 1/12 (solve x = s/2 + P^T x/2)
    A = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))
    state = push_state(A, np.array([1.0, 0, 0]), alpha=0.5, eps=1e-12)
    assert state.scores() == pytest.approx([7 / 12, 4 / 12, 1 / 12], abs=1e-9)
    # a second seed of the same weight at node 2: by symmetry the scores become the mean
    up = add_seed(state, 2, 1.0)
    assert state.scores() == pytest.approx([8 / 24, 8 / 24, 8 / 24], abs=1e-6)
    assert set(up.nodes.tolist()) >= {2}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_new_flag_matches_a_full_recompute_within_the_bound(seed: int) -> None:
    A = _graph(seed=seed)
    rng = np.random.default_rng(seed)
    s = np.zeros(A.shape[0])
    s[rng.choice(A.shape[0], 10, replace=False)] = 1.0
    state = push_state(A, s, eps=1e-9)
    node = int(np.flatnonzero(s == 0)[0])
    up = add_seed(state, node, 1.0)
    s[node] = 1.0
    err = np.abs(state.p - _exact(A, s)).sum()
    assert err <= up.error_bound + 1e-9
    assert up.error_bound < 1e-4
    assert node in up.nodes.tolist() and (up.delta > 0).all()  # only additions from a new seed


def test_cleared_flag_and_new_edge_match_full_recomputes() -> None:
    A = _graph(seed=3)
    s = np.zeros(A.shape[0])
    s[[1, 5, 9, 40]] = [1.0, 2.0, 1.0, 0.5]
    state = push_state(A, s, eps=1e-10)
    add_seed(state, 5, -2.0)
    s[5] = 0.0
    assert np.abs(state.p - _exact(A, s)).sum() <= state.error_bound + 1e-9
    # an edge out of a node with edges, and one out of a dangling node
    B = A.tolil()
    for u, v, w in [(1, 7, 3.0), (A.shape[0] - 1, 1, 1.0)]:
        add_edge(state, u, v, w)
        B[u, v] += w
        exact = _exact(B.tocsr(), s)
        assert np.abs(state.p - exact).sum() <= state.error_bound + 1e-9
        assert state.error_bound < 1e-5


def test_updates_stay_local() -> None:
    # two components: a new seed in one leaves the other untouched
    A = sp.block_diag([_graph(100, 300, 0, 0), _graph(100, 300, 1, 0)], format="csr")
    s = np.zeros(200)
    s[3] = 1.0
    state = push_state(A, s)
    up = add_seed(state, 150, 1.0)
    assert (up.nodes >= 100).all()


def test_errors() -> None:
    A = _graph()
    with pytest.raises(ParameterError, match="no seed"):
        push_state(A, np.zeros(A.shape[0]))
    state = push_state(A, np.eye(A.shape[0])[0])
    with pytest.raises(ParameterError, match="cannot lose"):
        add_seed(state, 1, -1.0)
    with pytest.raises(ParameterError, match="must be in 0.."):
        add_seed(state, A.shape[0], 1.0)
    with pytest.raises(ParameterError, match="must be > 0"):
        add_edge(state, 0, 1, 0.0)


def test_down_weighted_and_removed_edges_match_full_recomputes() -> None:
    from graph.propagation.push import edge_weight, set_edge

    A = _graph(seed=4)
    s = np.zeros(A.shape[0])
    s[[2, 11, 30]] = 1.0
    state = push_state(A, s, eps=1e-10)
    B = A.tolil()
    u, v = (int(x) for x in np.argwhere(A.toarray() > 0)[3])
    w = float(A[u, v])
    assert edge_weight(state, u, v) == pytest.approx(w)
    # a disputed link down-weighted to a quarter, then ignored altogether
    for new in (w / 4, 0.0):
        set_edge(state, u, v, new)
        B[u, v] = new
        exact = _exact(sp.csr_matrix(B.tocsr()), s)
        assert np.abs(state.p - exact).sum() <= state.error_bound + 1e-9 and state.error_bound < 1e-5
        assert edge_weight(state, u, v) == pytest.approx(new)
    # every edge out of a node removed: the node becomes dangling (a self-loop)
    for t in A[u].indices.tolist():
        set_edge(state, u, int(t), 0.0)
        B[u, t] = 0.0
    C = sp.csr_matrix(B.tocsr())
    C.eliminate_zeros()
    assert C[u].nnz == 0 and state.out_weight[u] == 0
    assert np.abs(state.p - _exact(C, s)).sum() <= state.error_bound + 1e-9
    with pytest.raises(ParameterError, match="must be >= 0"):
        set_edge(state, u, v, -1.0)


def _grown(A: sp.csr_matrix, k: int, edges: list[tuple[int, int, float]]) -> sp.csr_matrix:
    n = A.shape[0]
    G = sp.lil_matrix((n + k, n + k))
    G[:n, :n] = A
    for u, v, w in edges:
        G[u, v] += w
    return sp.csr_matrix(G)


@pytest.mark.parametrize("seed", [0, 4])
def test_added_nodes_and_edges_match_a_full_solve_of_the_grown_graph(seed: int) -> None:
    from graph.propagation.push import add_nodes

    A = _graph(seed=seed)
    n = A.shape[0]
    s = np.zeros(n)
    s[[3, 7, 11]] = 1.0
    state = push_state(A, s, eps=1e-11)
    u = add_nodes(state, 2)
    assert (u, state.size) == (n, n + 2)
    edges = [(u, 3, 1.0), (3, u, 1.0), (u, u + 1, 0.5), (u + 1, u, 0.5), (u + 1, 50, 2.0), (50, u + 1, 2.0)]
    for a, b, w in edges:
        add_edge(state, a, b, w)
    exact = _exact(_grown(A, 2, edges), np.concatenate([s, [0.0, 0.0]]))
    assert np.abs(state.p - exact).sum() <= state.error_bound + 1e-9
    assert state.p[u] == pytest.approx(exact[u], rel=1e-6) and state.p[u] > 0


def test_a_trial_is_undone_bit_for_bit_and_gives_what_a_commit_gives() -> None:
    from graph.propagation.push import add_nodes, trial

    A = _graph(seed=5)
    s = np.zeros(A.shape[0])
    s[[2, 9]] = [1.0, 0.5]
    state = push_state(A, s, eps=1e-10)
    before = {k: getattr(state, k).copy() for k in ("p", "r", "seeds", "scale", "out_weight")}
    extra_before = dict(state.extra)
    with trial(state, room=1):
        u = add_nodes(state, 1)
        for a, b in ((u, 2), (2, u), (u, 40), (40, u)):
            add_edge(state, a, b, 1.0)
        add_seed(state, 40, 1.0)
        tried = float(state.p[u])
    assert state.size == A.shape[0]
    for k, v in before.items():
        assert np.array_equal(getattr(state, k), v), k
    assert state.extra.keys() == extra_before.keys()
    # the same changes for good give the same score
    u = add_nodes(state, 1)
    for a, b in ((u, 2), (2, u), (u, 40), (40, u)):
        add_edge(state, a, b, 1.0)
    add_seed(state, 40, 1.0)
    assert float(state.p[u]) == pytest.approx(tried, rel=1e-12)


def test_growth_copies_once_per_reserve_and_keeps_values() -> None:
    from graph.propagation.push import add_nodes, reserve

    A = _graph(seed=6)
    s = np.zeros(A.shape[0])
    s[0] = 1.0
    state = push_state(A, s)
    p0 = state.p.copy()
    reserve(state, 10)
    buf = state.buffers["p"]
    for _ in range(10):
        add_nodes(state, 1)
    assert state.buffers["p"] is buf  # no reallocation within the reserved room
    assert np.array_equal(state.p[: A.shape[0]], p0) and (state.p[A.shape[0]:] == 0).all()
    with pytest.raises(ParameterError, match="k"):
        add_nodes(state, -1)


def test_folded_is_the_adjacency_as_it_is_now() -> None:
    from graph.propagation.push import add_nodes, folded

    A = _graph(seed=7)
    s = np.zeros(A.shape[0])
    s[0] = 1.0
    state = push_state(A, s)
    u = add_nodes(state, 1)
    add_edge(state, 3, u, 2.0)
    add_edge(state, u, 3, 2.0)
    expected = _grown(A, 1, [(3, u, 2.0), (u, 3, 2.0)])
    assert abs(folded(state) - expected).max() == 0
