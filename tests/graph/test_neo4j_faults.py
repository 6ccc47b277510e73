"""Neo4j faults against a real server: a load killed mid-way (SIGKILL) and run again gives the
same graph as a clean load, with nothing duplicated."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from graph.store import EmbeddedStore
from loaders import load
from loaders.synthetic import generate, write_tables
from tests.conftest import KEY

pytestmark = [pytest.mark.neo4j, pytest.mark.slow]

COUNTS = """
CALL () { MATCH (u:User) RETURN count(u) AS users }
CALL () { MATCH (i:Identifier) RETURN count(i) AS identifiers, count(DISTINCT i.key) AS identifier_keys }
CALL () { MATCH ()-[r:USES]->() RETURN count(r) AS uses }
CALL () { MATCH ()-[r:RELATES]->() RETURN count(r) AS relates, count(DISTINCT [r._key, r._occ]) AS relate_keys }
CALL () { MATCH (f:Flag) RETURN count(f) AS flags }
RETURN users, identifiers, identifier_keys, uses, relates, relate_keys, flags
"""


def test_a_load_killed_mid_way_and_run_again_equals_a_clean_load(neo4j_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from socialrisk import neo4j_server
    from socialrisk.workflow import open_neo4j

    server = neo4j_server.server_settings()
    pid = neo4j_server.status(server)["pid"]
    assert pid, "the test server's pid file is needed to kill it"
    data = tmp_path / "data"
    write_tables(generate(n_users=6000, seed=11), data, fmt="parquet")
    failure: list[BaseException] = []

    def first_load() -> None:
        try:
            load(data, neo4j_store, key=KEY)
        except BaseException as exc:  # noqa: BLE001 - the kill is expected to break it
            failure.append(exc)

    worker = threading.Thread(target=first_load)
    worker.start()
    # kill the server once part of the graph is written
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        n = neo4j_store._driver.execute_query("MATCH ()-[r:USES]->() RETURN count(r) AS n", database_="neo4j").records[0]["n"]
        if n > 2000:
            break
        time.sleep(0.05)
    os.kill(int(pid), signal.SIGKILL)
    try:
        gone = time.monotonic() + 30
        while neo4j_server.status(server)["running"] and time.monotonic() < gone:
            time.sleep(0.1)
        worker.join(timeout=120)
        assert not worker.is_alive()
        assert failure, "the load finished before the kill; make the data larger"
    finally:
        neo4j_server.start(server)
    store = open_neo4j()
    try:
        partial = store._driver.execute_query(COUNTS, database_="neo4j").records[0]
        load(data, store, key=KEY)
        got = dict(store._driver.execute_query(COUNTS, database_="neo4j").records[0])
        clean = EmbeddedStore(tmp_path / "ws")
        load(data, clean, key=KEY)
        expected = clean.read_tables()
        assert got["users"] == len(expected.all_user_ids())
        assert got["uses"] == len(expected.links) and got["relates"] == len(expected.relations) and got["flags"] == len(expected.flags)
        assert got["identifiers"] == got["identifier_keys"] and got["relates"] == got["relate_keys"]  # no duplicates
        assert partial["uses"] < got["uses"] or partial["relates"] < got["relates"]  # the kill did interrupt it
        for (name, x), (_, y) in zip(expected, store.read_tables()):
            pd.testing.assert_frame_equal(x.reset_index(drop=True), y.reset_index(drop=True), check_dtype=False, obj=name)
    finally:
        store.clear()
        store.close()
