"""Label spreading and TrustRank: hand-computed cases, closed forms, scikit-learn, the dict
reference, convergence, label noise and invariants."""

from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.semi_supervised import LabelSpreading

from graph.propagation import label_spreading, personalized_pagerank, trustrank
from graph.propagation.spreading import _label_spreading_python
from loaders import ParameterError


def path3() -> sp.csr_matrix:
    return sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))


def random_graph(seed: int, n: int = 30, p: float = 0.15) -> tuple[dict[int, dict[int, float]], sp.csr_matrix]:
    rng = np.random.default_rng(seed)
    G = nx.gnp_random_graph(n, p, seed=seed, directed=True)
    edges: dict[int, dict[int, float]] = {}
    for u, v in G.edges:
        edges.setdefault(u, {})[v] = float(rng.uniform(0.1, 3.0))
    rows = [(u, v, w) for u, nbrs in edges.items() for v, w in nbrs.items()]
    A = sp.csr_matrix(([w for *_, w in rows], ([u for u, *_ in rows], [v for _, v, _ in rows])), shape=(n, n))
    return edges, A


# -- label spreading ----------------------------------------------------------------------------


def test_hand_computed_path() -> None:
    # S = D^-1/2 A D^-1/2 with degrees (1, 2, 1); alpha = 1/2, s = alpha / sqrt(2) = 1/(2 sqrt 2):
    # fraud column f0 = 1/2 + s f1, f1 = s (f0 + f2), f2 = s f1  =>  f1 (1 - s^2) = s f0 with
    # s^2 = 1/8, f0 = 1/2 + f0/7 = 7/12, f2 = f1 s = 1/12; benign column mirrored.
    # Node 0: (7/12) / (7/12 + 1/12) = 7/8; node 1: 1/2 by symmetry.
    r = label_spreading(path3(), fraud_seeds=np.array([1.0, 0, 0]), benign_seeds=np.array([0, 0, 1.0]), alpha=0.5, tol=1e-14)
    assert r.converged
    assert r.scores == pytest.approx([7 / 8, 1 / 2, 1 / 8], abs=1e-12)


def test_hand_computed_star_is_not_biased_to_the_hub() -> None:
    # star: hub 0, leaves 1..4; fraud seed at leaf 1, benign at leaf 2. Every leaf's mass is
    # alpha / 2 times the hub's (S = 1/2 on each edge), so leaves 3 and 4 take the hub's share,
    # which is 1/2 by symmetry.
    A = sp.csr_matrix(nx.to_scipy_sparse_array(nx.star_graph(4), nodelist=range(5)))
    f, b = np.zeros(5), np.zeros(5)
    f[1], b[2] = 1.0, 1.0
    x = label_spreading(A, fraud_seeds=f, benign_seeds=b, tol=1e-14).scores
    assert x[[0, 3, 4]] == pytest.approx([0.5, 0.5, 0.5], abs=1e-12)
    assert x[1] > 0.5 > x[2]


def test_one_class_only_reached_nodes_score_one_and_the_rest_the_prior() -> None:
    A = sp.csr_matrix(sp.bmat([[path3(), None], [None, sp.csr_matrix((2, 2))]]))
    x = label_spreading(A, fraud_seeds=np.array([1.0, 0, 0, 0, 0]), prior=0.1).scores
    assert x == pytest.approx([1, 1, 1, 0.1, 0.1], abs=0)


def closed_form(A: sp.csr_matrix, f: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    W = ((A + A.T) / 2).toarray()
    np.fill_diagonal(W, 0.0)
    d = W.sum(axis=1)
    inv = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0.0)
    S = inv[:, None] * W * inv[None, :]
    F = (1 - alpha) * np.linalg.solve(np.eye(len(d)) - alpha * S, np.c_[f, b])
    return np.asarray(F[:, 0] / F.sum(axis=1))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("alpha", [0.5, 0.9, 0.99])
def test_agrees_with_the_closed_form_and_the_reference(seed: int, alpha: float) -> None:
    edges, A = random_graph(seed)
    A = A + A.T + sp.identity(30) * 0.1  # connected enough, and a self-loop to be dropped
    edges = {i: {j: float(A[i, j]) for j in A[[i]].indices} for i in range(30)}
    fraud, benign = {1: 1.0, 4: 0.7, 9: 1.0}, {2: 1.0, 5: 0.4, 9: 0.5}
    f, b = np.zeros(30), np.zeros(30)
    for k, v in fraud.items():
        f[k] = v
    for k, v in benign.items():
        b[k] = v
    r = label_spreading(A, fraud_seeds=f, benign_seeds=b, alpha=alpha, tol=1e-13, max_iter=100_000)
    assert r.converged
    assert r.scores == pytest.approx(closed_form(A, f, b, alpha), abs=1e-9)
    assert r.scores == pytest.approx(_label_spreading_python(edges, 30, fraud=fraud, benign=benign, alpha=alpha), abs=1e-9)


@pytest.mark.parametrize("seed", [3, 4])
def test_agrees_with_scikit_learn(seed: int) -> None:
    G = nx.connected_watts_strogatz_graph(40, 4, 0.3, seed=seed)
    A = sp.csr_matrix(nx.to_scipy_sparse_array(G, nodelist=range(40)))
    y = np.full(40, -1)
    y[[0, 7, 13]] = 1
    y[[20, 27, 33, 38]] = 0
    dense = A.toarray()
    ref = LabelSpreading(kernel=lambda X, Y: dense[np.ix_(X[:, 0].astype(int), Y[:, 0].astype(int))], alpha=0.8, max_iter=10_000, tol=1e-13)
    ref.fit(np.arange(40, dtype=float)[:, None], y)
    ours = label_spreading(A, fraud_seeds=y == 1, benign_seeds=y == 0, alpha=0.8, tol=1e-13).scores
    assert ours == pytest.approx(ref.label_distributions_[:, list(ref.classes_).index(1)], abs=1e-8)


def test_several_seed_columns_at_once_equal_one_at_a_time() -> None:
    _, A = random_graph(5)
    F, B = np.zeros((30, 3)), np.zeros((30, 3))
    F[0, 0], B[1, 0] = 1, 1
    F[[3, 4], 1] = 1
    B[:, 2], F[6, 2] = 0.2, 3.0
    together = label_spreading(A, fraud_seeds=F, benign_seeds=B, tol=1e-13).scores
    for k in range(3):
        alone = label_spreading(A, fraud_seeds=F[:, k], benign_seeds=B[:, k], tol=1e-13).scores
        assert together[:, k] == pytest.approx(alone, abs=1e-11)


def test_reports_convergence_and_non_convergence() -> None:
    _, A = random_graph(6)
    f, b = np.zeros(30), np.zeros(30)
    f[0], b[1] = 1, 1
    r = label_spreading(A, fraud_seeds=f, benign_seeds=b, alpha=0.99, max_iter=3)
    assert not r.converged and r.n_iter == 3 and r.residual > 0
    r = label_spreading(A, fraud_seeds=f, benign_seeds=b, alpha=0.5, tol=1e-10)
    # the change shrinks by alpha per step from at most 2 (the initial mass, both columns)
    assert r.converged and r.n_iter <= np.log(1e-10 / 2) / np.log(0.5) + 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_robust_to_a_tenth_of_wrong_seeds(seed: int) -> None:
    G = nx.planted_partition_graph(2, 50, 0.2, 0.01, seed=seed)
    A = sp.csr_matrix(nx.to_scipy_sparse_array(G, nodelist=range(100)))
    f, b = np.zeros(100), np.zeros(100)
    f[0:9], b[9] = 1.0, 1.0  # 9 is a fraud wrongly cleared
    b[50:59], f[59] = 1.0, 1.0  # 59 a benign user wrongly flagged
    x = label_spreading(A, fraud_seeds=f, benign_seeds=b).scores
    assert (x[10:50] > 0.5).all() and (x[60:100] < 0.5).all()


@st.composite
def seeded_graphs(draw: st.DrawFn) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    n = draw(st.integers(2, 25))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    dense = (rng.random((n, n)) < draw(st.floats(0.0, 0.5))) * rng.uniform(0.1, 2.0, (n, n))
    f = (rng.random(n) < 0.2) * rng.uniform(0.1, 1.0, n)
    b = (rng.random(n) < 0.2) * rng.uniform(0.1, 1.0, n)
    f[rng.integers(n)] = 1.0
    return sp.csr_matrix(dense), f, b


@settings(max_examples=60, deadline=None)
@given(seeded_graphs(), st.floats(0.01, 100.0))
def test_swapping_labels_mirrors_and_scaling_seeds_changes_nothing(case: tuple[sp.csr_matrix, np.ndarray, np.ndarray], scale: float) -> None:
    A, f, b = case
    x = label_spreading(A, fraud_seeds=f, benign_seeds=b, tol=1e-13).scores
    assert np.all((x >= 0) & (x <= 1))
    mirrored = label_spreading(A, fraud_seeds=b, benign_seeds=f, tol=1e-13).scores
    assert mirrored == pytest.approx(1.0 - x, abs=1e-9)
    scaled = label_spreading(A, fraud_seeds=f * scale, benign_seeds=b * scale, tol=1e-13 * scale).scores
    assert scaled == pytest.approx(x, abs=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 1.0}, "The 'alpha' parameter of label_spreading must be in \\(0, 1\\). Got 1.0 instead"),
        ({"prior": 1.5}, "The 'prior' parameter of label_spreading must be in \\[0, 1\\]. Got 1.5 instead"),
        ({"tol": -1.0}, "tol"),
        ({"max_iter": 0}, "max_iter"),
    ],
)
def test_label_spreading_parameter_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        label_spreading(path3(), fraud_seeds=np.array([1.0, 0, 0]), **kwargs)


def test_label_spreading_seed_and_graph_errors() -> None:
    with pytest.raises(ParameterError, match="no fraud_seeds and no benign_seeds"):
        label_spreading(path3())
    with pytest.raises(ParameterError, match="label_spreading got no fraud and no benign seed"):
        label_spreading(path3(), fraud_seeds=np.zeros(3), benign_seeds=np.zeros(3))
    with pytest.raises(ParameterError, match=">= 0"):
        label_spreading(path3(), fraud_seeds=np.array([-1.0, 0, 0]))
    with pytest.raises(ParameterError, match="non-negative weights \\(use belief_propagation for signed edges\\)"):
        label_spreading(-path3(), fraud_seeds=np.array([1.0, 0, 0]))


# -- TrustRank ----------------------------------------------------------------------------------


def test_trustrank_hand_computed_path() -> None:
    # t0 = 1/2 + t1/4, t1 = (t0 + t2)/2, t2 = t1/4  =>  t = (7, 4, 1) / 12
    r = trustrank(path3(), benign_seeds=np.array([True, False, False]), alpha=0.5, tol=1e-14)
    assert r.converged
    assert r.scores == pytest.approx([7 / 12, 4 / 12, 1 / 12], abs=1e-12)


def test_trustrank_is_personalized_pagerank_from_the_good_seeds() -> None:
    _, A = random_graph(7)
    good = np.zeros(30)
    good[[3, 8]] = [1.0, 0.25]
    t = trustrank(A, benign_seeds=good, tol=1e-13).scores
    assert t == pytest.approx(personalized_pagerank(A, good, tol=1e-13).scores, abs=1e-12)
    assert t.sum() == pytest.approx(1.0)


def test_trustrank_is_low_where_the_good_part_of_the_graph_does_not_reach() -> None:
    # good community 0..29, spam farm 30..59 linked to it by a few edges
    G = nx.planted_partition_graph(2, 30, 0.3, 0.01, seed=4)
    A = sp.csr_matrix(nx.to_scipy_sparse_array(G, nodelist=range(60)))
    good = np.zeros(60)
    good[[0, 5, 10]] = 1.0
    t = trustrank(A, benign_seeds=good).scores
    assert t[:30].sum() > 0.8  # most of the trust stays with the good
    # a good user outranks a spam-farm user in nearly every pair (AUROC)
    assert (t[3:30][:, None] > t[30:][None, :]).mean() > 0.95


def test_trustrank_reports_non_convergence_and_errors() -> None:
    _, A = random_graph(8)
    good = np.zeros(30)
    good[0] = 1
    r = trustrank(A, benign_seeds=good, alpha=0.99, max_iter=2)
    assert not r.converged and r.n_iter == 2
    with pytest.raises(ParameterError, match="trustrank got no benign seed .*Flag at least one user as benign"):
        trustrank(A, benign_seeds=np.zeros(30))
    with pytest.raises(ParameterError, match="Seed column 1 of trustrank has no benign seed"):
        trustrank(A, benign_seeds=np.c_[good, np.zeros(30)])
    with pytest.raises(ParameterError, match="30 rows"):
        trustrank(A, benign_seeds=np.ones(3))
    with pytest.raises(ParameterError, match="alpha"):
        trustrank(A, benign_seeds=good, alpha=1.0)
