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
