"""The bulk first load (neo4j-admin database import) against a real server of its own.

The import stops and starts the server it writes, so these tests run a second server (in a
temporary home, on a free port, sharing the provisioned classpath) beside the one the other
Neo4j tests use; the graphs the two loads make are compared node by node.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from loaders import StoreError
from socialrisk import neo4j_server
from socialrisk.settings import Settings
from tests.conftest import KEY, _neo4j_unavailable, tiny_frames, write_dir

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.neo4j

#: What the two loads may differ in: when they ran, and the id naming each graph's kept projections.
VOLATILE_META = {"store_id", "updated_at"}


def _frames() -> dict[str, pd.DataFrame]:
    """The tiny graph, with text that CSV must quote (quotes, commas, a line break, the array
    delimiter), missing values (the loader reads an empty string as one), users known only from
    relations, and an extra relation column."""
    frames = tiny_frames()
    frames["users"]["note"] = ['a "quoted", note', "line\nbreak", None, "", "x;y", "plain"]
    frames["relations"] = pd.concat(
        [frames["relations"], pd.DataFrame({"src": ["n1"], "dst": ["n2"], "kind": ["transfer"], "weight": [3.5], "ts": ["2026-02-13T10:00:00Z"]})],
        ignore_index=True,
    )
    frames["relations"]["channel"] = ["app", None, "web", "app"]
    return frames


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def bulk_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A server of its own (small heap), named by the environment as the bulk load reads it."""
    if not os.environ.get("SOCIALRISK_NEO4J_PASSWORD"):
        _neo4j_unavailable("SOCIALRISK_NEO4J_PASSWORD is not set; start a server with 'socialrisk neo4j start'")
    shared = neo4j_server.server_settings()
    if not (shared.lib / f".neo4j-{neo4j_server.NEO4J_VERSION}").exists():
        _neo4j_unavailable(f"Neo4j is not provisioned in {shared.lib}; run 'socialrisk neo4j start' once")
    home = tmp_path / "neo4j"
    home.mkdir()
    (home / "lib").symlink_to(shared.lib)
    settings = replace(shared, home=home, port=_free_port(), heap="512m", pagecache="128m", gds=False)
    for name, value in {"SOCIALRISK_NEO4J_HOME": str(home), "SOCIALRISK_NEO4J_PORT": str(settings.port), "SOCIALRISK_NEO4J_URI": settings.uri,
                        "SOCIALRISK_NEO4J_HEAP": "512m", "SOCIALRISK_NEO4J_PAGECACHE": "128m", "SOCIALRISK_NEO4J_GDS": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", KEY.decode())
    neo4j_server.start(settings)
    yield settings
    neo4j_server.stop(settings)


def _graph(store: Any) -> dict[str, Any]:
    """Every node and relationship of the loaded graph with all its properties, by natural key;
    the metadata node without what may differ; audit entries by action."""
    q = lambda text: [r.data() for r in store._driver.execute_query(text, database_="neo4j").records]  # noqa: E731
    nodes = q("MATCH (n) WHERE n:User OR n:Identifier OR n:Flag RETURN labels(n) AS labels, properties(n) AS props")
    rels = q("""MATCH (a)-[r]->(b) WHERE type(r) IN ['USES', 'RELATES', 'HAS_FLAG']
                RETURN type(r) AS type, coalesce(a.id, a.key) AS a, coalesce(b.id, b.key) AS b, properties(r) AS props""")
    meta = q("MATCH (m:SocialRiskMeta) RETURN properties(m) AS props")
    # properties in name order, so that the order they were set in does not change the sort
    plain = lambda d: {k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in d.items()}  # noqa: E731
    key = lambda d: repr(sorted((k, repr(v)) for k, v in d.items()))  # noqa: E731
    return {
        "nodes": sorted((plain({"labels": sorted(n["labels"]), "props": n["props"]}) for n in nodes), key=key),
        "relationships": sorted((plain(r) for r in rels), key=key),
        "meta": [{k: v for k, v in m["props"].items() if k not in VOLATILE_META} for m in meta],
        "audit": sorted(r["action"] for r in q("MATCH (a:AuditEntry) RETURN a.action AS action")),
        "constraints": sorted(r["name"] for r in q("SHOW CONSTRAINTS YIELD name RETURN name")),
    }


def test_bulk_load_makes_the_graph_an_online_load_makes(neo4j_store, bulk_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """neo4j_store (the shared server, loaded online) is opened before bulk_server points the
    environment at the server of its own (bulk loaded)."""
    from socialrisk.workflow import bulk_load_into, load_into, open_neo4j

    data = write_dir(_frames(), tmp_path / "data")
    settings = Settings()
    report = bulk_load_into(data, settings, tmp_path / "ws-bulk")
    assert report.added == {"users": 6, "links": 7, "relations": 4, "flags": 2}
    assert neo4j_server.interrupted_import(bulk_server) is None
    load_into(neo4j_store, data, settings, tmp_path / "ws-online")
    with open_neo4j() as bulk:
        bulk_graph = _graph(bulk)
        assert bulk_graph == _graph(neo4j_store)
        assert len(bulk_graph["nodes"]) == 8 + 3 + 2 and len(bulk_graph["relationships"]) == 7 + 4 + 2
        assert any(n["props"].get("note") == "line\nbreak" for n in bulk_graph["nodes"])
        # the same tables read back, and an online load of the same data afterwards adds nothing
        for (name, a), (_, b) in zip(bulk.read_tables(), neo4j_store.read_tables(), strict=True):
            pd.testing.assert_frame_equal(a, b, obj=name)
        again = load_into(bulk, data, settings, tmp_path / "ws-bulk")
        assert sum(again.added.values()) == 0 and again.unchanged == report.added
        # a database that holds a graph is refused, and left as it was
        with pytest.raises(StoreError, match=r"already holds 1[0-9] nodes: --bulk only loads an empty database"):
            bulk_load_into(data, settings, tmp_path / "ws-bulk")
        assert _graph(bulk)["nodes"] == bulk_graph["nodes"]


def test_a_killed_bulk_import_is_never_served(bulk_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Killed while neo4j-admin writes the database, the import leaves it refused (the server
    is not started on it) until a new bulk load imports afresh; a graph imported but not
    finished (no constraints yet) is refused by the store."""
    from socialrisk.workflow import bulk_load_into, open_neo4j

    data = write_dir(_frames(), tmp_path / "data")
    code = (
        "import sys; from pathlib import Path; from socialrisk.settings import Settings; "
        "from socialrisk.workflow import bulk_load_into; bulk_load_into(Path(sys.argv[1]), Settings(), Path(sys.argv[2]))"
    )
    errors = open(tmp_path / "bulk-load.err", "wb")
    proc = subprocess.Popen([sys.executable, "-c", code, str(data), str(tmp_path / "ws")], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=errors)
    import_log = bulk_server.home / "logs" / "import.log"
    deadline = time.monotonic() + 120
    while not (import_log.exists() and neo4j_server.status(bulk_server)["running"] is False) and time.monotonic() < deadline:
        assert proc.poll() is None, "the bulk load ended before its import could be killed: " + (tmp_path / "bulk-load.err").read_text()[-2000:]
        time.sleep(0.05)
    assert import_log.exists(), "the import did not start within 120 s"
    os.killpg(proc.pid, signal.SIGKILL)  # the loader and the admin tool it runs
    proc.wait()
    errors.close()
    assert neo4j_server.interrupted_import(bulk_server) is not None
    with pytest.raises(StoreError, match="did not finish: the database may be half-written and is not started"):
        neo4j_server.start(bulk_server)

    # importing afresh over it works, and the graph is whole
    report = bulk_load_into(data, Settings(), tmp_path / "ws")
    assert report.added["links"] == 7
    with open_neo4j() as store:
        assert store.metadata()["counts"] == {"users": 6, "links": 7, "relations": 4, "flags": 2}

    # imported, but stopped before the constraints: the store does not read it
    with open_neo4j() as store:
        store._driver.execute_query("MATCH (m:SocialRiskMeta) SET m.bulk_import = $at", at="2026-01-01T00:00:00Z", database_="neo4j")
        with pytest.raises(StoreError, match="holds a bulk import started at 2026-01-01T00:00:00Z that did not finish"):
            store.read_tables()
    report = bulk_load_into(data, Settings(), tmp_path / "ws")  # an unfinished import may be imported over
    with open_neo4j() as store:
        assert len(store.read_tables().links) == 7


def test_a_bulk_load_of_bad_data_leaves_the_server_running(bulk_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The server is stopped while the tables are read (the import needs it stopped); a load that
    fails before the import starts it again, its database as it was."""
    from loaders import DataError
    from socialrisk.workflow import bulk_load_into, open_neo4j

    frames = _frames()
    frames["links"].loc[2, "value"] = "not a phone"
    data = write_dir(frames, tmp_path / "data")
    with pytest.raises(DataError, match="phone"):
        bulk_load_into(data, Settings(), tmp_path / "ws")
    assert neo4j_server.status(bulk_server)["running"] and neo4j_server.interrupted_import(bulk_server) is None
    with open_neo4j() as store:
        assert store.database_contents()[0] == 0  # type: ignore[attr-defined]
