from __future__ import annotations

import pandas as pd

from graph import GraphConfig, project
from graph.rings import identifier_components, ring_ids
from loaders import read_tables
from tests.conftest import KEY, tiny_frames


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


def test_relations_do_not_make_rings() -> None:
    frames = {"relations": pd.DataFrame({"src": ["x"], "dst": ["y"], "kind": ["transfer"]})}
    p = project(read_tables(frames, key=KEY), GraphConfig())
    assert list(ring_ids(p)) == ["", ""]
