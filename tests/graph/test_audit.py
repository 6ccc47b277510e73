"""The audit log: hash chain by hand, tampering and torn lines detected, concurrent appends."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
from pathlib import Path

import pytest

from graph.store import EmbeddedStore
from graph.store.audit import AuditEntry, new_entries, verify_chain
from loaders.errors import ParameterError, StoreError

AT = "2026-11-27T01:22:33Z"
RECORDS = [
    {"action": "flag", "actor": "ana", "user_id": "u1", "after": {"label": "fraud"}},
    {"action": "dispute_link", "actor": "bo", "user_id": "u2", "before": {"weight": 1.0}, "after": {"weight": 0.0}, "detail": {"ticket": 7}},
    {"action": "score", "actor": "ana"},
]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_three_entries_chain_by_hand() -> None:
    a, b, c = new_entries(None, RECORDS, at=AT)
    assert [e.seq for e in (a, b, c)] == [1, 2, 3]
    assert a.hash == _sha(
        '{"action":"flag","actor":"ana","after":{"label":"fraud"},"at":"2026-11-27T01:22:33Z",'
        '"before":{},"detail":{},"prev_hash":"","seq":1,"user_id":"u1"}'
    )
    assert b.hash == _sha(
        '{"action":"dispute_link","actor":"bo","after":{"weight":0.0},"at":"2026-11-27T01:22:33Z",'
        '"before":{"weight":1.0},"detail":{"ticket":7},"prev_hash":"' + a.hash + '","seq":2,"user_id":"u2"}'
    )
    assert c.prev_hash == b.hash and c.user_id is None and c.before == c.after == c.detail == {}
    verify_chain([a, b, c])
    # continuing after the last entry
    (d,) = new_entries(c, [{"action": "calibrate", "actor": "ana"}], at=AT)
    assert (d.seq, d.prev_hash) == (4, c.hash)
    verify_chain([a, b, c, d])


def test_verify_chain_names_the_first_bad_entry() -> None:
    a, b, c = new_entries(None, RECORDS, at=AT)
    with pytest.raises(StoreError, match="audit entry 2 was altered"):
        verify_chain([a, dataclasses.replace(b, after={"weight": 5.0}), c])
    rehashed = new_entries(a, [{**RECORDS[1], "after": {"weight": 5.0}}], at=AT)[0]  # a forger who recomputes b's hash
    with pytest.raises(StoreError, match="audit entry 3 does not link to entry 2"):
        verify_chain([a, rehashed, c])
    with pytest.raises(StoreError, match="audit entry 3 follows entry 1: entry 2 is missing"):
        verify_chain([a, c])
    with pytest.raises(StoreError, match="starts at audit entry 2"):
        verify_chain([b, c])
    with pytest.raises(StoreError, match="audit entry 2 appears again"):
        verify_chain([a, b, b])
    verify_chain([])


def test_records_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="audit record 0 has unknown keys \\['seq'\\]"):
        new_entries(None, [{"action": "flag", "seq": 9}])
    with pytest.raises(ParameterError, match="'action' of audit record 1 must be non-empty text"):
        new_entries(None, [{"action": "flag"}, {"user_id": "u1"}])
    with pytest.raises(ParameterError, match="'after' of audit record 0 must hold only JSON values"):
        new_entries(None, [{"action": "flag", "after": {"risk": float("nan")}}])
    store = EmbeddedStore(tmp_path / "ws")
    with pytest.raises(ParameterError):
        store.append_audit([{"action": "flag"}, {"action": "flag", "after": {"x": object()}}])
    assert store.read_audit() == []


def test_actor_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALRISK_ACTOR", "analyst-7")
    (entry,) = new_entries(None, [{"action": "flag"}])
    assert entry.actor == "analyst-7"
    monkeypatch.delenv("SOCIALRISK_ACTOR")
    monkeypatch.setattr("getpass.getuser", lambda: "osuser")
    assert new_entries(None, [{"action": "flag"}])[0].actor == "osuser"


def test_store_appends_reads_filters_and_survives_reopening(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ws")
    assert store.read_audit() == []
    first = store.append_audit(RECORDS[:2])
    second = store.append_audit(RECORDS[2:])
    assert [e.seq for e in first + second] == [1, 2, 3] and second[0].prev_hash == first[1].hash
    assert store.append_audit([]) == []
    assert store.read_audit() == first + second
    assert [e.seq for e in store.read_audit("u2")] == [2]
    assert store.read_audit("nobody") == []
    lines = (tmp_path / "ws" / "audit" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]
    assert EmbeddedStore(tmp_path / "ws").read_audit() == first + second


def _edit_line(path: Path, seq: int, **changes: object) -> None:
    lines = path.read_text().splitlines(keepends=True)
    entry = json.loads(lines[seq - 1])
    entry.update(changes)
    lines[seq - 1] = json.dumps(entry) + "\n"
    path.write_text("".join(lines))


def test_an_edited_line_is_detected_naming_its_seq(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ws")
    store.append_audit(RECORDS)
    _edit_line(tmp_path / "ws" / "audit" / "log.jsonl", 2, after={"weight": 1.0})
    with pytest.raises(StoreError, match="log.jsonl: audit entry 2 was altered"):
        store.read_audit()
    with pytest.raises(StoreError, match="audit entry 2 was altered"):
        store.read_audit("u1")  # the whole chain is checked, not just the user's entries


def test_an_altered_last_entry_stops_appends(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ws")
    store.append_audit(RECORDS)
    log = tmp_path / "ws" / "audit" / "log.jsonl"
    _edit_line(log, 3, actor="mallory")
    before = log.read_bytes()
    with pytest.raises(StoreError, match="audit entry 3 was altered"):
        store.append_audit([{"action": "flag", "actor": "ana"}])
    assert log.read_bytes() == before


def test_a_torn_last_line_is_a_clear_error(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ws")
    store.append_audit(RECORDS[:2])
    log = tmp_path / "ws" / "audit" / "log.jsonl"
    good = log.stat().st_size
    whole = new_entries(store.read_audit()[-1], RECORDS[2:])[0]
    with log.open("ab") as handle:  # a crash halfway through the third line
        handle.write(json.dumps(whole.to_dict()).encode()[:40])
    with pytest.raises(StoreError, match=f"line 3, the last, is incomplete.*truncate -s {good} "):
        store.read_audit()
    with pytest.raises(StoreError, match=f"line 3, the last, is incomplete.*truncate -s {good} "):
        store.append_audit(RECORDS[2:])
    with log.open("r+b") as handle:  # the repair the message suggests
        handle.truncate(good)
    assert [e.seq for e in store.read_audit()] == [1, 2]


def test_a_line_that_is_not_an_entry_is_named(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ws")
    store.append_audit(RECORDS)
    log = tmp_path / "ws" / "audit" / "log.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text(lines[0] + "{oops\n" + "".join(lines[2:]))
    with pytest.raises(StoreError, match="log.jsonl, line 2: not a JSON audit entry"):
        store.read_audit()
    log.write_text(lines[0] + '{"seq": 2}\n' + "".join(lines[2:]))
    with pytest.raises(StoreError, match="line 2: audit entry has missing fields"):
        store.read_audit()


def _append_many(workspace: str, actor: str, n: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    store = EmbeddedStore(workspace)
    barrier.wait()
    for i in range(n):
        store.append_audit([{"action": "flag", "actor": actor, "user_id": f"{actor}-{i}"}])


def test_concurrent_appends_from_two_processes_stay_gap_free(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workspace = str(tmp_path / "ws")
    procs = [ctx.Process(target=_append_many, args=(workspace, actor, 50, barrier)) for actor in ("p1", "p2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    entries = EmbeddedStore(workspace).read_audit()  # verifies the chain
    assert [e.seq for e in entries] == list(range(1, 101))
    for actor in ("p1", "p2"):
        mine = [e.user_id for e in entries if e.actor == actor]
        assert mine == [f"{actor}-{i}" for i in range(50)]


def test_entries_are_frozen() -> None:
    (entry,) = new_entries(None, RECORDS[:1], at=AT)
    assert isinstance(entry, AuditEntry)
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.seq = 2  # type: ignore[misc]


@pytest.mark.parametrize("module", ["graph.store.audit", "graph.store.models"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    failures, tried = doctest.testmod(importlib.import_module(module))
    assert tried > 0 and failures == 0
