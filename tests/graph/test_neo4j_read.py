"""The encoded read of the Neo4j store without a server: :func:`encode_stored` on a graph given
as node ids, as the server sends it (in any order), against :func:`graph.projection.encode` of
the same tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from graph.projection import NAT, EncodedGraph, encode
from graph.store import EmbeddedStore
from graph.store.neo4j import NULL_MS, StoredGraph, encode_stored
from loaders import load
from loaders.schema import Tables
from tests.conftest import KEY, tiny_frames


def _ms(series: pd.Series) -> np.ndarray:
    ns = pd.to_datetime(series, utc=True).to_numpy(dtype="datetime64[ns]").view(np.int64).copy()
    out = ns // 1_000_000
    out[ns == NAT] = NULL_MS
    return out


def as_stored(tables: Tables, *, seed: int) -> StoredGraph:
    """The tables as the server holds them: arbitrary node ids (users and identifiers in one id
    space), every table's rows in a random order with their sequence numbers."""
    rng = np.random.default_rng(seed)
    users = tables.all_user_ids().astype(str).to_numpy()
    links = tables.links
    keys = pd.unique((links["kind"].astype(str) + ":" + links["ident"].astype(str)).to_numpy())
    ids = rng.permutation(len(users) + len(keys)) * 3 + 7
    user_nid = dict(zip(users, ids[: len(users)]))
    ident_nid = dict(zip(keys, ids[len(users) :]))
    seq_of = {u: i for i, u in enumerate(tables.users["user_id"].astype(str))}

    def shuffled(n: int) -> np.ndarray:
        return rng.permutation(n)

    lo, ro, fo, uo = shuffled(len(links)), shuffled(len(tables.relations)), shuffled(len(tables.flags)), shuffled(len(users))
    link_keys = (links["kind"].astype(str) + ":" + links["ident"].astype(str)).to_numpy()
    degree = pd.Series(link_keys).value_counts()
    shared = degree.index[degree >= 2].to_numpy()
    rel = tables.relations
    return StoredGraph(
        user_nid=np.array([user_nid[u] for u in users[uo]]), user_id=users[uo].astype(object),
        user_seq=np.array([seq_of.get(u, -1) for u in users[uo]]),
        link_seq=lo.astype(np.int64), link_user=np.array([user_nid[u] for u in links["user_id"].astype(str).to_numpy()[lo]]),
        link_ident=np.array([ident_nid[k] for k in link_keys[lo]]),
        link_weight=links["weight"].to_numpy(dtype=np.float64)[lo], link_seen=_ms(links["last_seen"])[lo],
        rel_seq=ro.astype(np.int64), rel_src=np.array([user_nid[u] for u in rel["src"].astype(str).to_numpy()[ro]]),
        rel_dst=np.array([user_nid[u] for u in rel["dst"].astype(str).to_numpy()[ro]]),
        rel_kind=rel["kind"].astype(str).to_numpy()[ro].astype(object), rel_weight=rel["weight"].to_numpy(dtype=np.float64)[ro],
        rel_ts=_ms(rel["ts"])[ro],
        flag_seq=fo.astype(np.int64), flag_user=np.array([user_nid[u] for u in tables.flags["user_id"].astype(str).to_numpy()[fo]]),
        shared_nid=np.array([ident_nid[k] for k in shared]), shared_kind=np.array([k.split(":")[0] for k in shared], dtype=object),
        shared_key=shared.astype(object),
    )


def _same(a: EncodedGraph, b: EncodedGraph) -> None:
    for name in ("user_ids", "link_user", "link_ident", "link_weight", "link_seen", "ident_keys", "rel_src", "rel_dst",
                 "rel_weight", "rel_ts"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.as_of == b.as_of
    # kinds may be numbered in another order: the same kind for every link, identifier, relation
    for codes, names in (("link_kind", "link_kinds"), ("ident_kind", "link_kinds"), ("rel_kind", "rel_kinds")):
        np.testing.assert_array_equal(np.asarray(getattr(a, names))[getattr(a, codes)], np.asarray(getattr(b, names))[getattr(b, codes)], err_msg=codes)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_encode_stored_equals_encode_of_the_tables(tmp_path: Path, seed: int) -> None:
    frames = tiny_frames()
    # users known only from relations and flags, a missing time and weight
    frames["relations"] = pd.concat([frames["relations"], pd.DataFrame({"src": ["n1"], "dst": ["n2"], "kind": ["transfer"], "weight": [np.nan], "ts": [None]})])
    frames["flags"] = pd.concat([frames["flags"], pd.DataFrame({"user_id": ["n2"], "label": ["fraud"], "severity": [1.0], "ts": ["2026-03-03"]})])
    store = EmbeddedStore(tmp_path / "ws")
    load(frames, store, key=KEY)
    tables = store.read_tables()
    expected = encode(tables)
    got = encode_stored(as_stored(tables, seed=seed))
    _same(got, expected)
    assert list(got.user_ids[-2:]) == ["n1", "n2"] and len(got.ident_keys) == 2  # DEV-1 and the hub IP are shared


@pytest.mark.parametrize("name", ["bitcoin-otc", "afd-registration-20k"])
def test_encode_stored_of_shared_data(tmp_path: Path, name: str) -> None:
    from tests.conftest import SHARED_DATA

    store = EmbeddedStore(tmp_path / "ws")
    load(SHARED_DATA / name, store, key=KEY)
    tables = store.read_tables()
    _same(encode_stored(as_stored(tables, seed=0)), encode(tables))


def test_every_module_name_is_importable_from_the_package() -> None:
    import graph.store.neo4j as package
    from graph.store.neo4j import bulk, queries, read, store, writes

    for module in (bulk, queries, read, store, writes):
        assert [n for n in module.__all__ if getattr(package, n, None) is not getattr(module, n)] == [], module.__name__
