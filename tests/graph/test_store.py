from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from graph.store import EmbeddedStore
from loaders import ConfigError, NotFoundError, load, key_fingerprint
from tests.conftest import KEY, tiny_frames


def test_loading_twice_changes_nothing(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ws")
    first = load(tiny_frames(), store, key=KEY)
    assert first.added == {"users": 6, "links": 7, "relations": 3, "flags": 2}
    snapshot = store.metadata()["snapshot"]
    files = {p: p.read_bytes() for p in (tmp_path / "ws" / "graph").glob("*.parquet")}
    second = load(tiny_frames(), store, key=KEY)
    assert sum(second.added.values()) == 0
    assert second.unchanged == {"users": 6, "links": 7, "relations": 3, "flags": 2}
    assert store.metadata()["snapshot"] == snapshot
    assert {p: p.read_bytes() for p in files} == files
    second.check()


def test_loading_more_adds_to_the_graph(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ws")
    load(tiny_frames(), store, key=KEY)
    more = {
        "relations": pd.DataFrame({"src": ["z", "b"], "dst": ["new", "a"], "kind": ["transfer", "transfer"], "weight": [5.0, 120.0], "ts": ["2026-04-01", "2026-02-10T10:00:00Z"]}),
        "users": pd.DataFrame({"user_id": ["a"], "repayments_late": [4]}),
    }
    report = load(more, store, key=KEY)
    # the second transfer is identical to one already stored: it is the same event
    assert report.added["relations"] == 1 and report.unchanged["relations"] == 1
    tables = store.read_tables()
    assert "new" in set(tables.all_user_ids())
    assert tables.users.set_index("user_id").loc["a", "repayments_late"] == 4
    assert tables.users.set_index("user_id").loc["a", "repayments_total"] == 5  # kept from the first load


def test_repeated_identical_events_in_one_load_are_all_kept(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ws")
    rel = pd.DataFrame({"src": ["a", "a"], "dst": ["b", "b"], "kind": ["transfer", "transfer"], "weight": [10.0, 10.0]})
    assert load({"relations": rel}, store, key=KEY).added["relations"] == 2
    assert load({"relations": rel}, store, key=KEY).added["relations"] == 0
    assert len(store.read_tables().relations) == 2


def test_links_merge_their_sightings(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ws")
    load(tiny_frames(), store, key=KEY)
    later = pd.DataFrame({"user_id": ["a"], "kind": ["device"], "value": ["DEV-1"], "first_seen": ["2026-02-15"], "last_seen": ["2026-06-01"]})
    load({"links": later}, store, key=KEY)
    links = store.read_tables().links
    row = links[(links["user_id"] == "a") & (links["kind"] == "device")]
    assert len(row) == 1
    assert row["first_seen"].iloc[0] == pd.Timestamp("2026-02-01", tz="UTC")
    assert row["last_seen"].iloc[0] == pd.Timestamp("2026-06-01", tz="UTC")


def test_a_different_key_is_refused(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ws")
    store.bind_key(key_fingerprint(KEY))
    store.bind_key(key_fingerprint(KEY))
    with pytest.raises(ConfigError, match="different pseudonymisation key"):
        store.bind_key(key_fingerprint(b"another-key-0123456789"))


def test_results_round_trip_with_provenance(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ws")
    load(tiny_frames(), store, key=KEY)
    assert not store.has_result("scores")
    with pytest.raises(NotFoundError, match="no 'scores' result"):
        store.read_result("scores")
    store.write_result("scores", pd.DataFrame({"user_id": ["a"], "risk": [0.5]}), meta={"model_version": "m1"})
    frame, meta = store.read_result("scores")
    assert frame["risk"].tolist() == [0.5]
    assert meta["model_version"] == "m1" and meta["snapshot"] == 1
    with pytest.raises(ValueError):
        store.write_result("../escape", frame, meta={})


@pytest.mark.parametrize("crash_at", ["second_table", "codes", "commit"])
def test_a_crash_mid_load_leaves_the_previous_version_whole(tmp_path, monkeypatch, crash_at) -> None:  # type: ignore[no-untyped-def]
    import graph.store.embedded as embedded
    from loaders import load
    from tests.conftest import KEY, tiny_frames

    store = EmbeddedStore(tmp_path)
    load(tiny_frames(), store, key=KEY)
    before = EmbeddedStore(tmp_path).read_tables()
    snapshot = store.metadata()["snapshot"]

    class Crash(Exception):
        pass

    writes = {"n": 0}
    real_parquet = embedded._atomic_write_parquet

    def parquet(path, frame):  # type: ignore[no-untyped-def]
        writes["n"] += 1
        if crash_at == "second_table" and writes["n"] == 2:
            raise Crash
        real_parquet(path, frame)

    def codes(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise Crash

    def meta(self, values):  # type: ignore[no-untyped-def]
        raise Crash

    monkeypatch.setattr(embedded, "_atomic_write_parquet", parquet)
    if crash_at == "codes":
        monkeypatch.setattr(embedded, "save_encoded", codes)
    if crash_at == "commit":
        monkeypatch.setattr(EmbeddedStore, "_write_meta", meta)
    more = {
        "users": pd.DataFrame({"user_id": ["n1", "n2"]}),
        "relations": pd.DataFrame({"src": ["n1"], "dst": ["a"], "kind": ["transfer"]}),
    }
    with pytest.raises(Crash):
        load(more, store, key=KEY)
    monkeypatch.undo()  # the process restarts
    after = EmbeddedStore(tmp_path)
    assert after.metadata()["snapshot"] == snapshot
    for (name, x), (_, y) in zip(before, after.read_tables()):
        pd.testing.assert_frame_equal(x, y, obj=name)
    assert "n1" not in after.projection().user_ids.tolist()
    # and the next load goes through, leaving only the files of its version
    load(more, after, key=KEY)
    assert "n1" in EmbeddedStore(tmp_path).projection().user_ids.tolist()
    named = set(EmbeddedStore(tmp_path).metadata()["files"].values())
    assert {str(p.relative_to(tmp_path)) for p in (tmp_path / "graph").iterdir()} == named
