from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from graph import GraphConfig, project
from graph.dense import (
    DenseBlock,
    _densest_exhaustive,
    _peel,
    _peel_reference,
    camouflage_weights,
    dense_blocks,
    densest_block,
)
from graph.explain import ident_label
from graph.projection import Projection
from graph.rings import (
    RING_COLUMNS,
    community_rings,
    component_rings,
    dense_rings,
    identifier_components,
    rank_rings,
    ring_ids,
    ring_labels,
)
from loaders import read_tables
from loaders.errors import ParameterError
from tests.conftest import KEY, identifier, tiny_frames


def graph_of(links: Sequence[tuple[str, str]], relations: Sequence[tuple[str, str]] = (), users: Sequence[str] = ()) -> Projection:
    """A projection from (user, "kind:value") links and (src, dst) transfers."""
    frames = {
        "links": pd.DataFrame(
            {
                "user_id": [u for u, _ in links],
                "kind": [i.split(":")[0] for _, i in links],
                "value": [identifier(*i.split(":", 1)) for _, i in links],
            }
        ),
        "relations": pd.DataFrame({"src": [s for s, _ in relations], "dst": [d for _, d in relations], "kind": "transfer"}),
    }
    if users:
        frames["users"] = pd.DataFrame({"user_id": list(users)})
    return project(read_tables(frames, key=KEY), GraphConfig())


def groups(projection: Projection, labels: np.ndarray) -> set[frozenset[str]]:
    """Rings as sets of user ids (independent of how they are numbered)."""
    out: dict[int, set[str]] = {}
    for user, label in zip(projection.user_ids.tolist(), labels.tolist()):
        if label >= 0:
            out.setdefault(label, set()).add(user)
    return {frozenset(members) for members in out.values()}


# -- connected components ------------------------------------------------------------------


def test_rings_follow_shared_identifiers_but_not_hubs() -> None:
    tables = read_tables(tiny_frames(), key=KEY)
    p = project(tables, GraphConfig())
    rings = dict(zip(p.user_ids, ring_ids(p)))
    # f1 and a share a device; f1, b, c, g share an IP: one ring; z shares nothing
    assert rings["a"] == rings["f1"] == rings["b"] == rings["g"] == "ring-a"
    assert rings["z"] == ""
    # with the IP above the hub limit, only the device ring is left
    p3 = project(tables, GraphConfig(hub_max_degree=3))
    rings3 = dict(zip(p3.user_ids, ring_ids(p3)))
    assert rings3["a"] == rings3["f1"] == "ring-a" and rings3["b"] == rings3["g"] == ""
    labels, sizes = identifier_components(p3)
    assert sorted(sizes.tolist()) == [1, 1, 1, 1, 2]
    assert groups(p3, component_rings(p3)) == {frozenset({"a", "f1"})}


def test_relations_do_not_make_rings() -> None:
    frames = {"relations": pd.DataFrame({"src": ["x"], "dst": ["y"], "kind": ["transfer"]})}
    p = project(read_tables(frames, key=KEY), GraphConfig())
    assert list(ring_ids(p)) == ["", ""]
    assert component_rings(p).tolist() == [-1, -1]


def test_component_rings_are_numbered_by_first_member() -> None:
    p = graph_of([("a", "device:D1"), ("b", "device:D2"), ("c", "device:D1"), ("d", "device:D2"), ("e", "phone:P")], users=["a", "b", "c", "d", "e"])
    assert component_rings(p).tolist() == [0, 1, 0, 1, -1]


# -- communities ---------------------------------------------------------------------------


def two_households_and_a_cafe() -> Projection:
    """a, b, c share devices D1, D2; d, e, f share D3, D4; c and d also use one IP.

    One connected component of six users, but two communities of three: the IP is a single
    edge pair between two tight groups.
    """
    links = [(u, f"device:{d}") for u in "abc" for d in ("D1", "D2")]
    links += [(u, f"device:{d}") for u in "def" for d in ("D3", "D4")]
    links += [("c", "ip:CAFE"), ("d", "ip:CAFE")]
    return graph_of(links, relations=[("g", "h")])


def test_communities_split_a_component_at_its_weak_link() -> None:
    p = two_households_and_a_cafe()
    assert groups(p, component_rings(p)) == {frozenset("abcdef")}
    communities = community_rings(p, seed=0)
    assert groups(p, communities) == {frozenset("abc"), frozenset("def"), frozenset("gh")}
    # without relations, g and h (joined by a transfer only) are in no ring
    assert groups(p, community_rings(p, seed=0, relations=False)) == {frozenset("abc"), frozenset("def")}
    assert community_rings(p, seed=0, relations=False)[p.index_of(["g", "h"])].tolist() == [-1, -1]


def test_communities_are_deterministic_for_a_seed() -> None:
    # a cycle of 24 transfers has many equally good splits: which one Louvain finds depends on
    # the order it visits the nodes in, drawn from the seed
    relations = [(f"u{i:02d}", f"u{(i + 1) % 24:02d}") for i in range(24)]
    p = graph_of([("u00", "device:D0"), ("u01", "device:D0")], relations)
    runs = {seed: community_rings(p, seed=seed) for seed in range(6)}
    for seed, labels in runs.items():
        np.testing.assert_array_equal(community_rings(p, seed=seed), labels)
        assert (labels >= 0).all()  # every user is in a community of several
    assert len({frozenset(groups(p, labels)) for labels in runs.values()}) > 1  # the seed is used


def test_communities_check_resolution() -> None:
    with pytest.raises(ParameterError, match="'resolution' parameter of community_rings must be > 0"):
        community_rings(two_households_and_a_cafe(), seed=0, resolution=0.0)


# -- FRAUDAR: greedy peeling -----------------------------------------------------------------


def random_bipartite(seed: int, max_side: int = 6) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    r, c = rng.integers(1, max_side + 1, size=2)
    return sp.csr_matrix((rng.random((r, c)) < rng.uniform(0.2, 0.9)).astype(float))


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("weighted", [False, True])
def test_heap_peeling_matches_the_reference(seed: int, weighted: bool) -> None:
    A = random_bipartite(seed)
    W = camouflage_weights(A) if weighted else A
    order, n_active, best_removed, best = _peel(sp.csr_matrix(W))
    ref_order, ref_active, ref_removed, ref_best = _peel_reference(W)
    assert order == ref_order
    assert (n_active, best_removed) == (ref_active, ref_removed)
    assert best == pytest.approx(ref_best)


def test_heap_peeling_matches_the_reference_on_a_larger_graph() -> None:
    rng = np.random.default_rng(5)
    A = sp.random(40, 30, density=0.12, random_state=rng, format="csr")
    A.data[:] = 1.0
    order, _, best_removed, best = _peel(camouflage_weights(A))
    ref_order, _, ref_removed, ref_best = _peel_reference(camouflage_weights(A))
    assert order == ref_order and best_removed == ref_removed and best == pytest.approx(ref_best)


@pytest.mark.parametrize("seed", range(30))
def test_greedy_is_within_half_of_the_densest_block(seed: int) -> None:
    W = camouflage_weights(random_bipartite(seed, max_side=5))
    found, optimum = densest_block(W), _densest_exhaustive(W)
    assert optimum.density >= found.density - 1e-12  # the exhaustive search is the optimum...
    assert found.density >= optimum.density / 2 - 1e-12  # ...and greedy peeling is within 1/2 (FRAUDAR, Theorem 1)
    # the reported density is that of the rows and columns reported
    assert found.density == pytest.approx(W.toarray()[np.ix_(found.rows, found.cols)].sum() / found.size)


def test_densest_block_by_hand() -> None:
    # rows 0-2 use columns 0-1 (6 edges on 5 nodes: 1.2); row 3 and column 2 dilute it
    A = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=float))
    block = densest_block(A)
    assert (block.rows.tolist(), block.cols.tolist(), block.density) == ([0, 1, 2], [0, 1], pytest.approx(1.2))
    optimum = _densest_exhaustive(A)
    assert (optimum.rows.tolist(), optimum.cols.tolist()) == ([0, 1, 2], [0, 1])


def test_camouflage_weights_by_hand() -> None:
    A = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=float))
    W = camouflage_weights(A, c=5.0).toarray()
    assert W[0, 0] == pytest.approx(1 / math.log(6)) and W[2, 1] == pytest.approx(1 / math.log(8))
    assert W[:, 2].tolist() == [0.0, 0.0, 0.0]


def camouflaged_fraud(n_fraud: int = 4, n_honest: int = 40) -> sp.csr_matrix:
    """Fraud rows 0..n_fraud-1 share devices (columns 0-2) and also use three popular
    identifiers (columns 3-5) that every honest row uses too: camouflage."""
    A = np.zeros((n_fraud + n_honest, 6))
    A[:n_fraud, :3] = 1
    A[:, 3:] = 1
    return sp.csr_matrix(A)


def test_camouflage_does_not_hide_the_fraud_block() -> None:
    A = camouflaged_fraud()
    # unweighted, the honest crowd on the popular identifiers is denser: 144 edges on 50 nodes
    plain = densest_block(A)
    assert len(plain.rows) == 44 and plain.density == pytest.approx(144 / 50)
    # weighted by 1/log(degree + 5), the fraud rows alone are the densest block
    found = densest_block(camouflage_weights(A))
    assert found.rows.tolist() == [0, 1, 2, 3]
    w_device, w_popular = 1 / math.log(4 + 5), 1 / math.log(44 + 5)
    assert found.density == pytest.approx((12 * w_device + 12 * w_popular) / (4 + 6))
    blocks = dense_blocks(A, k=1)
    assert blocks[0].rows.tolist() == [0, 1, 2, 3]


def test_dense_blocks_finds_blocks_one_after_another() -> None:
    A = np.zeros((9, 6))
    A[0:4, 0:3] = 1  # 4 x 3, the densest
    A[4:7, 3:5] = 1  # 3 x 2
    A[7, 5] = A[8, 5] = 1  # 2 x 1
    blocks = dense_blocks(sp.csr_matrix(A), k=5)
    assert [b.rows.tolist() for b in blocks] == [[0, 1, 2, 3], [4, 5, 6], [7, 8]]
    assert [b.cols.tolist() for b in blocks] == [[0, 1, 2], [3, 4], [5]]
    assert [b.rows.tolist() for b in dense_blocks(sp.csr_matrix(A), k=2)] == [[0, 1, 2, 3], [4, 5, 6]]


def test_dense_blocks_are_disjoint_in_rows() -> None:
    A = random_bipartite(3, max_side=12)
    rows = [r for b in dense_blocks(A, k=10) for r in b.rows.tolist()]
    assert len(rows) == len(set(rows))


def test_empty_graph_and_bad_parameters() -> None:
    empty = densest_block(sp.csr_matrix((3, 2)))
    assert empty == DenseBlock(rows=empty.rows, cols=empty.cols, density=0.0) and empty.size == 0
    assert dense_blocks(sp.csr_matrix((3, 2)), k=3) == []
    with pytest.raises(ParameterError, match="must be finite and >= 0"):
        densest_block(sp.csr_matrix(np.array([[1.0, -1.0]])))
    with pytest.raises(ParameterError, match="'k' parameter of dense_blocks"):
        dense_blocks(sp.csr_matrix(np.eye(2)), k=0)
    with pytest.raises(ParameterError, match="'c' parameter of camouflage_weights"):
        camouflage_weights(sp.csr_matrix(np.eye(2)), c=0.0)


# -- dense rings over a projection ---------------------------------------------------------


def test_dense_rings_find_the_camouflaged_ring_in_a_projection() -> None:
    fraud = [f"f{i}" for i in range(4)]
    honest = [f"h{i:02d}" for i in range(40)]
    links = [(u, f"device:D{j}") for u in fraud for j in range(3)]
    links += [(u, f"ip:CAFE{j}") for u in fraud + honest for j in range(3)]
    p = graph_of(links)
    assert groups(p, dense_rings(p, k=1)) == {frozenset(fraud)}
    # the components of the same graph are no help: everyone is joined through the cafés
    assert groups(p, component_rings(p)) == {frozenset(fraud + honest)}


def test_a_block_of_separate_groups_makes_separate_rings() -> None:
    # two pairs equally dense but sharing nothing: peeling keeps both in one block
    p = graph_of([("a", "device:D1"), ("b", "device:D1"), ("a", "phone:P1"), ("b", "phone:P1"),
                  ("c", "device:D2"), ("d", "device:D2"), ("c", "phone:P2"), ("d", "phone:P2"), ("e", "card:C1"), ("f", "card:C1")])
    blocks = dense_blocks(p.shared, k=1)
    assert len(blocks[0].rows) == 4
    labels = dense_rings(p, k=1)
    assert groups(p, labels) == {frozenset("ab"), frozenset("cd")}
    assert labels[p.index_of(["e", "f"])].tolist() == [-1, -1]
    assert groups(p, dense_rings(p, k=2)) == {frozenset("ab"), frozenset("cd"), frozenset("ef")}


def test_dense_rings_can_count_relations() -> None:
    # a, b and c all transfer to one another but share nothing; d and e share a device
    p = graph_of([("d", "device:D1"), ("e", "device:D1")], relations=[("a", "b"), ("b", "c"), ("c", "a")])
    assert groups(p, dense_rings(p, k=2)) == {frozenset("de")}
    # with relations as columns: the triangle (6 links of weight 1/log 7 on 6 nodes) comes first
    labels = dense_rings(p, k=2, relations=True)
    assert groups(p, labels) == {frozenset("abc"), frozenset("de")}
    assert labels[p.index_of(["a", "d"])].tolist() == [0, 1]


def test_ring_labels_dispatch_and_check_the_kind() -> None:
    p = two_households_and_a_cafe()
    np.testing.assert_array_equal(ring_labels(p, kind="components"), component_rings(p))
    np.testing.assert_array_equal(ring_labels(p, kind="communities", seed=3), community_rings(p, seed=3))
    np.testing.assert_array_equal(ring_labels(p, kind="dense", k=2), dense_rings(p, k=2))
    with pytest.raises(ParameterError, match="one of components, communities, dense. Got 'cliques'"):
        ring_labels(p, kind="cliques")


# -- ranking -------------------------------------------------------------------------------


def ranked_example() -> tuple[Projection, pd.DataFrame]:
    """a, b, c share device D1 and a, b phone P1; d and e share device D2; f shares nothing.

    risk: a .9, b .1, c .2 (mass 1.2); d .7, e .7 (mass 1.4); f 1.0. a is fraud, c benign.
    """
    p = graph_of(
        [("a", "device:D1"), ("b", "device:D1"), ("c", "device:D1"), ("a", "phone:P1"), ("b", "phone:P1"),
         ("d", "device:D2"), ("e", "device:D2"), ("f", "phone:P9")],
        users=["a", "b", "c", "d", "e", "f"],
    )
    risk = np.array([0.9, 0.1, 0.2, 0.7, 0.7, 1.0])
    fraud = np.array([True, False, False, False, False, True])
    benign = np.array([False, False, True, False, False, False])
    return p, rank_rings(p, component_rings(p), risk, fraud=fraud, benign=benign)


def test_rings_are_ranked_by_risk_mass_by_hand() -> None:
    p, table = ranked_example()
    assert list(table.columns) == list(RING_COLUMNS)
    assert table["ring_id"].tolist() == ["ring-d", "ring-a"]  # 1.4 before 1.2, f is in no ring
    d, a = table.iloc[0], table.iloc[1]
    assert (d["rank"], d["size"], d["risk_mass"], d["mean_risk"], d["max_risk"]) == (1, 2, pytest.approx(1.4), pytest.approx(0.7), 0.7)
    assert (a["rank"], a["size"], a["risk_mass"], a["max_risk"]) == (2, 3, pytest.approx(1.2), 0.9)
    assert a["members"] == ["a", "c", "b"]  # riskiest first
    assert (a["fraud"], a["fraud_members"], a["benign"], a["benign_members"]) == (1, ["a"], 1, ["c"])
    assert (d["fraud"], d["benign"], d["fraud_members"]) == (0, 0, [])
    # identifiers shared by two members or more, the most shared first, shown short
    keys = dict(zip(p.ident_keys.tolist(), range(p.n_idents)))
    assert a["n_identifiers"] == 2 and [k.split(":")[0] for k in a["identifier_keys"]] == ["device", "phone"]
    assert a["identifiers"] == [ident_label(k) for k in a["identifier_keys"]]
    assert a["identifiers"][0].startswith("device d-") and a["identifiers"][1].startswith("phone p-")
    assert set(a["identifier_keys"]) <= set(keys)
    # density: weighted links of members to shared identifiers over (members + identifiers)
    w = lambda degree: 1 / math.log(degree + 5)  # noqa: E731
    assert a["density"] == pytest.approx((3 * w(3) + 2 * w(2)) / (3 + 2))
    assert d["density"] == pytest.approx(2 * w(2) / (2 + 1))
    # the ring id names the same ring as the scores' ring_id column
    ids = dict(zip(p.user_ids.tolist(), ring_ids(p).tolist()))
    assert all(ids[m] == row["ring_id"] for _, row in table.iterrows() for m in row["members"])


def test_ranking_takes_the_top_and_breaks_ties_by_size_then_id() -> None:
    p, _ = ranked_example()
    labels = component_rings(p)
    top = rank_rings(p, labels, np.array([0.9, 0.1, 0.2, 0.7, 0.7, 1.0]), top=1)
    assert top["ring_id"].tolist() == ["ring-d"]
    # equal mass: the larger ring first; equal mass and size: by id
    tie = rank_rings(p, labels, np.array([0.2, 0.2, 0.2, 0.3, 0.3, 0.0]))
    assert tie["ring_id"].tolist() == ["ring-a", "ring-d"]
    pairs = np.array([0, 0, -1, 1, 1, -1])
    assert rank_rings(p, pairs, np.array([0.5, 0.5, 0.0, 0.5, 0.5, 0.0]))["ring_id"].tolist() == ["ring-a", "ring-d"]


def test_a_ring_of_relations_has_no_identifiers_and_no_density() -> None:
    p, _ = ranked_example()
    labels = np.array([-1, -1, -1, -1, 0, 0])  # e and f: no identifier in common
    table = rank_rings(p, labels, np.ones(6))
    row = table.iloc[0]
    assert (row["ring_id"], row["members"], row["identifiers"], row["n_identifiers"], row["density"]) == ("ring-e", ["e", "f"], [], 0, 0.0)


def test_ranking_without_rings_and_with_bad_input() -> None:
    p, _ = ranked_example()
    empty = rank_rings(p, np.full(6, -1), np.zeros(6))
    assert empty.empty and list(empty.columns) == list(RING_COLUMNS)
    with pytest.raises(ParameterError, match="'risk' of rank_rings must have one value per user \\(6\\)"):
        rank_rings(p, component_rings(p), np.zeros(5))
    with pytest.raises(ParameterError, match="must be finite"):
        rank_rings(p, component_rings(p), np.array([np.nan, 0, 0, 0, 0, 0]))
    with pytest.raises(ParameterError, match="'top' parameter of rank_rings"):
        rank_rings(p, component_rings(p), np.zeros(6), top=0)


@pytest.mark.parametrize("module", ["graph.rings", "graph.dense"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    failures, tried = doctest.testmod(importlib.import_module(module))
    assert tried > 0 and failures == 0
