"""Belief propagation (linearised, SybilSCAR form): hand-computed cases, the dict reference,
convergence, signed edges, label noise and invariants."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from graph.propagation import belief_propagation
from graph.propagation.belief import _belief_propagation_python
from loaders import ParameterError


def path3() -> sp.csr_matrix:
    return sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))


def test_hand_computed_path_max_degree() -> None:
    # d_max = 2, c = 1/2: p0 = 0.4 + p1/4, p1 = (p0 + p2)/4, p2 = p1/4
    #   => p1 = 4 p0 / 15, p0 = 0.4 + p0/15 => p = (3/7, 4/35, 1/35)
    r = belief_propagation(path3(), fraud_seeds=np.array([1.0, 0, 0]), coupling=0.5, normalization="max_degree", tol=1e-14)
    assert r.converged
    assert r.scores == pytest.approx([0.5 + 3 / 7, 0.5 + 4 / 35, 0.5 + 1 / 35], abs=1e-12)


def test_hand_computed_path_degree() -> None:
    # each node takes the mean of its neighbours, c = 1/2: p0 = 0.4 + p1/2, p1 = (p0 + p2)/4, p2 = p1/2
    #   => p1 = 2 p0 / 7, p0 = 0.4 + p0/7 => p = (7/15, 2/15, 1/15)
    r = belief_propagation(path3(), fraud_seeds=np.array([1.0, 0, 0]), coupling=0.5, normalization="degree", tol=1e-14)
    assert r.scores == pytest.approx([0.5 + 7 / 15, 0.5 + 2 / 15, 0.5 + 1 / 15], abs=1e-12)


def test_fraud_and_benign_seeds_balance_in_the_middle() -> None:
    # mirror images: p2 = -p0, so p1 = c (p0 + p2) / 2 = 0, and then p0 = theta + c p1 = theta
    r = belief_propagation(path3(), fraud_seeds=np.array([1.0, 0, 0]), benign_seeds=np.array([0, 0, 1.0]), tol=1e-14)
    assert r.scores == pytest.approx([0.9, 0.5, 0.1], abs=1e-12)


def test_negative_edge_is_heterophily_and_residuals_are_clipped() -> None:
    # 0 -(-1)- 1, fraud seed at 0, c = 0.8: p1 = -0.8 p0, p0 = clip(0.4 - 0.8 p1) = clip(0.4 + 0.64 p0).
    # Unclipped, p0 = 0.4 / 0.36 > 1/2: it saturates at 1/2, and p1 = -0.4.
    A = sp.csr_matrix(np.array([[0, -1.0], [-1.0, 0]]))
    r = belief_propagation(A, fraud_seeds=np.array([1.0, 0]), coupling=0.8, tol=1e-14)
    assert r.converged
    assert r.scores == pytest.approx([1.0, 0.1], abs=1e-12)


def test_mixed_signs_a_link_to_fraud_lowers_or_raises_risk_by_its_sign() -> None:
    # 0 is fraud; 1 trusts 0 (+), 2 distrusts 0 (-)
    A = sp.csr_matrix(np.array([[0, 1.0, -1.0], [1.0, 0, 0], [-1.0, 0, 0]]))
    x = belief_propagation(A, fraud_seeds=np.array([1.0, 0, 0]), tol=1e-14).scores
    assert x[1] > 0.5 > x[2]
    assert x[1] - 0.5 == pytest.approx(0.5 - x[2], abs=1e-12)


def test_directed_input_is_symmetrised() -> None:
    upper = sp.csr_matrix(np.triu(path3().toarray()))  # 0 -> 1 -> 2 only
    a = belief_propagation(upper, fraud_seeds=np.array([1.0, 0, 0]), tol=1e-14).scores
    b = belief_propagation(path3(), fraud_seeds=np.array([1.0, 0, 0]), tol=1e-14).scores
    assert a == pytest.approx(b, abs=1e-12)


def test_self_loops_are_ignored() -> None:
    loops = path3() + sp.identity(3, format="csr") * 5.0
    a = belief_propagation(loops, fraud_seeds=np.array([1.0, 0, 0]), tol=1e-14).scores
    b = belief_propagation(path3(), fraud_seeds=np.array([1.0, 0, 0]), tol=1e-14).scores
    assert a == pytest.approx(b, abs=1e-12)


def test_isolated_nodes_score_exactly_one_half_and_isolated_seeds_their_prior() -> None:
    A = sp.csr_matrix(sp.bmat([[path3(), None], [None, sp.csr_matrix((3, 3))]]))
    f = np.array([1.0, 0, 0, 0, 1.0, 0])
    b = np.array([0, 0, 0, 0, 0, 0.5])
    x = belief_propagation(A, fraud_seeds=f, benign_seeds=b, theta=0.3).scores
    assert x[3] == 0.5
    assert x[4] == pytest.approx(0.8) and x[5] == pytest.approx(0.35)


def signed_graph(seed: int, n: int = 30, p: float = 0.15) -> tuple[dict[int, dict[int, float]], sp.csr_matrix]:
    rng = np.random.default_rng(seed)
    G = nx.gnp_random_graph(n, p, seed=seed, directed=True)
    edges: dict[int, dict[int, float]] = {}
    for u, v in G.edges:
        edges.setdefault(u, {})[v] = float(rng.uniform(0.1, 3.0) * rng.choice([-1.0, 1.0], p=[0.3, 0.7]))
    rows = [(u, v, w) for u, nbrs in edges.items() for v, w in nbrs.items()]
    A = sp.csr_matrix(([w for *_, w in rows], ([u for u, *_ in rows], [v for _, v, _ in rows])), shape=(n, n))
    return edges, A


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("normalization", ["max_degree", "degree"])
def test_agrees_with_the_reference_implementation(seed: int, normalization: str) -> None:
    edges, A = signed_graph(seed)
    fraud = {1: 1.0, 4: 0.7, 9: 1.0}
    benign = {2: 1.0, 5: 0.4, 9: 0.5}  # 9 is in both: the weights partly cancel
    f, b = np.zeros(30), np.zeros(30)
    for k, v in fraud.items():
        f[k] = v
    for k, v in benign.items():
        b[k] = v
    ours = belief_propagation(A, fraud_seeds=f, benign_seeds=b, normalization=normalization, coupling=0.9, tol=1e-13)  # type: ignore[arg-type]
    ref = _belief_propagation_python(edges, 30, fraud=fraud, benign=benign, normalization=normalization, coupling=0.9)
    assert ours.converged
    assert ours.scores == pytest.approx(ref, abs=1e-10)


def test_several_seed_columns_at_once_equal_one_at_a_time() -> None:
    _, A = signed_graph(3)
    F, B = np.zeros((30, 3)), np.zeros((30, 3))
    F[0, 0] = 1
    B[1, 0] = 1
    F[[3, 4], 1] = 1
    B[:, 2] = 0.2
    together = belief_propagation(A, fraud_seeds=F, benign_seeds=B, tol=1e-13).scores
    assert together.shape == (30, 3)
    for k in range(3):
        alone = belief_propagation(A, fraud_seeds=F[:, k], benign_seeds=B[:, k], tol=1e-13).scores
        assert together[:, k] == pytest.approx(alone, abs=1e-12)


def test_boolean_masks_are_unit_weights() -> None:
    _, A = signed_graph(4)
    mask = np.zeros(30, dtype=bool)
    mask[[0, 7]] = True
    a = belief_propagation(A, fraud_seeds=mask).scores
    b = belief_propagation(A, fraud_seeds=mask.astype(float)).scores
    assert a == pytest.approx(b, abs=0)


@pytest.mark.parametrize("coupling", [0.5, 0.9, 0.99])
def test_converges_within_the_contraction_bound(coupling: float) -> None:
    # ||p_t - p*||_inf <= c^t ||p_0 - p*||_inf <= c^t, so the L1 change over n nodes falls
    # below tol after at most log(tol / n) / log(c) + 1 iterations
    _, A = signed_graph(5, n=200, p=0.05)
    f = np.zeros(200)
    f[:10] = 1.0
    tol = 1e-9
    r = belief_propagation(A, fraud_seeds=f, coupling=coupling, tol=tol, max_iter=100_000)
    assert r.converged and r.residual < tol
    assert r.n_iter <= math.log(tol / (2 * 200)) / math.log(coupling) + 2


def test_regular_component_converges_where_unit_coupling_would_oscillate() -> None:
    # two nodes, one edge: with c = 1 the iteration p0 <- 0.4 + p1, p1 <- p0 walks off to the
    # clip and bounces; with c < 1 it settles at p0 = 0.4 / (1 - c^2), p1 = c p0
    A = sp.csr_matrix(np.array([[0, 1.0], [1.0, 0]]))
    r = belief_propagation(A, fraud_seeds=np.array([1.0, 0]), theta=0.1, coupling=0.5, tol=1e-14)
    assert r.converged
    assert r.scores == pytest.approx([0.5 + 0.1 / 0.75, 0.5 + 0.05 / 0.75], abs=1e-12)


def test_reports_non_convergence() -> None:
    _, A = signed_graph(6)
    f = np.zeros(30)
    f[0] = 1
    r = belief_propagation(A, fraud_seeds=f, coupling=0.99, max_iter=3)
    assert not r.converged and r.n_iter == 3 and r.residual > 0


def test_robust_to_a_wrong_seed_in_each_clique() -> None:
    # two 10-cliques joined by the edge 9 - 10; 0..9 fraud, 10..19 benign. Three seeds each
    # are right; 3 is wrongly cleared and 16 wrongly flagged. Nobody else flips.
    A = sp.csr_matrix(nx.to_scipy_sparse_array(nx.barbell_graph(10, 0), nodelist=range(20)))
    f, b = np.zeros(20), np.zeros(20)
    f[[0, 1, 2, 16]] = 1.0
    b[[3, 17, 18, 19]] = 1.0
    x = belief_propagation(A, fraud_seeds=f, benign_seeds=b).scores
    assert (x[[4, 5, 6, 7, 8, 9]] > 0.5).all()
    assert (x[[10, 11, 12, 13, 14, 15]] < 0.5).all()
    assert x[[4, 5, 6, 7, 8, 9]].min() > x[[10, 11, 12, 13, 14, 15]].max()
    # each wrong seed moves the unlabelled users by less than their margin without it
    f[16], b[3] = 0.0, 0.0
    clean = belief_propagation(A, fraud_seeds=f, benign_seeds=b).scores
    unlabelled = np.arange(4, 16)
    assert (np.abs(x - clean)[unlabelled] < np.abs(clean - 0.5)[unlabelled]).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_robust_to_a_tenth_of_wrong_seeds(seed: int) -> None:
    # planted partition: 0..49 fraud, 50..99 benign; 10 seeds each, one with the wrong label
    G = nx.planted_partition_graph(2, 50, 0.2, 0.01, seed=seed)
    A = sp.csr_matrix(nx.to_scipy_sparse_array(G, nodelist=range(100)))
    f, b = np.zeros(100), np.zeros(100)
    f[0:9] = 1.0
    b[9] = 1.0  # a fraud wrongly cleared
    b[50:59] = 1.0
    f[59] = 1.0  # a benign user wrongly flagged
    x = belief_propagation(A, fraud_seeds=f, benign_seeds=b).scores
    assert (x[10:50] > 0.5).all()
    assert (x[60:100] < 0.5).all()


# -- properties ---------------------------------------------------------------------------------


@st.composite
def seeded_graphs(draw: st.DrawFn) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    n = draw(st.integers(2, 25))
    seed = draw(st.integers(0, 2**31 - 1))
    signed = draw(st.booleans())
    rng = np.random.default_rng(seed)
    dense = (rng.random((n, n)) < draw(st.floats(0.0, 0.5))) * rng.uniform(0.1, 2.0, (n, n))
    if signed:
        dense *= rng.choice([-1.0, 1.0], size=(n, n))
    f = (rng.random(n) < 0.2) * rng.uniform(0.1, 1.0, n)
    b = (rng.random(n) < 0.2) * rng.uniform(0.1, 1.0, n)
    f[rng.integers(n)] = 1.0
    return sp.csr_matrix(dense), f, b


@settings(max_examples=60, deadline=None)
@given(seeded_graphs(), st.sampled_from(["max_degree", "degree"]))
def test_swapping_the_labels_mirrors_the_scores(case: tuple[sp.csr_matrix, np.ndarray, np.ndarray], normalization: str) -> None:
    A, f, b = case
    x = belief_propagation(A, fraud_seeds=f, benign_seeds=b, normalization=normalization, tol=1e-13).scores  # type: ignore[arg-type]
    y = belief_propagation(A, fraud_seeds=b, benign_seeds=f, normalization=normalization, tol=1e-13).scores  # type: ignore[arg-type]
    assert np.all((x >= 0) & (x <= 1))
    assert y == pytest.approx(1.0 - x, abs=1e-10)


@settings(max_examples=60, deadline=None)
@given(seeded_graphs(), st.integers(0, 24))
def test_more_fraud_evidence_never_lowers_a_score_on_homophilous_graphs(
    case: tuple[sp.csr_matrix, np.ndarray, np.ndarray], extra: int
) -> None:
    # with non-negative weights the update is monotone in the prior, and so is its fixed point
    A, f, b = case
    A = abs(A)
    more = f.copy()
    more[extra % len(f)] = 1.0
    x = belief_propagation(A, fraud_seeds=f, benign_seeds=b, tol=1e-13).scores
    y = belief_propagation(A, fraud_seeds=more, benign_seeds=b, tol=1e-13).scores
    assert np.all(y >= x - 1e-10)


@settings(max_examples=60, deadline=None)
@given(seeded_graphs(), st.sampled_from(["max_degree", "degree"]))
def test_fraud_seeds_rank_above_strangers_when_theta_is_at_least_half_the_coupling(
    case: tuple[sp.csr_matrix, np.ndarray, np.ndarray], normalization: str
) -> None:
    # fraud seeds only, unit weights, homophily: a stranger's residual is at most c/2 < theta
    # unless every neighbour is saturated, and a seed's is at least theta
    A, f, _ = case
    A = abs(A)
    seeds = f > 0
    x = belief_propagation(A, fraud_seeds=seeds, theta=0.4, coupling=0.79, normalization=normalization).scores  # type: ignore[arg-type]
    if (~seeds).any():
        assert x[seeds].min() > x[~seeds].max()


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"theta": 0.6}, "The 'theta' parameter of belief_propagation must be in \\(0, 0.5\\]. Got 0.6 instead"),
        ({"theta": 0.0}, "theta"),
        ({"coupling": 1.0}, "The 'coupling' parameter of belief_propagation must be in \\(0, 1\\). Got 1.0 instead"),
        ({"normalization": "sym"}, "must be one of max_degree, degree. Got 'sym' instead"),
        ({"tol": 0.0}, "tol"),
        ({"max_iter": 0}, "max_iter"),
    ],
)
def test_parameter_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        belief_propagation(path3(), fraud_seeds=np.array([1.0, 0, 0]), **kwargs)  # type: ignore[arg-type]


def test_seed_errors() -> None:
    with pytest.raises(ParameterError, match="no fraud_seeds and no benign_seeds"):
        belief_propagation(path3())
    with pytest.raises(ParameterError, match="no fraud and no benign seed"):
        belief_propagation(path3(), fraud_seeds=np.zeros(3), benign_seeds=np.zeros(3))
    with pytest.raises(ParameterError, match="Seed column 1 of belief_propagation has no fraud and no benign seed"):
        belief_propagation(path3(), fraud_seeds=np.array([[1.0, 0], [0, 0], [0, 0]]))
    with pytest.raises(ParameterError, match="3 rows"):
        belief_propagation(path3(), fraud_seeds=np.ones(4))
    with pytest.raises(ParameterError, match="in \\[0, 1\\]"):
        belief_propagation(path3(), fraud_seeds=np.array([2.0, 0, 0]))
    with pytest.raises(ParameterError, match="in \\[0, 1\\]"):
        belief_propagation(path3(), benign_seeds=np.array([np.nan, 1, 0]))
    with pytest.raises(ParameterError, match="same shape"):
        belief_propagation(path3(), fraud_seeds=np.ones(3), benign_seeds=np.ones((3, 2)))
    with pytest.raises(ParameterError, match="square"):
        belief_propagation(sp.csr_matrix((3, 2)), fraud_seeds=np.ones(3))
    with pytest.raises(ParameterError, match="finite"):
        belief_propagation(sp.csr_matrix(np.array([[0, np.inf], [np.inf, 0]])), fraud_seeds=np.ones(2))


def test_benign_seeds_alone_are_enough() -> None:
    x = belief_propagation(path3(), benign_seeds=np.array([0, 0, True])).scores
    assert (x < 0.5).all()
