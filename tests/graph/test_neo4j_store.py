"""The Neo4j store against a real server: same tables, same scores as the embedded store."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from graph.store import EmbeddedStore
from loaders import ConfigError, NotFoundError, key_fingerprint, load
from socialrisk.settings import Settings
from socialrisk.workflow import score
from tests.conftest import KEY, shared_sample, tiny_frames

pytestmark = pytest.mark.neo4j


def _same_tables(a, b) -> None:  # type: ignore[no-untyped-def]
    for (name, x), (_, y) in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x.reset_index(drop=True), y.reset_index(drop=True), check_dtype=False, obj=name)


def test_tables_round_trip_and_reload_is_idempotent(neo4j_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = load(tiny_frames(), neo4j_store, key=KEY)
    assert first.added == {"users": 6, "links": 7, "relations": 3, "flags": 2}
    again = load(tiny_frames(), neo4j_store, key=KEY)
    assert sum(again.added.values()) == 0 and again.unchanged == first.added
    embedded = EmbeddedStore(tmp_path / "ws")
    load(tiny_frames(), embedded, key=KEY)
    _same_tables(embedded.read_tables(), neo4j_store.read_tables())
    assert neo4j_store.metadata()["snapshot"] == 1


def test_a_flags_only_load_reads_only_the_flags(neo4j_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A flag (one a second in the service) merges with the stored flags alone: the links and
    relations are not read back, and the tables end as the embedded store's."""
    from graph.store.neo4j import READ_FLAGS, READ_LINKS, READ_RELATIONS, READ_RELATIONS_PLAIN, READ_USER_IDS, READ_USERS

    embedded = EmbeddedStore(tmp_path / "ws")
    for store in (embedded, neo4j_store):
        load(tiny_frames(), store, key=KEY)
    sent: list[str] = []
    read = neo4j_store._read
    neo4j_store._read = lambda query, **params: (sent.append(query), read(query, **params))[1]
    flag = {"flags": pd.DataFrame({"user_id": ["b", "f1"], "label": ["fraud", "fraud"], "severity": [0.5, 1.0],
                                   "source": ["analyst", "analyst"], "ts": ["2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z"]})}
    reports = [load(flag, store, key=KEY) for store in (embedded, neo4j_store)]
    assert reports[1].added == reports[0].added == {"flags": 2}
    assert READ_FLAGS in sent
    assert not {READ_LINKS, READ_RELATIONS, READ_RELATIONS_PLAIN, READ_USERS, READ_USER_IDS} & set(sent)
    neo4j_store._read = read
    _same_tables(embedded.read_tables(), neo4j_store.read_tables())
    pd.testing.assert_frame_equal(neo4j_store.read_table("flags"), embedded.read_table("flags"), check_dtype=False)
    assert neo4j_store.metadata()["counts"] == {"users": 6, "links": 7, "relations": 3, "flags": 4}


def test_graph_model_in_cypher(neo4j_store) -> None:  # type: ignore[no-untyped-def]
    load(tiny_frames(), neo4j_store, key=KEY)
    q = neo4j_store._driver.execute_query
    labels = q("MATCH (i:Identifier) RETURN i.kind AS kind, labels(i) AS labels ORDER BY kind", database_="neo4j").records
    assert [(r["kind"], sorted(r["labels"])) for r in labels] == [
        ("device", ["Device", "Identifier"]),
        ("ip", ["IP", "Identifier"]),
        ("phone", ["Identifier", "Phone"]),
    ]
    shared = q("MATCH (a:User {id: 'a'})-[:USES]->(:Device)<-[:USES]-(f:User)-[:HAS_FLAG]->(fl:Flag {label: 'fraud'}) RETURN f.id AS id", database_="neo4j")
    assert [r["id"] for r in shared.records] == ["f1"]
    rel = q("MATCH (:User {id: 'c'})-[r:RELATES]->(:User {id: 'a'}) RETURN r.kind AS kind, r.weight AS w, toString(r.ts) AS ts", database_="neo4j")
    assert (rel.records[0]["kind"], rel.records[0]["w"], rel.records[0]["ts"]) == ("rating", -5.0, "2026-02-11T10:00:00Z")
    raw = q("MATCH (n) UNWIND keys(n) AS k WITH n[k] AS v WHERE v IN ['DEV-1', 'P-A', '10.0.0.1'] RETURN count(*) AS c", database_="neo4j")
    assert raw.records[0]["c"] == 0  # raw identifier values never reach the database


def test_hostile_ids_are_stored_as_data(neo4j_store) -> None:  # type: ignore[no-untyped-def]
    hostile = 'x"}) DETACH DELETE n //'
    frames = {"relations": pd.DataFrame({"src": [hostile, "ok"], "dst": ["ok", hostile], "kind": ["transfer", "transfer"]})}
    load(frames, neo4j_store, key=KEY)
    assert sorted(neo4j_store.known_user_ids()) == sorted([hostile, "ok"])


def test_scores_are_written_back_with_provenance(neo4j_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    load(tiny_frames(), neo4j_store, key=KEY)
    with pytest.raises(NotFoundError):
        neo4j_store.read_result("scores")
    result = score(neo4j_store, Settings(), workspace=tmp_path)
    frame, meta = neo4j_store.read_result("scores")
    assert meta["model_version"] == result.meta["model_version"] and meta["config_hash"] == Settings().config_hash()
    assert frame["user_id"].tolist() == result.scores["user_id"].tolist()
    np.testing.assert_allclose(frame["risk"].to_numpy(dtype=float), result.scores["risk"].to_numpy(), atol=0)
    rec = neo4j_store._driver.execute_query("MATCH (u:User {id: 'a'}) RETURN u.credit_score AS s, u.reasons AS r", database_="neo4j").records[0]
    assert rec["s"] == int(result.scores.set_index("user_id").loc["a", "credit_score"])
    assert "shares a device" in rec["r"]


def test_a_different_key_is_refused(neo4j_store) -> None:  # type: ignore[no-untyped-def]
    neo4j_store.bind_key(key_fingerprint(KEY))
    with pytest.raises(ConfigError, match="different pseudonymisation key"):
        neo4j_store.bind_key(key_fingerprint(b"another-key-0123456789"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bitcoin-otc", "amlsim-20k_fanin200cycle200", "tolokers"])
def test_parity_with_the_embedded_store(neo4j_store, tmp_path: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    # a connected sample keeps the dataset's shape (signs, degree skew, fan-in); loading speed at
    # scale is benchmarks/neo4j_scale.py's. SOCIALRISK_STORE_PARITY_USERS=0: the whole dataset
    data = shared_sample(name, tmp_path / "data", users=int(os.environ.get("SOCIALRISK_STORE_PARITY_USERS", "4000")))
    load(data, neo4j_store, key=KEY)
    embedded = EmbeddedStore(tmp_path / "ws")
    load(data, embedded, key=KEY)
    a = score(embedded, Settings(), workspace=tmp_path).scores
    b = score(neo4j_store, Settings(), workspace=tmp_path).scores
    assert a["user_id"].tolist() == b["user_id"].tolist()
    assert np.abs(a["risk"].to_numpy() - b["risk"].to_numpy()).max() <= 1e-9
    assert np.abs(a["graph_risk"].to_numpy() - b["graph_risk"].to_numpy()).max() <= 1e-9
    assert (a["credit_score"].to_numpy() == b["credit_score"].to_numpy()).all()


def test_users_known_only_from_relations_are_not_users_rows(neo4j_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    frames = tiny_frames()
    frames["relations"] = pd.concat([frames["relations"], pd.DataFrame({"src": ["a"], "dst": ["newcomer"], "kind": ["transfer"], "weight": [3.0]})])
    load(frames, neo4j_store, key=KEY)
    embedded = EmbeddedStore(tmp_path / "ws")
    load(frames, embedded, key=KEY)
    _same_tables(embedded.read_tables(), neo4j_store.read_tables())
    assert "newcomer" in set(neo4j_store.known_user_ids())


def test_query_helpers(neo4j_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from loaders import ParameterError

    load(tiny_frames(), neo4j_store, key=KEY)
    score(neo4j_store, Settings(), workspace=tmp_path)
    nodes, edges = neo4j_store.neighbourhood("a", hops=2, limit=50)
    users = set(nodes.loc[nodes["node_type"] == "user", "name"])
    # 1 hop: device, phone, b (transfer), c (rating); 2 hops: f1 through the device, g through... no: g is 3 hops
    assert {"a", "b", "c", "f1"} <= users and "z" not in users
    assert nodes.set_index("name").loc["f1", "fraud_flag"]
    assert ((edges["source"] == "b") & (edges["target"] == "a") & (edges["kind"] == "transfer")).any()
    capped, _ = neo4j_store.neighbourhood("a", hops=1, limit=2)
    assert len(capped) == 3  # a itself and two neighbours
    paths = neo4j_store.shortest_paths("a", "f1")
    assert paths and paths[0]["nodes"][0] == "a" and paths[0]["nodes"][-1] == "f1"
    assert paths[0]["node_types"] == ["user", "identifier", "user"] and paths[0]["edges"] == ["uses", "uses"]
    assert neo4j_store.shortest_paths("a", "z") == []
    ring = neo4j_store.ring_members("a")
    assert set(ring["user_id"]) == {"a", "f1", "b", "c", "g"}
    assert ring.set_index("user_id").loc["a", "identifiers"]  # the shared device key
    assert neo4j_store.ring_members("z").empty
    with pytest.raises(NotFoundError):
        neo4j_store.neighbourhood("ghost")
    with pytest.raises(ParameterError):
        neo4j_store.neighbourhood("a", hops=9)


AUDIT_RECORDS = [
    {"action": "flag", "actor": "ana", "user_id": "u1", "after": {"label": "fraud"}},
    {"action": "dispute_link", "actor": "bo", "user_id": "u2", "before": {"weight": 1.0}, "after": {"weight": 0.0}},
    {"action": "score", "actor": "ana", "detail": {"users": 6}},
]


def test_audit_log_appends_reads_and_detects_tampering(neo4j_store) -> None:  # type: ignore[no-untyped-def]
    from graph.store.audit import verify_chain
    from loaders import StoreError

    assert neo4j_store.read_audit() == []
    first = neo4j_store.append_audit(AUDIT_RECORDS[:2])
    second = neo4j_store.append_audit(AUDIT_RECORDS[2:])
    assert [e.seq for e in first + second] == [1, 2, 3] and second[0].prev_hash == first[1].hash
    entries = neo4j_store.read_audit()
    assert entries == first + second
    verify_chain(entries)
    assert [e.seq for e in neo4j_store.read_audit("u2")] == [2]
    q = neo4j_store._driver.execute_query
    rec = q("MATCH (a:AuditEntry {seq: 3}) RETURN a.after AS after, a.detail AS detail, a.user_id AS user_id", database_="neo4j").records[0]
    assert (rec["after"], rec["detail"], rec["user_id"]) == ("{}", '{"users":6}', None)
    q("MATCH (a:AuditEntry {seq: 2}) SET a.after = $after", after='{"weight":1.0}', database_="neo4j")
    with pytest.raises(StoreError, match="audit entry 2 was altered"):
        neo4j_store.read_audit()


def test_audit_appends_from_two_threads_stay_gap_free(neo4j_store) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor

    def append(actor: str) -> None:
        for i in range(20):
            neo4j_store.append_audit([{"action": "flag", "actor": actor, "user_id": f"{actor}-{i}"}])

    with ThreadPoolExecutor(max_workers=2) as pool:
        for f in [pool.submit(append, a) for a in ("t1", "t2")]:
            f.result()
    entries = neo4j_store.read_audit()
    assert [e.seq for e in entries] == list(range(1, 41))
    q = neo4j_store._driver.execute_query
    assert q("MATCH (h:AuditHead) RETURN count(h) AS n", database_="neo4j").records[0]["n"] == 1


def test_model_registry_round_trip(neo4j_store) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    from loaders import StoreError

    meta = {"created_at": "2026-11-27T01:22:33Z", "config_hash": "c0ffee", "snapshot": 3, "combination": "gbm"}
    assert neo4j_store.list_models() == [] and neo4j_store.current_model() is None
    neo4j_store.write_model("m2", b"second", {**meta, "created_at": "2026-11-28T00:00:00Z"})
    neo4j_store.write_model("m1", b"\x00first\xff", meta)
    payload, got = neo4j_store.read_model("m1")
    assert payload == b"\x00first\xff" and got["payload_sha256"] == hashlib.sha256(payload).hexdigest() and got["combination"] == "gbm"
    with pytest.raises(StoreError, match="m1 is already registered"):
        neo4j_store.write_model("m1", b"another", meta)
    neo4j_store.set_current_model("m2")
    assert neo4j_store.current_model() == "m2"
    assert [(m["version"], m["current"]) for m in neo4j_store.list_models()] == [("m1", False), ("m2", True)]
    with pytest.raises(NotFoundError):
        neo4j_store.read_model("m3")
    neo4j_store._driver.execute_query("MATCH (m:ModelVersion {version: 'm1'}) SET m.payload = $p", p=b"changed", database_="neo4j")
    with pytest.raises(StoreError, match="payload of model m1 does not match its recorded SHA-256"):
        neo4j_store.read_model("m1")


def test_the_encoded_graph_is_kept_by_the_change_counters(neo4j_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With a cache directory, the encoded graph is read once per snapshot: again at the same
    snapshot it comes from disk, after flags alone only the flagged users are read, after new
    relations the graph is read again; each time it equals the encoding of the tables."""
    from graph.projection import encode
    from graph.store.neo4j import FLAGGED_USERS, PACKED_EDGES
    from socialrisk.workflow import open_neo4j
    from tests.graph.test_neo4j_read import _same

    load(tiny_frames(), neo4j_store, key=KEY)
    store = open_neo4j(cache_dir=tmp_path / "cache")
    sent: list[str] = []
    read = store._read
    store._read = lambda query, **params: (sent.append(query), read(query, **params))[1]
    first = store.encoded()
    _same(first, encode(store.read_tables()))
    assert PACKED_EDGES in sent
    kept = list((tmp_path / "cache").iterdir())
    assert len(kept) == 1 and kept[0].name == store.metadata()["store_id"]
    sent.clear()
    _same(store.encoded(), first)
    assert PACKED_EDGES not in sent and FLAGGED_USERS not in sent

    flags = {"flags": pd.DataFrame({"user_id": ["c"], "label": ["fraud"], "severity": [1.0], "ts": ["2026-03-04"]})}
    load(flags, store, key=KEY)
    sent.clear()
    _same(store.encoded(), encode(store.read_tables()))
    assert FLAGGED_USERS in sent and PACKED_EDGES not in sent

    more = {"relations": pd.DataFrame({"src": ["z"], "dst": ["newcomer"], "kind": ["transfer"], "weight": [2.0], "ts": ["2026-03-05"]})}
    load(more, store, key=KEY)
    sent.clear()
    after = store.encoded()
    assert PACKED_EDGES in sent and "newcomer" in set(after.user_ids)
    _same(after, encode(store.read_tables()))
    assert len(list((tmp_path / "cache" / store.metadata()["store_id"]).glob("encoded-*"))) == 1  # older ones dropped
    store._read = read
    store.close()


def test_an_online_load_reads_only_the_rows_it_touches(neo4j_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A second load merges with the stored rows of the users, links and relations it names
    (not the whole tables), and the tables end as the embedded store's."""
    from graph.store.neo4j import (
        READ_LINKS, READ_LINKS_AMONG, READ_RELATIONS, READ_RELATIONS_AMONG, READ_RELATIONS_PLAIN, READ_USERS, READ_USERS_AMONG,
    )

    embedded = EmbeddedStore(tmp_path / "ws")
    for store in (embedded, neo4j_store):
        load(tiny_frames(), store, key=KEY)
    sent: list[str] = []
    read = neo4j_store._read
    neo4j_store._read = lambda query, **params: (sent.append(query), read(query, **params))[1]
    frames = tiny_frames()
    second = {
        "users": pd.DataFrame({"user_id": ["a", "new"], "repayments_total": [9, 1], "repayments_late": [None, 0], "chargebacks_90d": [0, 0]}),
        "links": pd.concat([frames["links"].iloc[[1]].assign(last_seen="2026-04-01"),
                            pd.DataFrame({"user_id": ["new"], "kind": ["device"], "value": ["DEV-1"], "first_seen": ["2026-04-01"], "last_seen": ["2026-04-02"]})]),
        "relations": pd.concat([frames["relations"].iloc[[0]], pd.DataFrame({"src": ["new"], "dst": ["a"], "kind": ["transfer"], "weight": [5.0], "ts": ["2026-04-02T00:00:00Z"]})]),
    }
    reports = [load(second, store, key=KEY) for store in (embedded, neo4j_store)]
    assert reports[1].added == reports[0].added and reports[1].unchanged == reports[0].unchanged
    assert {READ_USERS_AMONG, READ_LINKS_AMONG, READ_RELATIONS_AMONG} <= set(sent)
    assert not {READ_LINKS, READ_RELATIONS, READ_RELATIONS_PLAIN, READ_USERS} & set(sent)
    neo4j_store._read = read
    _same_tables(embedded.read_tables(), neo4j_store.read_tables())
    assert neo4j_store.metadata()["counts"] == embedded.metadata()["counts"]


def test_the_packed_read_sends_what_the_cypher_read_does(neo4j_store) -> None:  # type: ignore[no-untyped-def]
    """``socialrisk.encodedEdges`` (the server's procedure, installed by ``socialrisk neo4j
    start``) returns the edges Cypher's columnar read returns, value for value, missing weights
    and times included, in one part and in several, in batches smaller than the graph."""
    from graph.store.neo4j import NULL_MS, PACKED_EDGES
    from socialrisk.workflow import open_neo4j

    frames = tiny_frames()
    frames["links"]["weight"] = [None, 2.0, 1.5, 1.0, 1.0, 1.0, 1.0]
    frames["links"].loc[1, "last_seen"] = None
    frames["relations"].loc[0, "ts"] = None
    load(frames, neo4j_store, key=KEY)
    assert neo4j_store.packed_read(), "the CI server must have socialrisk's procedures (socialrisk neo4j start installs them)"
    cypher = open_neo4j(packed_read=False)
    try:
        assert not cypher.packed_read()
        for parts in (1, 3):
            a, b = neo4j_store.stored_graph(parts=parts), cypher.stored_graph(parts=parts)
            for table, columns in (("link", ("user", "ident", "weight", "seen")), ("rel", ("src", "dst", "kind", "weight", "ts"))):
                order_a, order_b = np.argsort(getattr(a, f"{table}_seq")), np.argsort(getattr(b, f"{table}_seq"))
                np.testing.assert_array_equal(getattr(a, f"{table}_seq")[order_a], getattr(b, f"{table}_seq")[order_b])
                for c in columns:
                    np.testing.assert_array_equal(getattr(a, f"{table}_{c}")[order_a], getattr(b, f"{table}_{c}")[order_b], err_msg=f"{table}_{c}")
        assert np.isnan(a.link_weight).any() and (a.rel_ts == NULL_MS).any()  # the missing values crossed as missing
        # batches of one edge: every batch carries its own kind codes
        one = neo4j_store._read(PACKED_EDGES.replace("$null_ms)", "$null_ms, 1)"), type="relations", part=0, parts=1, null_ms=0)
        assert len(one) == len(frames["relations"]) and all(len(r["kinds"]) == 1 for r in one)
        with pytest.raises(Exception, match="type must be 'links' or 'relations'"):
            neo4j_store._read(PACKED_EDGES, type="flags", part=0, parts=1, null_ms=0)
    finally:
        cypher.close()


def test_packed_read_must_be_true_false_or_none(neo4j_store) -> None:  # type: ignore[no-untyped-def]
    from loaders.errors import ParameterError
    from socialrisk.workflow import open_neo4j

    with pytest.raises(ParameterError, match="'packed_read' parameter of Neo4jStore must be True, False or None"):
        open_neo4j(packed_read="yes")
