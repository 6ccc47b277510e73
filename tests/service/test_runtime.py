"""The runtime's threads and memory under a steady flow of flags: regressions the soak test
(``benchmarks/soak.py``) found."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from graph.store import EmbeddedStore
from loaders.errors import TransientStoreError
from socialrisk.service import memory as memory_module
from socialrisk.service import runtime as runtime_module
from socialrisk.service import writer as writer_module
from tests.service.conftest import AUTH, make_client, service_settings, wait_for


def test_the_health_follows_the_store_while_a_flag_write_hangs(ws: Path, scores: pd.DataFrame, monkeypatch: Any) -> None:
    """A flag write holds the writer's lock for as long as the store takes (seconds on Neo4j, more
    when it dies mid-write); the monitor used to wait for that lock in its refresh, so /readyz
    went on answering 200, and scores were served as fresh, while the store was down."""
    entered, release = threading.Event(), threading.Event()
    real = writer_module.write_flags

    def slow(*args: Any, **kwargs: Any) -> None:
        entered.set()
        release.wait(30)
        real(*args, **kwargs)

    monkeypatch.setattr(writer_module, "write_flags", slow)
    uid = scores.loc[scores["flag"] == "", "user_id"].iloc[4]
    for client in make_client(ws, service_settings(refresh_seconds=0.2)):
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        try:
            accepted = client.post("/v1/flags", json={"user_id": uid, "label": "fraud"}, headers=AUTH).json()
            assert entered.wait(10)
            time.sleep(1.0)  # several rounds of the monitor, each due a refresh, while the write hangs
            store = runtime.store

            def down() -> None:
                raise TransientStoreError("the store went away (simulated)")

            monkeypatch.setattr(store, "metadata", down)
            wait_for(lambda: client.get("/readyz").status_code == 503, timeout=5, what="/readyz to report the store down during the write")
            assert client.post("/v1/enrich", json={"user_id": uid}, headers=AUTH).json()["stale"] is True
            monkeypatch.undo()  # the store is back; the write goes through
            monkeypatch.setattr(writer_module, "write_flags", slow)
        finally:
            release.set()
        wait_for(lambda: client.get(accepted["status_url"], headers=AUTH).json()["persisted"], timeout=20, what="the flag to reach the store")
        wait_for(lambda: client.get("/readyz").status_code == 200, timeout=5, what="/readyz 200 again")


def test_a_flag_keeps_only_the_users_it_moves_and_a_reload_applies_it_alike(client: Any, scores: pd.DataFrame) -> None:
    """Flags are kept in memory until a scoring includes them, to apply them again to a reloaded
    table; each kept every user its push touched (a large share of the graph: megabytes a flag on
    50,000 users), so memory grew with every flag."""
    ids = scores["user_id"].astype(str).tolist()
    uid = scores.loc[(scores["flag"] == "") & (scores["ring_id"] != ""), "user_id"].iloc[0]
    accepted = client.post("/v1/flags", json={"user_id": uid, "label": "fraud"}, headers=AUTH).json()
    cleared = scores.loc[scores["flag"] == "fraud", "user_id"].iloc[2]
    client.post("/v1/flags", json={"user_id": cleared, "label": "benign"}, headers=AUTH)
    runtime = client.app.state.runtime
    event = next(e for e in runtime.events if e.flag_id == accepted["flag_id"])
    assert len(event.moved) == len(event.shift) and np.all(event.shift != 0)
    assert 0 < len(event.moved) < accepted["users_moved"] - 1  # the push reached users whose graph risk does not move
    before = client.post("/v1/enrich/batch", json={"user_ids": ids[:1000]}, headers=AUTH).json()["results"]
    before += client.post("/v1/enrich/batch", json={"user_ids": ids[1000:]}, headers=AUTH).json()["results"]
    assert client.post("/v1/scores/reload", headers=AUTH).status_code == 200  # the same scoring, the flags applied again
    after = client.post("/v1/enrich/batch", json={"user_ids": ids[:1000]}, headers=AUTH).json()["results"]
    after += client.post("/v1/enrich/batch", json={"user_ids": ids[1000:]}, headers=AUTH).json()["results"]
    assert sum(r["updated"] for r in before) > 2
    assert after == before


def test_the_writer_outlives_an_unexpected_error_and_writes_the_flag_again(ws: Path, scores: pd.DataFrame, monkeypatch: Any) -> None:
    """An error the store does not translate (the Neo4j driver's ``DriverError: Driver closed``)
    used to end the writer thread: every flag accepted after it stayed in the journal, unwritten,
    while the service went on answering 202 and /readyz 200."""
    calls: list[int] = []
    real = writer_module.write_flags

    def flaky(*args: Any, **kwargs: Any) -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("Driver closed")
        real(*args, **kwargs)

    monkeypatch.setattr(writer_module, "write_flags", flaky)
    uids = scores.loc[scores["flag"] == "", "user_id"].iloc[6:8].tolist()
    for client in make_client(ws):
        first = client.post("/v1/flags", json={"user_id": uids[0], "label": "fraud"}, headers=AUTH).json()
        wait_for(lambda: client.get(first["status_url"], headers=AUTH).json()["persisted"], timeout=20, what="the flag, written again")
        second = client.post("/v1/flags", json={"user_id": uids[1], "label": "fraud"}, headers=AUTH).json()
        wait_for(lambda: client.get(second["status_url"], headers=AUTH).json()["persisted"], timeout=20, what="a later flag")
        assert len(calls) == 3
    with EmbeddedStore(ws) as store:
        flags = store.read_table("flags")
        for accepted, uid in zip((first, second), uids):
            assert flags["source"].str.contains(accepted["flag_id"]).sum() == 1
            assert [e.detail.get("flag_id") for e in store.read_audit(uid)].count(accepted["flag_id"]) == 1


def test_a_failure_on_a_replaced_connection_is_not_the_new_ones(ws: Path, scores: pd.DataFrame, monkeypatch: Any) -> None:
    """On recovery the monitor connects afresh and retires the old connection; a write (or a
    store call for a request) still running on the old one fails. That failure used to mark the
    new connection down, so /readyz flapped to 503 after the store was back, and its error came
    out of a request as a 500."""
    uid = scores.loc[scores["flag"] == "", "user_id"].iloc[9]
    for client in make_client(ws):
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        downs: list[tuple[str, bool]] = []
        mark_down = runtime.connection.mark_down

        def spy(operation: str, exc: BaseException, **kwargs: Any) -> None:
            mark_down(operation, exc, **kwargs)
            downs.append((operation, runtime.store_ok))

        monkeypatch.setattr(runtime.connection, "mark_down", spy)
        real = writer_module.write_flags
        replaced: list[object] = []

        def reconnect_under(store: Any, *args: Any, **kwargs: Any) -> None:
            if not replaced:  # the monitor reconnects during the write; the old connection then fails it
                replaced.append(store)
                runtime.connection.store = EmbeddedStore(ws)
                raise TransientStoreError("cannot reach the store (the old connection)")
            real(store, *args, **kwargs)

        monkeypatch.setattr(writer_module, "write_flags", reconnect_under)
        accepted = client.post("/v1/flags", json={"user_id": uid, "label": "fraud"}, headers=AUTH).json()
        wait_for(lambda: client.get(accepted["status_url"], headers=AUTH).json()["persisted"], timeout=20, what="the flag, on the new connection")

        def fails_on_old(store: Any) -> None:
            runtime.connection.store = EmbeddedStore(ws)
            raise RuntimeError("Driver closed")

        with pytest.raises(runtime_module.Unavailable):
            asyncio.run(runtime.store_call("neighbourhood", fails_on_old, timeout=5))
        assert all(up for _, up in downs), downs
        assert client.get("/readyz").status_code == 200


def test_a_view_read_while_flags_are_written_holds_them_and_is_not_read_again(ws: Path, scores: pd.DataFrame, monkeypatch: Any) -> None:
    """The graph is read again in the background (after an outage, or when the store changed).
    A flag written to the store after the new view had read it was in neither the view nor the
    seeds replayed into it, and the view's snapshot stayed behind the store's, so it was read
    again at the next refresh, and again while flags kept coming."""
    uid = scores.loc[scores["flag"] == "", "user_id"].iloc[12]
    for client in make_client(ws, service_settings(refresh_seconds=0.2)):
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        real_build = runtime_module.GraphView.build
        calls: list[str] = []

        def build_then_flag(*args: Any, **kwargs: Any) -> Any:
            view = real_build(*args, **kwargs)
            if not calls:  # a flag accepted and written once the view has read the store
                calls.append(runtime.flag(uid, "fraud", 0.8, note="", actor="test")["flag_id"])
                wait_for(lambda: runtime.flag_state(calls[0])["persisted"], timeout=20, what="the flag to reach the store")
            return view

        monkeypatch.setattr(runtime_module.GraphView, "build", build_then_flag)
        old = runtime.graph
        runtime.warm_up(force=True)
        view = wait_for(lambda: runtime.graph if runtime.graph is not old else None, timeout=30, what="the graph read again")
        assert view.state.seeds[view.node_of[uid]] == pytest.approx(0.8)
        assert view.snapshot == int(runtime.store.metadata()["snapshot"])
        time.sleep(1.0)  # rounds of the refresh: nothing changed under the service
        assert runtime.graph is view


def test_the_writer_gives_freed_memory_back_after_a_write(client: Any, scores: pd.DataFrame, monkeypatch: Any) -> None:
    """A flag write on Neo4j churns through the store's tables; glibc kept what was freed, and
    the service's resident size crept up with every write (+20% in the five-minute soak)."""
    memory_module.release_free_memory()  # a no-op where the C library has no malloc_trim
    released: list[int] = []
    monkeypatch.setattr(memory_module, "release_free_memory", lambda: released.append(1))
    uid = scores.loc[scores["flag"] == "", "user_id"].iloc[13]
    accepted = client.post("/v1/flags", json={"user_id": uid, "label": "fraud"}, headers=AUTH).json()
    wait_for(lambda: client.get(accepted["status_url"], headers=AUTH).json()["persisted"], timeout=20, what="the flag to reach the store")
    wait_for(lambda: released, timeout=5, what="the heap to be trimmed after the write")


def test_a_flag_does_not_wait_for_explanations(client: Any, scores: pd.DataFrame, monkeypatch: Any) -> None:
    """Explanations held the graph view's lock while they ran, so flags queued behind them: on a
    busy machine a flag took seconds (over 10 s in the soak's worst minute)."""
    runtime = client.app.state.runtime
    explainer = runtime.graph.explainer
    real = explainer.explain
    started = threading.Event()

    def slow(*args: Any, **kwargs: Any) -> Any:
        started.set()
        time.sleep(2.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(explainer, "explain", slow)
    who = scores.loc[scores["ring_id"] != "", "user_id"].iloc[0]
    worker = threading.Thread(target=lambda: client.get(f"/v1/users/{who}/explanation", headers=AUTH))
    worker.start()
    assert started.wait(5)
    t0 = time.perf_counter()
    uid = scores.loc[scores["flag"] == "", "user_id"].iloc[14]
    assert client.post("/v1/flags", json={"user_id": uid, "label": "fraud"}, headers=AUTH).status_code == 202
    assert time.perf_counter() - t0 < 1.0
    worker.join(10)
