from __future__ import annotations

import numpy as np
import pytest

from graph import GraphConfig, project
from graph.explain import explain_user
from loaders import NotFoundError, ParameterError, read_tables
from tests.conftest import KEY, tiny_frames


def _setup():  # type: ignore[no-untyped-def]
    tables = read_tables(tiny_frames(), key=KEY)
    p = project(tables, GraphConfig())
    fraud = np.zeros(p.n_users)
    fraud[p.index_of(["f1"])[0]] = 1.0
    return tables, p, fraud


def test_shared_device_with_a_confirmed_fraud_is_named() -> None:
    tables, p, fraud = _setup()
    e = explain_user(tables, p, "a", fraud)
    assert [c.seed for c in e.contributions] == ["f1"]
    c = e.contributions[0]
    assert c.share == pytest.approx(1.0)
    assert len(c.path) == 1 and c.path[0].kind == "identifier" and c.path[0].via.startswith("device d-")
    sentence = c.sentence("a")
    assert sentence.startswith("shares device d-") and "account f1, confirmed fraud on 2026-03-01" in sentence
    assert "DEV-1" not in sentence  # raw identifier values never appear


def test_relation_paths_keep_walk_order_and_direction() -> None:
    tables, p, fraud = _setup()
    fraud[:] = 0
    fraud[p.index_of(["b"])[0]] = 1.0  # b sent a transfer to a
    e = explain_user(tables, p, "a", fraud)
    step = e.contributions[0].path[0]
    assert (step.source, step.target, step.via, step.forward, step.when) == ("b", "a", "transfer", True, "2026-02-10")
    assert e.contributions[0].sentence("a").startswith("received a transfer (2026-02-10) from account b")


def test_no_exposure_and_errors() -> None:
    tables, p, fraud = _setup()
    e = explain_user(tables, p, "z", fraud)  # z has no links or relations
    assert e.contributions == [] and e.exposure == 0.0
    with pytest.raises(NotFoundError, match="ghost"):
        explain_user(tables, p, "ghost", fraud)
    with pytest.raises(ParameterError, match="top"):
        explain_user(tables, p, "a", fraud, top=0)


def test_shares_equal_each_seeds_exact_pagerank_at_the_user() -> None:
    # PPR is linear in the seeds: a seed's share of a's exposure is w_s * ppr_s(a) / sum over seeds
    from graph.explain import ExplainContext
    from graph.projection import walk_matrix
    from graph.propagation import personalized_pagerank

    tables, p, fraud = _setup()
    fraud[:] = 0
    seeds = ["f1", "b", "c"]
    weights = [1.0, 0.5, 2.0]
    for s, w in zip(seeds, weights):
        fraud[p.index_of([s])[0]] = w
    A = walk_matrix(p)
    v = p.index_of(["a"])[0]
    exact = {}
    for s, w in zip(seeds, weights):
        e = np.zeros(A.shape[0])
        e[p.index_of([s])[0]] = 1.0
        exact[s] = w * personalized_pagerank(A, e, tol=1e-14, dangling="self").scores[v]
    total = sum(exact.values())
    explanation = ExplainContext(tables, p, fraud, eps=1e-12, first_eps=1e-12).explain("a", top=3)
    got = {c.seed: c.share for c in explanation.contributions}
    assert explanation.exposure == pytest.approx(total, rel=1e-6)
    for s in seeds:
        assert got.get(s, 0.0) == pytest.approx(exact[s] / total, abs=1e-6)
