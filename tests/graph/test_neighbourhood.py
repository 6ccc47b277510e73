"""Neighbourhoods, shortest paths and ring members on the tiny graph, checked by hand, and the
same answers from the embedded store and from Neo4j.

The tiny graph (tests/conftest.py): f1 (fraud) and a share device DEV-1; a alone uses phone P-A;
f1, b, c and g share IP 10.0.0.1; b -transfer-> a, c -rating(-5)-> a, g -contact-> c; z is alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from graph.neighbourhood import (
    EDGE_COLUMNS,
    NODE_COLUMNS,
    graph_index,
    latest_flags,
    neighbourhood,
    ring_members,
    shortest_paths,
    subgraph,
    user_attributes,
)
from graph.projection import encode
from graph.store import EmbeddedStore
from loaders import NotFoundError, ParameterError, load, read_tables
from socialrisk.settings import Settings
from socialrisk.workflow import score
from tests.conftest import KEY, tiny_frames

RISK = {"f1": 0.99, "a": 0.6, "b": 0.2, "c": 0.4, "g": 0.05, "z": 0.1}


@pytest.fixture(scope="module")
def tiny_index():  # type: ignore[no-untyped-def]
    tables = read_tables(tiny_frames(), key=KEY)
    index = graph_index(encode(tables))
    scores = pd.DataFrame({"user_id": list(RISK), "risk": list(RISK.values()), "credit_score": [350, 500, 700, 600, 900, 800],
                           "decision": ["reject", "reject", "approve", "review", "approve", "approve"]})
    return index, user_attributes(index, scores, tables.flags)


def _key(index, kind: str) -> str:  # type: ignore[no-untyped-def]
    (key,) = [k for k in index.encoded.ident_keys.tolist() if k.startswith(kind + ":")]
    return str(key)


def test_one_hop_is_the_users_links_and_relations(tiny_index) -> None:  # type: ignore[no-untyped-def]
    index, attrs = tiny_index
    nodes, edges = neighbourhood(index, attrs, "a", hops=1)
    assert list(nodes.columns) == list(NODE_COLUMNS) and list(edges.columns) == list(EDGE_COLUMNS)
    device = _key(index, "device")
    # the shared device first, then b and c by decreasing risk; the private phone links nobody
    assert nodes["name"].tolist() == ["a", device, "c", "b"]
    assert nodes["hop"].tolist() == [0, 1, 1, 1]
    assert nodes.set_index("name").loc[device, "degree"] == 2 and nodes.set_index("name").loc[device, "ident_kind"] == "device"
    e = edges.set_index(["source", "target"])
    assert e.loc[("a", device), "type"] == "USES"
    assert e.loc[("b", "a"), "kind"] == "transfer" and e.loc[("b", "a"), "weight"] == 120.0
    assert e.loc[("c", "a"), "kind"] == "rating" and e.loc[("c", "a"), "weight"] == -5.0  # signed, as stored
    assert e.loc[("c", "a"), "ts"] == pd.Timestamp("2026-02-11T10:00:00Z")
    assert e.loc[("a", device), "ts"] == pd.Timestamp("2026-03-01", tz="UTC")  # the link's last sighting
    assert not any("555 010 0001" in n or "+15550100001" in n or n.startswith("phone:") for n in nodes["name"])


def test_two_hops_reach_through_identifiers_and_relations(tiny_index) -> None:  # type: ignore[no-untyped-def]
    index, attrs = tiny_index
    nodes, edges = neighbourhood(index, attrs, "a", hops=2)
    hop = dict(zip(nodes["name"], nodes["hop"]))
    ip = _key(index, "ip")
    assert hop["f1"] == 2 and hop[ip] == 2 and hop["g"] == 2  # f1 via the device, the IP via b and c, g via its contact
    assert "z" not in hop
    assert len(nodes) == 7 and len(edges) == 7
    f1 = nodes.set_index("name").loc["f1"]
    assert f1["fraud_flag"] and f1["flag"] == "fraud" and f1["risk"] == pytest.approx(0.99) and f1["credit_score"] == 350
    assert nodes.set_index("name").loc["g", "flag"] == "benign"


def test_limit_keeps_identifiers_then_the_riskiest(tiny_index) -> None:  # type: ignore[no-untyped-def]
    index, attrs = tiny_index
    one, _ = neighbourhood(index, attrs, "a", hops=1, limit=1)
    assert one["name"].tolist() == ["a", _key(index, "device")]
    two, _ = neighbourhood(index, attrs, "a", hops=1, limit=2)
    assert two["name"].tolist()[2] == "c"  # risk 0.4 before b's 0.2
    # from b: the IP and a; the IP is expanded into its two riskiest users (f1, and a already
    # seen), a into its device and c; g, the IP's least risky user, is left out
    ip_view, _ = neighbourhood(index, attrs, "b", hops=2, limit=2)
    assert set(ip_view.loc[ip_view["hop"] == 2, "name"]) == {"f1", _key(index, "device"), "c"}
    assert "g" not in set(ip_view["name"])


def test_shortest_paths_by_hand(tiny_index) -> None:  # type: ignore[no-untyped-def]
    index, _ = tiny_index
    (through_device,) = shortest_paths(index, "a", "f1")
    assert through_device == {"nodes": ["a", _key(index, "device"), "f1"], "node_types": ["user", "identifier", "user"],
                              "edges": ["uses", "uses"], "degrees": [None, 2, None]}
    (social,) = shortest_paths(index, "a", "g")
    assert social["nodes"] == ["a", "c", "g"] and social["edges"] == ["rating", "contact"]
    # b and c: through the IP (2 edges) or both to a (2 edges): every shortest path, sorted
    both = shortest_paths(index, "b", "c")
    assert [p["nodes"] for p in both] == [["b", "a", "c"], ["b", _key(index, "ip"), "c"]]
    assert len(shortest_paths(index, "b", "c", limit=1)) == 1
    assert shortest_paths(index, "a", "z") == [] and shortest_paths(index, "a", "a") == []
    assert shortest_paths(index, "a", "f1", max_hops=1) == []


def test_ring_members_and_the_ring_as_a_graph(tiny_index) -> None:  # type: ignore[no-untyped-def]
    index, attrs = tiny_index
    members = ring_members(index, attrs, ["a", "b", "c", "f1", "g"])
    assert members["user_id"].tolist() == ["f1", "a", "c", "b", "g"]  # riskiest first
    ids = dict(zip(members["user_id"], members["identifiers"]))
    assert ids["a"] == [_key(index, "device")] and ids["f1"] == sorted([_key(index, "device"), _key(index, "ip")])
    nodes, edges = subgraph(index, attrs, ["a", "b", "c", "f1", "g"])
    assert len(nodes) == 7 and (nodes["hop"] == 0).all()
    assert len(edges) == 9  # 2 device links, 4 IP links, 3 relations
    only, only_edges = subgraph(index, attrs, ["a", "f1"], identifiers=[_key(index, "device")])
    assert len(only) == 3 and len(only_edges) == 2


def test_errors_say_what_is_wrong(tiny_index) -> None:  # type: ignore[no-untyped-def]
    index, attrs = tiny_index
    with pytest.raises(NotFoundError, match="ghost"):
        neighbourhood(index, attrs, "ghost")
    with pytest.raises(ParameterError, match="'hops' parameter of neighbourhood must be in 1..4. Got 5"):
        neighbourhood(index, attrs, "a", hops=5)
    with pytest.raises(ParameterError, match="'limit'"):
        neighbourhood(index, attrs, "a", limit=0)
    with pytest.raises(ParameterError, match="'max_hops'"):
        shortest_paths(index, "a", "b", max_hops=13)
    with pytest.raises(NotFoundError):
        shortest_paths(index, "a", "ghost")


def test_the_latest_flag_counts() -> None:
    flags = pd.DataFrame({
        "user_id": ["u", "u", "v", "w"], "label": ["fraud", "benign", "fraud", "benign"],
        "ts": pd.to_datetime(["2026-01-01", "2026-02-01", None, "2026-01-01"], utc=True),
    })
    assert latest_flags(flags).to_dict() == {"u": "benign", "v": "fraud", "w": "benign"}


def test_the_embedded_store_answers_through_the_seam(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ws")
    load(tiny_frames(), store, key=KEY)
    nodes, _ = store.neighbourhood("a", hops=2)
    assert nodes["risk"].isna().all()  # not scored yet: no risk, but the graph is there
    score(store, Settings(), workspace=tmp_path)
    nodes, edges = store.neighbourhood("a", hops=2)
    assert nodes["risk"].notna().sum() == 5 and len(edges) == 7
    assert set(store.ring_members("a")["user_id"]) == {"a", "b", "c", "f1", "g"}
    assert store.ring_members("z").empty
    with pytest.raises(NotFoundError):
        store.ring_members("ghost")
    assert store.shortest_paths("a", "f1")[0]["edges"] == ["uses", "uses"]


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns[:4])).reset_index(drop=True)


@pytest.mark.neo4j
def test_neo4j_gives_the_embedded_answers(neo4j_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from loaders.synthetic import generate

    frames = generate(n_users=800, seed=5)
    truth = frames.pop("truth")
    embedded = EmbeddedStore(tmp_path / "ws")
    for store in (embedded, neo4j_store):
        load(frames, store, key=KEY)
        score(store, Settings(), workspace=tmp_path)
    users = truth.loc[truth["role"] != "good", "user_id"].head(4).tolist() + truth["user_id"].head(2).tolist()
    for user in users:
        for hops, limit in ((2, 50), (3, 4)):
            for mine, theirs in zip(embedded.neighbourhood(user, hops=hops, limit=limit), neo4j_store.neighbourhood(user, hops=hops, limit=limit)):
                pd.testing.assert_frame_equal(_sorted(mine), _sorted(theirs), check_dtype=False, check_exact=False, rtol=1e-9)
    for a, b in zip(users, users[1:]):
        assert embedded.shortest_paths(a, b) == neo4j_store.shortest_paths(a, b)
    for user in users[:3]:
        pd.testing.assert_frame_equal(embedded.ring_members(user), neo4j_store.ring_members(user), check_dtype=False)
    nodes = neo4j_store.neighbourhood(users[0])[0]
    assert np.isfinite(nodes.loc[nodes["node_type"] == "user", "risk"]).all()  # every user scored


def _hub_frames() -> dict[str, pd.DataFrame]:
    """Generated users plus two hubs: IP 10.9.9.9 shared by 150 users, and user u-merchant
    that 120 users pay."""
    from loaders.synthetic import generate

    frames = generate(n_users=600, seed=7)
    frames.pop("truth")
    users = frames["users"]["user_id"].tolist()
    hub_links = pd.DataFrame({"user_id": users[:150], "kind": "ip", "value": "10.9.9.9",
                              "first_seen": "2026-01-01", "last_seen": "2026-03-01"})
    frames["links"] = pd.concat([frames["links"], hub_links[frames["links"].columns.intersection(hub_links.columns)]], ignore_index=True)
    merchant = pd.DataFrame({c: [frames["users"][c].iloc[0]] for c in frames["users"].columns}).assign(user_id="u-merchant")
    frames["users"] = pd.concat([frames["users"], merchant], ignore_index=True)
    pays = pd.DataFrame({"src": users[100:220], "dst": "u-merchant", "kind": "transfer", "weight": 10.0, "ts": "2026-02-01T00:00:00Z"})
    frames["relations"] = pd.concat([frames["relations"], pays[frames["relations"].columns.intersection(pays.columns)]], ignore_index=True)
    return frames


@pytest.mark.neo4j
def test_neo4j_hubs_rank_their_neighbours_alike_listed_or_not(neo4j_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Dense nodes answer from the neighbour lists written with the scores; after a load the
    lists are out of date and the hop ranks the neighbours itself. Both agree with the
    embedded store, which ranks every time."""
    from graph.store.neo4j import DENSE_NEIGHBOURS

    frames = _hub_frames()
    embedded = EmbeddedStore(tmp_path / "ws")
    for store in (embedded, neo4j_store):
        load(frames, store, key=KEY)
        score(store, Settings(), workspace=tmp_path)
    listed = neo4j_store._read("MATCH (x) WHERE x._nb IS NOT NULL RETURN count(x) AS n, min(size(x._nb)) AS smallest")[0]
    assert listed["n"] >= 2  # the IP and the merchant at least
    hub_user = frames["users"]["user_id"].iloc[0]  # on the IP, with 149 others

    def same(users: list[str]) -> None:
        for user in users:
            for hops, limit in ((1, 1000), (2, 50), (2, 7), (3, 5)):
                for mine, theirs in zip(embedded.neighbourhood(user, hops=hops, limit=limit),
                                        neo4j_store.neighbourhood(user, hops=hops, limit=limit)):
                    pd.testing.assert_frame_equal(_sorted(mine), _sorted(theirs), check_dtype=False, check_exact=False, rtol=1e-9)

    nodes, _ = neo4j_store.neighbourhood(hub_user, hops=2, limit=50)
    assert nodes.loc[nodes["hop"] == 1, "degree"].max() > DENSE_NEIGHBOURS  # the IP is dense
    same([hub_user, "u-merchant", frames["users"]["user_id"].iloc[150]])
    # the list is what answers: reversed, it turns the merchant's top payers into its last
    top = embedded.neighbourhood("u-merchant", hops=1, limit=5)[0]["name"].tolist()
    reverse = "MATCH (u:User {id: 'u-merchant'}) SET u._nb = [i IN range(size(u._nb) - 1, 0, -1) | u._nb[i]]"
    neo4j_store._driver.execute_query(reverse)
    assert neo4j_store.neighbourhood("u-merchant", hops=1, limit=5)[0]["name"].tolist() != top
    # a flag moves no stored risk (the next scoring rewrites the lists): the lists stay in use
    flag = {"flags": pd.DataFrame({"user_id": [frames["users"]["user_id"].iloc[3]], "label": ["fraud"], "severity": [1.0],
                                   "source": ["test"], "ts": ["2026-03-01T00:00:00Z"]})}
    snapshot = neo4j_store.metadata()["snapshot"]
    for store in (embedded, neo4j_store):
        load(flag, store, key=KEY)
    assert neo4j_store.metadata()["snapshot"] == snapshot + 1
    assert neo4j_store.neighbourhood("u-merchant", hops=1, limit=5)[0]["name"].tolist() != top
    neo4j_store._driver.execute_query(reverse)
    assert neo4j_store.neighbourhood("u-merchant", hops=1, limit=5)[0]["name"].tolist() == top
    # a new relation to the merchant makes its list out of date: the hop ranks again
    extra = {"relations": pd.DataFrame({"src": ["u-newcomer"], "dst": ["u-merchant"], "kind": ["transfer"], "weight": [5.0],
                                        "ts": ["2026-02-02T00:00:00Z"]})}
    for store in (embedded, neo4j_store):
        load(extra, store, key=KEY)
    same(["u-merchant", "u-newcomer"])
    assert "u-newcomer" in set(neo4j_store.neighbourhood("u-merchant", hops=1, limit=1000)[0]["name"])
