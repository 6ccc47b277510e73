"""The contract every propagation algorithm must meet (as scikit-network's ranking/tests/test_API.py):
output shape, range, seeds ranked above strangers, invariance to node order, no NaN on isolated
nodes, and a clear ParameterError on an empty seed set."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

from graph.propagation import belief_propagation, label_spreading, personalized_pagerank, trustrank
from loaders import ParameterError

Scores = Callable[[sp.csr_matrix, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Spec:
    """How an algorithm is called from fraud and benign seed vectors, and what it promises."""

    run: Scores
    seeds: str  # whose seeds the score ranks on top: "fraud" (risk) or "benign" (trust)
    two_class: bool  # uses both seed sets: the other side's seeds rank at the bottom
    neutral: float  # score of a node no seed reaches
    every_seed_on_top: bool  # every own seed above every stranger (not only the best one)


ALGORITHMS = {
    "personalized_pagerank": Spec(
        lambda A, f, b: personalized_pagerank(A, f, tol=1e-12).scores, "fraud", False, 0.0, True
    ),
    "belief_propagation": Spec(
        lambda A, f, b: belief_propagation(A, fraud_seeds=f, benign_seeds=b, tol=1e-12).scores, "fraud", True, 0.5, True
    ),
    # The normalised class mass of a stranger is a weighted mean of its neighbours' shares, so a
    # seed next to the other class can fall below strangers deep in its own class: only the best
    # seed is promised to lead.
    "label_spreading": Spec(
        lambda A, f, b: label_spreading(A, fraud_seeds=f, benign_seeds=b, tol=1e-12).scores, "fraud", True, 0.5, False
    ),
    "trustrank": Spec(lambda A, f, b: trustrank(A, benign_seeds=b, tol=1e-12).scores, "benign", False, 0.0, True),
}
NAMES = list(ALGORITHMS)


def karate_with_isolated() -> sp.csr_matrix:
    A = sp.csr_matrix(nx.to_scipy_sparse_array(nx.karate_club_graph(), nodelist=range(34)))
    return sp.csr_matrix(sp.bmat([[A, None], [None, sp.csr_matrix((2, 2))]], format="csr"))  # nodes 34, 35 isolated


# fraud in the instructor's faction (33's), benign in the administrator's (0's)
FRAUD, BENIGN, ISOLATED = [32, 33], [0, 1], [34, 35]


def karate_seeds() -> tuple[np.ndarray, np.ndarray]:
    f, b = np.zeros(36), np.zeros(36)
    f[FRAUD] = 1.0
    b[BENIGN] = 1.0
    return f, b


def random_graph(seed: int, n: int = 40, p: float = 0.08) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    G = nx.gnp_random_graph(n, p, seed=seed, directed=True)
    for u, v in G.edges:
        G[u][v]["weight"] = float(rng.uniform(0.1, 3.0))
    return sp.csr_matrix(nx.to_scipy_sparse_array(G, nodelist=range(n), weight="weight"))


@pytest.mark.parametrize("name", NAMES)
def test_contract_shape_and_range(name: str) -> None:
    f, b = karate_seeds()
    x = ALGORITHMS[name].run(karate_with_isolated(), f, b)
    assert x.shape == (36,)
    assert np.all(np.isfinite(x))
    assert np.all(x >= 0) and np.all(x <= 1)


@pytest.mark.parametrize("name", NAMES)
def test_contract_isolated_nodes_get_the_neutral_score(name: str) -> None:
    spec = ALGORITHMS[name]
    f, b = karate_seeds()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 on the way
        x = spec.run(karate_with_isolated(), f, b)
    assert x[ISOLATED] == pytest.approx([spec.neutral, spec.neutral], abs=0)


@pytest.mark.parametrize("name", NAMES)
def test_contract_graph_without_edges(name: str) -> None:
    spec = ALGORITHMS[name]
    f, b = np.zeros(5), np.zeros(5)
    f[0], b[1] = 1.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = spec.run(sp.csr_matrix((5, 5)), f, b)
    assert np.all(np.isfinite(x))
    assert x[2:] == pytest.approx([spec.neutral] * 3, abs=0)
    own = 0 if spec.seeds == "fraud" else 1
    assert x[own] > spec.neutral


@pytest.mark.parametrize("name", NAMES)
def test_contract_seeds_ranked_above_strangers(name: str) -> None:
    spec = ALGORITHMS[name]
    f, b = karate_seeds()
    x = spec.run(karate_with_isolated(), f, b)
    own, other = (FRAUD, BENIGN) if spec.seeds == "fraud" else (BENIGN, FRAUD)
    strangers = np.setdiff1d(np.arange(34), FRAUD + BENIGN)
    assert x[own].mean() > x[strangers].mean()
    if spec.every_seed_on_top:
        assert x[own].min() > x[strangers].max()
    else:  # the maximum principle: no stranger beats the best seed (a leaf hanging off it ties)
        assert x[own].max() >= x[strangers].max() - 1e-9
    if spec.two_class:
        assert x[other].mean() < x[strangers].mean()
        if spec.every_seed_on_top:
            assert x[other].max() < x[strangers].min()
        else:
            assert x[other].min() <= x[strangers].min() + 1e-9


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [8, 9])
def test_contract_invariant_to_node_order(name: str, seed: int) -> None:
    run = ALGORITHMS[name].run
    A = random_graph(seed)
    f, b = np.zeros(A.shape[0]), np.zeros(A.shape[0])
    f[[2, 9]] = [1.0, 0.3]
    b[[4, 11, 20]] = [1.0, 0.5, 0.8]
    perm = np.random.default_rng(seed).permutation(A.shape[0])
    x = run(A, f, b)
    xp = run(sp.csr_matrix(A[perm][:, perm]), f[perm], b[perm])
    assert xp == pytest.approx(x[perm], abs=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_contract_empty_seed_set_is_a_clear_error(name: str) -> None:
    run = ALGORITHMS[name].run
    zeros = np.zeros(36)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ParameterError, match="no (benign |fraud and no benign )?seed"):
            run(karate_with_isolated(), zeros, zeros)
