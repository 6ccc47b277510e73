"""The score write-back against a real Neo4j under faults the server itself raises.

- Transient: another transaction holds the write locks of the users the write-back needs and
  then asks for one the write-back holds. The server detects the deadlock and aborts the
  write-back's transaction (``Neo.TransientError.Transaction.DeadlockDetected``); the driver's
  managed transaction runs it again, and ``socialrisk score`` succeeds with the scores of a
  clean run, nothing written twice.
- Permanent: a uniqueness constraint the scores break (``ConstraintValidationFailed``, a client
  error, never retried). ``socialrisk score`` and ``calibrate`` stop with a one-line error and
  a non-zero exit, no traceback, and the model version current before stays current.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import neo4j
import pandas as pd
import pytest
from typer.testing import CliRunner

from graph.store import EmbeddedStore
from graph.store.neo4j import WRITE_RESULT_ROWS
from socialrisk.cli import app
from socialrisk.settings import Settings
from tests.conftest import KEY, tiny_frames, write_dir

pytestmark = pytest.mark.neo4j

runner = CliRunner()
SCORE_COLUMNS = ["user_id", "risk", "graph_risk", "credit_score", "decision", "reasons"]
#: The write-back's batch query as SHOW TRANSACTIONS shows it.
WRITE_BACK = WRITE_RESULT_ROWS.strip().splitlines()[1]


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", KEY.decode())


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every run of a managed write transaction's function (the driver runs it again on a
    transient error), with the queries it ran and the error code it ended with."""
    runs: list[dict[str, Any]] = []
    local = threading.local()
    execute_write, run = neo4j.Session.execute_write, neo4j.ManagedTransaction.run

    def counted_execute_write(self: Any, work: Any, *args: Any, **kwargs: Any) -> Any:
        def attempt(tx: Any, *a: Any, **k: Any) -> Any:
            local.current = {"queries": [], "error": None}
            runs.append(local.current)
            try:
                return work(tx, *a, **k)
            except Exception as exc:
                local.current["error"] = getattr(exc, "code", None) or type(exc).__name__
                raise
            finally:
                local.current = None

        return execute_write(self, attempt, *args, **kwargs)

    def recorded_run(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(local, "current", None) is not None:
            local.current["queries"].append(getattr(query, "text", query))
        return run(self, query, *args, **kwargs)

    monkeypatch.setattr(neo4j.Session, "execute_write", counted_execute_write)
    monkeypatch.setattr(neo4j.ManagedTransaction, "run", recorded_run)
    return runs


@pytest.fixture
def admin() -> Iterator[Any]:
    """A driver of its own on the test server, for the competing transaction and the checks."""
    uri = os.environ.get("SOCIALRISK_NEO4J_URI", f"bolt://127.0.0.1:{os.environ.get('SOCIALRISK_NEO4J_PORT', '7687')}")
    driver = neo4j.GraphDatabase.driver(uri, auth=(os.environ.get("SOCIALRISK_NEO4J_USER", "neo4j"), os.environ["SOCIALRISK_NEO4J_PASSWORD"]),
                                        notifications_min_severity="OFF")
    yield driver
    driver.close()


def _cli(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def _one(admin: Any, query: str, **params: Any) -> Any:
    return admin.execute_query(query, params, database_="neo4j").records[0]


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_a_deadlock_during_write_back_is_retried(neo4j_store, admin, attempts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data, ws = write_dir(tiny_frames(), tmp_path / "data"), str(tmp_path / "ws")
    assert _cli("load", str(data), "--store", "neo4j", "--workspace", ws).exit_code == 0
    first = str(neo4j_store.projection(Settings().graph).user_ids[0])  # the write-back's first row, locked first

    # The competing transaction write-locks every user but the first, and takes 200 more locks
    # on nodes it creates: when the deadlock comes, the server aborts the transaction holding
    # fewer locks, which is then the write-back's.
    session = admin.session(database="neo4j")
    holder = session.begin_transaction()
    holder.run("MATCH (u:User) WHERE u.id <> $first SET u._writeback_probe = 1", first=first).consume()
    holder.run("UNWIND range(1, 200) AS i CREATE (:WritebackProbe {i: i})").consume()
    done: dict[str, Any] = {}
    out = tmp_path / "scores.csv"
    worker = threading.Thread(
        target=lambda: done.update(result=_cli("score", "--store", "neo4j", "--out", str(out), "--workspace", ws)), daemon=True
    )
    worker.start()
    try:
        # the write-back has locked the first user and waits for the second
        deadline = time.monotonic() + 120
        while True:
            statuses = [r["status"] for r in admin.execute_query(
                "SHOW TRANSACTIONS YIELD currentQuery, status WHERE currentQuery CONTAINS $q RETURN status", q=WRITE_BACK,
                database_="neo4j").records]
            if any(s.startswith("Blocked") for s in statuses):
                break
            assert time.monotonic() < deadline and worker.is_alive(), f"the write-back never waited for the held locks: {done}"
            time.sleep(0.02)
        # ... and now this transaction asks for the first user: a deadlock
        holder.run("MATCH (u:User {id: $first}) SET u._writeback_probe = 1", first=first).consume()
    finally:
        holder.rollback()
        session.close()
    worker.join(timeout=180)
    assert not worker.is_alive(), "socialrisk score did not finish after the competing transaction ended"
    result = done["result"]
    assert result.exit_code == 0, result.output
    assert "scored 6 users" in result.output and "Traceback" not in result.output

    write_backs = [a for a in attempts if WRITE_RESULT_ROWS in a["queries"]]
    assert [a["error"] for a in write_backs] == ["Neo.TransientError.Transaction.DeadlockDetected", None]

    # the scores equal a clean scoring of the same data (embedded store), in the file and in Neo4j
    clean = tmp_path / "clean.csv"
    assert _cli("score", str(data), "--out", str(clean), "--workspace", str(tmp_path / "clean-ws")).exit_code == 0
    written = pd.read_csv(out, keep_default_na=False)[SCORE_COLUMNS]
    assert written["user_id"].iloc[0] == first
    pd.testing.assert_frame_equal(
        written.sort_values("user_id").reset_index(drop=True),
        pd.read_csv(clean, keep_default_na=False)[SCORE_COLUMNS].sort_values("user_id").reset_index(drop=True),
    )
    with EmbeddedStore(tmp_path / "clean-ws") as embedded:
        expected = embedded.read_result("scores")[0][SCORE_COLUMNS].sort_values("user_id").reset_index(drop=True)
    stored, meta = neo4j_store.read_result("scores")
    stored = stored[SCORE_COLUMNS].sort_values("user_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(stored, expected, check_dtype=False, rtol=1e-9)

    # nothing twice, nothing of the competing transaction left, the version made current once
    counts = _one(admin, """
        CALL () { MATCH (u:User) RETURN count(u) AS users, count(DISTINCT u.id) AS ids, count(u._writeback_probe) AS probed }
        CALL () { MATCH (r:Result {name: 'scores'}) RETURN count(r) AS results }
        CALL () { MATCH (m:ModelVersion) RETURN collect(m.version) AS versions }
        CALL () { MATCH (p:WritebackProbe) RETURN count(p) AS probes }
        RETURN users, ids, probed, results, versions, probes""")
    assert (counts["users"], counts["ids"], counts["probed"], counts["results"], counts["probes"]) == (6, 6, 0, 1, 0)
    assert counts["versions"] == [neo4j_store.current_model()] == [meta["model_version"]]


def test_a_permanent_error_fails_score_and_calibrate_and_keeps_the_current_version(neo4j_store, admin, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data, ws = write_dir(tiny_frames(), tmp_path / "data"), str(tmp_path / "ws")
    assert _cli("load", str(data), "--store", "neo4j", "--workspace", ws).exit_code == 0
    try:
        # the first scoring: six users cannot all have a different decision
        admin.execute_query("CREATE CONSTRAINT writeback_test_decision IF NOT EXISTS FOR (u:User) REQUIRE u.decision IS UNIQUE",
                            database_="neo4j")
        failed = _cli("score", "--store", "neo4j", "--out", str(tmp_path / "scores.csv"), "--workspace", ws)
        assert failed.exit_code == 5 and "Traceback" not in failed.output, failed.output
        (line,) = _error_lines(failed.output)
        assert "rejected a query while writing result scores" in line and "already exists" in line, line
        assert not (tmp_path / "scores.csv").exists()
        assert neo4j_store.current_model() is None and [m["current"] for m in neo4j_store.list_models()] == [False]
        assert not neo4j_store.has_result("scores")
        assert _one(admin, "MATCH (u:User) RETURN count(u.risk) AS n")["n"] == 0  # the batch was rolled back whole
        admin.execute_query("DROP CONSTRAINT writeback_test_decision IF EXISTS", database_="neo4j")

        assert _cli("score", "--store", "neo4j", "--workspace", ws).exit_code == 0
        current = neo4j_store.current_model()
        versions = len(neo4j_store.list_models())
        before = neo4j_store.read_result("scores")[0].set_index("user_id")

        # calibrate registers a new version and writes its scores: two users may not share one
        admin.execute_query("MATCH (u:User) WHERE u.id IN ['b', 'c'] SET u:WritebackTrap REMOVE u.model_version", database_="neo4j")
        admin.execute_query(
            "CREATE CONSTRAINT writeback_test_version IF NOT EXISTS FOR (u:WritebackTrap) REQUIRE u.model_version IS UNIQUE",
            database_="neo4j",
        )
        # a version id is the second it was made and its content: the same scorecard fitted
        # within the same second is the same version; let the second turn so that calibrate
        # registers a version of its own
        time.sleep(1.05 - time.time() % 1.0)
        failed = _cli("calibrate", "--store", "neo4j", "--workspace", ws)
        assert failed.exit_code == 5 and "Traceback" not in failed.output, failed.output
        (line,) = _error_lines(failed.output)
        assert "rejected a query while writing result scores" in line, line
        assert neo4j_store.current_model() == current and len(neo4j_store.list_models()) == versions + 1  # registered, not current
        after, meta = neo4j_store.read_result("scores")
        assert meta["model_version"] == current
        pd.testing.assert_series_equal(after.set_index("user_id")["risk"], before["risk"])
        assert not [e for e in neo4j_store.read_audit() if e.action == "calibrate"]
    finally:
        for name in ("writeback_test_decision", "writeback_test_version"):
            admin.execute_query(f"DROP CONSTRAINT {name} IF EXISTS", database_="neo4j")


def test_clearing_retries_a_transient_failure_with_smaller_batches(neo4j_store, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """``clear`` runs in auto-commit transactions, which the driver does not retry; the store
    does. Injected at the driver: the first attempt fails as the server fails when a batch of
    dense nodes passes its transaction memory limit."""
    from graph.store.neo4j import CLEAR_ALL
    from loaders import load

    load(tiny_frames(), neo4j_store, key=KEY)
    batches: list[int] = []
    run = neo4j.Session.run

    def failing_once(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if query == CLEAR_ALL:
            batches.append(kwargs["rows"])
            if len(batches) == 1:
                raise neo4j.exceptions.TransientError("The memory pool limit was exceeded (test)")
        return run(self, query, *args, **kwargs)

    monkeypatch.setattr(neo4j.Session, "run", failing_once)
    neo4j_store.clear()
    assert batches == [10_000, 1_000]
    assert neo4j_store._driver.execute_query("MATCH (n) RETURN count(n) AS n", database_="neo4j").records[0]["n"] == 0
